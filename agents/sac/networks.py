"""SAC networks: a tanh-squashed Gaussian actor and twin Q critics (flax.linen).

Actions are handled in two coordinates. The networks work in the normalised box ``[-1, 1]^A``;
the environment sees ``a_env = low + (u + 1) / 2 * (high - low)``. Replay stores environment
actions, so critics map them back with :func:`to_unit` before use.

The squashed Gaussian: ``x ~ N(mu, sigma^2)`` (diagonal), ``u = tanh(x)``, with density

    log pi(u) = sum_i [ log N(x_i; mu_i, sigma_i) - log(1 - tanh(x_i)^2) ],

where ``log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2 x))`` is used for numerical stability.
The constant Jacobian of the affine rescaling to the environment bounds is left out (it shifts
the entropy by a constant and does not change any gradient).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from core.nets import MLP

Array = jax.Array

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


class Actor(nn.Module):
    """``obs [..., O] -> (mean [..., A], log_std [..., A])`` of the pre-tanh Gaussian.

    ``log_std`` is squashed smoothly into ``[LOG_STD_MIN, LOG_STD_MAX]``.
    """

    hidden: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, obs: Array) -> Tuple[Array, Array]:
        out = MLP(self.hidden, 2 * self.action_dim)(obs)
        mean, raw_log_std = jnp.split(out, 2, axis=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw_log_std) + 1)
        return mean, log_std


class TwinCritic(nn.Module):
    """``(obs [..., O], unit action [..., A]) -> Q [..., 2]``: two independent Q networks."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> Array:
        x = jnp.concatenate([obs, action], axis=-1)
        q1 = MLP(self.hidden, 1)(x)
        q2 = MLP(self.hidden, 1)(x)
        return jnp.concatenate([q1, q2], axis=-1)


def log1m_tanh_sq(x: Array) -> Array:
    """``log(1 - tanh(x)^2)``, stable for large ``|x|``."""
    return 2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x))


def squashed_gaussian_sample(mean: Array, log_std: Array, key: Array) -> Tuple[Array, Array]:
    """Samples ``u = tanh(mean + std * eps)`` and its log-density.

    Args:
      mean, log_std: ``[..., A]`` parameters of the pre-tanh Gaussian.
      key: PRNG key.

    Returns:
      ``(u [..., A] in (-1, 1), log_prob [...])``; differentiable in ``mean`` and ``log_std``
      (reparameterisation).
    """
    chex.assert_equal_shape([mean, log_std])
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    x = mean + jnp.exp(log_std) * eps
    return jnp.tanh(x), squashed_gaussian_log_prob_pre_tanh(x, mean, log_std)


def squashed_gaussian_log_prob_pre_tanh(x: Array, mean: Array, log_std: Array) -> Array:
    """``log pi(tanh(x))`` given the pre-tanh value ``x [..., A]``; returns ``[...]``."""
    chex.assert_equal_shape([x, mean, log_std])
    z = (x - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    return jnp.sum(gaussian - log1m_tanh_sq(x), axis=-1)


def to_env(unit_action: Array, low: Array, high: Array) -> Array:
    """Maps ``[-1, 1]^A`` onto the box ``[low, high]``."""
    return low + 0.5 * (unit_action + 1.0) * (high - low)


def to_unit(env_action: Array, low: Array, high: Array) -> Array:
    """Inverse of :func:`to_env`."""
    return 2.0 * (env_action - low) / (high - low) - 1.0


@dataclasses.dataclass(frozen=True)
class SACNetworks:
    """The two modules plus the action box they act in (static; closed over by losses).

    Attributes:
      actor: the policy module.
      critic: the twin Q module.
      low, high: environment action bounds, tuples of length A.
    """

    actor: Actor
    critic: TwinCritic
    low: Tuple[float, ...]
    high: Tuple[float, ...]

    @property
    def action_dim(self) -> int:
        return len(self.low)

    def sample_action(self, actor_params, obs: Array, key: Array) -> Tuple[Array, Array]:
        """``obs [B, O] -> (unit action [B, A], log_prob [B])`` sampled from the policy."""
        mean, log_std = self.actor.apply(actor_params, obs)
        return squashed_gaussian_sample(mean, log_std, key)

    def mean_action(self, actor_params, obs: Array) -> Array:
        """``obs [B, O] -> tanh(mean) [B, A]``: the deterministic evaluation action."""
        mean, _ = self.actor.apply(actor_params, obs)
        return jnp.tanh(mean)

    def q_values(self, critic_params, obs: Array, unit_action: Array) -> Array:
        """``(obs [B, O], unit action [B, A]) -> Q [B, 2]``."""
        return self.critic.apply(critic_params, obs, unit_action)

    def env_action(self, unit_action: Array) -> Array:
        return to_env(unit_action, jnp.asarray(self.low), jnp.asarray(self.high))

    def unit_action(self, env_action: Array) -> Array:
        return to_unit(env_action, jnp.asarray(self.low), jnp.asarray(self.high))


def make_networks(*, action_low: Sequence[float], action_high: Sequence[float],
                  actor_hidden: Sequence[int] = (256, 256),
                  critic_hidden: Sequence[int] = (256, 256)) -> SACNetworks:
    """Builds the actor and twin critic for a flat continuous action box."""
    low, high = tuple(float(x) for x in action_low), tuple(float(x) for x in action_high)
    if len(low) != len(high) or any(h <= lo for lo, h in zip(low, high)):
        raise ValueError(f"SAC needs finite action bounds with low < high, got low={low}, "
                         f"high={high}")
    return SACNetworks(actor=Actor(tuple(actor_hidden), len(low)),
                       critic=TwinCritic(tuple(critic_hidden)), low=low, high=high)
