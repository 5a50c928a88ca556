"""Stochastic MuZero's learned model (Antonoglou et al., 2022), usable on its own.

MuZero's model (:mod:`world_models.muzero`) is deterministic: a spawn of random tiles in 2048
has to be folded into its one dynamics step as an average. Stochastic MuZero splits a
transition into the agent's move and the environment's chance event:

    s_0 = h(o),   as_k = phi(s_k, a_k),   (sigma_k, Q_k) = psi(as_k),
    (r_{k+1}, s_{k+1}) = g(as_k, c_k),   (p_k, v_k) = f(s_k),

with ``as_k`` the afterstate, ``sigma_k`` the distribution of the chance outcome ``c_k`` over a
codebook of C one-hot codes, ``Q_k`` the afterstate value (networks:
:mod:`world_models.stochastic_muzero_nets`). In training, ``c_k`` is the code of what really
happened, from the chance encoder ``e(o_k, o_{k+1})``: ``c_k = one_hot(argmax softmax(e))``,
passed on with the straight-through gradient of ``softmax(e)`` (:func:`chance_code`). In
search, the chance nodes draw codes from ``sigma`` (:func:`make_search_fns`,
``mctx.stochastic_muzero_policy``).

Values, afterstate values and rewards are categorical on ``core.rlmath.Support`` with the
h-transform, states and afterstates are min-max normalised per example, and :meth:`unroll`
halves the gradient entering each step, all as in MuZero.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import mctx

from core.rlmath import Support
from world_models.muzero import DEFAULT_SUPPORT, NET_PRESETS, make_root_fn, scale_gradient
from world_models.stochastic_muzero_nets import StochasticMuZeroNet

Array = jax.Array


def chance_code(logits: Array) -> Tuple[Array, Array, Array]:
    """Encoder logits ``[..., C]`` -> ``(code, onehot, probs)``, each ``[..., C]``.

    ``probs = softmax(logits)``, ``onehot = one_hot(argmax probs)`` and ``code = probs +
    sg(onehot - probs)``: equal to ``onehot`` forward, with the gradient of ``probs`` backward
    (the straight-through estimator).
    """
    probs = jax.nn.softmax(logits, axis=-1)
    onehot = jax.nn.one_hot(jnp.argmax(probs, axis=-1), logits.shape[-1], dtype=probs.dtype)
    return probs + jax.lax.stop_gradient(onehot - probs), onehot, probs


class StochasticUnroll(NamedTuple):
    """Predictions of a K-step unroll; ``reward_logits[0]`` is unused (no transition leads to
    the root)."""

    policy_logits: Array  # [K+1, A]
    value_logits: Array  # [K+1, value_bins]
    reward_logits: Array  # [K+1, reward_bins]
    q_logits: Array  # [K, value_bins]: afterstate values Q_0..Q_{K-1}
    chance_logits: Array  # [K, C]: sigma_0..sigma_{K-1}
    encoder_probs: Array  # [K, C]: softmax(e(o_k, o_{k+1}))
    codes: Array  # [K, C]: the one-hot codes the dynamics used
    hidden: Array  # [K+1, *latent]


@dataclasses.dataclass(frozen=True)
class StochasticMuZeroModel:
    """The network plus its supports; all methods take the parameters explicitly."""

    net: StochasticMuZeroNet
    value_support: Support
    reward_support: Support

    @property
    def num_actions(self) -> int:
        return self.net.num_actions

    @property
    def codebook_size(self) -> int:
        return self.net.codebook_size

    def init(self, key: Array, obs_shape: Tuple[int, ...]) -> Any:
        obs = jnp.zeros((1,) + tuple(obs_shape), jnp.float32)
        return self.net.init(key, obs, jnp.zeros((1,), jnp.int32))

    def _apply(self, params, method, *args):
        return self.net.apply(params, *args, method=method)

    def represent(self, params, obs: Array) -> Array:
        return self._apply(params, StochasticMuZeroNet.represent, obs)

    def afterstate(self, params, s: Array, action: Array) -> Array:
        return self._apply(params, StochasticMuZeroNet.afterstate, s, action)

    def afterstate_predict(self, params, afterstate: Array) -> Tuple[Array, Array]:
        return self._apply(params, StochasticMuZeroNet.afterstate_predict, afterstate)

    def dynamics(self, params, afterstate: Array, code: Array) -> Tuple[Array, Array]:
        return self._apply(params, StochasticMuZeroNet.dynamics, afterstate, code)

    def predict(self, params, s: Array) -> Tuple[Array, Array]:
        return self._apply(params, StochasticMuZeroNet.predict, s)

    def encode(self, params, obs: Array, next_obs: Array) -> Array:
        return self._apply(params, StochasticMuZeroNet.encode, obs, next_obs)

    def value(self, params, obs: Array) -> Array:
        """``obs [B, ...] -> V(obs) [B]`` (scalar, untransformed)."""
        _, value_logits = self.predict(params, self.represent(params, obs))
        return self.value_support.decode(value_logits)

    def unroll(self, params, obs: Array, actions: Array, observed: Optional[Array] = None,
               dynamics_grad_scale: float = 0.5) -> StochasticUnroll:
        """One example: ``obs [K+1, *obs_shape]`` (real o_0..o_K), ``actions [K]`` int.

        Transition k uses the encoder's code of ``(o_k, o_{k+1})`` where ``observed [K]``
        (default all True) and elsewhere the most likely code under ``sigma_k`` (no gradient):
        past an episode's end ``o_{k+1}`` belongs to the next episode. The state entering
        each step has its gradient scaled by ``dynamics_grad_scale``; the steps are unrolled
        at trace time, as in :meth:`world_models.muzero.MuZeroModel.unroll`.
        """
        chex.assert_rank(actions, 1)
        k = actions.shape[0]
        chex.assert_axis_dimension(obs, 0, k + 1)
        observed = jnp.ones((k,), bool) if observed is None else observed
        encoded, _, encoder_probs = chance_code(self.encode(params, obs[:-1], obs[1:]))
        s0 = self.represent(params, obs[None, 0])[0]

        def step(s, inputs):
            action, code, use_code = inputs
            afterstate = self.afterstate(params, scale_gradient(s, dynamics_grad_scale)[None],
                                         action[None])
            chance_logits, q_logits = self.afterstate_predict(params, afterstate)
            likely = jax.nn.one_hot(jnp.argmax(chance_logits[0]), self.codebook_size)
            code = jnp.where(use_code, code, jax.lax.stop_gradient(likely))
            reward_logits, s_next = self.dynamics(params, afterstate, code[None])
            return s_next[0], (reward_logits[0], q_logits[0], chance_logits[0], code, s_next[0])

        _, (reward_logits, q_logits, chance_logits, codes, hidden) = jax.lax.scan(
            step, s0, (actions, encoded, observed), unroll=True)
        hidden = jnp.concatenate([s0[None], hidden], axis=0)
        policy_logits, value_logits = self.predict(params, hidden)
        reward_logits = jnp.concatenate([jnp.zeros_like(reward_logits[:1]), reward_logits])
        return StochasticUnroll(policy_logits, value_logits, reward_logits, q_logits,
                                chance_logits, encoder_probs, codes, hidden)


def make_model(num_actions: int, obs_shape: Tuple[int, ...], *, codebook_size: int = 32,
               size: str = "small", value_support: Support = DEFAULT_SUPPORT,
               reward_support: Support = DEFAULT_SUPPORT, **overrides) -> StochasticMuZeroModel:
    """A model for ``obs_shape`` (rank 1 or 2 -> MLP on the flattened observation, rank 3 ->
    residual CNN), with MuZero's size presets (``world_models.muzero.NET_PRESETS``)."""
    if size not in NET_PRESETS:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(NET_PRESETS)}")
    rank = len(obs_shape)
    if rank not in (1, 2, 3):
        raise ValueError(f"observations must be vectors, [H, W] grids (flattened) or images "
                         f"[H, W, C]; got {obs_shape}")
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    kwargs = dict(NET_PRESETS[size], **overrides)
    net = StochasticMuZeroNet(num_actions=num_actions, codebook_size=codebook_size,
                              kind="resnet" if rank == 3 else "mlp", obs_rank=rank,
                              value_bins=value_support.size, reward_bins=reward_support.size,
                              **kwargs)
    return StochasticMuZeroModel(net=net, value_support=value_support,
                                 reward_support=reward_support)


