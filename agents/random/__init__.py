"""Uniformly random actions (among the legal ones where the task has a legal-action mask):
measures raw environment throughput through the core loop."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from core import replay
from core.types import Agent, Schedule
from envs.api import Environment


@dataclasses.dataclass(frozen=True)
class RandomConfig:
    """buffer_size: replay capacity in steps (the loop still writes every step)."""

    buffer_size: int = 4096


PRESETS = {"default": RandomConfig()}


def make(cfg: RandomConfig, env: Environment, num_envs: int) -> Agent:
    spec = env.spec
    buffer = replay.make_buffer(num_envs=num_envs, capacity=max(cfg.buffer_size, 2 * num_envs),
                                batch_size=1)

    def act(state, obs, is_first, carry, key, explore, *, legal_action_mask=None):
        del state, is_first, explore
        keys = jax.random.split(key, obs.shape[0])
        if legal_action_mask is None:
            return jax.vmap(spec.sample_action)(keys), carry, {}
        return jax.vmap(spec.sample_action)(keys, legal_action_mask), carry, {}

    def update(state, buffer_state, key):
        del key
        return state, buffer_state, {}

    return Agent(init=lambda key: jnp.zeros(()), initial_carry=lambda n: jnp.zeros((n,)),
                 act=act, update=update, buffer=buffer,
                 schedule=Schedule(env_steps_per_iteration=1, updates_per_iteration=0))
