"""Closed-form least-squares linear dynamics model ``s' = A s + B a + c + w``, ``w ~ N(0, Σ)``.

With regressor rows ``x_t = [s_t, a_t (, 1)]`` (``p = n + m (+ 1)`` columns), targets
``y_t = s'_t`` and 0/1 sample weights ``w_t``, the ridge least-squares estimate is

    G = Xᵀ W X  [p, p],   H = Xᵀ W Y  [p, n],   Θ = [Â, B̂ (, ĉ)]ᵀ = (G + λ I)⁻¹ H  [p, n]

computed with a Cholesky solve (never an explicit inverse), and the residual covariance is

    Σ̂ = Σ_t w_t r_t r_tᵀ / max(Σ_t w_t - p, 1),   r_t = y_t - Θᵀ x_t.

Identifiability is checked inside jit on the column-normalised Gram matrix
``Ĝ = D G D`` with ``D = diag(G)^(-1/2)`` (so the test is unit-free): the data are *rank
deficient* when ``λ_min(Ĝ) < rank_tol · λ_max(Ĝ)``, e.g. an action that is always zero, an action
that is constant while a bias is fitted, or fewer samples than the ``p`` unknowns. Then, instead
of silently returning garbage, the fit adds the fallback ridge
``λ = max(ridge, fallback_ridge · mean(diag G), 1e-8)``, sets ``rank_deficient`` and records the
offending direction; :func:`check_fit` (host side) turns that into a ValueError that names the
columns and the fix. A fit with an explicit ``ridge > 0`` is an accepted regularised fit.
"""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@struct.dataclass
class LinearModel:
    """A fitted (or given) linear-Gaussian dynamics model with fit diagnostics."""

    A: Array  # [n, n]
    B: Array  # [n, m]
    c: Array  # [n]: bias, zeros unless fitted with fit_bias=True
    noise_cov: Array  # [n, n]: residual covariance Σ̂
    condition_number: Array  # (): λ_max / λ_min of the column-normalised Gram matrix
    rank_deficient: Array  # () bool: λ_min < rank_tol · λ_max (fallback ridge applied)
    ridge: Array  # (): ridge λ the caller asked for
    ridge_used: Array  # (): ridge λ actually added to XᵀWX
    num_samples: Array  # (): Σ_t w_t, the effective number of samples
    column_rms: Array  # [p]: sqrt(diag(G) / Σ w), the size of each regressor column
    null_direction: Array  # [p]: eigenvector of λ_min(Ĝ), shows which columns are dependent
    fit_bias: bool = struct.field(pytree_node=False, default=False)


def from_matrices(A, B, c=None, noise_cov=None) -> LinearModel:
    """A model with given matrices (e.g. a deliberately biased model); diagnostics are neutral."""
    A = jnp.atleast_2d(jnp.asarray(A, jnp.float32))
    B = jnp.asarray(B, jnp.float32).reshape(A.shape[0], -1)
    n, m = B.shape
    p = n + m
    return LinearModel(
        A=A, B=B,
        c=jnp.zeros((n,), jnp.float32) if c is None else jnp.asarray(c, jnp.float32),
        noise_cov=(jnp.zeros((n, n), jnp.float32) if noise_cov is None
                   else jnp.asarray(noise_cov, jnp.float32)),
        condition_number=jnp.ones(()), rank_deficient=jnp.array(False),
        ridge=jnp.zeros(()), ridge_used=jnp.zeros(()), num_samples=jnp.zeros(()),
        column_rms=jnp.ones((p,)), null_direction=jnp.zeros((p,)))


def _regressors(states, actions, fit_bias):
    columns = [states, actions]
    if fit_bias:
        columns.append(jnp.ones((states.shape[0], 1), states.dtype))
    return jnp.concatenate(columns, axis=1)


