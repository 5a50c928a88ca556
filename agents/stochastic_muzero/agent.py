"""Stochastic MuZero as a :class:`core.types.Agent`: MuZero's loop glue, replay and targets
(:func:`agents.muzero.agent.make_agent`) with the afterstate model
(:mod:`world_models.stochastic_muzero`), its loss (:mod:`agents.stochastic_muzero.losses`) and
``mctx.stochastic_muzero_policy``.

Acting: one search per environment. Decision nodes are states, searched with PUCT over the
actions as in MuZero (Dirichlet noise at the root, the legal-action mask there); their
children are afterstates, chance nodes whose children are the C codes, visited in proportion
to ``sigma`` (mctx picks ``argmax_c sigma(c) / (N(c) + 1)``). Replay stores the visit-count
policy and the root value, as MuZero; reanalyse reuses this search.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import mctx

from agents.muzero import acting
from agents.muzero.agent import MuZeroState, check_discrete_env, make_agent, search_discount
from agents.stochastic_muzero.config import StochasticMuZeroConfig
from agents.stochastic_muzero.losses import batch_loss
from core.rlmath import Support
from core.types import Agent
from envs.api import Environment, check_single_player
from world_models.stochastic_muzero import StochasticMuZeroModel, make_model, make_search_fns

Array = jax.Array

__all__ = ["MuZeroState", "build_model", "make", "search"]


def build_model(cfg: StochasticMuZeroConfig, env: Environment) -> StochasticMuZeroModel:
    """The afterstate model for ``env`` under ``cfg``'s sizes, codebook and supports."""
    spec = env.spec
    check_discrete_env(env, "stochastic_muzero")
    overrides = {}
    if cfg.latent_dim:
        overrides["latent_dim"] = cfg.latent_dim
    if cfg.hidden:
        overrides["hidden"] = tuple(cfg.hidden)
    return make_model(spec.num_actions, spec.obs_shape, codebook_size=cfg.codebook_size,
                      size=cfg.model_size,
                      value_support=Support(cfg.value_support_size, cfg.value_support_max,
                                            "signed_hyperbolic"),
                      reward_support=Support(cfg.reward_support_size, cfg.reward_support_max,
                                             "signed_hyperbolic"),
                      **overrides)


def search(cfg: StochasticMuZeroConfig, fns, params, obs: Array, key: Array, *,
           explore: bool, temp: Array = 1.0,
           legal_action_mask: Optional[Array] = None) -> acting.SearchOutput:
    """One ``mctx.stochastic_muzero_policy`` search per observation ``obs [B, ...]``.

    ``fns`` is :func:`world_models.stochastic_muzero.make_search_fns`' triple.
    ``explore=False`` removes the root noise and takes the most visited action;
    ``legal_action_mask [B, A]`` (None: all legal) restricts the root to the legal actions.
    """
    root_fn, decision_fn, chance_fn = fns
    root = root_fn(params, obs)
    invalid_actions = None
    if legal_action_mask is not None:
        invalid_actions = ~jnp.asarray(legal_action_mask, bool)
    out = mctx.stochastic_muzero_policy(
        params, key, root, decision_fn, chance_fn, cfg.num_simulations,
        invalid_actions=invalid_actions,
        dirichlet_fraction=float(cfg.dirichlet_fraction) if explore else 0.0,
        dirichlet_alpha=float(cfg.dirichlet_alpha), pb_c_init=cfg.pb_c_init,
        temperature=temp if explore else 0.0,
        qtransform=(acting.qtransform_by_tree_min_max if cfg.q_normalisation == "tree"
                    else mctx.qtransform_by_parent_and_siblings))
    root_value = out.search_tree.summary().value
    return acting.SearchOutput(out.action.astype(jnp.int32), out.action_weights, root_value)


def make(cfg: StochasticMuZeroConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the agent for ``num_envs`` copies of ``env``."""
    check_single_player(env.spec, "stochastic_muzero")
    if cfg.mirror_augmentation and env.symmetry is None:
        raise ValueError(f"mirror_augmentation needs an environment with a declared symmetry "
                         f"(envs.api.Symmetry); {env.spec.env_id} declares none. Drop "
                         f"--mirror-augmentation or add the symmetry to its adapter.")
    model = build_model(cfg, env)
    # 1 under outcome value targets, as the targets use (a single-player task here)
    fns = make_search_fns(model, search_discount(cfg, env.spec.num_players))

    def search_fn(params, obs, key, explore: bool, temp=1.0, legal_action_mask=None):
        out = search(cfg, fns, params, obs, key, explore=explore, temp=temp,
                     legal_action_mask=legal_action_mask)
        return out.action, {"search_policy": out.policy, "root_value": out.root_value}

    return make_agent(cfg, env, num_envs, model=model, search_fn=search_fn,
                      batch_loss=batch_loss)
