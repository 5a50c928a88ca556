"""MuZero's three functions as flax.linen modules: h(o) -> s, g(s, a) -> (r, s'), f(s) -> (p, v).

Two variants share one interface (:class:`MuZeroNet`, methods ``represent``, ``dynamics``,
``predict``, ``project``):

* ``"mlp"`` for vector observations: hidden state ``s [..., latent_dim]``;
* ``"resnet"`` for image observations ``[..., H, W, C]`` (MinAtar's 10x10xC): hidden state
  ``s [..., H, W, channels]`` from a 3x3 convolution and residual blocks. As in AlphaZero's
  and MuZero's heads, each head first reduces the channels with its own 1x1 convolution
  (``head_channels``) and then flattens, so the heads' dense layers see
  ``H * W * head_channels`` inputs instead of ``H * W * channels``.

Every hidden state leaving ``represent`` or ``dynamics`` is min-max normalised to [0, 1] per
example over its latent axes (MuZero appendix G):  ``s <- (s - min s) / (max s - min s + eps)``.
Reward and value heads output logits over a categorical support (see
:mod:`world_models.muzero`); their last layers start at zero so the first predictions are the
support's centre value (0 after the transform) rather than noise.

Actions are discrete (``num_actions`` logits, one-hot into the dynamics; the resnet's also as
a board plane where the task says which cell or column a move acts on) or, with
``action_dim > 0``, continuous vectors (Sampled MuZero): the dynamics takes the action scaled
to [-1, 1] as it is, and the policy head outputs ``2 * action_dim`` numbers, the mean and the
raw scale of a Gaussian (:func:`world_models.muzero.gaussian_policy`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from core.nets import MLP
from envs.api import action_footprints
from world_models.conv import Conv

Array = jax.Array

NORM_EPS = 1e-5


def min_max_normalise(s: Array, num_latent_axes: int) -> Array:
    """Scales each example's hidden state to [0, 1] over its last ``num_latent_axes`` axes."""
    axes = tuple(range(s.ndim - num_latent_axes, s.ndim))
    low = jnp.min(s, axis=axes, keepdims=True)
    high = jnp.max(s, axis=axes, keepdims=True)
    return (s - low) / (high - low + NORM_EPS)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(ln(conv(relu(ln(x))))))``."""

    channels: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = Conv(self.channels, (3, 3))(nn.relu(nn.LayerNorm()(x)))
        y = Conv(self.channels, (3, 3))(nn.relu(nn.LayerNorm()(y)))
        return x + y


def head_mlp(hidden: Sequence[int], out_size: int, outscale: float = 1.0) -> MLP:
    """Dense + LayerNorm + ReLU layers of widths ``hidden``, then a linear output of
    ``out_size`` (``outscale=0``: zeros)."""
    return MLP(tuple(hidden), out_size, norm="layer", act="relu", outscale=outscale)


def trunk(kind: str, latent_dim: int, hidden: Sequence[int], num_blocks: int) -> nn.Module:
    """A hidden-state network: an MLP to ``latent_dim`` (``"mlp"``), or a 3x3 convolution to
    ``latent_dim`` channels and ``num_blocks`` residual blocks (``"resnet"``)."""
    if kind == "mlp":
        return head_mlp(hidden, latent_dim)
    return nn.Sequential([Conv(latent_dim, (3, 3))]
                         + [ResBlock(latent_dim) for _ in range(num_blocks)])


class MuZeroNet(nn.Module):
    """Representation, dynamics, prediction and (EfficientZero) projection networks.

    Attributes:
      num_actions: size of the discrete action space (unused when ``action_dim > 0``).
      action_dim: 0 for discrete actions, else the length of a continuous action vector.
      kind: ``"mlp"`` or ``"resnet"``.
      obs_rank: number of observation axes (1 for vectors, 3 for images).
      latent_dim: hidden-state width (mlp) or channels (resnet).
      hidden: widths of the hidden layers of each MLP (trunks and heads).
      num_blocks: residual blocks per resnet trunk.
      head_channels: channels of each head's 1x1 reducing convolution (resnet).
      value_bins / reward_bins: sizes of the categorical supports.
      projection_dim: width of the consistency-loss projection.
      legal_head: add a head predicting which actions are legal in ``s``
        (:meth:`legal_logits`, one logit per action), for tasks with legal-action masks.
      action_layout: resnet only: an :attr:`envs.api.EnvSpec.action_layout` (``"cells"``,
        ``"columns"``); the dynamics then also gets a board plane marking where the action
        acts (:func:`envs.api.action_footprints`), next to the one-hot planes.
    """

    num_actions: int
    kind: str = "mlp"
    obs_rank: int = 1
    latent_dim: int = 64
    hidden: Sequence[int] = (64,)
    num_blocks: int = 1
    head_channels: int = 8
    value_bins: int = 21
    reward_bins: int = 21
    projection_dim: int = 64
    action_dim: int = 0
    action_layout: Optional[str] = None
    legal_head: bool = False
    obs_decoder_dim: int = 0

    @property
    def latent_axes(self) -> int:
        return 1 if self.kind == "mlp" else 3

    def setup(self):
        self.representation = self._trunk()
        self.dynamics_trunk = self._trunk()
        self.reward_head = self._mlp(self.reward_bins, outscale=0.0)
        self.policy_head = self._mlp(2 * self.action_dim if self.action_dim else
                                     self.num_actions, outscale=0.0)
        self.value_head = self._mlp(self.value_bins, outscale=0.0)
        self.projection = self._mlp(self.projection_dim)
        self.projection_predictor = self._mlp(self.projection_dim)
        if self.legal_head:
            self.legality_head = self._mlp(self.num_actions)
        if self.obs_decoder_dim:
            self.obs_decoder = self._mlp(self.obs_decoder_dim)
        if self.kind == "resnet":
            self.reduce = {name: Conv(self.head_channels, (1, 1))
                           for name in ("reward", "prediction", "projection")}

    def __call__(self, obs: Array, action: Array):
        """Touches every sub-network once (for ``init``)."""
        s = self.represent(obs)
        reward_logits, s_next = self.dynamics(s, action)
        policy_logits, value_logits = self.predict(s_next)
        if self.legal_head:
            self.legal_logits(s_next)
        if self.obs_decoder_dim:
            self.decode_obs(s_next)
        return reward_logits, policy_logits, value_logits, self.project(s, True)

    def _mlp(self, out_size: int, outscale: float = 1.0) -> MLP:
        return head_mlp(self.hidden, out_size, outscale)

    def _trunk(self):
        return trunk(self.kind, self.latent_dim, self.hidden, self.num_blocks)

    def represent(self, obs: Array) -> Array:
        """``obs [..., *obs_shape] -> s``, normalised to [0, 1] per example."""
        x = obs.astype(jnp.float32)
        if self.kind == "mlp":
            x = x.reshape(x.shape[:x.ndim - self.obs_rank] + (-1,))
        return min_max_normalise(self.representation(x), self.latent_axes)

    def dynamics(self, s: Array, action: Array) -> Tuple[Array, Array]:
        """``(s, action) -> (reward_logits [..., reward_bins], s')``; ``action [...]`` int, or
        ``[..., action_dim]`` in [-1, 1] when continuous."""
        if self.action_dim:
            onehot = action.astype(jnp.float32)
        else:
            onehot = jax.nn.one_hot(action, self.num_actions)
        if self.kind == "mlp":
            x = jnp.concatenate([s, onehot], axis=-1)
        else:
            planes = jnp.broadcast_to(onehot[..., None, None, :],
                                      s.shape[:-1] + onehot.shape[-1:])
            x = jnp.concatenate([s, planes], axis=-1)
            if self.action_layout is not None:
                height, width = s.shape[-3:-1]
                footprints = action_footprints(self.action_layout, self.num_actions, height,
                                               width).reshape(self.num_actions, -1)
                board = onehot @ jnp.asarray(footprints)  # [..., H * W]
                x = jnp.concatenate([x, board.reshape(s.shape[:-1] + (1,))], axis=-1)
        s_next = min_max_normalise(self.dynamics_trunk(x), self.latent_axes)
        return self.reward_head(self._flat(s_next, "reward")), s_next

    def predict(self, s: Array) -> Tuple[Array, Array]:
        """``s -> (policy_logits [..., A], value_logits [..., value_bins])`` (``A = 2 *
        action_dim`` when continuous: Gaussian mean and raw scale)."""
        x = self._flat(s, "prediction")
        return self.policy_head(x), self.value_head(x)

    def legal_logits(self, s: Array) -> Array:
        """``s -> [..., num_actions]`` logits of each action being legal in ``s``."""
        return self.legality_head(self._flat(s, "prediction"))

    def decode_obs(self, s: Array) -> Array:
        return self.obs_decoder(self._flat(s, "prediction"))

    def project(self, s: Array, predictor: bool) -> Array:
        """EfficientZero's projection ``s -> z [..., projection_dim]`` (+ predictor head)."""
        z = self.projection(self._flat(s, "projection"))
        return self.projection_predictor(z) if predictor else z

    def _flat(self, s: Array, head: str) -> Array:
        if self.kind == "mlp":
            return s
        x = self.reduce[head](s)
        return x.reshape(x.shape[:-3] + (-1,))
