"""Stochastic MuZero's six functions as one flax.linen module (Antonoglou et al., 2022).

On a hidden state ``s``, an afterstate ``as`` (the state after the agent's action, before the
environment's chance event) and a chance code ``c`` (one-hot over a codebook of size C):

    s_0 = h(o)                      representation
    as = phi(s, a)                  afterstate dynamics
    (sigma, Q) = psi(as)            afterstate prediction: chance logits [C], afterstate value
    (r, s') = g(as, c)              dynamics
    (p, v) = f(s)                   prediction
    c_logits = e(o_k, o_{k+1})      chance encoder (its code is the argmax, see the model)

The trunks, heads and the min-max normalisation of every state and afterstate are those of
:class:`world_models.muzero_nets.MuZeroNet`: ``"mlp"`` on flattened vector or grid
observations, ``"resnet"`` on images ``[H, W, C]`` (a one-hot action or code enters a resnet
trunk as constant planes). The encoder sees the last two observations stacked on their last
axis (the paper conditions it on the observations up to ``o_{k+1}``): from the pair it can
tell what the chance event changed, which ``o_{k+1}`` alone does not show.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from core.nets import MLP
from world_models.conv import Conv
from world_models.muzero_nets import head_mlp, min_max_normalise, trunk

Array = jax.Array


class StochasticMuZeroNet(nn.Module):
    """Representation, afterstate dynamics and prediction, dynamics, prediction, encoder.

    Attributes:
      num_actions: A, the discrete actions.
      codebook_size: C, the chance outcomes the model can tell apart.
      kind, obs_rank, latent_dim, hidden, num_blocks, head_channels, value_bins, reward_bins:
        as in :class:`world_models.muzero_nets.MuZeroNet`.
    """

    num_actions: int
    codebook_size: int = 32
    kind: str = "mlp"
    obs_rank: int = 1
    latent_dim: int = 64
    hidden: Sequence[int] = (64,)
    num_blocks: int = 1
    head_channels: int = 8
    value_bins: int = 21
    reward_bins: int = 21

    @property
    def latent_axes(self) -> int:
        return 1 if self.kind == "mlp" else 3

    def setup(self):
        self.representation = self._trunk()
        self.afterstate_trunk = self._trunk()
        self.dynamics_trunk = self._trunk()
        self.encoder_trunk = self._trunk()
        self.policy_head = self._mlp(self.num_actions, outscale=0.0)
        self.value_head = self._mlp(self.value_bins, outscale=0.0)
        self.reward_head = self._mlp(self.reward_bins, outscale=0.0)
        self.chance_head = self._mlp(self.codebook_size, outscale=0.0)
        self.q_head = self._mlp(self.value_bins, outscale=0.0)
        self.encoder_head = self._mlp(self.codebook_size)
        if self.kind == "resnet":
            self.reduce = {name: Conv(self.head_channels, (1, 1))
                           for name in ("prediction", "afterstate", "reward", "encoder")}

    def __call__(self, obs: Array, action: Array):
        """Touches every sub-network once (for ``init``)."""
        s = self.represent(obs)
        afterstate = self.afterstate(s, action)
        chance_logits, q_logits = self.afterstate_predict(afterstate)
        code = self.encode(obs, obs)
        reward_logits, s_next = self.dynamics(afterstate, jax.nn.one_hot(
            jnp.argmax(code, -1), self.codebook_size))
        policy_logits, value_logits = self.predict(s_next)
        return chance_logits, q_logits, reward_logits, policy_logits, value_logits

    def _mlp(self, out_size: int, outscale: float = 1.0) -> MLP:
        return head_mlp(self.hidden, out_size, outscale)

    def _trunk(self):
        return trunk(self.kind, self.latent_dim, self.hidden, self.num_blocks)

    def _flatten_obs(self, obs: Array) -> Array:
        x = obs.astype(jnp.float32)
        if self.kind == "mlp":
            x = x.reshape(x.shape[:x.ndim - self.obs_rank] + (-1,))
        return x

    def _with(self, s: Array, onehot: Array) -> Array:
        """``s`` with a one-hot vector appended (mlp) or broadcast as planes (resnet)."""
        if self.kind == "mlp":
            return jnp.concatenate([s, onehot], axis=-1)
        planes = jnp.broadcast_to(onehot[..., None, None, :], s.shape[:-1] + onehot.shape[-1:])
        return jnp.concatenate([s, planes], axis=-1)

    def _flat(self, s: Array, head: str) -> Array:
        if self.kind == "mlp":
            return s
        x = self.reduce[head](s)
        return x.reshape(x.shape[:-3] + (-1,))

    def represent(self, obs: Array) -> Array:
        """``obs [..., *obs_shape] -> s``, normalised to [0, 1] per example."""
        return min_max_normalise(self.representation(self._flatten_obs(obs)), self.latent_axes)

    def afterstate(self, s: Array, action: Array) -> Array:
        """``(s, action [...] int) -> as``, normalised to [0, 1] per example."""
        x = self._with(s, jax.nn.one_hot(action, self.num_actions))
        return min_max_normalise(self.afterstate_trunk(x), self.latent_axes)

    def afterstate_predict(self, afterstate: Array) -> Tuple[Array, Array]:
        """``as -> (chance_logits [..., C], q_logits [..., value_bins])``."""
        x = self._flat(afterstate, "afterstate")
        return self.chance_head(x), self.q_head(x)

    def dynamics(self, afterstate: Array, code: Array) -> Tuple[Array, Array]:
        """``(as, code [..., C] one-hot) -> (reward_logits [..., reward_bins], s')``."""
        x = self._with(afterstate, code.astype(jnp.float32))
        s_next = min_max_normalise(self.dynamics_trunk(x), self.latent_axes)
        return self.reward_head(self._flat(s_next, "reward")), s_next

    def predict(self, s: Array) -> Tuple[Array, Array]:
        """``s -> (policy_logits [..., A], value_logits [..., value_bins])``."""
        x = self._flat(s, "prediction")
        return self.policy_head(x), self.value_head(x)

    def encode(self, obs: Array, next_obs: Array) -> Array:
        """``(o_k, o_{k+1}) -> chance-code logits [..., C]``."""
        x = jnp.concatenate([self._flatten_obs(obs), self._flatten_obs(next_obs)], axis=-1)
        return self.encoder_head(self._flat(self.encoder_trunk(x), "encoder"))
