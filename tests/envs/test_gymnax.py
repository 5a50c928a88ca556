"""Tests of the gymnax adapter: shapes, time limits kept apart from termination, auto-reset."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import gymnax_env
from envs.api import Symmetry, batch_reset, batch_step
from tests.envs.test_linear import NUM_ENVS, check_episodes, check_timestep_types, make_rollout

REQUIRED = ("CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0",
            "MountainCarContinuous-v0", "Asterix-MinAtar", "Breakout-MinAtar",
            "Freeway-MinAtar", "SpaceInvaders-MinAtar")


def random_actions(spec, key, num_steps):
    keys = jax.random.split(key, num_steps * NUM_ENVS).reshape(num_steps, NUM_ENVS, -1)
    return jax.vmap(jax.vmap(spec.sample_action))(keys)


def test_names():
    assert set(REQUIRED) <= set(gymnax_env.NAMES)
    with pytest.raises(ValueError, match="CartPole-v1"):
        gymnax_env.make("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="gravity"):
        gymnax_env.make("CartPole-v1", gravty=9.0)


@pytest.mark.parametrize("name", gymnax_env.NAMES)
def test_spec_shapes_and_state_tree(name):
    """Traced (not compiled): shapes/dtypes, and the inner state keeps its tree and dtypes."""
    env = gymnax_env.make(name)
    spec = env.spec
    assert spec.env_id == f"gymnax/{name}"
    if spec.discrete:
        assert spec.action_shape == () and spec.num_actions >= 2
    else:
        assert len(spec.action_low) == len(spec.action_high) == spec.action_dim >= 1
    if name.endswith("MinAtar"):
        assert spec.obs_shape[:2] == (10, 10) and len(spec.obs_shape) == 3
        assert spec.obs_kind == "image" and spec.obs_range == (0.0, 1.0)
    else:
        assert spec.obs_kind == "vector" and spec.obs_range is None

    def reset_and_step(key):
        state = batch_reset(env, key, NUM_ENVS)
        actions = jax.vmap(spec.sample_action)(jax.random.split(key, NUM_ENVS))
        assert actions.dtype == spec.action_dtype
        new_state, timestep = batch_step(env, state, actions, key)
        return state, new_state, timestep

    state, new_state, timestep = jax.eval_shape(reset_and_step, jax.random.PRNGKey(0))
    check_timestep_types(spec, timestep)
    assert state.obs.shape == (NUM_ENVS,) + spec.obs_shape
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(new_state)
    leaves = zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new_state))
    for before, after in leaves:
        assert (before.shape, before.dtype) == (after.shape, after.dtype)


def test_default_time_limits():
    assert gymnax_env.make("CartPole-v1").spec.max_episode_steps == 500
    assert gymnax_env.make("Pendulum-v1").spec.max_episode_steps == 200
    assert gymnax_env.make("Breakout-MinAtar").spec.max_episode_steps == 1000
    assert gymnax_env.make("Pendulum-v1", max_episode_steps=7).spec.max_episode_steps == 7


def test_cartpole_terminates_and_resets():
    """Always pushing right topples the pole in a few steps: terminations, never truncations."""
    env = gymnax_env.make("CartPole-v1")
    actions = jnp.ones((40, NUM_ENVS), jnp.int32)
    timesteps, lengths, _ = make_rollout(env)(jax.random.PRNGKey(0), actions)
    check_timestep_types(env.spec, timesteps)
    finished = check_episodes(timesteps, lengths, env.spec.max_episode_steps)
    assert len(finished) >= 2 * NUM_ENVS
    assert all(term and 5 <= length < 40 for _, length, _, term in finished)
    # CartPole pays +1 per step, so the return is the length.
    assert all(ret == length for _, length, ret, _ in finished)
    ts = jax.tree_util.tree_map(np.asarray, timesteps)
    done = ts.terminated | ts.truncated
    assert np.all(np.abs(ts.obs[done]) <= 0.05)  # fresh reset: U(-0.05, 0.05) per component
    assert np.all(np.abs(ts.next_obs[ts.terminated][:, 2]) > 0.2)  # the pole angle left the band


def test_pendulum_truncates_at_our_limit_only():
    """gymnax's 200-step limit is off: the episode runs to our limit and is truncated, not ended."""
    env = gymnax_env.make("Pendulum-v1", max_episode_steps=205)
    actions = random_actions(env.spec, jax.random.PRNGKey(1), 207)
    assert actions.shape == (207, NUM_ENVS, 1)
    timesteps, lengths, _ = make_rollout(env)(jax.random.PRNGKey(2), actions)
    finished = check_episodes(timesteps, lengths, 205)
    assert not np.asarray(timesteps.terminated).any()
    assert [length for _, length, _, _ in finished] == [205] * NUM_ENVS


