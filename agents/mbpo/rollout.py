"""Branched model rollouts (MBPO): ``k`` policy steps in the ensemble from real start states.

From ``B`` start states ``s_0`` sampled from real replay, each step draws ``a_t ~ pi(.|s_t)``
and one prediction of a random elite member ``i ~ U(elites)`` per example,

    s_{t+1} = mu_i(s_t, a_t) + sigma_i(s_t, a_t) z,   r_t likewise,   z ~ N(0, I),

for a static ``L = max rollout length`` steps. Step ``t`` of example ``b`` is kept when
``t < length`` (the scheduled length, traced) and the rollout is still alive (no earlier
terminal transition): ``valid[t, b] = (t < length) & alive[t, b]``. Shapes never depend on
``length``, so the whole rollout is one ``lax.scan`` and lengths can change during training.

Termination of model transitions: ``"none"`` never, ``"learned"`` the chosen member's
termination head (``P > 0.5``), ``"known"`` the environment's ``termination_fn``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from world_models import ensemble

Array = jax.Array


class Rollouts(NamedTuple):
    """Model transitions, leaves ``[L, B, ...]``, with their validity mask."""

    obs: Array  # [L, B, d_s]
    action: Array  # [L, B, d_a]
    reward: Array  # [L, B]
    next_obs: Array  # [L, B, d_s]
    terminated: Array  # [L, B] bool
    valid: Array  # [L, B] bool


def model_step(model: ensemble.EnsembleState, obs: Array, action: Array, key: Array,
               termination: str, done_fn=None, reward_fn=None):
    """One sampled transition of one example from a random elite.

    Returns ``(next_obs [d_s], reward (), terminated () bool)``. All members are evaluated (one
    batched matmul per layer, no per-example parameter gather) and the chosen one is selected.
    """
    chex.assert_rank([obs, action], 1)
    member_key, obs_key, reward_key = jax.random.split(key, 3)
    member = model.elites[jax.random.randint(member_key, (), 0, model.elites.shape[0])]
    pred = ensemble.predict_all(model, obs, action)
    next_obs = pred.next_obs_mean[member] + jnp.sqrt(pred.next_obs_var[member]) * (
        jax.random.normal(obs_key, obs.shape))
    if reward_fn is not None:
        reward = reward_fn(obs, action, next_obs)
    else:
        reward = pred.reward_mean[member] + jnp.sqrt(pred.reward_var[member]) * (
            jax.random.normal(reward_key, ()))
    if termination == "learned":
        terminated = ensemble.termination_prob(model, member, obs, action) > 0.5
    elif termination == "known":
        terminated = done_fn(obs, action, next_obs)
    else:
        terminated = jnp.zeros((), bool)
    return next_obs, reward, terminated


def branched_rollouts(model: ensemble.EnsembleState, policy: Callable[[Array, Array], Array],
                      start_obs: Array, length: Array, key: Array, *, max_length: int,
                      termination: str, done_fn=None, reward_fn: Optional[Callable] = None
                      ) -> Rollouts:
    """Rollouts of ``policy(obs [B, d_s], key) -> action [B, d_a]`` from ``start_obs [B, d_s]``.

    ``length`` (traced int, ``1 <= length <= max_length``) is the number of steps kept.
    """
    chex.assert_rank(start_obs, 2)
    batch = start_obs.shape[0]
    step_fn = jax.vmap(lambda s, a, k: model_step(model, s, a, k, termination, done_fn,
                                                  reward_fn))

    def step(carry, t):
        obs, alive, k = carry
        k, act_key, model_key = jax.random.split(k, 3)
        action = policy(obs, act_key)
        next_obs, reward, terminated = step_fn(obs, action, jax.random.split(model_key, batch))
        valid = alive & (t < length)
        out = Rollouts(obs=obs, action=action, reward=reward, next_obs=next_obs,
                       terminated=terminated, valid=valid)
        # A non-finite prediction ends the rollout too (it would poison SAC's targets).
        finite = jnp.all(jnp.isfinite(next_obs), axis=-1) & jnp.isfinite(reward)
        out = out._replace(valid=valid & finite)
        next_obs = jnp.where(finite[:, None], next_obs, obs)
        return (next_obs, alive & ~terminated & finite, k), out

    init = (start_obs.astype(jnp.float32), jnp.ones((batch,), bool), key)
    _, rollouts = jax.lax.scan(step, init, jnp.arange(max_length))
    return rollouts
