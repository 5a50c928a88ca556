"""Search over K sampled continuous actions with mctx (Hubert et al., 2021, Sampled MuZero).

At every node the search considers ``K`` actions ``u_1..u_K`` (pre-squash, see
:func:`world_models.muzero.gaussian_policy`) drawn from a sampling distribution ``beta``, and
mctx searches over them as discrete actions ``0..K-1``: the node's embedding carries its K
samples, and the recurrent function maps a chosen index back to its continuous action.

Prior (the paper's Section 4): PUCT's prior over the samples is ``(beta_hat / beta) pi``, with
``beta_hat = (1/K) sum_i delta(u_i)`` the empirical distribution of the samples. Continuous
samples are distinct almost surely, so ``beta_hat`` puts ``1/K`` on each and the prior logits are

    logit_i = log pi(u_i | s) - log beta(u_i | s)     (+ log(1/K), a constant),

normalised over the K samples by mctx's softmax. Inside the tree ``beta = pi`` and the logits
are equal (a uniform prior over samples already drawn in proportion to ``pi``). At the root,
while exploring, ``beta`` is ``pi`` widened: ``N(mean, (root_std_scale * std)^2)``, and the
correction pulls the prior back towards ``pi`` (Dirichlet or Gumbel noise may be added on top,
as in MuZero). The tanh squash's Jacobian is the same for ``pi`` and ``beta`` and cancels.

Greedy evaluation (``explore=False``): ``beta = pi`` at the root with the policy mean as one of
the samples, a fixed key for all sampling, and the most visited sample: a deterministic
function of the observation and the parameters.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Tuple

import chex
import jax
import jax.numpy as jnp
import mctx

from world_models.muzero import MuZeroModel, gaussian_log_prob, gaussian_policy

Array = jax.Array


class SampledEmbedding(NamedTuple):
    """A node of the sampled search: its hidden state and the K actions of its children."""

    hidden: Array  # [B, *latent]
    samples: Array  # [B, K, action_dim]: pre-squash actions u_1..u_K


def root_prior_logits(u: Array, mean: Array, std: Array, beta_std: Array) -> Array:
    """``log pi(u_i) - log beta(u_i)`` ``[B, K]`` for ``u [B, K, A]``, ``pi = N(mean, std^2)``
    and ``beta = N(mean, beta_std^2)`` (``mean``, ``std``, ``beta_std`` are ``[B, A]``)."""
    chex.assert_rank(u, 3)
    log_pi = gaussian_log_prob(u, mean[:, None], std[:, None])
    log_beta = gaussian_log_prob(u, mean[:, None], beta_std[:, None])
    return log_pi - log_beta


def make_search_fns(model: MuZeroModel, *, num_samples: int, discount: float,
                    min_std: float, root_std_scale: float) -> Tuple[Callable, Callable]:
    """``(root_fn, recurrent_fn)`` of the sampled search on a continuous-action model.

    ``root_fn(params, obs [B, ...], key, explore) -> mctx.RootFnOutput`` (prior logits
    ``[B, K]``, embedding :class:`SampledEmbedding`);
    ``recurrent_fn(params, key, index [B], embedding) -> (mctx.RecurrentFnOutput, embedding)``.
    """
    if not model.continuous:
        raise ValueError("the sampled search needs a continuous-action model")

    def draw(key, mean, std):
        noise = jax.random.normal(key, mean.shape[:1] + (num_samples,) + mean.shape[1:])
        return mean[:, None] + std[:, None] * noise  # [B, K, A]

    def root_fn(params, obs: Array, key: Array, explore: bool) -> mctx.RootFnOutput:
        s = model.represent(params, obs)
        policy_out, value_logits = model.predict(params, s)
        mean, std = gaussian_policy(policy_out, min_std)
        if explore:
            beta_std = root_std_scale * std
            u = draw(key, mean, beta_std)
            logits = root_prior_logits(u, mean, std, beta_std)
        else:
            u = draw(key, mean, std).at[:, 0].set(mean)
            logits = jnp.zeros(u.shape[:2], jnp.float32)
        return mctx.RootFnOutput(prior_logits=logits,
                                 value=model.value_support.decode(value_logits),
                                 embedding=SampledEmbedding(s, u))

    def recurrent_fn(params, key, index: Array, node: SampledEmbedding):
        u = jnp.take_along_axis(node.samples, index[:, None, None], axis=1)[:, 0]  # [B, A]
        reward_logits, s_next = model.dynamics(params, node.hidden, model.squash(u))
        policy_out, value_logits = model.predict(params, s_next)
        mean, std = gaussian_policy(policy_out, min_std)
        out = mctx.RecurrentFnOutput(
            reward=model.reward_support.decode(reward_logits),
            discount=jnp.full(index.shape, discount, jnp.float32),
            prior_logits=jnp.zeros(index.shape + (num_samples,), jnp.float32),
            value=model.value_support.decode(value_logits))
        return out, SampledEmbedding(s_next, draw(key, mean, std))

    return root_fn, recurrent_fn
