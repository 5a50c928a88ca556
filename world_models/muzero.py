"""MuZero's learned model, usable on its own: inference, unrolls, and mctx search adapters.

The model (Schrittwieser et al., 2020) has three functions on a hidden state ``s``:

    s_0 = h(o),     (r_k, s_k) = g(s_{k-1}, a_k),     (p_k, v_k) = f(s_k).

Values and rewards are categorical over a support in transformed space (``core.rlmath.Support``
with ``T(x) = sign(x)(sqrt(|x|+1) - 1) + 0.001 x``, ``core.rlmath.signed_hyperbolic``): a
scalar ``x`` is encoded as ``two_hot(T(x), support)`` and a prediction is decoded as
``T^-1(softmax(logits) @ support)``. Hidden states are min-max normalised per example
(:mod:`world_models.muzero_nets`), and :meth:`MuZeroModel.unroll` scales the gradient flowing
back into the dynamics by 0.5 at every step.

Search (mctx) sees any model through two functions of mctx's types:

* ``root_fn(params, obs [B, ...]) -> mctx.RootFnOutput``
* ``recurrent_fn(params, key, action [B], embedding) -> (mctx.RecurrentFnOutput, embedding)``

:func:`make_model_fns` builds them for the learned model; :func:`make_env_recurrent_fn` for a
real environment's step (a perfect model, used in tests), and a test double only needs the
same two signatures.

Continuous actions (``make_model(..., action_bounds=(low, high))``, Sampled MuZero): the
dynamics takes an environment action ``[..., action_dim]``, scaled to [-1, 1] by the bounds,
and the policy head is a Gaussian over pre-squash actions ``u`` (:func:`gaussian_policy`),
taken as ``a = squash(u) = low + (tanh(u) + 1) (high - low) / 2``. The search over sampled
actions lives in :mod:`agents.sampled_muzero.search`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import mctx

from core.rlmath import Support
from world_models.muzero_nets import MuZeroNet

Array = jax.Array

# Size presets of the networks (latent width/channels, hidden widths, residual blocks).
NET_PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(latent_dim=16, hidden=(32,), num_blocks=1, head_channels=4),
    "small": dict(latent_dim=64, hidden=(64,), num_blocks=1, head_channels=8),
    "medium": dict(latent_dim=128, hidden=(128, 128), num_blocks=2, head_channels=16),
    "large": dict(latent_dim=256, hidden=(256, 256), num_blocks=4, head_channels=32),
}


# Prior logit of an action a search must not take (a softmax gives it probability 0).
MASKED_LOGIT = -1e9

# MuZero's value/reward support: 21 bins over [-10, 10] in h-space (|x| up to about 120).
DEFAULT_SUPPORT = Support(21, 10.0, "signed_hyperbolic")


def gaussian_policy(policy_out: Array, min_std: float = 0.05) -> Tuple[Array, Array]:
    """A continuous policy head's output ``[..., 2 A]`` -> ``(mean, std)``, each ``[..., A]``.

    ``std = min_std + softplus(raw + b)`` with ``b`` chosen so that ``std = 1`` at ``raw = 0``
    (the head's zero initialisation): a wide first policy over pre-squash actions, never
    narrower than ``min_std``.
    """
    mean, raw = jnp.split(policy_out, 2, axis=-1)
    offset = jnp.log(jnp.expm1(1.0 - min_std))  # softplus^-1(1 - min_std)
    return mean, min_std + jax.nn.softplus(raw + offset)


def gaussian_log_prob(u: Array, mean: Array, std: Array) -> Array:
    """``log N(u; mean, diag(std^2))`` summed over the last axis."""
    z = (u - mean) / std
    return jnp.sum(-0.5 * z * z - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def scale_gradient(x: Array, scale: float) -> Array:
    """Identity forward; multiplies the gradient by ``scale`` backward."""
    return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


class Unroll(NamedTuple):
    """Predictions of a K-step unroll (leading axis K + 1; step 0 is the root).

    ``reward_logits[0]`` is unused (no transition leads to the root).
    """

    policy_logits: Array  # [K+1, A]
    value_logits: Array  # [K+1, value_bins]
    reward_logits: Array  # [K+1, reward_bins]
    hidden: Array  # [K+1, *latent]: hidden states s_0..s_K
    legal_logits: Optional[Array] = None  # [K+1, A]: legality logits (models with that head)


@dataclasses.dataclass(frozen=True)
class MuZeroModel:
    """The networks plus their supports; all methods take the parameters explicitly."""

    net: MuZeroNet
    value_support: Support
    reward_support: Support
    action_low: Tuple[float, ...] = ()  # continuous actions: bounds, one per dimension
    action_high: Tuple[float, ...] = ()

    @property
    def num_actions(self) -> int:
        return self.net.num_actions

    @property
    def continuous(self) -> bool:
        return self.net.action_dim > 0

    @property
    def has_legal_head(self) -> bool:
        return self.net.legal_head

    def init(self, key: Array, obs_shape: Tuple[int, ...]) -> Any:
        obs = jnp.zeros((1,) + tuple(obs_shape), jnp.float32)
        if self.continuous:
            return self.net.init(key, obs, jnp.zeros((1, self.net.action_dim), jnp.float32))
        return self.net.init(key, obs, jnp.zeros((1,), jnp.int32))

    def represent(self, params, obs: Array) -> Array:
        return self.net.apply(params, obs, method=MuZeroNet.represent)

    def dynamics(self, params, s: Array, action: Array) -> Tuple[Array, Array]:
        if self.continuous:  # environment action -> [-1, 1]
            low, high = jnp.asarray(self.action_low), jnp.asarray(self.action_high)
            action = jnp.clip(2.0 * (action - low) / (high - low) - 1.0, -1.0, 1.0)
        return self.net.apply(params, s, action, method=MuZeroNet.dynamics)

    def squash(self, u: Array) -> Array:
        """Pre-squash ``u [..., action_dim]`` -> environment action within the bounds."""
        low, high = jnp.asarray(self.action_low), jnp.asarray(self.action_high)
        return low + (jnp.tanh(u) + 1.0) * (0.5 * (high - low))

    def predict(self, params, s: Array) -> Tuple[Array, Array]:
        return self.net.apply(params, s, method=MuZeroNet.predict)

    def legal_logits(self, params, s: Array) -> Array:
        """``s -> [..., A]`` logits of each action being legal (models with the head)."""
        return self.net.apply(params, s, method=MuZeroNet.legal_logits)

    def decode_obs(self, params, s: Array) -> Array:
        return self.net.apply(params, s, method=MuZeroNet.decode_obs)

    def project(self, params, s: Array, predictor: bool) -> Array:
        return self.net.apply(params, s, predictor, method=MuZeroNet.project)

    def value(self, params, obs: Array) -> Array:
        """``obs [B, ...] -> V(obs) [B]`` (scalar, untransformed)."""
        _, value_logits = self.predict(params, self.represent(params, obs))
        return self.value_support.decode(value_logits)

    def unroll(self, params, obs: Array, actions: Array, dynamics_grad_scale: float = 0.5
               ) -> Unroll:
        """One example: ``obs [*obs_shape]``, ``actions [K]`` (``[K, action_dim]`` when
        continuous) -> :class:`Unroll` (K + 1 steps).

        The hidden state entering each dynamics step has its gradient scaled by
        ``dynamics_grad_scale`` (0.5 in the paper), so the total gradient into the dynamics
        stays about the same whatever K is. The K steps are unrolled at trace time
        (``scan(unroll=True)``): XLA's CPU backend runs the gradient of convolutions inside a
        while loop ~16x slower than unrolled (MinAtar, 32 channels, K = 5: 760 ms vs 47 ms).
        """
        chex.assert_rank(actions, 2 if self.continuous else 1)
        s0 = self.represent(params, obs[None])[0]

        def step(s, action):
            reward_logits, s_next = self.dynamics(
                params, scale_gradient(s, dynamics_grad_scale)[None], action[None])
            return s_next[0], (reward_logits[0], s_next[0])

        _, (reward_logits, hidden) = jax.lax.scan(step, s0, actions, unroll=True)
        hidden = jnp.concatenate([s0[None], hidden], axis=0)
        policy_logits, value_logits = self.predict(params, hidden)
        reward_logits = jnp.concatenate([jnp.zeros_like(reward_logits[:1]), reward_logits])
        legal = self.legal_logits(params, hidden) if self.has_legal_head else None
        return Unroll(policy_logits, value_logits, reward_logits, hidden, legal)


def make_model(num_actions: int, obs_shape: Tuple[int, ...], *, size: str = "small",
               value_support: Support = DEFAULT_SUPPORT,
               reward_support: Support = DEFAULT_SUPPORT, projection_dim: int = 64,
               action_bounds: Tuple[Sequence[float], Sequence[float]] = None,
               legal_head: bool = False, **overrides) -> MuZeroModel:
    """A model for ``obs_shape`` (rank 1 or 2 -> MLP on the flattened observation, rank 3 ->
    residual CNN) and a size preset.

    ``action_bounds=(low, high)`` makes the actions continuous (``num_actions`` unused).
    ``legal_head`` adds the head predicting the legal actions of a hidden state (discrete
    tasks with legal-action masks; :func:`make_model_fns` masks the search's priors by it)."""
    if legal_head and action_bounds:
        raise ValueError("legal_head needs discrete actions; drop action_bounds or legal_head")
    if overrides.get("action_layout") is not None and (action_bounds or len(obs_shape) != 3):
        raise ValueError(f"action_layout {overrides['action_layout']!r} needs discrete actions "
                         f"and image observations [H, W, C] (got {tuple(obs_shape)}); drop it")
    if size not in NET_PRESETS:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(NET_PRESETS)}")
    rank = len(obs_shape)
    if rank not in (1, 2, 3):
        raise ValueError(f"observations must be vectors, [H, W] grids (flattened) or images "
                         f"[H, W, C]; got {obs_shape}")
    kwargs = dict(NET_PRESETS[size], **overrides)
    net = MuZeroNet(num_actions=num_actions, kind="resnet" if rank == 3 else "mlp",
                    obs_rank=rank, value_bins=value_support.size,
                    reward_bins=reward_support.size, projection_dim=projection_dim,
                    action_dim=len(action_bounds[0]) if action_bounds else 0,
                    legal_head=legal_head, **kwargs)
    if not action_bounds:
        return MuZeroModel(net=net, value_support=value_support, reward_support=reward_support)
    low, high = (tuple(float(x) for x in b) for b in action_bounds)
    if len(low) != len(high) or not all(lo < hi for lo, hi in zip(low, high)):
        raise ValueError(f"action_bounds need low < high in every dimension; got {low}, {high}")
    return MuZeroModel(net=net, value_support=value_support, reward_support=reward_support,
                       action_low=low, action_high=high)


def make_root_fn(model) -> Callable:
    """mctx's ``root_fn(params, obs [B, ...]) -> RootFnOutput`` of any model with
    ``represent``, ``predict`` and ``value_support`` (MuZero's and its variants'): the prior
    and decoded value of ``s = h(o)``, with ``s`` as the embedding."""

    def root_fn(params, obs: Array) -> mctx.RootFnOutput:
        s = model.represent(params, obs)
        policy_logits, value_logits = model.predict(params, s)
        return mctx.RootFnOutput(prior_logits=policy_logits,
                                 value=model.value_support.decode(value_logits), embedding=s)

    return root_fn


def make_model_fns(model: MuZeroModel, discount: float) -> Tuple[Callable, Callable]:
    """``(root_fn, recurrent_fn)`` of the learned model in mctx's types.

    ``root_fn(params, obs [B, ...])`` and ``recurrent_fn(params, key, action [B], s [B, ...])``;
    the learned model never terminates, so every edge has discount ``discount``: in a
    two-player game that alternates moves, ``-1`` (mctx's convention: values are the player to
    move's, rewards the mover's, so a child's value counts negated for its parent).

    A model with the legality head (:meth:`MuZeroModel.legal_logits`) removes the actions it
    predicts to be illegal (logit < 0) from the prior of every node below the root (their
    prior logit becomes :data:`MASKED_LOGIT`), unless it predicts no legal action at all;
    the root's legal actions come from the environment (``invalid_actions`` of the search).
    """

    root_fn = make_root_fn(model)

    def recurrent_fn(params, key, action, s):
        del key
        reward_logits, s_next = model.dynamics(params, s, action)
        policy_logits, value_logits = model.predict(params, s_next)
        if model.has_legal_head:
            legal = model.legal_logits(params, s_next) > 0
            legal = legal | ~jnp.any(legal, axis=-1, keepdims=True)
            policy_logits = jnp.where(legal, policy_logits, MASKED_LOGIT)
        out = mctx.RecurrentFnOutput(
            reward=model.reward_support.decode(reward_logits),
            discount=jnp.full(action.shape, discount, jnp.float32),
            prior_logits=policy_logits, value=model.value_support.decode(value_logits))
        return out, s_next

    return root_fn, recurrent_fn


class EnvEmbedding(NamedTuple):
    """The embedding of the true-model search: an environment state and an absorbing flag."""

    state: Any  # the environment's own state pytree, leaves [B, ...]
    done: Array  # [B] bool: a terminal was reached on the path to this node


def make_env_recurrent_fn(step_fn: Callable, *, num_actions: int, discount: float,
                          value_fn: Callable = None) -> Callable:
    """mctx ``recurrent_fn`` that steps a real (deterministic) environment: a perfect model.

    Args:
      step_fn: one example, ``(state, action) -> (next_state, reward, terminated)``.
      value_fn: one example, ``state -> value`` used as the leaf estimate (default 0).
    Returns:
      ``recurrent_fn(params, key, action [B], EnvEmbedding)``: uniform prior logits; after a
      terminal the node is absorbing (reward 0, discount 0).
    """
    value_fn = value_fn or (lambda state: jnp.zeros((), jnp.float32))

    def recurrent_fn(params, key, action, embedding: EnvEmbedding):
        del params, key
        next_state, reward, terminated = jax.vmap(step_fn)(embedding.state, action)
        done = embedding.done | terminated
        reward = jnp.where(embedding.done, 0.0, reward).astype(jnp.float32)
        out = mctx.RecurrentFnOutput(
            reward=reward, discount=jnp.where(done, 0.0, discount).astype(jnp.float32),
            prior_logits=jnp.zeros(action.shape + (num_actions,), jnp.float32),
            value=jnp.where(done, 0.0, jax.vmap(value_fn)(next_state)).astype(jnp.float32))
        return out, EnvEmbedding(next_state, done)

    return recurrent_fn
