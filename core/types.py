"""Types shared by the training core and every agent family."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Tuple

import jax
from flax import struct

Array = jax.Array
AgentState = Any  # each agent's own frozen dataclass pytree
Carry = Any  # per-environment acting state: recurrent state, planner warm start, ...
Metrics = Dict[str, Array]


@struct.dataclass
class Transition:
    """One environment step as stored in replay (one example; [envs, time] axes in replay)."""

    obs: Array  # obs_shape: observation the action was taken in
    action: Array  # action_shape (int32 scalar when discrete)
    reward: Array  # () float32
    next_obs: Array  # obs_shape: true successor observation (final obs at episode end)
    terminated: Array  # () bool: next_obs is absorbing
    truncated: Array  # () bool: the time limit ended the episode at next_obs
    is_first: Array  # () bool: obs is the first observation of an episode
    extras: Any  # agent-defined pytree stored with the step (e.g. search policy, root value)
    # [num_actions] bool: the actions allowed on obs, stored where the task has a mask
    # (EnvSpec.has_action_mask); None (no leaves, no memory) on every other task.
    legal_action_mask: Any = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How one training iteration interleaves acting and learning (all static).

    One iteration = ``env_steps_per_iteration`` vectorised environment steps (each steps every
    environment once), then ``updates_per_iteration`` calls of ``Agent.update``. Before any
    update, ``prefill_steps`` environment steps (summed over environments) are collected with
    uniformly random actions.
    """

    env_steps_per_iteration: int = 1
    updates_per_iteration: int = 1
    prefill_steps: int = 0

    def __post_init__(self):
        for name in ("env_steps_per_iteration", "updates_per_iteration", "prefill_steps"):
            minimum = 1 if name == "env_steps_per_iteration" else 0
            if getattr(self, name) < minimum:
                raise ValueError(f"Schedule.{name} must be >= {minimum}, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Agent:
    """An agent family as pure functions, built for one environment spec and batch size.

    Attributes:
      init: ``key -> agent_state``.
      initial_carry: ``num_envs -> carry`` with a leading env axis on every leaf.
      act: ``(agent_state, obs [E, ...], is_first [E], carry, key, explore, *,
        legal_action_mask=None) -> (action [E, ...], carry, extras)``; ``explore`` is a Python
        bool (training vs evaluation behaviour) and ``extras`` a pytree with leading axis E
        stored in replay with the step. On a task with legal-action masks
        (``EnvSpec.has_action_mask``) the core passes ``legal_action_mask [E, num_actions]``
        bool, the actions allowed on ``obs``; on other tasks it omits the keyword, so ``act`` is
        called as it always was. Every agent accepts the keyword; one that ignores it still
        runs (an illegal move is the task's to judge: in pgx the mover loses).
      update: ``(agent_state, buffer_state, key) -> (agent_state, buffer_state, metrics)``; the
        agent samples its own batches from ``buffer`` (and may write priorities back).
      buffer: the flashbax buffer the core writes transitions to (``add_batch_size = E``).
      schedule: how acting and updates interleave.
    """

    init: Callable[[Array], AgentState]
    initial_carry: Callable[[int], Carry]
    act: Callable[..., Tuple[Array, Carry, Any]]
    update: Callable[[AgentState, Any, Array], Tuple[AgentState, Any, Metrics]]
    buffer: Any
    schedule: Schedule
