"""Updates with non-finite gradients are skipped: parameters and optimiser state kept, counted
as ``skipped_updates``, in every agent's update."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents import sac
from core import guard, runner


def test_guarded_step_applies_finite_and_skips_non_finite_gradients():
    opt = optax.adam(0.1)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    new, new_state, ok, norm = guard.guarded_step(opt, {"w": jnp.ones(3)}, state, params)
    assert bool(ok) and float(norm) == np.float32(np.sqrt(3.0))
    assert not runner.tree_allclose(new, params) and int(new_state[0].count) == 1
    kept, kept_state, ok, norm = guard.guarded_step(
        opt, {"w": jnp.array([1.0, jnp.nan, 1.0])}, state, params)
    assert not bool(ok) and float(norm) == 0.0
    assert runner.tree_allclose(kept, params) and runner.tree_allclose(kept_state, state)
    assert float(guard.skipped(True, True)) == 0.0 and float(guard.skipped(True, False)) == 1.0


def test_sac_skips_a_step_on_a_nan_reward():
    cfg = dataclasses.replace(sac.PRESETS["tiny"])
    learner = sac.make_learner(cfg, obs_shape=(3,), action_low=(-2.0,), action_high=(2.0,))
    state = learner.init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    batch = sac.Batch(obs=jax.random.normal(keys[0], (8, 3)),
                      action=jax.random.uniform(keys[1], (8, 1), minval=-2.0, maxval=2.0),
                      reward=jnp.full((8,), jnp.nan), next_obs=jax.random.normal(keys[2], (8, 3)),
                      terminated=jnp.zeros((8,), bool))
    new, metrics = jax.jit(learner.update)(state, batch, keys[3])
    assert float(metrics["skipped_updates"]) == 1.0
    assert runner.tree_allclose(new.critic_params, state.critic_params)
    assert runner.tree_allclose(new.critic_opt_state, state.critic_opt_state)
    finite = batch.replace(reward=jnp.zeros((8,)))
    _, metrics = jax.jit(learner.update)(state, finite, keys[3])
    assert float(metrics["skipped_updates"]) == 0.0
