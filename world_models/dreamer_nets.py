"""DreamerV3 encoders, decoders and heads (one example; callers vmap), with their losses.

* Vector observations: ``MLPEncoder`` embeds ``symlog(obs)``; ``MLPDecoder`` predicts
  ``symlog(obs)`` and is trained with ``||dec - symlog(obs)||^2`` summed over dimensions.
* Image observations (uint8 ``[H, W, C]``, e.g. MinAtar 10x10xC): ``CNNEncoder`` (stride-2
  convolutions of depth ``d, 2d, ...`` on ``obs / 255 - 0.5``) and ``CNNDecoder`` (transposed
  convolutions back to ``[H, W, C]``); the image loss is the summed squared error on the
  ``[-0.5, 0.5]`` scale (DreamerV3's MSE image loss).
* ``TwoHotHead``: logits over ``SUPPORT``, 255 bins ``linspace(-20, 20)`` in symlog space
  (``core.rlmath.Support``): the loss is ``SUPPORT.cross_entropy``, the cross-entropy with
  ``two_hot(symlog(y))``, and the mean ``SUPPORT.decode``, ``symexp(softmax(l) @ bins)``.
  Its output layer is zero-initialised, so initial predictions are exactly 0.
* ``ContinueHead``: Bernoulli logit of "the episode continues".
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from core import nets, rlmath
from world_models.conv import Conv
from world_models.rssm import norm_eps

Array = jax.Array

# DreamerV3's two-hot head: 255 bins over [-20, 20] in symlog space.
SUPPORT = rlmath.Support(255, 20.0, "symlog")


def MLP(units: int, layers: int, norm: str = "rms") -> nets.MLP:
    """``layers`` x (Linear without bias -> Norm -> SiLU), no output layer.

    The parameters are laid out as ``Dense_i/{Dense_0, Norm_0/{RMSNorm_0 | LayerNorm_0}}``.
    """
    return nets.MLP((units,) * layers, norm=norm, norm_eps=norm_eps(norm), act="silu",
                    bias=False, layout="layer_scope")


class MLPEncoder(nn.Module):
    units: int
    layers: int
    norm: str = "rms"

    @nn.compact
    def __call__(self, obs):
        return MLP(self.units, self.layers, self.norm)(rlmath.symlog(obs.reshape(-1)))


class MLPDecoder(nn.Module):
    """Features -> predicted ``symlog(obs)`` of shape ``obs_shape``."""

    obs_shape: Sequence[int]
    units: int
    layers: int
    norm: str = "rms"

    @nn.compact
    def __call__(self, feat):
        x = MLP(self.units, self.layers, self.norm)(feat)
        return nn.Dense(int(np.prod(self.obs_shape)))(x).reshape(tuple(self.obs_shape))


def vector_recon_loss(pred: Array, obs: Array) -> Array:
    """symlog-MSE ``sum_i (pred_i - symlog(obs_i))^2``."""
    return jnp.square(pred - rlmath.symlog(obs.astype(jnp.float32))).sum()


class CNNEncoder(nn.Module):
    """uint8 image ``[H, W, C]`` -> embedding; stride-2 3x3 convs of depth ``d * 2^i``."""

    depth: int
    stages: int = 2
    norm: str = "rms"

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32) / 255.0 - 0.5
        for i in range(self.stages):
            x = Conv(self.depth * 2 ** i, (3, 3), strides=(2, 2), padding="SAME",
                     use_bias=False)(x)
            x = jax.nn.silu(nets.norm_layer(self.norm, eps=norm_eps(self.norm))(x))
        return x.reshape(-1)


class CNNDecoder(nn.Module):
    """Features -> image ``[H, W, C]`` on the ``[-0.5, 0.5]`` scale (mirror of the encoder)."""

    obs_shape: Sequence[int]
    depth: int
    stages: int = 2
    norm: str = "rms"

    @nn.compact
    def __call__(self, feat):
        h, w, c = self.obs_shape
        scale = 2 ** self.stages
        h0, w0 = -(-h // scale), -(-w // scale)
        top = self.depth * 2 ** (self.stages - 1)
        x = nn.Dense(h0 * w0 * top)(feat).reshape(h0, w0, top)
        for i in reversed(range(self.stages)):
            out = c if i == 0 else self.depth * 2 ** (i - 1)
            x = nn.ConvTranspose(out, (3, 3), strides=(2, 2), padding="SAME")(x)
            if i > 0:
                x = jax.nn.silu(nn.RMSNorm(epsilon=1e-4)(x))
        return x[:h, :w]


def image_recon_loss(pred: Array, obs: Array) -> Array:
    """Summed squared error against ``obs / 255 - 0.5``."""
    return jnp.square(pred - (obs.astype(jnp.float32) / 255.0 - 0.5)).sum()


class TwoHotHead(nn.Module):
    """Features -> 255 logits (zero-initialised output layer)."""

    units: int
    layers: int
    norm: str = "rms"

    @nn.compact
    def __call__(self, feat):
        x = MLP(self.units, self.layers, self.norm)(feat)
        return nets.dense(SUPPORT.size, outscale=0.0)(x)


class ContinueHead(nn.Module):
    units: int
    layers: int
    norm: str = "rms"

    @nn.compact
    def __call__(self, feat):
        return nn.Dense(1)(MLP(self.units, self.layers, self.norm)(feat))[0]


def continue_loss(logit: Array, cont: Array) -> Array:
    """Bernoulli negative log-likelihood of ``cont`` in {0, 1}."""
    return -(cont * jax.nn.log_sigmoid(logit) + (1.0 - cont) * jax.nn.log_sigmoid(-logit))
