"""Tests of the brax adapter on inverted_pendulum (one compiled rollout shared by the module)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import State

from envs import brax_env
from tests.envs.test_linear import NUM_ENVS, check_episodes, check_timestep_types, make_rollout

LIMIT = 5
NUM_STEPS = 12


@pytest.fixture(scope="module")
def pendulum():
    env = brax_env.make("inverted_pendulum", max_episode_steps=LIMIT)
    return env, make_rollout(env)


def push_actions(scale: float = 1.0):
    """Envs 0 and 1 push the cart hard (the pole falls in 2 steps); envs 2 and 3 do nothing."""
    actions = np.zeros((NUM_STEPS, NUM_ENVS, 1), np.float32)
    actions[:, :2] = scale
    return jnp.asarray(actions)


def test_names_and_spec(pendulum):
    env, _ = pendulum
    assert {"inverted_pendulum", "halfcheetah", "hopper", "ant"} <= set(brax_env.NAMES)
    spec = env.spec
    assert spec.env_id == "brax/inverted_pendulum"
    assert spec.obs_shape == (4,) and spec.action_shape == (1,) and not spec.discrete
    assert spec.action_low == (-1.0,) and spec.action_high == (1.0,)
    assert spec.max_episode_steps == LIMIT
    assert brax_env.make("reacher").spec.max_episode_steps == 1000
    with pytest.raises(ValueError, match="inverted_pendulum"):
        brax_env.make("no_such_env")


@pytest.mark.slow
def test_termination_truncation_and_statistics(pendulum):
    env, rollout = pendulum
    timesteps, lengths, _ = rollout(jax.random.PRNGKey(0), push_actions())
    check_timestep_types(env.spec, timesteps)
    finished = check_episodes(timesteps, lengths, LIMIT)
    pushed = [f for f in finished if f[0] < 2]
    idle = [f for f in finished if f[0] >= 2]
    assert pushed and all(term and length < LIMIT for _, length, _, term in pushed)
    assert len(idle) == 2 * 2 and all(not term and length == LIMIT for _, length, _, term in idle)
    assert all(ret == length for _, length, ret, _ in finished)  # +1 per step
    ts = jax.tree_util.tree_map(np.asarray, timesteps)
    done = ts.terminated | ts.truncated
    assert np.all(np.abs(ts.obs[done]) <= 0.01)  # reset: q, qd ~ U(-0.01, 0.01)
    assert np.all(np.abs(ts.next_obs[ts.terminated][:, 1]) > 0.2)  # pole angle beyond 0.2 rad


def test_known_reward_and_termination_match_the_env(pendulum):
    env, rollout = pendulum
    ts, _, _ = rollout(jax.random.PRNGKey(2), push_actions())
    actions = push_actions()
    ts = jax.tree_util.tree_map(np.asarray, ts)
    fn = jax.vmap(jax.vmap(env.termination_fn))
    predicted = np.asarray(fn(ts.obs, actions, ts.next_obs))
    np.testing.assert_array_equal(predicted, ts.terminated)
    assert ts.terminated.any() and not ts.terminated.all()
    rewards = np.asarray(jax.vmap(jax.vmap(env.reward_fn))(ts.obs, actions, ts.next_obs))
    np.testing.assert_array_equal(rewards, ts.reward)


def test_actions_are_clipped(pendulum):
    _, rollout = pendulum
    key = jax.random.PRNGKey(1)
    clipped, _, _ = rollout(key, push_actions(1.0))
    oversized, _, _ = rollout(key, push_actions(5.0))
    np.testing.assert_array_equal(np.asarray(clipped.next_obs), np.asarray(oversized.next_obs))


def test_conform_state_fixes_python_leaves_and_dict_keys():
    """A stepped state with a Python float and different metrics/info keys gets the reset layout."""
    old = brax_env.normalise_state(
        State(pipeline_state=None, obs=jnp.zeros(3), reward=0.0, done=jnp.zeros(()),
              metrics={"a": 0.0, "b": jnp.zeros(())}, info={"steps": 0}))
    assert all(isinstance(x, jax.Array) and not x.weak_type for x in jax.tree_util.tree_leaves(old))
    new = State(pipeline_state=None, obs=jnp.ones(3), reward=1.0, done=jnp.ones(()),
                metrics={"a": 2.0, "extra": jnp.ones(())}, info={"steps": 3.0})
    conformed = brax_env.conform_state(new, old)
    assert jax.tree_util.tree_structure(conformed) == jax.tree_util.tree_structure(old)
    assert conformed.metrics["a"] == 2.0 and conformed.metrics["b"] == 0.0
    assert conformed.info["steps"].dtype == old.info["steps"].dtype == jnp.int32
    assert conformed.reward.dtype == jnp.float32
    selected = jax.tree_util.tree_map(lambda x, y: jnp.where(True, x, y), old, conformed)
    assert jax.tree_util.tree_structure(selected) == jax.tree_util.tree_structure(old)


def test_double_pendulum_known_reward_and_termination_match_the_env():
    """The tip geometry read off brax's source reproduces its reward and ``y <= 1`` termination."""
    env = brax_env.make("inverted_double_pendulum", max_episode_steps=40)
    steps = 40
    actions = np.zeros((steps, NUM_ENVS, 1), np.float32)
    actions[:, 0], actions[:, 1] = 1.0, -0.5  # pushed: the poles fall; envs 2, 3 balance a while
    actions = jnp.asarray(actions)
    ts, _, _ = make_rollout(env)(jax.random.PRNGKey(3), actions)
    ts = jax.tree_util.tree_map(np.asarray, ts)
    predicted = np.asarray(jax.vmap(jax.vmap(env.termination_fn))(ts.obs, actions, ts.next_obs))
    np.testing.assert_array_equal(predicted, ts.terminated)
    assert ts.terminated.any() and not ts.terminated.all()
    rewards = np.asarray(jax.vmap(jax.vmap(env.reward_fn))(ts.obs, actions, ts.next_obs))
    np.testing.assert_allclose(rewards, ts.reward, rtol=1e-4, atol=1e-4)
    assert rewards.max() > 9.0 and rewards[ts.terminated].max() < 1.0  # no alive bonus at the end


def test_loading_does_not_print_the_maintenance_notice():
    """brax warns at every load that it is unmaintained; the adapter silences that notice
    alone, so it does not precede every run's output."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        brax_env.load("inverted_pendulum")  # make() may reuse an earlier test's load
        warnings.warn("another notice", UserWarning)  # other warnings still get through
    messages = [str(w.message) for w in caught]
    assert "another notice" in messages
    assert not [m for m in messages if "not actively being maintained" in m], messages
