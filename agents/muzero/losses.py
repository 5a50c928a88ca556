"""MuZero's unroll loss for one example, and the batch loss with importance weights.

For unroll steps ``k = 0..K`` of the model (``s_0 = h(o_0)``, ``s_k = g(s_{k-1}, a_{k-1})``):

    l = sum_k c_k [ w_v CE(phi(z_k), v_k) m^v_k + w_r CE(phi(u_k), r_k) m^r_k
                    + w_p CE(pi_k, p_k) m^p_k + w_c (-cos(P(s_k), sg P'(h(o_k)))) alive_k
                    + w_o mean_i (D(s_k)_i - symlog(o_k)_i)^2 alive_k ]

with ``c_0 = 1`` and ``c_k = 1 / K`` for ``k >= 1`` (the paper's scaling of the unrolled
steps), ``phi`` the two-hot encoding on the transformed support, ``m`` the masks of
:mod:`agents.muzero.targets`, and the consistency term (EfficientZero; ``k >= 1``, off unless
``use_consistency_loss``) and the reconstruction term (decoder ``D``; ``k >= 0``, off unless
``reconstruction_loss_weight > 0``), plus, on tasks with legal-action masks, ``w_l BCE(l_k, legal_k)
alive_k`` for the legality head (mean over the actions). The batch loss is ``mean_b w_b l_b +
c ||theta||^2`` with the prioritised-replay importance weights ``w_b``; the new priority of
each window is ``|v_0 - z_0|`` (decoded root value prediction against its target).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from agents.muzero.config import MuZeroConfig
from agents.muzero.targets import UnrollTargets
from core import rlmath
from world_models.muzero import MuZeroModel

Array = jax.Array


def _cross_entropy(target_probs: Array, logits: Array) -> Array:
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _neg_cosine(a: Array, b: Array) -> Array:
    """``-cos(a, b)`` over the last axis; the epsilon sits inside the square root, so the
    gradient stays finite at a zero vector (that of ``norm`` is NaN there)."""
    unit = lambda x: x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)
    return -jnp.sum(unit(a) * unit(b), axis=-1)


def policy_cross_entropy(policy_logits: Array, targets: UnrollTargets) -> Array:
    """``CE(pi_k, p_k)`` per unroll step ``[K+1]``: the search policy over the actions."""
    return _cross_entropy(targets.policy, policy_logits)


def value_target_clipped(support, targets: UnrollTargets) -> Array:
    """Share of a window's value targets beyond ``support`` (clipped by its two-hot encoding: a
    support too narrow for the task's returns caps every value the search sees); logged as
    ``value_target_clipped``, the mean over the batch's windows."""
    clipped = support.clipped(targets.value) * targets.value_mask
    return clipped.sum() / jnp.maximum(targets.value_mask.sum(), 1.0)


def reward_target_clipped(support, targets: UnrollTargets) -> Array:
    """The same for the reward targets (``reward_target_clipped``): rewards beyond the reward
    support are learned as its end."""
    clipped = support.clipped(targets.reward) * targets.reward_mask
    return clipped.sum() / jnp.maximum(targets.reward_mask.sum(), 1.0)


