"""DreamerV3 encoders, decoders and heads (one example; callers vmap), with their losses.

The networks are the official DreamerV3's (``dreamerv3/rssm.py`` ``Encoder`` / ``Decoder``,
``embodied/jax/heads.py``); every hidden layer is Linear (with bias) -> RMSNorm -> SiLU.

* Vector observations: ``MLPEncoder`` embeds ``symlog(obs)``; ``MLPDecoder`` predicts
  ``symlog(obs)`` and is trained with ``||dec - symlog(obs)||^2`` summed over dimensions.
* Image observations ``[H, W, C]`` with a value range ``(low, high)`` (``EnvSpec.obs_range``:
  uint8 frames ``(0, 255)``, MinAtar's 0/1 planes ``(0, 1)``): ``CNNEncoder`` sees the image
  mapped to ``[-0.5, 0.5]``; each stage is a 5x5 stride-1 convolution (with bias), 2x2
  max-pooling, RMSNorm and SiLU, of depths ``depth * (2, 3, 4, 4)``, flattened at the end.
  ``CNNDecoder`` mirrors it: the official ``bspace`` input block (a block-linear map of ``h``
  plus an MLP of ``z``, summed, normalised), then per stage a nearest-neighbour 2x upsampling
  and a 5x5 convolution, and a sigmoid output: the predicted image on ``[0, 1]``, trained with
  the squared error against the image mapped to ``[0, 1]``, summed over pixels and channels.
  :func:`image_stages` picks the stages: the official four for 64 px frames (64 -> 4), fewer
  for small grids (MinAtar's 10x10: one stage, 10 -> 5), each halving an even size to >= 3.
* ``TwoHotHead``: logits over ``SUPPORT``, 255 bins at ``symexp(linspace(-20, 20))``
  (``core.rlmath.Support`` with ``spacing="symexp"``): the loss ``SUPPORT.cross_entropy`` is
  the cross-entropy with the two-hot encoding of the raw target between its two neighbouring
  bins, and the mean ``SUPPORT.decode`` is ``softmax(l) @ bins`` (the official
  ``symexp_twohot``). Its output layer is zero-initialised, so initial predictions are exactly 0.
* ``ContinueHead``: Bernoulli logit of "the episode continues".

Every network takes ``dtype``, the compute dtype (the official ``compute_dtype``: float32 or
bfloat16): its inputs are cast to it and its layers compute in it from float32 parameters,
norms reduce in float32, and its outputs (decoded observations, logits) are returned in
float32, so every loss and distribution is computed in float32.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from core import nets, rlmath
from world_models.conv import Conv
from world_models.rssm import BlockLinear, norm_eps

Array = jax.Array

# DreamerV3's two-hot head: 255 bins at symexp(linspace(-20, 20)), two-hot in raw space.
SUPPORT = rlmath.Support(255, 20.0, "identity", spacing="symexp")
CNN_MULTS = (2, 3, 4, 4)
KERNEL = (5, 5)


def MLP(units: int, layers: int, norm: str = "rms", dtype: Any = jnp.float32) -> nets.MLP:
    """``layers`` x (Linear -> Norm -> SiLU), no output layer, computed in ``dtype``.

    The parameters are laid out as ``Dense_i/{Dense_0, Norm_0/{RMSNorm_0 | LayerNorm_0}}``.
    """
    return nets.MLP((units,) * layers, norm=norm, norm_eps=norm_eps(norm), act="silu",
                    layout="layer_scope", dtype=dtype)


class MLPEncoder(nn.Module):
    units: int
    layers: int
    norm: str = "rms"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, obs):
        x = rlmath.symlog(obs.reshape(-1).astype(jnp.float32)).astype(self.dtype)
        return MLP(self.units, self.layers, self.norm, self.dtype)(x)


class MLPDecoder(nn.Module):
    """Features -> predicted ``symlog(obs)`` of shape ``obs_shape``."""

    obs_shape: Sequence[int]
    units: int
    layers: int
    norm: str = "rms"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feat):
        x = MLP(self.units, self.layers, self.norm, self.dtype)(feat.astype(self.dtype))
        x = nn.Dense(int(np.prod(self.obs_shape)), dtype=self.dtype)(x)
        return x.astype(jnp.float32).reshape(tuple(self.obs_shape))


def vector_recon_loss(pred: Array, obs: Array) -> Array:
    """symlog-MSE ``sum_i (pred_i - symlog(obs_i))^2``."""
    return jnp.square(pred - rlmath.symlog(obs.astype(jnp.float32))).sum()


def image_stages(height: int, width: int, most: int = len(CNN_MULTS)) -> int:
    """Number of conv stages: each halves an even size, ending at >= 3 px (at most ``most``)."""
    stages = 0
    while (stages < most and height % 2 == 0 and width % 2 == 0
           and min(height, width) // 2 >= 3):
        height, width, stages = height // 2, width // 2, stages + 1
    return stages


def to_unit(obs: Array, obs_range: Tuple[float, float]) -> Array:
    """An image mapped from ``obs_range`` to ``[0, 1]`` (float32)."""
    low, high = obs_range
    return (obs.astype(jnp.float32) - low) / (high - low)


class CNNEncoder(nn.Module):
    """Image ``[H, W, C]`` on ``obs_range`` -> embedding (see the module docstring)."""

    depth: int
    obs_range: Tuple[float, float] = (0.0, 255.0)
    norm: str = "rms"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, obs):
        x = (to_unit(obs, self.obs_range) - 0.5).astype(self.dtype)
        for i in range(image_stages(*obs.shape[:2])):
            x = Conv(self.depth * CNN_MULTS[i], KERNEL, dtype=self.dtype)(x)
            h, w, c = x.shape
            x = x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
            x = nets.norm_layer(self.norm, eps=norm_eps(self.norm), dtype=self.dtype)(x)
            x = jax.nn.silu(x)
        return x.reshape(-1)


def upsample(x: Array) -> Array:
    """Nearest-neighbour 2x upsampling of ``[H, W, C]``."""
    return x.repeat(2, axis=0).repeat(2, axis=1)


class CNNDecoder(nn.Module):
    """Features ``[h, flat z]`` -> image ``[H, W, C]`` on ``[0, 1]`` (module docstring).

    ``deter`` is the size of ``h`` (the first part of the features); ``units`` the MLP width
    (the ``z`` branch of the input block is ``2 units`` wide); ``blocks`` the official
    ``bspace`` (8, reduced to a divisor of the smallest grid's depth).
    """

    obs_shape: Sequence[int]
    depth: int
    deter: int
    units: int
    blocks: int = 8
    norm: str = "rms"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feat):
        height, width, channels = self.obs_shape
        stages = image_stages(height, width)
        depths = [self.depth * m for m in CNN_MULTS[:max(stages, 1)]]
        h0, w0, top = height // 2 ** stages, width // 2 ** stages, depths[-1]
        g = math.gcd(math.gcd(self.blocks, top), self.deter)
        dt = self.dtype
        norm = lambda: nets.norm_layer(self.norm, eps=norm_eps(self.norm), dtype=dt)  # noqa: E731
        feat = feat.astype(dt)
        deter, stoch = feat[:self.deter], feat[self.deter:]
        x0 = BlockLinear(g, h0 * w0 * top // g, dtype=dt)(deter.reshape(g, -1))
        x0 = x0.reshape(g, h0, w0, top // g).transpose(1, 2, 0, 3).reshape(h0, w0, top)
        x1 = jax.nn.silu(norm()(nn.Dense(2 * self.units, dtype=dt)(stoch)))
        x1 = nn.Dense(h0 * w0 * top, dtype=dt)(x1).reshape(h0, w0, top)
        x = jax.nn.silu(norm()(x0 + x1))
        for i in reversed(range(stages - 1)):
            x = jax.nn.silu(norm()(Conv(depths[i], KERNEL, dtype=dt)(upsample(x))))
        if stages:
            x = upsample(x)
        return jax.nn.sigmoid(Conv(channels, KERNEL, dtype=dt)(x).astype(jnp.float32))


def image_recon_loss(pred: Array, obs: Array, obs_range: Tuple[float, float]) -> Array:
    """Squared error of the ``[0, 1]`` prediction against ``obs`` mapped to ``[0, 1]``, summed."""
    return jnp.square(pred - to_unit(obs, obs_range)).sum()


class TwoHotHead(nn.Module):
    """Features -> 255 logits (zero-initialised output layer)."""

    units: int
    layers: int
    norm: str = "rms"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feat):
        x = MLP(self.units, self.layers, self.norm, self.dtype)(feat.astype(self.dtype))
        return nets.dense(SUPPORT.size, outscale=0.0, dtype=self.dtype)(x).astype(jnp.float32)


class ContinueHead(nn.Module):
    units: int
    layers: int
    norm: str = "rms"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feat):
        x = MLP(self.units, self.layers, self.norm, self.dtype)(feat.astype(self.dtype))
        return nn.Dense(1, dtype=self.dtype)(x)[0].astype(jnp.float32)


def continue_loss(logit: Array, cont: Array) -> Array:
    """Bernoulli negative log-likelihood (cross-entropy) of a target probability ``cont``."""
    return -(cont * jax.nn.log_sigmoid(logit) + (1.0 - cont) * jax.nn.log_sigmoid(-logit))
