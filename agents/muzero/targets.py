"""Value, reward and policy targets of a K-step unroll from one replay window.

A window holds ``L = K + n`` consecutive steps of one environment (flashbax may let it run
into the next episode). Step ``j`` has reward ``r_j`` (after action ``a_j`` in ``o_j``), flags
``terminated_j`` / ``truncated_j`` (the episode ended at ``next_obs_j``), ``is_first_j``, the
search policy ``pi_j`` and ``v_j``: the value of the state AFTER step j (``V(next_obs_j)``).

* ``alive_k``: ``o_k`` belongs to the episode of ``o_0`` (no end among steps ``< k``).
* ``absorbing_k``: that episode TERMINATED before ``o_k``: past a terminal the model must
  predict value 0, reward 0 (MuZero's absorbing states); the policy there is not trained.
* Past a truncation (time limit) nothing is known about the true continuation: masked.

Value targets are n-step returns ``z_k = sum_{i<n} gamma^i r_{k+i} + gamma^n v_{k+n-1}`` cut at
the episode end: a terminal zeroes the discount; a truncation at step j bootstraps on
``V(next_obs_j)`` by folding ``gamma v_j`` into ``r_j`` and zeroing the discount after it.

Outcome targets (``outcome=True``, board games): the window reaches past the end of the game
of every unroll step (``n`` at least the game's length) and ``z_k`` is the sum of the rewards to
the end with the per-ply ``discount`` (-1 in a two-player game: each reward counts for the
player to move at ``o_k`` when its mover is that player, negated otherwise), with no
bootstrap; a game that does not terminate inside the window (a time limit cut it) has no
outcome, and its value targets are masked.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from core import rlmath

Array = jax.Array


class UnrollTargets(NamedTuple):
    """Targets for unroll steps ``k = 0..K`` (index 0 of the reward fields is unused)."""

    value: Array  # [K+1]
    value_mask: Array  # [K+1]
    reward: Array  # [K+1]
    reward_mask: Array  # [K+1]
    policy: Array  # [K+1, A]
    policy_mask: Array  # [K+1]
    alive: Array  # [K+1]: o_k is a real state of o_0's episode
    # Sampled MuZero: the actions the policy target is over, [K+1, N, action_dim]; None for
    # discrete actions (the target is then over the action space itself).
    policy_actions: Any = None
    # Tasks with legal-action masks: [K+1, A] float, 1 where the action is legal in o_k
    # (trained where alive); None elsewhere.
    legal: Any = None


def episode_masks(terminated: Array, truncated: Array, is_first: Array):
    """``(alive [L], absorbing [L])`` as float32 (see module doc)."""
    done = (terminated | truncated).astype(jnp.float32)
    new_episode = jnp.concatenate([jnp.zeros(1), jnp.maximum(done[:-1],
                                                             is_first[1:].astype(jnp.float32))])
    alive = jnp.cumprod(1.0 - new_episode)
    ends_here = alive * terminated.astype(jnp.float32)  # step j ends o_0's episode by a terminal
    absorbing = jnp.concatenate([jnp.zeros(1), jnp.cumsum(ends_here)[:-1]])
    return alive, jnp.minimum(absorbing, 1.0)


def n_step_value_targets(rewards: Array, terminated: Array, truncated: Array,
                         values_after: Array, *, n_step: int, discount: float) -> Array:
    """``[L]`` n-step returns, cut at terminals and bootstrapped at truncations."""
    chex.assert_rank([rewards, terminated, truncated, values_after], 1)
    trunc_only = truncated & ~terminated
    rewards = rewards + jnp.where(trunc_only, discount * values_after, 0.0)
    discounts = jnp.where(terminated | truncated, 0.0, discount)
    return rlmath.n_step_returns(rewards, discounts, values_after, n_step)


def unroll_targets(rewards: Array, terminated: Array, truncated: Array, is_first: Array,
                   policies: Array, values_after: Array, *, unroll_steps: int, n_step: int,
                   discount: float, policy_actions: Array = None, outcome: bool = False,
                   legal_mask: Array = None) -> UnrollTargets:
    """One window (leaves ``[L]``, ``policies [L, A]``, ``L >= K + n``) -> targets.

    ``policy_actions [L, N, ...]`` (Sampled MuZero): the actions ``policies [L, N]`` weigh.
    ``outcome``: outcome targets (module doc; ``values_after`` is then not read).
    ``legal_mask [L, A]`` bool: the legal actions of each ``o_j`` (tasks with masks)."""
    chex.assert_rank(policies, 2)
    length, k1 = rewards.shape[0], unroll_steps + 1
    if length < unroll_steps + n_step:
        raise ValueError(f"window length {length} < unroll_steps + n_step = "
                         f"{unroll_steps + n_step}")
    alive, absorbing = episode_masks(terminated, truncated, is_first)
    if outcome:
        values_after = jnp.zeros_like(rewards)
    returns = n_step_value_targets(rewards, terminated, truncated, values_after,
                                   n_step=n_step, discount=discount)
    alive_k, absorbing_k = alive[:k1], absorbing[:k1]
    value_mask = jnp.maximum(alive_k, absorbing_k)
    if outcome:  # o_0's game (that of every alive o_k) must end by a terminal in the window
        has_outcome = jnp.any((alive > 0) & terminated)
        value_mask = jnp.where(alive_k > 0, has_outcome.astype(jnp.float32), absorbing_k)
    value = alive_k * returns[:k1]
    # reward target of step k is r_{k-1}: real while o_{k-1} is alive, 0 once absorbing.
    prev_alive = jnp.concatenate([jnp.zeros(1), alive[:unroll_steps]])
    prev_absorbing = jnp.concatenate([jnp.zeros(1), absorbing[:unroll_steps]])
    reward = prev_alive * jnp.concatenate([jnp.zeros(1), rewards[:unroll_steps]])
    has_policy = (policies[:k1].sum(-1) > 0).astype(jnp.float32)  # prefill steps store zeros
    return UnrollTargets(value=value, value_mask=value_mask,
                         reward=reward, reward_mask=jnp.maximum(prev_alive, prev_absorbing),
                         policy=policies[:k1], policy_mask=alive_k * has_policy, alive=alive_k,
                         policy_actions=None if policy_actions is None else policy_actions[:k1],
                         legal=None if legal_mask is None
                         else jnp.asarray(legal_mask[:k1], jnp.float32))


def importance_weights(probabilities: Array, exponent: float) -> Array:
    """Prioritised-replay weights ``w_i = (N P(i))^-beta / max_j (N P(j))^-beta`` ``[B]``.

    The max is over the batch, so ``N`` cancels: ``w_i = (P(i) / min_j P(j))^-beta``.
    """
    chex.assert_rank(probabilities, 1)
    p = jnp.maximum(probabilities, 1e-12)
    return (p / p.min()) ** (-exponent)