def example_loss(params, obs: Array, actions: Array, targets: UnrollTargets,
                 *, model: MuZeroModel, cfg: MuZeroConfig,
                 policy_loss: Callable = policy_cross_entropy) -> Tuple[Array, Dict[str, Array]]:
    """One window: ``obs [K+1, *obs_shape]`` (real o_0..o_K), ``actions [K]`` -> (loss, info).

    ``policy_loss(policy_logits [K+1, P], targets) -> [K+1]`` is the policy term per step
    (Sampled MuZero passes its own: the visit-weighted log-likelihood of its sampled actions).
    """
    k = cfg.unroll_steps
    chex.assert_axis_dimension(actions, 0, k)
    unroll = model.unroll(params, obs[0], actions)
    scale = jnp.concatenate([jnp.ones(1), jnp.full((k,), 1.0 / k)])
    value_ce = model.value_support.cross_entropy(unroll.value_logits, targets.value)
    reward_ce = model.reward_support.cross_entropy(unroll.reward_logits, targets.reward)
    policy_ce = policy_loss(unroll.policy_logits, targets)
    parts = {"value_loss": (scale * value_ce * targets.value_mask).sum(),
             "reward_loss": (scale * reward_ce * targets.reward_mask).sum(),
             "policy_loss": (scale * policy_ce * targets.policy_mask).sum()}
    loss = (cfg.value_loss_weight * parts["value_loss"]
            + cfg.reward_loss_weight * parts["reward_loss"]
            + cfg.policy_loss_weight * parts["policy_loss"])
    if targets.legal is not None and unroll.legal_logits is not None:
        bce = optax.sigmoid_binary_cross_entropy(unroll.legal_logits, targets.legal).mean(-1)
        parts["legal_loss"] = (scale * bce * targets.alive).sum()
        loss = loss + cfg.legal_loss_weight * parts["legal_loss"]
    if cfg.use_consistency_loss:
        predicted = model.project(params, unroll.hidden[1:], True)
        real = jax.lax.stop_gradient(
            model.project(params, model.represent(params, obs[1:]), False))
        cos = _neg_cosine(predicted, real) * targets.alive[1:]
        parts["consistency_loss"] = (scale[1:] * cos).sum()
        loss = loss + cfg.consistency_loss_weight * parts["consistency_loss"]
    if cfg.reconstruction_loss_weight > 0:
        decoded = model.decode_obs(params, unroll.hidden)  # [K+1, D]
        real = rlmath.symlog(obs.reshape(obs.shape[0], -1).astype(jnp.float32))
        mse = jnp.mean(jnp.square(decoded - real), axis=-1)
        parts["reconstruction_loss"] = (scale * mse * targets.alive).sum()
        loss = loss + cfg.reconstruction_loss_weight * parts["reconstruction_loss"]
    parts["value_target_clipped"] = value_target_clipped(model.value_support, targets)
    parts["reward_target_clipped"] = reward_target_clipped(model.reward_support, targets)
    root_value = model.value_support.decode(unroll.value_logits[0])
    # a window without a value target (a game cut by a time limit under outcome targets)
    # gets the floor priority
    parts["priority"] = jnp.abs(root_value - targets.value[0]) * targets.value_mask[0]
    parts["root_value_pred"] = root_value
    return loss, parts


def batch_loss(params, obs: Array, actions: Array, targets: UnrollTargets, weights: Array,
               *, model: MuZeroModel, cfg: MuZeroConfig,
               policy_loss: Callable = policy_cross_entropy) -> Tuple[Array, Dict[str, Array]]:
    """``obs [B, K+1, ...]``, ``actions [B, K, ...]``, targets with leading B, ``weights [B]``."""
    chex.assert_rank(weights, 1)
    losses, parts = jax.vmap(lambda o, a, t: example_loss(params, o, a, t, model=model, cfg=cfg,
                                                          policy_loss=policy_loss)
                             )(obs, actions, targets)
    l2 = sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))
    loss = jnp.mean(weights * losses) + cfg.weight_decay * l2
    metrics = {name: value.mean() for name, value in parts.items() if name != "priority"}
    metrics.update(loss=loss, l2=l2)
    return loss, {"metrics": metrics, "priority": jax.lax.stop_gradient(parts["priority"])}


def optimizer(cfg: MuZeroConfig) -> optax.GradientTransformation:
    lr = cfg.learning_rate
    if cfg.lr_decay_steps > 0:
        lr = optax.linear_schedule(lr, lr * cfg.lr_final_fraction, cfg.lr_decay_steps)
    adam = optax.adam(lr)
    if cfg.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adam)
    return adam
