"""Tests of the Playground DMC adapter on cartpole_swingup (one compiled rollout per module).

The env uses ``action_repeat=2`` (the DreamerV3 setting), which exercises the adapter's scan over
repeated physics steps; ``action_repeat=1`` is a single physics step through the same state
handling, exercised by tests/envs/test_brax.py. Each MJX compile costs ~25 s on a 2-core CPU.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from envs import dmc
from tests.envs.test_linear import NUM_ENVS, check_episodes, check_timestep_types, make_rollout

LIMIT = 5
NUM_STEPS = 12
REPEAT = 2
CONTROL_DT = 0.01  # cartpole's ctrl_dt (= sim_dt) in Playground's default config


@pytest.fixture(scope="module")
def swingup():
    env = dmc.make("cartpole_swingup", max_episode_steps=LIMIT, action_repeat=REPEAT)
    return env, make_rollout(env)


def random_actions(key):
    return jax.random.uniform(key, (NUM_STEPS, NUM_ENVS, 1), minval=-1.0, maxval=1.0)


def test_names_and_spec(swingup):
    env, _ = swingup
    required = {"cartpole_swingup", "cartpole_balance", "pendulum_swingup", "reacher_easy",
                "reacher_hard", "cheetah_run", "walker_walk", "walker_run", "hopper_hop",
                "finger_spin", "ball_in_cup_catch", "acrobot_swingup"}
    assert required <= set(dmc.NAMES)
    spec = env.spec
    assert spec.env_id == "dmc/cartpole_swingup"
    assert spec.obs_shape == (5,) and spec.action_shape == (1,) and not spec.discrete
    assert spec.action_low == (-1.0,) and spec.action_high == (1.0,)
    assert dmc.make("cartpole_swingup").spec.max_episode_steps == 1000
    assert dmc.make("cartpole_swingup", action_repeat=2).spec.max_episode_steps == 500
    with pytest.raises(ValueError, match="cartpole_swingup"):
        dmc.make("cartpole_fly")
    with pytest.raises(ValueError, match="no option 'episode_lenght'.*episode_length"):
        dmc.make("cartpole_swingup", episode_lenght=10)
    with pytest.raises(ValueError, match="action_repeat='x' does not fit its default 1 "):
        dmc.make("cartpole_swingup", action_repeat="x")


@pytest.mark.slow
def test_truncation_auto_reset_and_statistics(swingup):
    env, rollout = swingup
    actions = random_actions(jax.random.PRNGKey(1))
    timesteps, lengths, final = rollout(jax.random.PRNGKey(0), actions)
    check_timestep_types(env.spec, timesteps)
    finished = check_episodes(timesteps, lengths, LIMIT)
    assert len(finished) == 2 * NUM_ENVS
    assert all(not term and length == LIMIT for _, length, _, term in finished)
    ts = jax.tree_util.tree_map(np.asarray, timesteps)
    assert np.all((ts.reward >= 0.0) & (ts.reward <= REPEAT))  # a sum of REPEAT rewards in [0, 1]
    # Two agent steps ran since the last reset, each REPEAT control steps of physics time.
    np.testing.assert_array_equal(np.asarray(final.episode_length), NUM_STEPS - 2 * LIMIT)
    np.testing.assert_allclose(np.asarray(final.inner.data.time),
                               (NUM_STEPS - 2 * LIMIT) * REPEAT * CONTROL_DT, rtol=1e-4)
    # Swing-up resets hang the pole down: obs = [cart x, cos, sin, cart v, pole w], cos ~ -1.
    assert np.all(ts.obs[ts.truncated][:, 1] < -0.99)
    assert np.all(np.abs(ts.obs[ts.truncated][:, 0]) < 0.1)


@pytest.mark.slow
def test_known_cartpole_reward_matches_the_env():
    """``reward_fn`` (used by planners) reproduces Playground's reward step by step."""
    env = dmc.make("cartpole_swingup", max_episode_steps=LIMIT)  # action_repeat 1
    assert dmc.make("cartpole_swingup", action_repeat=2).reward_fn is None  # not exact then
    actions = random_actions(jax.random.PRNGKey(3))
    ts, _, _ = make_rollout(env)(jax.random.PRNGKey(4), actions)
    predicted = jax.vmap(jax.vmap(env.reward_fn))(ts.obs, actions, ts.next_obs)
    np.testing.assert_allclose(np.asarray(predicted), np.asarray(ts.reward), rtol=1e-5,
                               atol=1e-6)
    assert np.ptp(np.asarray(ts.reward)) > 1e-4  # the rewards vary, so the check has teeth
