"""Tests of the craftax adapter against craftax's own step.

The reference is craftax's auto-resetting environment (``CraftaxClassicSymbolicEnv.step``, which
splits the step key into ``(step, reset)`` keys as :class:`envs.api.Environment` does), stepped
with the same actions and keys. Compiling craftax's world generation and step takes minutes on
a 2-core CPU, and even tracing them takes seconds, so only the spec test is fast.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import craftax_env
from envs.api import batch_reset, batch_step
from tests.envs.test_linear import check_timestep_types

NUM_ENVS = 3


def trace_spec_and_step(name):
    env = craftax_env.make(name)

    def reset_and_step(key):
        state = batch_reset(env, key, NUM_ENVS)
        actions = jax.vmap(env.spec.sample_action)(jax.random.split(key, NUM_ENVS))
        return state, batch_step(env, state, actions, key)

    state, (new_state, timestep) = jax.eval_shape(reset_and_step, jax.random.PRNGKey(0))
    check_timestep_types(env.spec, timestep, NUM_ENVS)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(new_state)
    leaves = zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new_state))
    for before, after in leaves:
        assert (before.shape, before.dtype, before.weak_type) == (
            after.shape, after.dtype, after.weak_type)
    return env.spec, timestep


def test_classic_ids_and_spec():
    assert set(envs.registered_ids("craftax")) == {f"craftax/{n}" for n in craftax_env.NAMES}
    with pytest.raises(ValueError, match="Craftax-Classic-Symbolic-v1"):
        envs.make("craftax/Craftax-Classic-Pixels-v1")
    env = envs.make("craftax/Craftax-Classic-Symbolic-v1")
    spec = env.spec
    assert spec.obs_shape == (1345,) and spec.obs_kind == "vector"
    assert spec.obs_range == (0.0, 1.0)
    assert spec.num_actions == 17 and spec.max_episode_steps == 10_000
    assert not spec.has_action_mask and spec.num_players == 1
    assert env.legal_action_mask_fn is None and env.episode_metrics_fn is not None
    assert envs.make("craftax/Craftax-Classic-Symbolic-v1",
                     max_episode_steps=7).spec.max_episode_steps == 7


@pytest.mark.slow
def test_classic_state_tree_and_timestep():
    """Traced (not compiled): the achievement metrics, a state tree kept by a step."""
    _, timestep = trace_spec_and_step("Craftax-Classic-Symbolic-v1")
    assert timestep.legal_action_mask.shape == (NUM_ENVS, 17)
    assert len(timestep.episode_metrics) == 22
    assert timestep.episode_metrics["achievement_collect_wood"].shape == (NUM_ENVS,)


@pytest.mark.slow
def test_full_craftax_spec_and_state_tree():
    spec, timestep = trace_spec_and_step("Craftax-Symbolic-v1")
    assert spec.obs_shape == (8268,) and spec.num_actions == 43
    assert spec.max_episode_steps == 100_000 and len(timestep.episode_metrics) == 67


@pytest.mark.slow
def test_classic_matches_craftax_and_truncates():
    """Same observations, rewards and terminations as craftax's own step for the first steps;
    our time limit (4 steps here) truncates and resets, with the episode's achievements."""
    from craftax.craftax_classic.envs.craftax_symbolic_env import CraftaxClassicSymbolicEnv

    limit, num_steps = 4, 6
    env = craftax_env.make("Craftax-Classic-Symbolic-v1", max_episode_steps=limit)
    ref_env = CraftaxClassicSymbolicEnv()
    params = ref_env.default_params

    @jax.jit
    def run(key, actions):
        reset_key, key = jax.random.split(key)
        keys = jax.random.split(reset_key, NUM_ENVS)
        state = jax.vmap(env.reset)(keys)
        ref_obs, ref = jax.vmap(lambda k: ref_env.reset(k, params))(keys)

        def body(carry, inputs):
            state, ref = carry
            action, step_key = inputs
            keys = jax.random.split(step_key, NUM_ENVS)
            state, ts = jax.vmap(env.step)(state, action, keys)
            obs, ref, reward, done, info = jax.vmap(
                lambda k, s, a: ref_env.step(k, s, a, params))(keys, ref, action)
            return (state, ref), (ts, obs, reward, done, state.inner.timestep)

        _, out = jax.lax.scan(body, (state, ref), (actions, jax.random.split(key, num_steps)))
        return state.obs, ref_obs, out

    # Do (5), then noop, left, right, up, down: something happens in the first steps.
    actions = jnp.tile(jnp.array([5, 0, 1, 2, 3, 4], jnp.int32)[:, None], (1, NUM_ENVS))
    obs0, ref_obs0, out = jax.tree_util.tree_map(np.asarray, run(jax.random.PRNGKey(0), actions))
    ts, ref_obs, ref_reward, ref_done, inner_time = out
    # Two compilations of the same float maths may differ in the last bit (the daylight entry).
    close = functools.partial(np.testing.assert_allclose, rtol=0, atol=1e-6)
    close(obs0, ref_obs0)
    first = slice(0, limit - 1)  # before our limit resets the episode
    close(ts.obs[first], ref_obs[first])
    close(ts.reward[: limit], ref_reward[: limit])
    np.testing.assert_array_equal(ts.terminated[: limit], ref_done[: limit])
    close(ts.next_obs[: limit], ref_obs[: limit])
    assert not ts.terminated.any()  # nobody dies in six steps from the start
    at_limit = np.broadcast_to(np.arange(num_steps)[:, None] == limit - 1, ts.truncated.shape)
    np.testing.assert_array_equal(ts.truncated, at_limit)
    np.testing.assert_array_equal(inner_time[limit - 1], 0)  # a fresh world after the limit
    assert (ts.obs[limit - 1] != ts.next_obs[limit - 1]).any()
    np.testing.assert_array_equal(ts.episode_length[limit - 1], limit)
    np.testing.assert_allclose(ts.episode_return[limit - 1], ts.reward[:limit].sum(0), rtol=1e-6)
    metrics = ts.episode_metrics
    for values in metrics.values():  # 0/1 at the episode's end, 0 elsewhere
        assert set(np.unique(values).tolist()) <= {0.0, 1.0}
        assert not values[~at_limit].any()
