"""DreamerV3 actor and critic, trained on imagined trajectories of the world model.

From every start state ``s_0`` the actor imagines ``H`` steps: ``a_k ~ pi(.|s_k)``,
``s_{k+1} = img(s_k, a_k)``. With predicted rewards ``r_k``, continue probabilities ``c_k``
(which carry the discount, ``contdisc``) of ``s_k`` and critic values ``v_k``:

    R_k = r_{k+1} + c_{k+1} ((1 - lambda) v_{k+1} + lambda R_{k+1}),  R_H = v_H
    w_k = prod_{j=0..k} c_j

(the 2023 variant: ``c_k`` the continue mode, ``gamma c_{k+1}`` in the return and
``w_k = gamma^k prod_{j=1..k} c_j``).
Critic: ``w_k [CE(two_hot(R_k), v(s_k)) + slow_reg CE(two_hot(v_slow(s_k)), v(s_k))]``.
Actor:  ``-w_k [sg((R_k - v_k) / S) log pi(a_k|s_k) + eta H(pi(.|s_k))]`` (REINFORCE) or
``-w_k [(R_k - v_k) / S + eta H]`` with gradients through the dynamics into ``R_k`` and
``v_k = v(s_k)`` (backprop, the 2023 code's baseline included), where
``S = max(1, EMA(P95(R)) - EMA(P5(R)))`` (decay 0.99, no bias correction).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from core import nets as core_nets
from core import rlmath
from world_models import dreamer_nets as nets
from world_models.dreamer_wm import WorldModel
from world_models.rssm import RSSMState, features

Array = jax.Array
MIN_STD, MAX_STD = 0.1, 1.0


class Actor(nn.Module):
    """Features -> policy parameters: log-probabilities [A] (discrete) or (mean, std) [A] each.

    The output kernel is the official one (truncated normal, fan-in, times 0.01); a discrete
    policy is a plain categorical (``unimix`` 0, the official ``categorical`` output) or mixed
    with ``unimix`` uniform (the 2023 code's ``onehot`` output). The network computes in
    ``dtype``; the policy's parameters are float32.
    """

    action_dim: int
    discrete: bool
    units: int
    layers: int
    norm: str = "rms"
    unimix: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feat):
        x = nets.MLP(self.units, self.layers, self.norm, self.dtype)(feat.astype(self.dtype))
        if self.discrete:
            logits = core_nets.dense(self.action_dim, outscale=0.01, dtype=self.dtype)(x)
            logits = logits.astype(jnp.float32)
            if self.unimix == 0.0:
                return jax.nn.log_softmax(logits)
            probs = (1 - self.unimix) * jax.nn.softmax(logits) + self.unimix / self.action_dim
            return jnp.log(probs)
        out = core_nets.dense(2 * self.action_dim, outscale=0.01, dtype=self.dtype)(x)
        mean, std = jnp.split(out.astype(jnp.float32), 2, axis=-1)
        std = (MAX_STD - MIN_STD) * jax.nn.sigmoid(std + 2.0) + MIN_STD
        return jnp.tanh(mean), std


def policy_sample(out, key: Array, discrete: bool) -> Array:
    """A one-hot action [A] (discrete) or a reparameterised normal sample [A]."""
    if discrete:
        return jax.nn.one_hot(jax.random.categorical(key, out), out.shape[-1])
    mean, std = out
    return mean + std * jax.random.normal(key, mean.shape)


def policy_mode(out, discrete: bool) -> Array:
    return jax.nn.one_hot(jnp.argmax(out, -1), out.shape[-1]) if discrete else out[0]


def policy_log_prob(out, action: Array, discrete: bool) -> Array:
    if discrete:
        return (action * jax.nn.log_softmax(out)).sum(-1)
    mean, std = out
    z = (action - mean) / std
    return (-0.5 * z ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)).sum(-1)


def policy_entropy(out, discrete: bool) -> Array:
    if discrete:
        logp = jax.nn.log_softmax(out)
        return -(jnp.exp(logp) * logp).sum(-1)
    return (jnp.log(out[1]) + 0.5 * jnp.log(2 * jnp.pi * jnp.e)).sum(-1)


def imagine(model: WorldModel, wm_params, actor: Actor, actor_params, starts: RSSMState,
            key: Array, horizon: int, backprop: bool) -> Dict[str, Array]:
    """Imagined trajectories from a batch of start states (leaves ``[N, ...]``), time-major.

    Returns ``feats [H, N, F]`` of ``s_0..s_{H-1}``, ``last [N, F]`` (``s_H``), ``actions
    [H, N, A]``, the predicted ``reward [H, N]`` of ``s_1..s_H`` and ``cont_logit [H+1, N]`` of
    ``s_0..s_H``. The reward and continue heads run inside the scan, on each step's states
    while they are in cache; nothing is stacked but what the losses read. Trajectory ``i``
    draws its step ``k``'s action and prior sample from ``split(split(split(key, N)[i], H)[k])``.
    Without ``backprop`` the actions carry no gradient (REINFORCE).
    """
    n = starts.deter.shape[0]
    heads = jax.vmap(lambda f: model.apply(wm_params, f, method=WorldModel.reward_continue))
    img_step = jax.vmap(lambda s, a, k: model.apply(wm_params, s, a, k,
                                                     method=WorldModel.img_step))
    step_keys = jax.vmap(lambda k: jax.random.split(k, horizon))(jax.random.split(key, n))

    def step(state, keys):  # keys [N, 2]
        feat = features(state)
        act_key, dyn_key = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        out = actor.apply(actor_params, feat)
        action = jax.vmap(lambda o, k: policy_sample(o, k, actor.discrete))(out, act_key)
        if not backprop:
            action = jax.lax.stop_gradient(action)
        nxt = img_step(state, jnp.clip(action, -1.0, 1.0), dyn_key)
        rew_logits, cont_logit = heads(features(nxt))
        return nxt, (feat, action, nets.SUPPORT.decode(rew_logits), cont_logit)

    last, (feats, actions, reward, cont_logit) = jax.lax.scan(
        step, starts, jnp.moveaxis(step_keys, 1, 0))
    _, cont0 = heads(features(starts))
    return {"feats": feats, "last": features(last), "actions": actions, "reward": reward,
            "cont_logit": jnp.concatenate([cont0[None], cont_logit])}


def targets(reward: Array, cont_logit: Array, value: Array, *, discount: float,
            lambda_: float, contdisc: bool = True) -> Dict[str, Array]:
    """Continues, lambda-returns and weights of ONE trajectory from its heads' outputs:
    ``reward [H]`` of ``s_1..s_H``, ``cont_logit [H+1]`` and ``value [H+1]`` of ``s_0..s_H``.

    ``contdisc`` (2024): ``c_k = sigmoid(continue logit of s_k)``, which carries the discount,
    ``R_k = r_{k+1} + c_{k+1} (...)`` and ``w_k = prod_{j=0..k} c_j``. Otherwise (2023):
    ``c_k = [logit > 0]``, ``R_k = r_{k+1} + discount c_{k+1} (...)``,
    ``w_k = discount^k prod_{j=1..k} c_j`` (the 2023 code's ``cumprod(discount c) / discount``).
    Returns ``cont [H]`` (of ``s_1..s_H``), ``ret [H]`` and ``weight [H]`` (stop-gradient).
    """
    if contdisc:
        cont = jax.nn.sigmoid(cont_logit)  # [H+1]
        ret = rlmath.lambda_returns(reward, cont[1:], value[1:], lambda_)  # [H]
        weight = jnp.cumprod(cont)[:-1]  # [H]
        cont = cont[1:]
    else:
        cont = (cont_logit[1:] > 0).astype(jnp.float32)  # [H]
        ret = rlmath.lambda_returns(reward, discount * cont, value[1:], lambda_)  # [H]
        weight = jnp.cumprod(jnp.concatenate([jnp.ones(1), discount * cont[:-1]]))  # [H]
    return {"cont": cont, "ret": ret, "weight": jax.lax.stop_gradient(weight)}


def percentile_scale(ret: Array, state: Tuple[Array, Array, Array], decay: float
                     ) -> Tuple[Array, Tuple[Array, Array, Array]]:
    """``S = max(1, hi - lo)`` from EMAs of P5 / P95 of ``ret`` (any shape), both starting at 0
    and updated before use, without bias correction (the official ``retnorm``).

    ``state = (lo_ema, hi_ema, updates)``; returns ``(S, new_state)``.
    """
    lo, hi, n = state
    ret = jax.lax.stop_gradient(ret).reshape(-1)
    lo = decay * lo + (1 - decay) * jnp.percentile(ret, 5.0)
    hi = decay * hi + (1 - decay) * jnp.percentile(ret, 95.0)
    return jnp.maximum(1.0, hi - lo), (lo, hi, n + 1)


def actor_critic_loss(actor_params, critic_params, slow_params, traj: Dict[str, Array],
                      ret_state, *, actor: Actor, critic: nets.TwoHotHead, cfg, backprop: bool):
    """Actor and critic losses on imagined trajectories (:func:`imagine`, time-major).

    The critic runs once on ``s_0..s_{H-1}``: its logits are trained towards the returns and
    their (stop-gradient) means are the values the returns bootstrap on. With ``backprop`` the
    returns carry gradients through the dynamics into the actor, so the values come from a
    stop-gradient copy of the critic on the live features instead.
    Returns ``(actor_loss, critic_loss, new percentile state, R [H, N], metrics)``.
    """
    sg = jax.lax.stop_gradient
    feats, last = traj["feats"], traj["last"]
    logits = critic.apply(critic_params, sg(feats))  # [H, N, 255]
    if backprop:
        value = nets.SUPPORT.decode(critic.apply(
            sg(critic_params), jnp.concatenate([feats, last[None]])))  # [H+1, N]
    else:
        value = sg(jnp.concatenate([nets.SUPPORT.decode(logits),
                                    nets.SUPPORT.decode(critic.apply(critic_params, last))[None]]))
    tgt = jax.vmap(lambda r, c, v: targets(r, c, v, discount=cfg.discount, lambda_=cfg.lambda_,
                                           contdisc=cfg.contdisc),
                   in_axes=1, out_axes=1)(traj["reward"], traj["cont_logit"], value)
    ret, weight = tgt["ret"], tgt["weight"]  # [H, N]
    scale, ret_state = percentile_scale(ret, ret_state, cfg.ret_decay)
    out = actor.apply(actor_params, sg(feats))
    logp = policy_log_prob(out, sg(traj["actions"]), actor.discrete)
    entropy = policy_entropy(out, actor.discrete)
    if backprop:  # the 2023 code's -(R - v) / S, v through the imagined states as R
        objective = (ret - value[:-1]) / scale
    else:
        objective = sg((ret - value[:-1]) / scale) * logp
    actor_loss = -(weight * (objective + cfg.entropy * entropy)).mean()
    slow_mean = nets.SUPPORT.decode(critic.apply(slow_params, sg(feats)))
    critic_loss = (weight * value_loss_from_logits(logits, slow_mean, ret, cfg.slow_reg)).mean()
    metrics = {"actor_loss": actor_loss, "entropy": entropy.mean(), "return_scale": scale,
               "imag_return": ret.mean(), "imag_reward": traj["reward"].mean(),
               "imag_cont": tgt["cont"].mean(), "critic_loss": critic_loss,
               "value": nets.SUPPORT.decode(logits).mean()}
    return actor_loss, critic_loss, ret_state, sg(ret), metrics


def value_loss_from_logits(logits: Array, slow_mean: Array, ret: Array, slow_reg: float
                           ) -> Array:
    """Per step ``CE(logits, two_hot(R)) + slow_reg CE(logits, two_hot(slow mean))``."""
    sg = jax.lax.stop_gradient
    return (nets.SUPPORT.cross_entropy(logits, sg(ret))
            + slow_reg * nets.SUPPORT.cross_entropy(logits, sg(slow_mean)))


def value_loss(critic_params, slow_params, feats: Array, ret: Array, *,
               critic: nets.TwoHotHead, slow_reg: float) -> Tuple[Array, Array]:
    """Per step ``CE(v(s), two_hot(R)) + slow_reg CE(v(s), two_hot(v_slow(s)))`` for
    ``feats [..., F]`` and targets ``ret [...]``; returns ``(loss [...], logits [..., 255])``."""
    logits = critic.apply(critic_params, feats)
    slow_mean = nets.SUPPORT.decode(critic.apply(slow_params, feats))
    return value_loss_from_logits(logits, slow_mean, ret, slow_reg), logits


def replay_returns(reward: Array, terminated: Array, is_first: Array, boot: Array, *,
                   discount: float, lambda_: float) -> Tuple[Array, Array]:
    """Lambda-returns along ONE replayed window ``[T]`` bootstrapped on imagination returns.

    ``boot_t`` is the imagination return ``R_0`` from the posterior ``s_t``. Where ``s_{t+1}``
    is the successor of ``s_t`` (``not is_first_{t+1}``):
    ``R_t = r_t + discount ((1 - lambda) boot_{t+1} + lambda R_{t+1})``; where the episode
    terminated at ``t``, ``R_t = r_t``. Where the window has no successor of ``s_t`` (a
    truncation, or the window's last step) ``R_t = boot_t``: the recursion of the steps before
    it bootstraps on it, and the loss leaves it out (the official ``repval`` loss drops the
    window's last step). Returns ``(R [T], mask [T])``.
    """
    length = reward.shape[0]
    linked = jnp.concatenate([~is_first[1:], jnp.zeros((1,), bool)])  # s_{t+1} follows s_t
    boot_next = jnp.concatenate([boot[1:], boot[-1:]])

    def body(ret_next, inputs):
        r, b, b_next, link, term = inputs
        ret = jnp.where(term, r, jnp.where(
            link, r + discount * ((1 - lambda_) * b_next + lambda_ * ret_next), b))
        return ret, ret

    _, ret = jax.lax.scan(body, boot[-1], (reward, boot, boot_next, linked, terminated),
                          reverse=True)
    ends = jnp.arange(length) == length - 1
    mask = (linked | terminated) & ~ends
    return ret, mask.astype(jnp.float32)


def repval_loss(critic_params, slow_params, feats: Array, ret: Array, mask: Array, *,
                critic: nets.TwoHotHead, slow_reg: float) -> Array:
    """The official replay value loss: :func:`value_loss` on replayed posterior features
    ``feats [..., F]`` (gradients flow into the world model through them) with the targets of
    :func:`replay_returns`, weighted by ``mask [...]`` and averaged."""
    loss, _ = value_loss(critic_params, slow_params, feats, ret, critic=critic,
                         slow_reg=slow_reg)
    return (mask * loss).mean()
