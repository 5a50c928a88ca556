"""Sampled MuZero as a :class:`core.types.Agent`: MuZero's loop glue, replay, targets and
losses (:func:`agents.muzero.agent.make_agent`) with the sampled search
(:mod:`agents.sampled_muzero.search`) and the sampled policy loss
(:mod:`agents.sampled_muzero.losses`).

Acting: K actions sampled at the root (and at every node the search expands), mctx over their
indices; the chosen sample is squashed into the action bounds and taken. Replay stores the
search policy over the K samples (``"search_policy" [K]``), the samples themselves
(``"sampled_actions" [K, action_dim]``, pre-squash) and the root value; the policy target of
unroll step k is the stored search policy over the samples stored at step k. Reanalyse draws
fresh samples and replaces both.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from agents.muzero import acting
from agents.muzero.agent import MuZeroState, make_agent, reconstruction_size, search_discount
from agents.sampled_muzero.config import SampledMuZeroConfig
from agents.sampled_muzero.losses import sampled_policy_loss
from agents.sampled_muzero.search import make_search_fns
from core.rlmath import Support
from core.types import Agent
from envs.api import Environment
from world_models.muzero import MuZeroModel, make_model

Array = jax.Array

__all__ = ["MuZeroState", "build_model", "make"]


def build_model(cfg: SampledMuZeroConfig, env: Environment) -> MuZeroModel:
    """The continuous-action model for ``env`` under ``cfg``'s sizes and supports."""
    spec = env.spec
    if spec.discrete or len(spec.action_shape) != 1:
        raise ValueError(f"agent 'sampled_muzero' needs a continuous action vector; "
                         f"{spec.env_id} has " + ("discrete actions (use --agent muzero)."
                                                 if spec.discrete else
                                                 f"action shape {spec.action_shape}."))
    if len(spec.obs_shape) not in (1, 3):
        raise ValueError(f"agent 'sampled_muzero' needs vector or [H, W, C] observations; "
                         f"{spec.env_id} has shape {spec.obs_shape}")
    overrides = {}
    if cfg.latent_dim:
        overrides["latent_dim"] = cfg.latent_dim
    if cfg.hidden:
        overrides["hidden"] = tuple(cfg.hidden)
    if cfg.reconstruction_loss_weight > 0:
        overrides["obs_decoder_dim"] = reconstruction_size(cfg, spec)
    return make_model(0, spec.obs_shape, size=cfg.model_size,
                      value_support=Support(cfg.value_support_size, cfg.value_support_max,
                                            "signed_hyperbolic"),
                      reward_support=Support(cfg.reward_support_size, cfg.reward_support_max,
                                             "signed_hyperbolic"),
                      action_bounds=(spec.action_low, spec.action_high), **overrides)


def make(cfg: SampledMuZeroConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the agent for ``num_envs`` copies of ``env``."""
    model = build_model(cfg, env)
    root_fn, recurrent_fn = make_search_fns(model, num_samples=cfg.num_samples,
                                            discount=search_discount(cfg, env.spec.num_players),
                                            min_std=cfg.policy_min_std,
                                            root_std_scale=cfg.root_std_scale)

    def search_fn(params, obs: Array, key: Array, explore: bool, temp=1.0):
        if not explore:  # greedy: the same samples every time (see search.py)
            key = jax.random.PRNGKey(0)
        root_key, search_key = jax.random.split(key)
        root = root_fn(params, obs, root_key, explore)
        out = acting.search_from_root(cfg, root, recurrent_fn, params, search_key,
                                      explore=explore, temp=temp)
        samples = root.embedding.samples  # [B, K, A]
        chosen = jnp.take_along_axis(samples, out.action[:, None, None], axis=1)[:, 0]
        return model.squash(chosen), {"search_policy": out.policy,
                                      "root_value": out.root_value,
                                      "sampled_actions": samples}

    return make_agent(cfg, env, num_envs, model=model, search_fn=search_fn,
                      policy_loss=functools.partial(sampled_policy_loss,
                                                    min_std=cfg.policy_min_std),
                      policy_actions="sampled_actions")
