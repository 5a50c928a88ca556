"""Updates that skip themselves when their gradients are not finite.

An optimiser step on NaN or infinite gradients would poison the parameters and the optimiser's
moments for good. :func:`guarded_step` applies the step only when the gradients' global norm is
finite and otherwise keeps the parameters and optimiser state as they were. Agents report the
fraction of skipped steps as the metric ``skipped_updates``; the host loop
(:mod:`core.runner`) stops a run in which a seed skipped every update of a chunk, so a lone
overflow costs one update while a diverged run still ends with its last good checkpoint.
"""

from __future__ import annotations

from typing import Any, Tuple

import jax
import jax.numpy as jnp
import optax


def guarded_step(opt: optax.GradientTransformation, grads: Any, opt_state: Any,
                 params: Any) -> Tuple[Any, Any, jax.Array, jax.Array]:
    """``(params, opt_state, finite, grad_norm)`` after one step of ``opt``.

    ``finite`` () bool: the step was applied; when False, ``params`` and ``opt_state`` are the
    inputs unchanged. ``grad_norm`` () is the gradients' global norm (0 when not finite, so
    that the logged mean stays finite).
    """
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(grad_norm)
    step, new_opt_state = opt.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, step)
    params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                     (new_params, new_opt_state), (params, opt_state))
    return params, opt_state, finite, jnp.where(finite, grad_norm, 0.0)


def skipped(*finite: jax.Array) -> jax.Array:
    """The ``skipped_updates`` metric of one update made of several guarded steps: 1.0 when any
    of them was skipped."""
    ok = jnp.all(jnp.stack([jnp.asarray(f, bool) for f in finite]))
    return 1.0 - ok.astype(jnp.float32)


__all__ = ["guarded_step", "skipped"]
