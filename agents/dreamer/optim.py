"""DreamerV3 optimisers as optax chains.

* ``laprop`` (2024): adaptive gradient clipping per parameter tensor
  (``g <- g / max(1, ||g|| / (0.3 max(||w||, 1e-3)))``, norms over the whole tensor), then
  RMS scaling ``g / sqrt(nu_hat)`` (decay 0.999, eps 1e-20 outside the root, bias corrected),
  then momentum (debiased EMA, 0.9) of the *normalised* gradient -- LaProp's order, which
  differs from Adam's (momentum first) -- and a learning rate with linear warm-up.
* ``adam`` (2023): global-norm clipping, then Adam.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate(lr: float, warmup: int) -> optax.Schedule:
    """``lr * min(1, step / warmup)`` (constant ``lr`` when ``warmup == 0``)."""
    if warmup <= 0:
        return optax.constant_schedule(lr)
    return optax.linear_schedule(0.0, lr, warmup)


def clip_by_agc(clip: float = 0.3, pmin: float = 1e-3) -> optax.GradientTransformation:
    """Adaptive gradient clipping of each parameter tensor as a whole (the official
    ``embodied/jax/opt.py`` ``clip_by_agc``; optax's ``adaptive_grad_clip`` is unit-wise)."""

    def update(updates, state, params=None):
        def one(g, w):
            upper = clip * jnp.maximum(pmin, jnp.linalg.norm(w.ravel()))
            return g / jnp.maximum(1.0, jnp.linalg.norm(g.ravel()) / upper)
        return jax.tree_util.tree_map(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(kind: str, *, lr: float, warmup: int = 0, agc: float = 0.3,
                   eps: float = 1e-20, clip: float = 0.0) -> optax.GradientTransformation:
    """The optimiser of one parameter group (world model, actor or critic)."""
    schedule = learning_rate(lr, warmup)
    if kind == "laprop":
        parts = [clip_by_agc(agc)] if agc > 0 else []
        parts += [optax.scale_by_rms(decay=0.999, eps=eps, eps_in_sqrt=False,
                                     bias_correction=True),
                  optax.ema(0.9, debias=True),
                  optax.scale_by_learning_rate(schedule)]
        return optax.chain(*parts)
    if kind == "adam":
        parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
        return optax.chain(*parts, optax.adam(schedule, eps=eps))
    raise ValueError(f"optimizer must be 'laprop' or 'adam', got {kind!r}")
