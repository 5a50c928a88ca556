"""The one training loop: a jitted loop over iterations of acting and learning.

``train(run_state, count) -> (run_state, metrics)`` runs ``count`` iterations (by default the
``iterations`` of :func:`make_loop`), each of
``schedule.env_steps_per_iteration`` vectorised environment steps (act, step, write to replay)
followed by ``schedule.updates_per_iteration`` agent updates. On a task with legal-action masks
(``EnvSpec.has_action_mask``) the agent's ``act`` gets each step's mask, random prefill actions
are drawn among the legal ones, and replay stores the mask (``Transition.legal_action_mask``).
Everything is one compiled program; the host only iterates over chunks. All functions here are
written for ONE run (one seed); :mod:`core.runner` vmaps them over seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from core import arena, replay, rollout
from core.types import Agent, Metrics, Transition
from envs.api import EnvState, Environment, batch_reset, batch_step

Array = jax.Array


@struct.dataclass
class RunState:
    """Everything one training run owns."""

    agent: Any  # the agent's state pytree (params, optimiser states, targets, ...)
    buffer: Any  # flashbax buffer state; experience leaves [E, T, ...]
    env: EnvState  # leaves [E, ...]
    is_first: Array  # [E] bool: env.obs starts an episode
    carry: Any  # leaves [E, ...]: the agent's acting state
    key: Array  # [2] uint32 PRNG key
    env_steps: Array  # () int32: environment steps taken, summed over environments


@dataclasses.dataclass(frozen=True)
class LoopFns:
    """The compiled-once pure functions of a run (single seed; vmapped by the runner)."""

    init: Callable[[Array], RunState]
    prefill: Callable[[RunState], Tuple[RunState, Metrics]]
    train: Callable[..., Tuple[RunState, Metrics]]  # (state, count=iterations)
    evaluate: Callable[[RunState, Array], Metrics]


# Prefix of the chunk sums of an environment's own per-episode metrics
# (``TimeStep.episode_metrics``, e.g. craftax's achievements); the runner logs their means.
EPISODE_METRIC_SUM = "episode_sum:"


def _episode_stats(timesteps) -> Metrics:
    done = timesteps.done.astype(jnp.float32)
    out = {"episodes": done.sum(),
           "episode_return_sum": (timesteps.episode_return * done).sum(),
           "episode_length_sum": (timesteps.episode_length * done).sum()}
    for name, value in timesteps.episode_metrics.items():
        out[EPISODE_METRIC_SUM + name] = (value * done).sum()
    return out


def make_loop(env: Environment, agent: Agent, *, num_envs: int, iterations: int,
              prefill_iterations: int = 1, eval_envs: int = 8,
              eval_opponent_simulations: int = 32) -> LoopFns:
    """Builds the loop functions for ``agent`` on ``num_envs`` copies of ``env``.

    Args:
      iterations: training iterations per call of ``train`` without a ``count``.
      prefill_iterations: vectorised random-action steps per call of ``prefill``.
      eval_envs: episodes per evaluation (one per environment, run to the time limit); on a
        two-player game, games against each opponent (:mod:`core.arena`).
      eval_opponent_simulations: on a two-player game, simulations per move of the true-model
        MCTS opponent (0: the random opponent only).
    """
    spec = env.spec
    schedule = agent.schedule

    def _extras_like(agent_state, env_state, first, carry, key):
        shapes = jax.eval_shape(lambda: rollout.act_on(env, agent.act, agent_state, env_state,
                                                       first, carry, key, True)[2])
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def init(key: Array) -> RunState:
        env_key, agent_key, run_key = jax.random.split(key, 3)
        env_state = batch_reset(env, env_key, num_envs)
        agent_state = agent.init(agent_key)
        carry = agent.initial_carry(num_envs)
        first = jnp.ones((num_envs,), bool)
        extras = _extras_like(agent_state, env_state, first, carry, run_key)
        mask = rollout.legal_action_masks(env, env_state)
        example = Transition(
            obs=env_state.obs[0], action=jnp.zeros(spec.action_shape, spec.action_dtype),
            reward=jnp.zeros((), jnp.float32), next_obs=env_state.obs[0],
            terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool),
            is_first=jnp.zeros((), bool),
            extras=jax.tree_util.tree_map(lambda x: x[0], extras),
            legal_action_mask=None if mask is None else mask[0])
        return RunState(agent=agent_state, buffer=agent.buffer.init(example), env=env_state,
                        is_first=first, carry=carry, key=run_key,
                        env_steps=jnp.zeros((), jnp.int32))

    def env_step(state: RunState, random_actions: bool) -> Tuple[RunState, Any]:
        key, act_key, env_key = jax.random.split(state.key, 3)
        obs = state.env.obs
        mask = rollout.legal_action_masks(env, state.env)  # None on tasks without masks
        if random_actions:  # prefill: no acting cost, the carry is kept, extras are zeros
            act_keys = jax.random.split(act_key, num_envs)
            action = (jax.vmap(spec.sample_action)(act_keys) if mask is None
                      else jax.vmap(spec.sample_action)(act_keys, mask))
            carry = state.carry
            extras = _extras_like(state.agent, state.env, state.is_first, carry, act_key)
        else:
            action, carry, extras = rollout.act_on(env, agent.act, state.agent, state.env,
                                                   state.is_first, state.carry, act_key, True)
        env_state, ts = batch_step(env, state.env, action, env_key)
        transition = Transition(obs=obs, action=action, reward=ts.reward, next_obs=ts.next_obs,
                                terminated=ts.terminated, truncated=ts.truncated,
                                is_first=state.is_first, extras=extras, legal_action_mask=mask)
        buffer_state = replay.add_step(agent.buffer, state.buffer, transition)
        state = state.replace(buffer=buffer_state, env=env_state, is_first=ts.done, carry=carry,
                              key=key, env_steps=state.env_steps + num_envs)
        return state, ts

    def collect(state: RunState, steps: int, random_actions: bool):
        state, timesteps = jax.lax.scan(lambda s, _: env_step(s, random_actions), state, None,
                                        length=steps)
        return state, _episode_stats(timesteps)

    def prefill(state: RunState):
        return collect(state, prefill_iterations, True)

    def update(state: RunState, _):
        key, update_key = jax.random.split(state.key)
        agent_state, buffer_state, metrics = agent.update(state.agent, state.buffer, update_key)
        return state.replace(agent=agent_state, buffer=buffer_state, key=key), metrics

    def iteration(state: RunState, _):
        state, stats = collect(state, schedule.env_steps_per_iteration, False)
        state, metrics = jax.lax.scan(update, state, None, length=schedule.updates_per_iteration)
        return state, (stats, jax.tree_util.tree_map(jnp.mean, metrics))

    def train(state: RunState, count=None):
        """``count`` iterations (default ``iterations``; a traced int32 lets one compiled
        program run any number, as the runner does): episode statistics summed over them,
        update metrics averaged."""
        count = iterations if count is None else count
        _, (stats_shape, metrics_shape) = jax.eval_shape(iteration, state, None)
        zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), stats_shape)
        metric_zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, jnp.float32),
                                              metrics_shape)

        def body(_, carry):
            state, stats_sum, metric_sum = carry
            state, (stats, metrics) = iteration(state, None)
            add = lambda total, x: total + x.astype(total.dtype)  # noqa: E731
            return (state, jax.tree_util.tree_map(add, stats_sum, stats),
                    jax.tree_util.tree_map(add, metric_sum, metrics))

        state, stats, metric_sum = jax.lax.fori_loop(0, count, body,
                                                     (state, zeros, metric_zeros))
        out = dict(stats)
        out.update(jax.tree_util.tree_map(lambda x: x / count, metric_sum))
        return state, out

    def evaluate(state: RunState, key: Array) -> Metrics:
        """Greedy (``explore=False``) return of one episode in each of ``eval_envs`` envs; on a
        two-player game, the greedy agent's games against fixed opponents
        (:func:`core.arena.evaluate`)."""
        if spec.num_players == 2:
            return arena.evaluate(env, rollout.agent_policy(env, agent.act, state.agent),
                                  agent.initial_carry, key, num_games=eval_envs,
                                  mcts_simulations=eval_opponent_simulations)
        return greedy_returns(env, agent.act, agent.initial_carry, state.agent, eval_envs, key)

    return LoopFns(init=init, prefill=prefill, train=train, evaluate=evaluate)


def greedy_returns(env: Environment, act, initial_carry, params, num_envs: int,
                   key: Array) -> Metrics:
    """Return of one greedy episode in each of ``num_envs`` copies of ``env``.

    ``act(params, obs, is_first, carry, key, explore)`` has :class:`core.types.Agent`'s
    signature (called with ``explore=False``, and the legal-action mask where ``env`` has one)
    and ``initial_carry(num_envs)`` its carry; every episode runs to its end or the time limit
    (:func:`core.rollout.play` with auto-reset for ``max_episode_steps`` steps). Used by the
    loop's evaluation and by baselines that do not run through the loop (``experiments.ppo``).
    """
    out = rollout.play(env, rollout.agent_policy(env, act, params), key, num_envs=num_envs,
                       length=env.spec.max_episode_steps, carry=initial_carry(num_envs),
                       auto_reset=True, record=False)
    returns = out.returns
    return {"eval_return_mean": returns.mean(), "eval_return_std": returns.std(),
            "eval_return_min": returns.min(), "eval_return_max": returns.max()}