def make_search_fns(model: StochasticMuZeroModel, discount: float
                    ) -> Tuple[Callable, Callable, Callable]:
    """``(root_fn, decision_recurrent_fn, chance_recurrent_fn)`` in mctx's types.

    * ``root_fn(params, obs [B, ...]) -> mctx.RootFnOutput`` (embedding: the state ``s``);
    * ``decision_recurrent_fn(params, key, action [B], s) -> (DecisionRecurrentFnOutput, as)``:
      the afterstate, its chance logits ``sigma`` and value ``Q`` (mctx gives the edge reward
      0 and discount 1);
    * ``chance_recurrent_fn(params, key, code [B], as) -> (ChanceRecurrentFnOutput, s')``:
      reward, discount ``discount`` (the learned model never terminates), the next state's
      policy logits and value.
    """

    root_fn = make_root_fn(model)

    def decision_recurrent_fn(params, key, action, s):
        del key
        afterstate = model.afterstate(params, s, action)
        chance_logits, q_logits = model.afterstate_predict(params, afterstate)
        out = mctx.DecisionRecurrentFnOutput(
            chance_logits=chance_logits, afterstate_value=model.value_support.decode(q_logits))
        return out, afterstate

    def chance_recurrent_fn(params, key, code, afterstate):
        del key
        onehot = jax.nn.one_hot(code, model.codebook_size)
        reward_logits, s_next = model.dynamics(params, afterstate, onehot)
        policy_logits, value_logits = model.predict(params, s_next)
        out = mctx.ChanceRecurrentFnOutput(
            action_logits=policy_logits, value=model.value_support.decode(value_logits),
            reward=model.reward_support.decode(reward_logits),
            discount=jnp.full(code.shape, discount, jnp.float32))
        return out, s_next

    return root_fn, decision_recurrent_fn, chance_recurrent_fn
