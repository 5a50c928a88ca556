"""Tests of the craftax adapter against craftax's own step, and of the optimistic resets
(``Environment.reset_ratio``) it uses.

The reference is craftax's auto-resetting environment (``CraftaxClassicSymbolicEnv.step``, which
splits the step key into ``(step, reset)`` keys as :class:`envs.api.Environment` does), stepped
with the same actions and keys. Compiling craftax's world generation and step takes minutes on
a 2-core CPU, and even tracing them takes seconds, so only the spec test is fast among those.
The optimistic reset is :mod:`envs.api`'s and is tested fast on a tiny environment whose start
records the key it was drawn with; one slow test runs it on craftax.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import craftax_env
from envs.api import EnvSpec, Environment, batch_reset, batch_step, batch_step_keys
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


# ----------------------------------------------------------------------------- optimistic resets

def numbered_env(reset_ratio: int = 1, limit: int = 100) -> Environment:
    """A start is a number drawn from the reset key (in [0, 2^20)); action 1 ends the episode,
    action 0 counts on. ``obs = [start, steps so far]``."""
    def reset(key):
        start = jax.random.randint(key, (), 0, 2**20)
        return {"start": start, "t": jnp.zeros((), jnp.int32)}, observe(start, 0)

    def observe(start, t):
        return jnp.stack([start, t]).astype(jnp.float32)

    def step(inner, action, key):
        del key
        t = inner["t"] + 1
        return ({"start": inner["start"], "t": t}, observe(inner["start"], t),
                jnp.float32(1.0), action == 1)

    spec = EnvSpec(env_id="test/numbered", obs_shape=(2,), discrete=True, num_actions=2,
                   max_episode_steps=limit)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step,
                       episode_metrics_fn=lambda inner: {"t": inner["t"].astype(jnp.float32)},
                       reset_ratio=reset_ratio)


def step_both(num_envs, ratio, actions, *, seed=0, warmup=3):
    """The same batch stepped ``warmup`` times with action 0, then once with ``actions``, by the
    plain reset (ratio 1) and by ``ratio``; returns (before, plain, optimistic, all_ended)
    where ``all_ended`` is the plain step with every episode ending (each environment's own
    fresh start)."""
    plain_env, env = numbered_env(1), numbered_env(ratio)
    key = jax.random.PRNGKey(seed)
    state = batch_reset(plain_env, key, num_envs)
    for i in range(warmup):
        state, _ = batch_step(plain_env, state, jnp.zeros(num_envs, jnp.int32),
                              jax.random.fold_in(key, i))
    step_key = jax.random.fold_in(key, 100)
    actions = jnp.asarray(actions, jnp.int32)
    plain = batch_step(plain_env, state, actions, step_key)
    optimistic = batch_step(env, state, actions, step_key)
    ended = batch_step(plain_env, state, jnp.ones(num_envs, jnp.int32), step_key)
    return state, plain, optimistic, ended


def leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                     jax.tree_util.tree_leaves(b)))


def take(tree, index):
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[index], tree)


def test_optimistic_reset_shares_few_fresh_starts_among_the_finished():
    """N = 7, ratio 3: M = 3 fresh starts, from the reset keys of environments 0, 1, 2; the
    k-th finished environment takes start k mod 3; the others step as with the plain reset."""
    finished = np.array([1, 0, 1, 1, 0, 1, 1])
    before, (pstate, pts), (ostate, ots), (fresh, _) = step_both(7, 3, finished)
    # everything but the reset: the same transition, statistics and metrics
    for name in ("next_obs", "reward", "terminated", "truncated", "episode_return",
                 "episode_length", "episode_metrics", "legal_action_mask", "current_player"):
        assert leaves_equal(getattr(pts, name), getattr(ots, name)), name
    assert leaves_equal(pstate.episode_return, ostate.episode_return)
    assert leaves_equal(pstate.episode_length, ostate.episode_length)
    running = np.flatnonzero(finished == 0)
    assert leaves_equal(take(pstate, running), take(ostate, running))  # untouched
    assert leaves_equal(take(pts.obs, running), take(ots.obs, running))
    # finished environments 0, 2, 3, 5, 6 take the starts of environments 0, 1, 2, 0, 1
    ended = np.flatnonzero(finished)
    source = np.array([0, 1, 2, 0, 1])
    assert leaves_equal(take(ostate, ended), take(fresh, source))
    assert leaves_equal(take(ots.obs, ended), take(fresh.obs, source))
    np.testing.assert_array_equal(np.asarray(ostate.inner["t"])[ended], 0)
    assert np.asarray(before.inner["t"]).min() == 3  # they were mid-episode


def test_optimistic_reset_is_the_plain_reset_with_one_start_per_environment():
    """Ratio 1, or a single environment, steps exactly as the vmap of Environment.step; a
    ratio above the batch size shares one start; invalid ratios are one-line errors."""
    for num_envs, ratio in ((5, 1), (1, 4)):
        _, plain, optimistic, _ = step_both(num_envs, ratio, np.ones(num_envs))
        assert leaves_equal(plain, optimistic)
    _, _, (state, _), (fresh, _) = step_both(3, 16, np.ones(3))
    assert leaves_equal(state, take(fresh, np.zeros(3, int)))
    for bad in (0, 1.5, -2):
        with pytest.raises(ValueError, match="reset_ratio must be an integer >= 1"):
            numbered_env(bad)


def test_optimistic_starts_are_fresh_draws_of_the_reset_distribution():
    """Every step all 8 episodes end (ratio 4: 2 starts per step). Over 64 steps the starts
    are 128 distinct draws from the reset keys, each taken by 4 environments, and each step's
    two starts are those the plain reset gives environments 0 and 1 with the same keys: the
    starts come from the reset distribution, never from an environment's own history."""
    num_envs, steps = 8, 64
    env, plain_env = numbered_env(4, limit=1), numbered_env(1, limit=1)  # every step truncates

    def run(env):
        def body(state, key):
            state, _ = batch_step(env, state, jnp.zeros(num_envs, jnp.int32), key)
            return state, state.inner["start"]
        key = jax.random.PRNGKey(1)
        state = batch_reset(env, key, num_envs)
        return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    starts = np.asarray(jax.jit(lambda: run(env))())
    plain = np.asarray(jax.jit(lambda: run(plain_env))())
    np.testing.assert_array_equal(starts[:, 0::2], np.repeat(plain[:, :1], 4, 1))
    np.testing.assert_array_equal(starts[:, 1::2], np.repeat(plain[:, 1:2], 4, 1))
    assert len(np.unique(starts)) == 2 * steps