def design_matrices(states: Array, actions: Array, next_states: Array,
                    weights: Optional[Array] = None, *, fit_bias: bool = False):
    """Returns ``(XᵀWX [p, p], XᵀWY [p, n])`` for rows ``x_t = [s_t, a_t (, 1)]``, ``y_t = s'_t``.

    Args:
      states: ``[T, n]``; actions: ``[T, m]``; next_states: ``[T, n]``.
      weights: optional ``[T]`` 0/1 mask (rows with weight 0 are ignored); default all ones.
    """
    chex.assert_rank([states, actions, next_states], 2)
    chex.assert_equal_shape([states, next_states])
    chex.assert_equal_shape_prefix([states, actions], 1)
    states, actions, next_states = (jnp.asarray(x, jnp.float32)
                                    for x in (states, actions, next_states))
    if weights is None:
        weights = jnp.ones(states.shape[:1], jnp.float32)
    chex.assert_shape(weights, states.shape[:1])
    w = jnp.asarray(weights, jnp.float32)
    # where() rather than multiply, so garbage (even NaN) in masked rows cannot leak in.
    x = jnp.where(w[:, None] > 0, _regressors(states, actions, fit_bias), 0.0)
    y = jnp.where(w[:, None] > 0, next_states, 0.0)
    return x.T @ (w[:, None] * x), x.T @ (w[:, None] * y)


def fit(states: Array, actions: Array, next_states: Array, *,
        weights: Optional[Array] = None, ridge: float = 0.0, fit_bias: bool = False,
        rank_tol: float = 1e-5, fallback_ridge: float = 1e-4) -> LinearModel:
    """Ridge least-squares fit of ``s' = A s + B a (+ c)``; jittable (``fit_bias`` static).

    Args:
      states: ``[T, n]``; actions: ``[T, m]``; next_states: ``[T, n]``.
      weights: optional ``[T]`` 0/1 mask, e.g. the filled part of a replay buffer.
      ridge: λ ≥ 0 added to XᵀWX (an explicit, accepted regularisation).
      fit_bias: also fit the bias ``c`` (adds a constant column).
      rank_tol: rank-deficiency threshold on λ_min/λ_max of the normalised Gram matrix.
      fallback_ridge: relative ridge (times mean(diag G)) applied when rank deficient.
    Returns:
      a :class:`LinearModel`; see the module doc for the maths and the fallback.
    """
    gram, xty = design_matrices(states, actions, next_states, weights, fit_bias=fit_bias)
    n, p = states.shape[1], gram.shape[0]
    x = _regressors(jnp.asarray(states, jnp.float32), jnp.asarray(actions, jnp.float32), fit_bias)
    w = jnp.ones(states.shape[:1]) if weights is None else jnp.asarray(weights, jnp.float32)
    num_samples = jnp.sum(w)

    diag = jnp.diagonal(gram)
    scale = jnp.where(diag > 0, jax.lax.rsqrt(jnp.maximum(diag, 1e-30)), 0.0)
    eigvals, eigvecs = jnp.linalg.eigh(scale[:, None] * gram * scale[None, :])
    lam_min, lam_max = jnp.maximum(eigvals[0], 0.0), jnp.maximum(eigvals[-1], 1e-30)
    rank_deficient = lam_min < rank_tol * lam_max
    ridge = jnp.asarray(ridge, jnp.float32)
    fallback = jnp.maximum(jnp.maximum(ridge, fallback_ridge * jnp.mean(diag)), 1e-8)
    ridge_used = jnp.where(rank_deficient, fallback, ridge)

    chol = jax.scipy.linalg.cho_factor(gram + ridge_used * jnp.eye(p), lower=True)
    theta = jax.scipy.linalg.cho_solve(chol, xty)  # [p, n]

    resid = jnp.where(w[:, None] > 0, jnp.asarray(next_states, jnp.float32) - x @ theta, 0.0)
    noise_cov = (resid.T * w) @ resid / jnp.maximum(num_samples - p, 1.0)
    m = actions.shape[1]
    return LinearModel(
        A=theta[:n].T, B=theta[n:n + m].T,
        c=theta[n + m] if fit_bias else jnp.zeros((n,), jnp.float32),
        noise_cov=noise_cov,
        condition_number=jnp.where(lam_min > 0, lam_max / lam_min, jnp.inf),
        rank_deficient=rank_deficient, ridge=ridge, ridge_used=ridge_used,
        num_samples=num_samples,
        column_rms=jnp.sqrt(diag / jnp.maximum(num_samples, 1.0)),
        null_direction=eigvecs[:, 0], fit_bias=fit_bias)