def test_pendulum_short_limit_statistics():
    env = gymnax_env.make("Pendulum-v1", max_episode_steps=5)
    actions = random_actions(env.spec, jax.random.PRNGKey(3), 12)
    timesteps, lengths, _ = make_rollout(env)(jax.random.PRNGKey(4), actions)
    check_timestep_types(env.spec, timesteps)
    finished = check_episodes(timesteps, lengths, 5)
    assert len(finished) == 2 * NUM_ENVS and all(not term for *_, term in finished)
    assert all(ret < 0 for _, _, ret, _ in finished)  # Pendulum's reward is a cost
    ts = jax.tree_util.tree_map(np.asarray, timesteps)
    reset_obs = ts.obs[ts.truncated]  # [cos theta, sin theta, theta_dot], theta_dot ~ U(-1, 1)
    np.testing.assert_allclose(reset_obs[:, 0] ** 2 + reset_obs[:, 1] ** 2, 1.0, rtol=1e-5)
    assert np.all(np.abs(reset_obs[:, 2]) <= 1.0)


def test_minatar_planes_are_zero_one():
    env = gymnax_env.make("SpaceInvaders-MinAtar")
    obs = batch_reset(env, jax.random.PRNGKey(3), 4).obs
    assert set(np.unique(np.asarray(obs)).tolist()) <= {0.0, 1.0} and float(obs.max()) == 1.0
    scaled = env.spec.scale_image(obs)
    assert float(scaled.min()) == -0.5 and float(scaled.max()) == 0.5
    np.testing.assert_allclose(env.spec.unscale_image(scaled), obs)


def test_minatar_breakout():
    env = gymnax_env.make("Breakout-MinAtar", max_episode_steps=6)
    assert env.spec.obs_shape == (10, 10, 4) and env.spec.num_actions == 3
    actions = random_actions(env.spec, jax.random.PRNGKey(5), 14)
    timesteps, lengths, _ = make_rollout(env)(jax.random.PRNGKey(6), actions)
    check_timestep_types(env.spec, timesteps)
    finished = check_episodes(timesteps, lengths, 6)
    assert len(finished) >= NUM_ENVS
    obs = np.asarray(timesteps.obs)
    assert set(np.unique(obs)) <= {0.0, 1.0}


def test_catch_terminates_with_plus_minus_one():
    env = gymnax_env.make("Catch-bsuite")
    actions = random_actions(env.spec, jax.random.PRNGKey(7), 20)
    timesteps, lengths, _ = make_rollout(env)(jax.random.PRNGKey(8), actions)
    finished = check_episodes(timesteps, lengths, env.spec.max_episode_steps)
    assert len(finished) == 2 * NUM_ENVS  # the ball falls for 9 steps
    assert all(term and length == 9 and ret in (-1.0, 1.0) for _, length, ret, term in finished)


def test_cartpole_mirror_symmetry_is_exact():
    """Stepping the mirrored state with the mirrored action gives the mirrored successor, the same
    reward and the same termination, from states near and past the failure bands."""
    env = gymnax_env.make("CartPole-v1")
    sym = env.symmetry
    assert gymnax_env.make("Pendulum-v1").symmetry is None
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    scale = jnp.array([2.5, 2.0, 0.22, 2.0])
    values = jax.random.uniform(keys[0], (64, 4), minval=-1.0, maxval=1.0) * scale
    actions = jax.random.randint(keys[1], (64,), 0, 2)
    inner, _ = env.adapter_reset(keys[2])

    def step(v, a):
        state = inner.replace(x=v[0], x_dot=v[1], theta=v[2], theta_dot=v[3])
        _, obs, reward, terminated = env.adapter_step(state, a, keys[3])
        return obs, reward, terminated

    obs, reward, term = jax.vmap(step)(values, actions)
    m_obs, m_reward, m_term = jax.vmap(step)(jax.vmap(sym.obs)(values), sym.action(actions))
    np.testing.assert_allclose(m_obs, jax.vmap(sym.obs)(obs), atol=1e-6)
    np.testing.assert_array_equal(m_reward, reward)
    np.testing.assert_array_equal(m_term, term)
    assert 0 < int(term.sum()) < 64  # both outcomes are exercised
    np.testing.assert_array_equal(sym.action(jnp.array([0, 1])), [1, 0])
    np.testing.assert_array_equal(sym.action_values(jnp.array([[0.25, 0.75]])), [[0.75, 0.25]])
    # A value of action a moves to the mirrored action perm[a] (a 3-cycle is not self-inverse).
    cycle = Symmetry(obs=lambda o: o, action_permutation=(1, 2, 0))
    np.testing.assert_array_equal(cycle.action_values(jnp.array([10.0, 20.0, 30.0])),
                                  [30.0, 10.0, 20.0])


