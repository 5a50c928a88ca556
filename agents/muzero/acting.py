"""Search with mctx on any model given as ``(root_fn, recurrent_fn)``, and the temperature.

:func:`search` runs ``mctx.muzero_policy`` or ``mctx.gumbel_muzero_policy`` on a batch of
observations and returns the action to take, the search policy (visit-count distribution for
MuZero, the improved policy ``softmax(logits + sigma(completed Q))`` for Gumbel MuZero) used as
the policy target, and the root value used for priorities and diagnostics.

Legal actions: given a ``legal_action_mask [B, A]``, mctx's ``invalid_actions = ~mask`` removes
the illegal actions at the root (prior, selection, the action taken and the search policy);
nodes below the root use the learned model unmasked, as in MuZero.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import mctx

from agents.muzero.config import MuZeroConfig

Array = jax.Array


class SearchOutput(NamedTuple):
    action: Array  # [B] int32
    policy: Array  # [B, A]: search policy (the policy target)
    root_value: Array  # [B]: value of the root after search


def qtransform_by_tree_min_max(tree: mctx.Tree, node_index: Array, *,
                               epsilon: float = 1e-8) -> Array:
    """Q-values of ``node_index``'s children scaled to [0, 1] by the min and max of every
    visited edge's ``r + gamma v`` in the whole (unbatched) tree, as in the MuZero paper's
    pseudocode (``MinMaxStats``); unvisited children get 0. mctx's default
    (``qtransform_by_parent_and_siblings``) scales by the parent and its siblings only, which
    stretches even a tiny difference between two children to the full [0, 1]."""
    chex.assert_shape(node_index, ())
    all_q = tree.children_rewards + tree.children_discounts * tree.children_values
    seen = tree.children_visits > 0
    low = jnp.min(jnp.where(seen, all_q, jnp.inf))
    high = jnp.max(jnp.where(seen, all_q, -jnp.inf))
    low, high = jnp.where(jnp.any(seen), low, 0.0), jnp.where(jnp.any(seen), high, 0.0)
    visited = tree.children_visits[node_index] > 0
    scaled = (tree.qvalues(node_index) - low) / jnp.maximum(high - low, epsilon)
    return jnp.where(visited, scaled, 0.0)


def temperature(cfg: MuZeroConfig, updates: Array) -> Array:
    """Visit-count temperature after ``updates`` updates: piecewise constant."""
    index = jnp.searchsorted(jnp.asarray(cfg.temperature_boundaries, jnp.int32), updates,
                             side="right")
    return jnp.asarray(cfg.temperatures, jnp.float32)[index]


class ExploreCarry(NamedTuple):
    """Per-environment state of the exploration options (:func:`explore_options`)."""

    action: Array  # [B, *action_shape]: the option's action
    left: Array  # [B] int32: steps of the option still to take (0: none running)


def initial_explore_carry(num_envs: int, action_shape=(), action_dtype=jnp.int32) -> ExploreCarry:
    """No option running in any of ``num_envs`` environments."""
    return ExploreCarry(jnp.zeros((num_envs,) + tuple(action_shape), action_dtype),
                        jnp.zeros((num_envs,), jnp.int32))


def zeta_durations(key: Array, shape, exponent: float, max_duration: int) -> Array:
    """Durations ``n`` in ``1..max_duration`` with ``P(n) ~ n^-exponent``."""
    logits = -exponent * jnp.log(jnp.arange(1, max_duration + 1, dtype=jnp.float32))
    return jax.random.categorical(key, logits, shape=shape).astype(jnp.int32) + 1


def explore_options(cfg: MuZeroConfig, sample_action: Callable, carry: ExploreCarry,
                    search_action: Array, is_first: Array, key: Array,
                    legal_action_mask: Optional[Array] = None):
    """Epsilon-z-greedy (Dabney et al. 2021): the action to take in each environment, the
    search's unless an exploration option runs there, and the options' next carry.

    An environment with no option running (or whose episode starts, or whose option's action
    is illegal under ``legal_action_mask [B, A]``) starts one with probability
    ``cfg.explore_epsilon``: ``sample_action(key[, mask])`` held for a zeta-distributed number
    of steps, this one included.
    """
    num = search_action.shape[0]
    start_key, length_key, action_key = jax.random.split(key, 3)
    left = jnp.where(is_first, 0, carry.left)
    if legal_action_mask is not None:
        held_legal = jnp.take_along_axis(legal_action_mask, carry.action[:, None], axis=1)[:, 0]
        left = jnp.where(held_legal, left, 0)
    running = left > 0
    start = ~running & (jax.random.uniform(start_key, (num,)) < cfg.explore_epsilon)
    keys = jax.random.split(action_key, num)
    fresh = (jax.vmap(sample_action)(keys) if legal_action_mask is None
             else jax.vmap(sample_action)(keys, legal_action_mask))
    lengths = zeta_durations(length_key, (num,), cfg.explore_zeta, cfg.explore_max_duration)
    option_action = jnp.where(_expand(start, fresh), fresh, carry.action)
    active = running | start
    action = jnp.where(_expand(active, search_action), option_action, search_action)
    left = jnp.where(start, lengths, left) - active.astype(jnp.int32)
    return action, ExploreCarry(option_action, left)


def _expand(flag: Array, like: Array) -> Array:
    return flag.reshape(flag.shape + (1,) * (like.ndim - flag.ndim))


def search(cfg: MuZeroConfig, root_fn: Callable, recurrent_fn: Callable, params, obs: Array,
           key: Array, *, explore: bool, temp: Array = 1.0,
           legal_action_mask: Optional[Array] = None) -> SearchOutput:
    """One search per observation ``obs [B, ...]``.

    ``explore=False`` (evaluation) removes the root noise: no Dirichlet noise and the most
    visited action (MuZero), or no Gumbel noise (Gumbel MuZero's deterministic selection).
    ``legal_action_mask [B, A]`` bool (None: every action legal) restricts the root to the
    legal actions (module doc).
    """
    return search_from_root(cfg, root_fn(params, obs), recurrent_fn, params, key,
                            explore=explore, temp=temp, legal_action_mask=legal_action_mask)


def search_from_root(cfg: MuZeroConfig, root: mctx.RootFnOutput, recurrent_fn: Callable, params,
                     key: Array, *, explore: bool, temp: Array = 1.0,
                     legal_action_mask: Optional[Array] = None) -> SearchOutput:
    """:func:`search` from a root already evaluated (Sampled MuZero samples its actions
    there); ``SearchOutput.action`` indexes the root's ``prior_logits``."""
    chex.assert_rank(root.prior_logits, 2)
    num_actions = root.prior_logits.shape[-1]
    invalid_actions = None  # None, not all False: mctx then leaves the root's logits as they are
    if legal_action_mask is not None:
        chex.assert_equal_shape([root.prior_logits, legal_action_mask])
        invalid_actions = ~jnp.asarray(legal_action_mask, bool)
    if cfg.search == "muzero":
        out = mctx.muzero_policy(
            params, key, root, recurrent_fn, cfg.num_simulations,
            invalid_actions=invalid_actions,
            dirichlet_fraction=cfg.dirichlet_fraction if explore else 0.0,
            dirichlet_alpha=cfg.dirichlet_alpha, pb_c_init=cfg.pb_c_init,
            temperature=temp if explore else 0.0,
            qtransform=(qtransform_by_tree_min_max if cfg.q_normalisation == "tree"
                        else mctx.qtransform_by_parent_and_siblings))
    else:
        out = mctx.gumbel_muzero_policy(
            params, key, root, recurrent_fn, cfg.num_simulations,
            invalid_actions=invalid_actions,
            max_num_considered_actions=min(cfg.max_num_considered_actions, num_actions),
            gumbel_scale=(cfg.gumbel_scale * (temp if cfg.gumbel_temperature else 1.0)
                          if explore else 0.0),
            qtransform=functools.partial(mctx.qtransform_completed_by_mix_value,
                                         value_scale=cfg.gumbel_value_scale))
    root_value = out.search_tree.summary().value
    return SearchOutput(out.action.astype(jnp.int32), out.action_weights, root_value)