def column_names(model: LinearModel) -> list:
    """Names of the regressor columns: ``s[i]``, ``a[j]`` and ``1 (bias)``."""
    n, m = model.B.shape
    return ([f"s[{i}]" for i in range(n)] + [f"a[{j}]" for j in range(m)]
            + (["1 (bias)"] if model.fit_bias else []))


def check_fit(model: LinearModel) -> LinearModel:
    """Host side: raises ValueError when the data could not identify the model.

    A fit is rejected when it was rank deficient and the caller did not ask for a ridge
    (with ``ridge > 0`` the regularised answer is what was asked for). Returns ``model``.
    """
    if np.ndim(model.rank_deficient) != 0:
        raise ValueError("check_fit takes one model; index a vmapped ensemble member first.")
    if not bool(model.rank_deficient) or float(model.ridge) > 0:
        return model
    names = column_names(model)
    p, count = len(names), float(model.num_samples)
    rms, null = np.asarray(model.column_rms), np.abs(np.asarray(model.null_direction))
    problems = []
    if count < p:
        problems.append(f"only {count:g} samples for {p} unknowns per state dimension "
                        f"(columns {', '.join(names)})")
    zero = [nm for nm, r in zip(names, rms) if r < 1e-6 * max(rms.max(), 1e-30)]
    if zero:
        problems.append(f"column(s) {', '.join(zero)} are zero in every sample"
                        + (" (the action is constant zero)" if any(z[0] == "a" for z in zero)
                           else ""))
    involved = [nm for nm, v in zip(names, null) if v > 0.1 * null.max()]
    if not zero and count >= p:
        hint = (" (the action is constant, so its effect cannot be told apart from the bias)"
                if model.fit_bias and any(x[0] == "a" for x in involved) else "")
        problems.append(f"columns {', '.join(involved)} are (nearly) linearly dependent{hint}")
    raise ValueError(
        "Linear model fit is rank deficient (condition number of the normalised XᵀX = "
        f"{float(model.condition_number):.3g}): " + "; ".join(problems) + ". A fallback ridge of "
        f"{float(model.ridge_used):.3g} kept the fit finite, but the dependent directions were set "
        "by that ridge, not by the data. Fix: excite the system with varied actions (e.g. random "
        f"actions), collect more data (at least {p} independent samples), or pass ridge>0 to "
        "accept a regularised fit.")


_jit_fit = jax.jit(fit, static_argnames=("fit_bias",))


def fit_checked(states, actions, next_states, **kwargs) -> LinearModel:
    """Jitted :func:`fit` followed by :func:`check_fit` (host side; not for use inside jit)."""
    return check_fit(jax.device_get(_jit_fit(states, actions, next_states, **kwargs)))


def predict(model: LinearModel, state: Array, action: Array) -> Array:
    """Mean next state ``A s + B a + c``, one example: state ``[n]``, action ``[m]`` -> ``[n]``."""
    chex.assert_rank([state, action], 1)
    return model.A @ state + model.B @ action + model.c


def sample(model: LinearModel, state: Array, action: Array, key: Array) -> Array:
    """A next state ``A s + B a + c + Σ̂^(1/2) z``, ``z ~ N(0, I)``, for one example ``[n]``.

    The symmetric square root (via eigh, negative eigenvalues clipped) also handles a singular
    Σ̂, e.g. the zero covariance of a noise-free fit.
    """
    eigvals, eigvecs = jnp.linalg.eigh(model.noise_cov)
    root = (eigvecs * jnp.sqrt(jnp.maximum(eigvals, 0.0))) @ eigvecs.T
    z = jax.random.normal(key, state.shape, jnp.float32)
    return predict(model, state, action) + root @ z