def test_acrobot_mirror_symmetry_is_exact():
    """Acrobot under every angle and velocity negated, the two torques swapped: the mirrored
    state's successor is the successor's mirror image, with the same reward and termination,
    from states across the whole angle range and up to the velocity limits, goals included;
    the reset distribution is symmetric (its box is centred on 0)."""
    env = gymnax_env.make("Acrobot-v1")
    sym = env.symmetry
    assert gymnax_env.make("MountainCar-v0").symmetry is None
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    scale = jnp.array([3.1, 3.1, 4 * np.pi, 9 * np.pi])
    values = jax.random.uniform(keys[0], (256, 4), minval=-1.0, maxval=1.0) * scale
    actions = jax.random.randint(keys[1], (256,), 0, 3)
    inner, _ = env.adapter_reset(keys[2])

    def step(v, a):
        state = inner.replace(joint_angle1=v[0], joint_angle2=v[1], velocity_1=v[2],
                              velocity_2=v[3])
        _, obs, reward, terminated = env.adapter_step(state, a, keys[3])
        return obs, reward, terminated

    obs, reward, term = jax.vmap(step)(values, actions)
    m_obs, m_reward, m_term = jax.vmap(step)(-values, sym.action(actions))
    np.testing.assert_allclose(m_obs, jax.vmap(sym.obs)(obs), atol=1e-4)
    np.testing.assert_array_equal(m_reward, reward)
    np.testing.assert_array_equal(m_term, term)
    assert 0 < int(term.sum()) < 256  # both outcomes are exercised
    np.testing.assert_array_equal(sym.action(jnp.array([0, 1, 2])), [2, 1, 0])
    starts, _ = jax.vmap(env.adapter_reset)(jax.random.split(keys[2], 4096))
    for field in ("joint_angle1", "joint_angle2", "velocity_1", "velocity_2"):
        x = np.asarray(getattr(starts, field))  # uniform on [-0.1, 0.1]
        assert -0.1 <= x.min() < -0.099 and 0.099 < x.max() <= 0.1


def test_action_repeat_sums_rewards_and_stops_at_termination():
    """``action_repeat=k``: one agent step is k steps of the same action with the rewards
    summed; a termination within them ends the step there, with the terminal observation;
    the time limit counts agent steps."""
    single = gymnax_env.make("CartPole-v1")
    repeated = gymnax_env.make("CartPole-v1", action_repeat=4)
    assert repeated.spec.max_episode_steps == 125
    assert gymnax_env.make("Acrobot-v1", action_repeat=3).spec.max_episode_steps == 167
    key = jax.random.PRNGKey(3)
    state, _ = single.adapter_reset(key)
    inner = state
    rewards, obs_seen, terms = [], [], []
    for _ in range(40):  # pushing one way drops the pole within 40 steps
        inner, obs, reward, term = single.adapter_step(inner, jnp.int32(1), key)
        rewards.append(float(reward))
        obs_seen.append(np.asarray(obs))
        terms.append(bool(term))
    end = terms.index(True)  # the first terminating step
    assert end >= 4
    r_state = state
    total = 0.0
    for step in range(10):
        r_state, obs, reward, term = repeated.adapter_step(r_state, jnp.int32(1), key)
        last = min(4 * step + 3, end)
        total += float(reward)
        np.testing.assert_allclose(obs, obs_seen[last], rtol=1e-6)
        assert bool(term) == (last == end)
        if term:
            break
    assert total == sum(rewards[:end + 1])
    # Acrobot pays -1 per step and 0 at the goal: from this state the third step reaches the
    # goal and the fourth, from the goal, would pay -1 again; four repeats pay -2 and end there.
    acrobot = gymnax_env.make("Acrobot-v1")
    start, _ = acrobot.adapter_reset(key)
    start = start.replace(joint_angle1=jnp.float32(1.0), joint_angle2=jnp.float32(0.0),
                          velocity_1=jnp.float32(3.0), velocity_2=jnp.float32(0.0))
    inner, singles = start, []
    for _ in range(4):
        inner, obs, reward, term = acrobot.adapter_step(inner, jnp.int32(1), key)
        singles.append((float(reward), bool(term), np.asarray(obs)))
    assert [(r, t) for r, t, _ in singles] == [(-1.0, False), (-1.0, False), (0.0, True),
                                              (-1.0, False)]
    _, obs, reward, term = gymnax_env.make("Acrobot-v1", action_repeat=4).adapter_step(
        start, jnp.int32(1), key)
    assert float(reward) == -2.0 and bool(term)
    np.testing.assert_allclose(obs, singles[2][2], rtol=1e-6)
    for bad in (0, 2.5, "x"):
        with pytest.raises(ValueError, match="action_repeat must be an integer >= 1"):
            gymnax_env.make("CartPole-v1", action_repeat=bad)
