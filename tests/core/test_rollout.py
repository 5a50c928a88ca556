"""core.rollout.play on a counter whose episodes end at known steps, checked by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import loop, rollout
from envs.api import EnvSpec, Environment

ACTIONS = jnp.array([1, 2, 0], jnp.int32)  # env 0 counts by 1, env 1 by 2, env 2 stays at 0


def _counter_env(time_limit=100):
    """Adds the action to a count from 0; the reward is the new count; terminates at count 4."""
    def reset(key):
        return jnp.zeros((), jnp.int32), jnp.zeros((1,))

    def step(count, action, key):
        count = count + action
        return count, count[None].astype(jnp.float32), count.astype(jnp.float32), count >= 4

    spec = EnvSpec(env_id="test/counter", obs_shape=(1,), discrete=True, num_actions=3,
                   max_episode_steps=time_limit)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step)


def _policy(env_state, is_first, calls, key):
    """The fixed ACTIONS; counts its calls in the carry and reports is_first and the count."""
    return ACTIONS, calls + 1, {"is_first": is_first, "calls": calls}


def _play(env, length=5, **kwargs):
    return jax.jit(lambda k: rollout.play(env, _policy, k, num_envs=3, length=length,
                                          carry=jnp.zeros(3, jnp.int32), **kwargs)
                   )(jax.random.PRNGKey(0))


def test_without_reset_the_first_episode_is_cut_at_its_terminal():
    out = _play(_counter_env())
    # env 0: counts 1 2 3 4 5, terminal at 4 (step 3); env 1: 2 4 6 8 10, terminal at step 1.
    np.testing.assert_array_equal(out.next_obs[..., 0], [[1, 2, 3, 4, 5], [2, 4, 6, 8, 10],
                                                         [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out.obs[..., 0], [[0, 1, 2, 3, 4], [0, 2, 4, 6, 8],
                                                    [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out.observations()[..., 0], [[0, 1, 2, 3, 4, 5],
                                                               [0, 2, 4, 6, 8, 10], [0] * 6])
    np.testing.assert_array_equal(out.action, np.tile(ACTIONS[:, None], (1, 5)))
    np.testing.assert_array_equal(out.reward, out.next_obs[..., 0])
    np.testing.assert_array_equal(out.terminated, [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1],
                                                   [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out.valid, [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1] * 5])
    np.testing.assert_array_equal(out.lengths, [4, 2, 5])
    np.testing.assert_array_equal(out.ended, [True, True, False])
    np.testing.assert_array_equal(out.returns, [1 + 2 + 3 + 4, 2 + 4, 0])
    np.testing.assert_array_equal(out.extras["is_first"], [[1, 0, 0, 0, 0]] * 3)
    np.testing.assert_array_equal(out.extras["calls"], [[0, 1, 2, 3, 4]] * 3)
    np.testing.assert_array_equal(out.final.obs[:, 0], [5, 10, 0])


def test_auto_reset_applies_the_time_limit_and_resets():
    out = _play(_counter_env(time_limit=3), auto_reset=True)
    # env 0: 1 2 3, truncated at the limit, reset, 1 2; env 1: 2 4 (terminal), reset, 2 4, 2;
    # env 2: truncated after 3 steps at count 0.
    np.testing.assert_array_equal(out.next_obs[..., 0], [[1, 2, 3, 1, 2], [2, 4, 2, 4, 2],
                                                         [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out.obs[..., 0], [[0, 1, 2, 0, 1], [0, 2, 0, 2, 0],
                                                    [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out.terminated, [[0, 0, 0, 0, 0], [0, 1, 0, 1, 0],
                                                   [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out.extras["is_first"], [[1, 0, 0, 1, 0], [1, 0, 1, 0, 1],
                                                           [1, 0, 0, 1, 0]])
    np.testing.assert_array_equal(out.valid, [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(out.returns, [1 + 2 + 3, 2 + 4, 0])
    np.testing.assert_array_equal(out.lengths, [3, 2, 3])
    assert out.ended.all()


def test_greedy_returns_is_the_first_episode_to_the_time_limit():
    act = lambda params, obs, first, carry, key, explore: (ACTIONS, carry, {})  # noqa: E731
    metrics = loop.greedy_returns(_counter_env(time_limit=3), act, lambda n: (), None, 3,
                                  jax.random.PRNGKey(0))
    np.testing.assert_allclose(metrics["eval_return_mean"], (6 + 6 + 0) / 3)
    assert float(metrics["eval_return_min"]) == 0 and float(metrics["eval_return_max"]) == 6


def test_start_probe_keys_and_no_record():
    env = _counter_env()
    start = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 3))
    start = start.replace(inner=jnp.array([2, 2, 3]), obs=jnp.array([[2.0], [2.0], [3.0]]))
    probe = lambda env_state, keys: {"count": env_state.inner, "keys": keys}  # noqa: E731
    out = _play(env, length=3, start=start, probe=probe, record=False)
    assert out.obs is None and out.action is None and out.extras is None
    np.testing.assert_array_equal(out.probes["count"], [[2, 3, 4], [2, 4, 6], [3, 3, 3]])
    np.testing.assert_array_equal(out.returns, [3 + 4, 4, 3 + 3 + 3])  # reward: the count
    np.testing.assert_array_equal(out.valid, [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    # The documented key usage: the first step's environment keys.
    _, loop_key = jax.random.split(jax.random.PRNGKey(0))
    _, _, env_key = jax.random.split(loop_key, 3)
    np.testing.assert_array_equal(out.probes["keys"][:, 0], jax.random.split(env_key, 3))


def test_a_wrong_action_shape_and_length_are_refused():
    env = _counter_env()
    wrong = lambda env_state, is_first, carry, key: (ACTIONS[:2], carry, ())  # noqa: E731
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        rollout.play(env, wrong, jax.random.PRNGKey(0), num_envs=3, length=2)
    with pytest.raises(ValueError, match="length >= 1"):
        rollout.play(env, _policy, jax.random.PRNGKey(0), num_envs=3, length=0)
