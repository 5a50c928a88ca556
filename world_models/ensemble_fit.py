"""Training of the probabilistic ensemble of :mod:`world_models.ensemble` (jittable, fixed shapes).

Data come from a fixed-size replay buffer: ``B`` rows and a 0/1 validity mask ``[B]``. Masked
rows are replaced by zeros before anything touches them, so garbage (even NaN) cannot leak in.
With ``n`` valid rows, one :func:`fit` call

1. splits the valid rows at random into ``n_h = min(⌊f n⌋, max_holdout)`` held-out rows and
   ``n_t = n - n_h`` training rows (a random order with the valid rows first, by key);
2. fits the :class:`~world_models.ensemble.Normaliser` on the training rows;
3. draws, per member, a bootstrap resample of the training rows (``n_t`` draws with
   replacement), and trains all members at once (one ``vmap``-ed step) on batches of that
   resample, minimising the Gaussian NLL per member

       L_i = mean_b mean_j ½[(m_bj - ỹ_bj)² e^{-ℓ_bj} + ℓ_bj + log 2π]
             + w Σ_j (ℓ_max,j - ℓ_min,j)  (+ mean_b BCE(logit_b, terminated_b))

   (targets normalised, ``w = logvar_bound_weight``) with L2 decay on the weights; a member's
   step whose gradients are not finite is skipped (:func:`core.guard.guarded_step`);
4. every ``eval_every`` steps evaluates each member's holdout MSE (normalised units, mean over
   target columns) and keeps, per member, the parameters with the lowest one so far. A member
   that has not improved by a relative ``min_improvement`` for ``patience`` evaluations stops
   training; the ``lax.while_loop`` over evaluation blocks ends when all have stopped or after
   ``train_steps`` steps (early stopping without Python control flow on traced values);
5. returns the best parameters of each member and, as elites, the ``num_elites`` members with
   the lowest holdout MSE. Without held-out rows (tiny data) the training rows are evaluated.

The optimiser state carries over between calls; the normaliser is refitted on every call.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from core.guard import guarded_step
from core.types import Metrics, Transition
from world_models.ensemble import EnsembleState, Normaliser, forward, optimizer

Array = jax.Array
_LOG_2PI = math.log(2.0 * math.pi)


def member_loss(member_params, config, inputs: Array, targets: Array, terminated: Array):
    """Loss of one member on a batch: inputs ``[b, d_in]``, targets ``[b, d_out]`` (normalised),
    terminated ``[b]``. Returns ``(loss, gaussian_nll)`` (see the module doc)."""
    mean, logvar, logit = jax.vmap(forward, in_axes=(None, None, 0))(config, member_params, inputs)
    nll = 0.5 * jnp.mean((mean - targets) ** 2 * jnp.exp(-logvar) + logvar + _LOG_2PI)
    bounds = jnp.sum(member_params["max_logvar"]) - jnp.sum(member_params["min_logvar"])
    loss = nll + config.logvar_bound_weight * bounds
    if config.predict_termination:
        loss = loss + jnp.mean(optax.sigmoid_binary_cross_entropy(logit, terminated))
    return loss, nll


def member_mse(member_params, config, inputs: Array, targets: Array, weights: Array) -> Array:
    """Weighted MSE of one member's mean, ``Σ_b w_b mean_j (m_bj - ỹ_bj)² / Σ_b w_b``."""
    mean, _, _ = jax.vmap(forward, in_axes=(None, None, 0))(config, member_params, inputs)
    per_row = jnp.mean((mean - targets) ** 2, axis=-1)
    return jnp.sum(weights * per_row) / jnp.maximum(jnp.sum(weights), 1.0)


def _split(valid: Array, key: Array, config):
    """Random holdout split of the valid rows; returns order [B] (valid first), counts, rows."""
    num_rows = valid.shape[0]
    num_valid = jnp.sum(valid).astype(jnp.int32)
    num_holdout = jnp.minimum(jnp.floor(config.holdout_fraction * num_valid).astype(jnp.int32),
                              config.max_holdout)
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(key, (num_rows,)), 2.0))
    rank = jnp.zeros((num_rows,), jnp.int32).at[order].set(jnp.arange(num_rows, dtype=jnp.int32))
    holdout_row = valid & (rank < num_holdout)
    return order, num_valid, num_holdout, holdout_row, valid & ~holdout_row


