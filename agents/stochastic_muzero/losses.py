"""Stochastic MuZero's unroll loss for one example, and the batch loss.

For unroll steps ``k = 0..K`` (states ``s_k``) and transitions ``k = 0..K-1`` (afterstates
``as_k``, codes ``c_k`` from the encoder of ``(o_k, o_{k+1})``; the model is
:mod:`world_models.stochastic_muzero`):

    l = sum_k c_k [ w_v CE(v_k, z_k) m^v_k + w_r CE(r_k, u_k) m^r_k + w_p CE(pi_k, p_k) m^p_k ]
      + (1/K) sum_{k<K} [ w_Q CE(Q_k, z_k) m^v_k
                          + (w_sigma CE(sigma_k, c_k) + beta ||c_k - softmax(e_k)||^2) alive_{k+1} ]

The first line is MuZero's loss (:mod:`agents.muzero.losses`, with ``c_0 = 1``, ``c_k = 1/K``).
The afterstate value ``Q_k`` of the action taken has the same target as the value of ``s_k``
(the n-step return ``z_k``, which starts with that action's reward); the chance logits
``sigma_k`` learn the encoder's one-hot code (a fixed target, no gradient); the commitment
term pulls the encoder's softmax towards its one-hot code. ``alive_{k+1}`` drops the chance
terms where ``o_{k+1}`` is not the successor of ``o_k`` (past an episode's end, where the
window runs into the next episode). The batch loss is ``mean_b w_b l_b + c ||theta||^2 +
w_u (log C - H(mean softmax(e)))``, the last term (ours, not the paper's) over the batch's
observed transitions so that the encoder does not give every outcome one code, and the
priority is ``|v_0 - z_0|``, as in MuZero.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import chex
import jax
import jax.numpy as jnp

from agents.muzero.losses import (policy_cross_entropy, reward_target_clipped,
                                  value_target_clipped)
from agents.muzero.targets import UnrollTargets
from agents.stochastic_muzero.config import StochasticMuZeroConfig
from world_models.stochastic_muzero import StochasticMuZeroModel

Array = jax.Array


def chance_losses(chance_logits: Array, codes: Array, encoder_probs: Array
                  ) -> Tuple[Array, Array]:
    """``(CE(sigma, c), ||c - softmax(e)||^2)`` per transition ``[K]`` from ``chance_logits
    [K, C]``, one-hot ``codes [K, C]`` and ``encoder_probs [K, C]``."""
    chex.assert_equal_shape([chance_logits, codes, encoder_probs])
    codes = jax.lax.stop_gradient(codes)
    chance_ce = -jnp.sum(codes * jax.nn.log_softmax(chance_logits, axis=-1), axis=-1)
    commitment = jnp.sum(jnp.square(codes - encoder_probs), axis=-1)
    return chance_ce, commitment


def example_loss(params, obs: Array, actions: Array, targets: UnrollTargets, *,
                 model: StochasticMuZeroModel, cfg: StochasticMuZeroConfig,
                 policy_loss: Callable = policy_cross_entropy
                 ) -> Tuple[Array, Dict[str, Array]]:
    """One window: ``obs [K+1, *obs_shape]`` (real o_0..o_K), ``actions [K]`` -> (loss, info)."""
    k = cfg.unroll_steps
    chex.assert_shape(actions, (k,))
    observed = targets.alive[1:]  # o_{k+1} follows o_k in the same episode
    unroll = model.unroll(params, obs, actions, observed > 0)
    scale = jnp.concatenate([jnp.ones(1), jnp.full((k,), 1.0 / k)])
    value_ce = model.value_support.cross_entropy(unroll.value_logits, targets.value)
    reward_ce = model.reward_support.cross_entropy(unroll.reward_logits, targets.reward)
    policy_ce = policy_loss(unroll.policy_logits, targets)
    q_ce = model.value_support.cross_entropy(unroll.q_logits, targets.value[:k])
    chance_ce, commitment = chance_losses(unroll.chance_logits, unroll.codes,
                                          unroll.encoder_probs)
    parts = {"value_loss": (scale * value_ce * targets.value_mask).sum(),
             "reward_loss": (scale * reward_ce * targets.reward_mask).sum(),
             "policy_loss": (scale * policy_ce * targets.policy_mask).sum(),
             "afterstate_value_loss": (q_ce * targets.value_mask[:k]).sum() / k,
             "chance_loss": (chance_ce * observed).sum() / k,
             "commitment_loss": (commitment * observed).sum() / k}
    loss = (cfg.value_loss_weight * parts["value_loss"]
            + cfg.reward_loss_weight * parts["reward_loss"]
            + cfg.policy_loss_weight * parts["policy_loss"]
            + cfg.afterstate_value_loss_weight * parts["afterstate_value_loss"]
            + cfg.chance_loss_weight * parts["chance_loss"]
            + cfg.commitment_loss_weight * parts["commitment_loss"])
    parts["value_target_clipped"] = value_target_clipped(model.value_support, targets)
    parts["reward_target_clipped"] = reward_target_clipped(model.reward_support, targets)
    root_value = model.value_support.decode(unroll.value_logits[0])
    # a window without a value target (cut by a time limit under outcome targets) gets the
    # floor priority, as in MuZero
    parts["priority"] = jnp.abs(root_value - targets.value[0]) * targets.value_mask[0]
    parts["root_value_pred"] = root_value
    parts["code_counts"] = (unroll.codes * observed[:, None]).sum(0)  # [C]
    parts["code_probs"] = (unroll.encoder_probs * observed[:, None]).sum(0)  # [C]
    return loss, parts


def code_usage_loss(prob_sums: Array) -> Array:
    """``log C - H(mean softmax(e))`` from the encoder's probabilities summed over a batch's
    observed transitions (``prob_sums [C]``): 0 when the batch spreads evenly over the C codes,
    ``log C`` when every transition puts all its mass on one code; 0 for a batch without an
    observed transition."""
    total = prob_sums.sum()
    p = prob_sums / jnp.maximum(total, 1e-6)
    entropy = -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-12)))
    return jnp.where(total > 0, jnp.log(prob_sums.shape[-1]) - entropy, 0.0)


def code_perplexity(counts: Array) -> Array:
    """``exp(entropy)`` of the codes' empirical distribution (``counts [C]``): how many codes
    the encoder uses, from 1 (one code for every outcome) to C."""
    p = counts / jnp.maximum(counts.sum(), 1.0)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0)))


def batch_loss(params, obs: Array, actions: Array, targets: UnrollTargets, weights: Array, *,
               model: StochasticMuZeroModel, cfg: StochasticMuZeroConfig,
               policy_loss: Callable = policy_cross_entropy
               ) -> Tuple[Array, Dict[str, Array]]:
    """``obs [B, K+1, ...]``, ``actions [B, K]``, targets with leading B, ``weights [B]``
    (the ``batch_loss`` of :func:`agents.muzero.agent.make_agent`)."""
    chex.assert_rank(weights, 1)
    losses, parts = jax.vmap(lambda o, a, t: example_loss(params, o, a, t, model=model,
                                                          cfg=cfg, policy_loss=policy_loss)
                             )(obs, actions, targets)
    l2 = sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))
    counts = parts.pop("code_counts").sum(0)
    usage = code_usage_loss(parts.pop("code_probs").sum(0))
    loss = (jnp.mean(weights * losses) + cfg.weight_decay * l2
            + cfg.code_usage_loss_weight * usage)
    metrics = {name: value.mean() for name, value in parts.items() if name != "priority"}
    metrics.update(loss=loss, l2=l2, code_perplexity=code_perplexity(counts),
                   code_usage_loss=usage)
    return loss, {"metrics": metrics, "priority": jax.lax.stop_gradient(parts["priority"])}
