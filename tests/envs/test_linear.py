"""Tests of the linear family, and the rollout/episode checkers the other env tests share.

:func:`make_rollout` and :func:`check_episodes` check :mod:`envs.api`'s bookkeeping against an
independent recount in numpy (rewards summed per episode, steps counted per episode).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import linear
from envs.api import batch_reset, batch_step

NUM_ENVS = 4


def make_rollout(env, num_envs: int = NUM_ENVS):
    """Jitted ``run(key, actions [T, num_envs, *action_shape])``.

    Returns ``(timesteps, lengths_after, final_state)``: leaves of ``timesteps`` are
    ``[T, num_envs, ...]``, ``lengths_after[t]`` is the wrapped state's ``episode_length``
    after step ``t`` and ``final_state`` the batched EnvState after the last step.
    """

    def run(key, actions):
        reset_key, key = jax.random.split(key)
        state = batch_reset(env, reset_key, num_envs)

        def body(state, inputs):
            action, step_key = inputs
            state, timestep = batch_step(env, state, action, step_key)
            return state, (timestep, state.episode_length)

        keys = jax.random.split(key, actions.shape[0])
        final_state, (timesteps, lengths_after) = jax.lax.scan(body, state, (actions, keys))
        return timesteps, lengths_after, final_state

    return jax.jit(run)


def check_timestep_types(spec, timestep, num_envs: int = NUM_ENVS):
    """Shapes and dtypes of a (possibly ``[T, N]``-stacked) TimeStep against ``spec``."""
    lead = timestep.reward.shape
    assert lead[-1] == num_envs
    for obs in (timestep.obs, timestep.next_obs):
        assert obs.shape == lead + tuple(spec.obs_shape)
        assert obs.dtype == np.dtype(spec.obs_dtype)
    assert timestep.reward.dtype == jnp.float32
    assert timestep.terminated.dtype == jnp.bool_ and timestep.truncated.dtype == jnp.bool_
    assert timestep.terminated.shape == lead and timestep.truncated.shape == lead
    assert timestep.episode_return.dtype == jnp.float32
    assert timestep.episode_length.dtype == jnp.int32
    # Legal-action mask and player to move: every action legal, player 0, on a one-player task
    # without a mask (pgx's games test theirs against pgx). Values only where ``timestep`` holds
    # arrays, not shapes.
    mask, player = timestep.legal_action_mask, timestep.current_player
    assert mask.dtype == jnp.bool_ and player.dtype == jnp.int32
    assert mask.shape == lead + ((spec.num_actions,) if spec.discrete else (0,))
    if isinstance(mask, jax.Array):
        assert spec.has_action_mask or np.asarray(mask).all()
        assert spec.num_players > 1 or not np.asarray(player).any()


def check_episodes(timesteps, lengths_after, max_episode_steps: int):
    """Recounts every episode of a ``[T, N]`` rollout and compares with the wrapper's numbers.

    Returns a list of ``(env_index, length, return, terminated)`` for the finished episodes.
    """
    ts = jax.tree_util.tree_map(np.asarray, timesteps)
    lengths_after = np.asarray(lengths_after)
    num_steps, num_envs = ts.reward.shape
    ret, count = np.zeros(num_envs), np.zeros(num_envs, np.int64)
    finished = []
    for t in range(num_steps):
        ret += ts.reward[t]
        count += 1
        term, trunc = ts.terminated[t], ts.truncated[t]
        done = term | trunc
        assert not np.any(term & trunc), "terminated and truncated are exclusive"
        np.testing.assert_array_equal(trunc, (count >= max_episode_steps) & ~term)
        np.testing.assert_array_equal(ts.episode_length[t], np.where(done, count, 0))
        np.testing.assert_allclose(ts.episode_return[t], np.where(done, ret, 0.0),
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(lengths_after[t], np.where(done, 0, count))
        # Mid-episode the agent acts on the true successor; after a done, on a reset obs.
        np.testing.assert_array_equal(ts.obs[t][~done], ts.next_obs[t][~done])
        for i in np.flatnonzero(done):
            finished.append((int(i), int(count[i]), float(ret[i]), bool(term[i])))
        ret[done], count[done] = 0.0, 0
    return finished


@pytest.fixture(scope="module")
def double_integrator():
    env = linear.make("double_integrator", noise_std=0.0, max_episode_steps=5)
    return env, make_rollout(env)


def test_spec_and_types(double_integrator):
    env, rollout = double_integrator
    assert env.spec.obs_shape == (2,) and env.spec.action_shape == (1,)
    assert not env.spec.discrete and env.spec.max_episode_steps == 5
    actions = jnp.zeros((3, NUM_ENVS, 1))
    timesteps, _, _ = rollout(jax.random.PRNGKey(0), actions)
    check_timestep_types(env.spec, timesteps)


def test_noise_free_dynamics_and_reward(double_integrator):
    env, rollout = double_integrator
    sys = linear.system("double_integrator")
    actions = jax.random.uniform(jax.random.PRNGKey(1), (12, NUM_ENVS, 1), minval=-1, maxval=1)
    timesteps, _, _ = rollout(jax.random.PRNGKey(2), actions)
    ts = jax.tree_util.tree_map(np.asarray, timesteps)
    acted_on = ts.obs[:-1]  # the observation each step 1..T-1 acted on (step 0 acted on reset)
    a = np.asarray(actions)[1:]
    expected = acted_on @ sys.A.T + a @ sys.B.T
    np.testing.assert_allclose(ts.next_obs[1:], expected, rtol=1e-5, atol=1e-6)
    cost = np.einsum("tni,ij,tnj->tn", acted_on, np.eye(2), acted_on)
    cost += 0.01 * np.einsum("tni,tni->tn", a, a)
    np.testing.assert_allclose(ts.reward[1:], -cost, rtol=1e-5, atol=1e-6)
    states = linear.rollout_states(sys, acted_on[0, 0], a[:1, 0])
    np.testing.assert_allclose(states[1], ts.next_obs[1, 0], rtol=1e-5, atol=1e-6)


def test_truncation_auto_reset_and_episode_statistics(double_integrator):
    env, rollout = double_integrator
    actions = jax.random.uniform(jax.random.PRNGKey(3), (12, NUM_ENVS, 1), minval=-1, maxval=1)
    timesteps, lengths, _ = rollout(jax.random.PRNGKey(4), actions)
    finished = check_episodes(timesteps, lengths, max_episode_steps=5)
    assert len(finished) == 2 * NUM_ENVS  # after steps 5 and 10
    assert all(length == 5 and not term for _, length, _, term in finished)
    assert not np.asarray(timesteps.terminated).any()
    # After a truncation the next observation is a fresh draw, not the successor.
    ts = jax.tree_util.tree_map(np.asarray, timesteps)
    assert np.all(ts.obs[4] != ts.next_obs[4])
