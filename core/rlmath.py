"""RL maths shared by the agent families: value transforms, two-hot targets, multi-step returns.

Written for one example / one sequence (time-major ``[T]``); callers vmap over batches.

* ``symlog(x) = sign(x) log(1 + |x|)`` and its inverse ``symexp`` (DreamerV3).
* ``signed_hyperbolic(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x`` and its exact inverse
  ``signed_parabolic`` (MuZero's value/reward transform h and h^-1; rlax's pair).
* ``two_hot(x, support)``: the distribution on the two support points around ``x`` whose mean
  is ``x`` (for ``x`` inside the support's range), and ``expectation(logits, support)``.
* ``Support(size, max_value, transform, spacing)``: a categorical head for a scalar, bins evenly
  spaced over ``[-max_value, max_value]`` in the transformed space (``spacing="symexp"``: at
  ``symexp`` of evenly spaced points instead); ``encode(x) = two_hot(T(x))``,
  ``decode(l) = T^-1(softmax(l) @ bins)``, ``cross_entropy(l, x) = -encode(x) . log_softmax(l)``.
  MuZero uses ``T = signed_hyperbolic``; DreamerV3 ``T = identity`` with 255 bins at
  ``symexp(linspace(-20, 20))`` (two-hot in raw space; the 2023 code: ``T = symlog``, even bins).
* ``Moments``: running per-element mean and variance (``moments_update``), and
  ``standardise`` / ``unstandardise`` by them (Dreamer's ``obs_norm``).
* ``lambda_returns`` and ``n_step_returns`` with rlax's indexing: ``v_t`` is the value of the
  state reached AFTER step ``t``, ``d_t`` the discount applied after step ``t`` (0 at a terminal).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array


def symlog(x: Array) -> Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: Array) -> Array:
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def signed_hyperbolic(x: Array, eps: float = 1e-3) -> Array:
    """``h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x``."""
    return jnp.sign(x) * (jnp.sqrt(jnp.abs(x) + 1.0) - 1.0) + eps * x


def signed_parabolic(x: Array, eps: float = 1e-3) -> Array:
    """The exact inverse of :func:`signed_hyperbolic`:

    ``h^-1(y) = sign(y) (((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1)``.
    """
    z = jnp.sqrt(1.0 + 4.0 * eps * (jnp.abs(x) + 1.0 + eps))
    return jnp.sign(x) * (jnp.square((z - 1.0) / (2.0 * eps)) - 1.0)


def two_hot(x: Array, support: Array) -> Array:
    """Two-hot encoding of ``x [...]`` on an increasing ``support [N]`` -> ``[..., N]``.

    With ``support[i] <= x <= support[i+1]`` the weights are
    ``w_{i+1} = (x - support[i]) / (support[i+1] - support[i])`` and ``w_i = 1 - w_{i+1}``, so
    ``two_hot(x) @ support == x``. ``x`` outside the range is clipped to its ends.
    """
    chex.assert_rank(support, 1)
    n = support.shape[0]
    x = jnp.clip(x, support[0], support[-1])
    upper = jnp.clip(jnp.searchsorted(support, x, side="right"), 1, n - 1)
    lower = upper - 1
    lo, hi = support[lower], support[upper]
    w_hi = (x - lo) / (hi - lo)
    return (jax.nn.one_hot(lower, n) * (1.0 - w_hi)[..., None]
            + jax.nn.one_hot(upper, n) * w_hi[..., None])


def expectation(logits: Array, support: Array) -> Array:
    """``softmax(logits) @ support``: the mean of a categorical over ``support [N]``."""
    return jax.nn.softmax(logits, axis=-1) @ support


TRANSFORMS: Dict[str, Tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "symlog": (symlog, symexp),
    "signed_hyperbolic": (signed_hyperbolic, signed_parabolic),
    "identity": (lambda x: x, lambda x: x),
}


@dataclasses.dataclass(frozen=True)
class Support:
    """A categorical head for a scalar: ``size`` bins evenly spaced over
    ``[-max_value, max_value]`` in the space of ``transform`` (a key of :data:`TRANSFORMS`).

    ``spacing="symexp"`` places the bins at ``symexp`` of those points instead (an odd ``size``;
    built mirrored around an exact 0, and decoded as ``sum_i (p(+b_i) - p(-b_i)) b_i``, so that
    uniform logits decode to exactly 0 also under jit: DreamerV3's ``symexp_twohot``).

    ``encode``: scalar ``[...]`` -> probabilities ``[..., size]``; ``decode``: logits
    ``[..., size]`` -> scalar ``[...]``, with ``decode(log(encode(x))) = x`` for
    ``|T(x)| <= max_value``; ``cross_entropy(logits [..., size], x [...]) -> [...]``;
    ``clipped(x)``: where ``x`` is beyond the support (``encode`` clips it).
    Hashable, so it can be a static field of a jitted model.
    """

    size: int
    max_value: float
    transform: str
    spacing: str = "linear"

    def __post_init__(self):
        if self.size < 2:
            raise ValueError(f"Support.size must be >= 2 (a categorical support needs two bins), "
                             f"got {self.size}")
        if not self.max_value > 0:
            raise ValueError(f"Support.max_value must be > 0, got {self.max_value}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"Support.transform must be one of {tuple(TRANSFORMS)}, got "
                             f"{self.transform!r}")
        if self.spacing not in ("linear", "symexp"):
            raise ValueError(f"Support.spacing must be 'linear' or 'symexp', got {self.spacing!r}")
        if self.spacing == "symexp" and self.size % 2 == 0:
            raise ValueError(f"Support.size must be odd with spacing='symexp', got {self.size}")

    @property
    def points(self) -> Array:
        """The bin centres ``[size]`` in the transformed space."""
        if self.spacing == "linear":
            return jnp.linspace(-self.max_value, self.max_value, self.size)
        half = symexp(jnp.linspace(-self.max_value, 0.0, (self.size + 1) // 2))
        return jnp.concatenate([half, -half[:-1][::-1]])

    def encode(self, x: Array) -> Array:
        forward, _ = TRANSFORMS[self.transform]
        return two_hot(forward(x), self.points)

    def decode(self, logits: Array) -> Array:
        _, inverse = TRANSFORMS[self.transform]
        if self.spacing == "linear":
            return inverse(expectation(logits, self.points))
        m = self.size // 2
        probs = jax.nn.softmax(logits, axis=-1)
        mirrored = probs[..., m + 1:] - probs[..., :m][..., ::-1]  # bins +b_i minus -b_i
        return inverse(mirrored @ self.points[m + 1:])

    def cross_entropy(self, logits: Array, x: Array) -> Array:
        return -jnp.sum(self.encode(x) * jax.nn.log_softmax(logits, axis=-1), axis=-1)

    def clipped(self, x: Array) -> Array:
        """``[...]`` bool: where ``x`` lies beyond the outermost bins, so that :meth:`encode`
        clips it (the head cannot represent it: the support is too narrow for the task)."""
        forward, _ = TRANSFORMS[self.transform]
        points = self.points
        t = forward(x)
        return (t > points[-1]) | (t < points[0])


def lambda_returns(rewards: Array, discounts: Array, values: Array, lambda_: float) -> Array:
    """``G_t = r_t + d_t ((1 - λ) v_t + λ G_{t+1})`` with ``G_{T-1} = r_{T-1} + d_{T-1} v_{T-1}``.

    Args: ``rewards, discounts, values`` of shape ``[T]`` (``values[t]`` = value after step t).
    """
    chex.assert_rank([rewards, discounts, values], 1)
    chex.assert_equal_shape([rewards, discounts, values])

    def body(g_next, inputs):
        r, d, v, last = inputs
        g = r + d * jnp.where(last, v, (1.0 - lambda_) * v + lambda_ * g_next)
        return g, g

    last = jnp.arange(rewards.shape[0]) == rewards.shape[0] - 1
    _, out = jax.lax.scan(body, values[-1], (rewards, discounts, values, last), reverse=True)
    return out


def n_step_returns(rewards: Array, discounts: Array, values: Array, n: int) -> Array:
    """``G_t = sum_{i<m} (prod_{j<i} d_{t+j}) r_{t+i} + (prod_{j<m} d_{t+j}) v_{t+m-1}``.

    ``m = min(n, T - t)``: returns near the end of the sequence bootstrap on its last value.
    Same indexing as :func:`lambda_returns` (``values[t]`` = value after step t).
    """
    chex.assert_rank([rewards, discounts, values], 1)
    chex.assert_equal_shape([rewards, discounts, values])
    if n < 1:
        raise ValueError(f"n_step_returns needs n >= 1, got {n}")
    t_len = rewards.shape[0]
    idx = jnp.arange(t_len)

    def one(t):
        steps = t + jnp.arange(n)
        valid = steps < t_len
        safe = jnp.minimum(steps, t_len - 1)
        d = jnp.where(valid, discounts[safe], 1.0)
        r = jnp.where(valid, rewards[safe], 0.0)
        before = jnp.cumprod(jnp.concatenate([jnp.ones(1), d[:-1]]))
        last = jnp.minimum(t + n, t_len) - 1
        return (before * r).sum() + jnp.prod(d) * values[last]

    return jax.vmap(one)(idx)


@struct.dataclass
class Moments:
    """Running per-element mean and variance of a stream of arrays of one shape (Chan et al.'s
    parallel merge of counts, means and sums of squared deviations); ``count`` is a float."""

    count: Array
    mean: Array
    m2: Array


def moments_init(shape) -> Moments:
    """No data yet: :func:`standardise` is then the identity."""
    zeros = jnp.zeros(tuple(shape), jnp.float32)
    return Moments(count=jnp.zeros((), jnp.float32), mean=zeros, m2=zeros)


def moments_update(moments: Moments, x: Array) -> Moments:
    """``moments`` merged with the samples ``x [N, *shape]``."""
    x = x.astype(jnp.float32)
    n = jnp.asarray(x.shape[0], jnp.float32)
    batch_mean = x.mean(0)
    batch_m2 = jnp.square(x - batch_mean).sum(0)
    total = moments.count + n
    delta = batch_mean - moments.mean
    return Moments(count=total, mean=moments.mean + delta * n / total,
                   m2=moments.m2 + batch_m2 + jnp.square(delta) * moments.count * n / total)


def moments_std(moments: Moments, floor: float) -> Array:
    """Per-element standard deviation, at least ``floor`` (1 before any data)."""
    var = moments.m2 / jnp.maximum(moments.count, 1.0)
    return jnp.where(moments.count > 0, jnp.maximum(jnp.sqrt(var), floor), 1.0)


def standardise(moments: Moments, x: Array, floor: float) -> Array:
    """``(x - mean) / max(std, floor)`` per element over ``x``'s trailing axes; the identity
    before any data."""
    return (x.astype(jnp.float32) - moments.mean) / moments_std(moments, floor)


def unstandardise(moments: Moments, z: Array, floor: float) -> Array:
    """The inverse of :func:`standardise`."""
    return z * moments_std(moments, floor) + moments.mean