def test_batch_step_keys_is_batch_step_with_the_split_key():
    env = numbered_env(2)
    key = jax.random.PRNGKey(2)
    state = batch_reset(env, key, 4)
    actions = jnp.array([1, 0, 1, 1], jnp.int32)
    assert leaves_equal(batch_step(env, state, actions, key),
                        batch_step_keys(env, state, actions, jax.random.split(key, 4)))


def test_craftax_resets_optimistically_by_default():
    assert envs.make("craftax/Craftax-Classic-Symbolic-v1").reset_ratio == \
        craftax_env.RESET_RATIO == 16
    assert envs.make("craftax/Craftax-Classic-Symbolic-v1", reset_ratio=1).reset_ratio == 1
    with pytest.raises(ValueError, match="reset_ratio"):
        envs.make("craftax/Craftax-Classic-Symbolic-v1", reset_ratio=0)


@pytest.mark.slow
def test_craftax_optimistic_reset_gives_fresh_worlds():
    """Craftax, 3 environments, ratio 2, time limit 2: after the second step every episode
    ends; environments 0 and 2 take the world generated from environment 0's reset key, 1 the
    one from environment 1's, exactly the worlds the plain reset gives environments 0 and 1."""
    limit = 2
    env = craftax_env.make("Craftax-Classic-Symbolic-v1", max_episode_steps=limit,
                           reset_ratio=2)
    plain_env = craftax_env.make("Craftax-Classic-Symbolic-v1", max_episode_steps=limit,
                                 reset_ratio=1)

    @jax.jit
    def run(key):
        state = batch_reset(env, key, NUM_ENVS)
        actions = jnp.zeros(NUM_ENVS, jnp.int32)
        state, _ = batch_step(env, state, actions, key)
        optimistic = batch_step(env, state, actions, key)
        plain = batch_step(plain_env, state, actions, key)
        return optimistic, plain

    (ostate, ots), (pstate, pts) = jax.tree_util.tree_map(np.asarray, run(jax.random.PRNGKey(4)))
    assert ots.truncated.all() and (ots.episode_length == limit).all()
    assert leaves_equal(ots.next_obs, pts.next_obs)
    assert leaves_equal(ots.episode_metrics, pts.episode_metrics)
    assert leaves_equal(ostate, take(pstate, np.array([0, 1, 0])))
    assert (ostate.inner.timestep == 0).all()


@pytest.mark.slow
def test_classic_observation_groups_match_the_rendered_observation():
    """``observation_groups`` against craftax's classic renderer: one block type per map cell,
    one direction, and the inventory, status, direction and sleep entries where a changed
    state puts them."""
    from craftax.craftax_classic.renderer import render_craftax_symbolic

    groups = craftax_env.observation_groups("Craftax-Classic-Symbolic-v1")
    assert craftax_env.observation_groups("Craftax-Symbolic-v1") is None
    index = np.concatenate(list(groups.values()))
    np.testing.assert_array_equal(np.sort(index), np.arange(1345))  # a partition
    env = craftax_env.make("Craftax-Classic-Symbolic-v1")
    state = jax.jit(env.reset)(jax.random.PRNGKey(0)).inner
    obs = np.asarray(jax.jit(render_craftax_symbolic)(state))
    np.testing.assert_array_equal(obs[groups["map"]].reshape(63, 17).sum(1), 1.0)
    assert obs[groups["direction"]].sum() == 1.0
    changed = state.replace(inventory=state.inventory.replace(coal=3), player_food=4,
                            player_direction=3, is_sleeping=True)
    obs = np.asarray(jax.jit(render_craftax_symbolic)(changed))
    np.testing.assert_allclose(obs[groups["inventory"]][2], 0.3, rtol=1e-3)
    np.testing.assert_allclose(obs[groups["status"]][1], 0.4, rtol=1e-3)
    np.testing.assert_array_equal(obs[groups["direction"]], [0, 0, 1, 0])
    assert obs[groups["light, sleep"]][1] == 1.0