def _fit_normaliser(inputs: Array, targets: Array, weights: Array) -> Normaliser:
    def stats(x):
        total = jnp.maximum(jnp.sum(weights), 1.0)
        mean = jnp.sum(weights[:, None] * x, axis=0) / total
        std = jnp.sqrt(jnp.sum(weights[:, None] * (x - mean) ** 2, axis=0) / total)
        return mean, jnp.where(std < 1e-6, 1.0, std)

    return Normaliser(*stats(inputs), *stats(targets))


def _where_member(flag: Array, new, old):
    """Per-member select over pytrees whose leaves have a leading member axis."""
    pick = lambda n, o: jnp.where(flag.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
    return jax.tree.map(pick, new, old)


def fit(state: EnsembleState, obs: Array, actions: Array, next_obs: Array, rewards: Array,
        mask: Array, key: Array, *, terminated: Optional[Array] = None
        ) -> Tuple[EnsembleState, Metrics]:
    """Trains the ensemble on the valid rows of a fixed-size data set (see the module doc).

    Args:
      state: the ensemble (its ``config`` is static, so ``jax.jit(fit)`` works as is).
      obs: ``[B, d_s]``; actions: ``[B, d_a]`` (one-hot discrete actions first);
      next_obs: ``[B, d_s]``; rewards: ``[B]``; mask: ``[B]`` 0/1 validity.
      key: PRNG key (split, bootstrap and batches).
      terminated: ``[B]`` bool, required when the config predicts termination.
    Returns:
      ``(state, metrics)`` with ``train_nll`` (mean Gaussian NLL per target column over the
      steps taken, normalised units), ``holdout_mse [N]`` (each member's best),
      ``holdout_mse_mean``, ``elite_holdout_mse``, ``train_steps [N]`` (steps each member took),
      ``num_train``, ``num_holdout``, ``holdout_mask [B]`` and ``skipped_updates`` (the
      fraction of member steps skipped for non-finite gradients).
    """
    config = state.config
    num_rows, num_members = obs.shape[0], config.num_members
    chex.assert_shape([obs, next_obs], (num_rows, state.obs_size))
    chex.assert_shape(actions, (num_rows, state.action_size))
    chex.assert_shape([rewards, mask], (num_rows,))
    if config.predict_termination and terminated is None:
        raise ValueError("fit needs `terminated` when EnsembleConfig.predict_termination=True.")
    valid = mask > 0
    clean = lambda x: jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0).astype(
        jnp.float32)
    obs, actions, next_obs, rewards = clean(obs), clean(actions), clean(next_obs), clean(rewards)
    term = clean(terminated) if terminated is not None else jnp.zeros((num_rows,), jnp.float32)
    split_key, boot_key, loop_key = jax.random.split(key, 3)

    order, num_valid, num_holdout, holdout_row, train_row = _split(valid, split_key, config)
    num_train = num_valid - num_holdout
    inputs = jnp.concatenate([obs, actions], axis=1)
    targets = jnp.concatenate([next_obs - obs] + ([rewards[:, None]] if config.predict_reward
                                                  else []), axis=1)
    norm = _fit_normaliser(inputs, targets, train_row.astype(jnp.float32))
    x = (inputs - norm.input_mean) / norm.input_std  # [B, d_in]
    y = (targets - norm.target_mean) / norm.target_std  # [B, d_out]

    # Evaluation rows: the first num_eval of `order` (held out, or all valid rows if none are).
    eval_size = min(config.max_holdout, num_rows)
    eval_idx = order[:eval_size]
    num_eval = jnp.where(num_holdout > 0, num_holdout, num_valid)
    eval_w = (jnp.arange(eval_size) < num_eval).astype(jnp.float32)
    eval_x, eval_y = x[eval_idx], y[eval_idx]
    holdout_mse = jax.vmap(member_mse, in_axes=(0, None, None, None, None))
    holdout_mse_of = lambda params: holdout_mse(params, config, eval_x, eval_y, eval_w)

    # Bootstrap: member i trains on rows order[num_holdout + boot[i, :num_train]].
    max_train = jnp.maximum(num_train, 1)
    boot = num_holdout + jax.random.randint(boot_key, (num_members, num_rows), 0, max_train)
    tx = optimizer(config)

    def member_update(params, opt_state, xb, yb, tb, active):
        (_, nll), grads = jax.value_and_grad(member_loss, has_aux=True)(params, config, xb, yb, tb)
        new_params, new_opt_state, finite, _ = guarded_step(tx, grads, opt_state, params)
        keep = lambda new, old: jnp.where(active, new, old)
        return (jax.tree.map(keep, new_params, params),
                jax.tree.map(keep, new_opt_state, opt_state), nll, active & ~finite)

    def block(carry):
        params, opt_state, best, best_mse, since, blocks, nll_sum, steps, skips = carry
        active = since < config.patience  # [N]

        def step(inner, step_key):
            params, opt_state = inner
            positions = jax.random.randint(step_key, (num_members, config.batch_size), 0,
                                           max_train)
            rows = order[jnp.take_along_axis(boot, positions, axis=1)]  # [N, batch]
            params, opt_state, nll, skip = jax.vmap(member_update)(
                params, opt_state, x[rows], y[rows], term[rows], active)
            return (params, opt_state), (nll, skip)

        block_key = jax.random.fold_in(loop_key, blocks)
        (params, opt_state), (nll, skip) = jax.lax.scan(
            step, (params, opt_state), jax.random.split(block_key, config.eval_every))
        mse = holdout_mse_of(params)
        improved = active & (mse < best_mse * (1.0 - config.min_improvement))
        since = jnp.where(improved, 0, since + active.astype(jnp.int32))
        return (params, opt_state, _where_member(improved, params, best),
                jnp.where(improved, mse, best_mse), since, blocks + 1,
                nll_sum + jnp.sum(nll, axis=0) * active, steps + config.eval_every * active,
                skips + jnp.sum(skip, axis=0))

    num_blocks = config.train_steps // config.eval_every
    cond = lambda carry: (carry[5] < num_blocks) & jnp.any(carry[4] < config.patience)
    since0 = jnp.where(num_train > 0, 0, config.patience) * jnp.ones((num_members,), jnp.int32)
    zeros = jnp.zeros((num_members,), jnp.float32)
    carry = (state.params, state.opt_state, state.params, holdout_mse_of(state.params), since0,
             jnp.zeros((), jnp.int32), zeros, jnp.zeros((num_members,), jnp.int32),
             jnp.zeros((num_members,), jnp.int32))
    _, opt_state, best, best_mse, _, _, nll_sum, steps, skips = jax.lax.while_loop(
        cond, block, carry)

    elites = jnp.argsort(best_mse)[:config.num_elites].astype(jnp.int32)
    metrics = {
        "train_nll": jnp.sum(nll_sum) / jnp.maximum(jnp.sum(steps), 1),
        "holdout_mse": best_mse, "holdout_mse_mean": jnp.mean(best_mse),
        "elite_holdout_mse": jnp.mean(best_mse[elites]), "train_steps": steps,
        "skipped_updates": jnp.sum(skips) / jnp.maximum(jnp.sum(steps), 1),
        "num_train": num_train, "num_holdout": num_holdout, "holdout_mask": holdout_row,
    }
    return state.replace(params=best, opt_state=opt_state, normaliser=norm,
                         elites=elites), metrics


def fit_transitions(state: EnsembleState, transitions: Transition, mask: Array,
                    key: Array) -> Tuple[EnsembleState, Metrics]:
    """:func:`fit` on flattened replay rows, e.g. ``core.replay.all_steps(buffer_state)``.

    Observations are flattened to ``[B, d_s]``; integer (discrete) actions are one-hot encoded
    with ``state.action_size`` classes, other actions flattened to ``[B, d_a]``.
    """
    num_rows = mask.shape[0]
    action = transitions.action
    if jnp.issubdtype(action.dtype, jnp.integer):
        action = jax.nn.one_hot(action.reshape(num_rows), state.action_size)
    flat = lambda a: a.reshape(num_rows, -1)
    return fit(state, flat(transitions.obs), flat(action), flat(transitions.next_obs),
               transitions.reward.reshape(num_rows), mask, key,
               terminated=transitions.terminated if state.config.predict_termination else None)
