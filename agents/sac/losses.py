"""SAC losses (Haarnoja et al. 2018, "SAC: algorithms and applications").

Notation: batch of ``B`` transitions ``(s, a, r, s', d)`` with ``d`` = terminated (absorbing
``s'``). Time-limit truncation is NOT ``d``: a truncated step still bootstraps from ``s'``.
``alpha = exp(log_alpha)`` is the entropy temperature, ``Q_1, Q_2`` the twin critics and
``Qbar`` their Polyak-averaged targets.

* critic:  ``y = r + gamma (1 - d) [min_j Qbar_j(s', a') - alpha log pi(a'|s')]``, ``a' ~ pi``;
  ``L_Q = mean_B sum_j 0.5 (Q_j(s, a) - y)^2``.
* actor:   ``L_pi = mean_B [alpha log pi(a~|s) - min_j Q_j(s, a~)]``, ``a~ ~ pi`` reparameterised.
* alpha:   ``L_alpha = mean_B [-log_alpha (log pi(a~|s) + H_target)]``, ``H_target = -|A|``.

Every loss returns ``(loss, metrics)``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from agents.sac.networks import SACNetworks

Array = jax.Array
Metrics = Dict[str, Array]


@struct.dataclass
class Batch:
    """Transitions for one SAC update (any object with these attributes works, e.g. Transition).

    ``action`` is in environment units (as replay stores it).
    """

    obs: Array  # [B, O]
    action: Array  # [B, A]
    reward: Array  # [B]
    next_obs: Array  # [B, O]
    terminated: Array  # [B] bool


def critic_target(reward: Array, terminated: Array, next_q_min: Array, next_log_prob: Array,
                  alpha: Array, discount: float) -> Array:
    """Soft Bellman target ``r + gamma (1 - d) (Qbar_min(s', a') - alpha log pi(a'|s'))``.

    Args:
      reward, terminated, next_q_min, next_log_prob: ``[B]``.
      alpha: ``()`` temperature.
      discount: ``gamma``.

    Returns:
      ``[B]`` targets (no gradient is stopped here; callers pass target-network values).
    """
    chex.assert_rank([reward, terminated, next_q_min, next_log_prob, alpha], [1, 1, 1, 1, 0])
    chex.assert_equal_shape([reward, terminated, next_q_min, next_log_prob])
    continuation = 1.0 - terminated.astype(reward.dtype)
    return reward + discount * continuation * (next_q_min - alpha * next_log_prob)


def critic_loss(critic_params, target_critic_params, actor_params, log_alpha: Array, batch,
                key: Array, *, networks: SACNetworks, discount: float,
                reward_scale: float = 1.0) -> Tuple[Array, Metrics]:
    """Twin-critic TD loss ``mean_B sum_j 0.5 (Q_j(s, a) - y)^2`` (gradient in critic params)."""
    chex.assert_rank([batch.obs, batch.action, batch.reward], [2, 2, 1])
    next_action, next_log_prob = networks.sample_action(actor_params, batch.next_obs, key)
    next_q = networks.q_values(target_critic_params, batch.next_obs, next_action)  # [B, 2]
    alpha = jnp.exp(log_alpha)
    target = critic_target(reward_scale * batch.reward, batch.terminated, next_q.min(axis=-1),
                           next_log_prob, alpha, discount)
    target = jax.lax.stop_gradient(target)
    q = networks.q_values(critic_params, batch.obs, networks.unit_action(batch.action))
    chex.assert_shape(q, (batch.obs.shape[0], 2))
    td = q - target[:, None]
    loss = 0.5 * jnp.mean(jnp.sum(td**2, axis=-1))
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": target.mean(),
                  "td_abs_mean": jnp.abs(td).mean()}


def actor_loss(actor_params, critic_params, log_alpha: Array, obs: Array,
               key: Array, *, networks: SACNetworks) -> Tuple[Array, Metrics]:
    """``mean_B [alpha log pi(a~|s) - min_j Q_j(s, a~)]`` (gradient in actor params only).

    ``obs``: ``[B, O]``. The metrics carry ``log_prob`` ``[B]`` for the temperature loss.
    """
    chex.assert_rank(obs, 2)
    action, log_prob = networks.sample_action(actor_params, obs, key)
    q = networks.q_values(critic_params, obs, action).min(axis=-1)
    alpha = jax.lax.stop_gradient(jnp.exp(log_alpha))
    loss = jnp.mean(alpha * log_prob - q)
    return loss, {"actor_loss": loss, "entropy": -log_prob.mean(),
                  "log_prob": jax.lax.stop_gradient(log_prob)}


def alpha_loss(log_alpha: Array, log_prob: Array,
               target_entropy: float) -> Tuple[Array, Metrics]:
    """``mean_B [-log_alpha (log pi + H_target)]``: raises alpha when entropy < target.

    ``log_prob``: ``[B]`` log-densities of fresh policy samples (treated as constants).
    """
    chex.assert_rank([log_alpha, log_prob], [0, 1])
    loss = -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy))
    return loss, {"alpha_loss": loss, "alpha": jnp.exp(log_alpha)}
