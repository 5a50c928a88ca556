"""One rollout: a policy plays ``length`` steps in each of ``num_envs`` copies of an environment.

Every episode played outside training goes through :func:`play`: the loop's greedy evaluation
(:func:`core.loop.greedy_returns`), the real trajectories that the k-step model evaluations
score, the true-simulator planner of ``experiments.oracle_mpc`` and the episodes that
``experiments.watch`` draws. It is one ``jax.lax.scan`` over time, jittable as a whole.

Two ways to step an environment:

* ``auto_reset=True``: :meth:`envs.api.Environment.step`, with its time limit (a truncation)
  and a reset after every episode's end; the policy sees ``is_first`` after each end.
* ``auto_reset=False`` (default): the adapter's own ``adapter_step``, so a trajectory never
  crosses an episode boundary nor the time limit (``length`` may exceed
  ``max_episode_steps``). After a termination the adapter keeps stepping and its states are
  whatever it returns; ``valid`` marks the steps before that.

Each environment's first episode ends at its first termination (with ``auto_reset``, also at
its truncation) or after ``length`` steps. With ``L_n`` its number of steps,

    valid[n, t] = t < L_n,    returns[n] = sum_{t < L_n} reward[n, t]   (summed in step order).

In a two-player game (``env.spec.num_players == 2``) ``reward`` is the mover's and ``returns``
player 0's, as ``TimeStep.episode_return`` (``envs.api``): the mover's reward, negated where
player 1 moved.

Keys: ``reset_key, loop_key = split(key)``; environment ``n`` resets with
``split(reset_key, N)[n]``; every step splits ``loop_key, act_key, env_key = split(loop_key, 3)``,
the policy gets ``act_key`` and environment ``n`` steps with ``split(env_key, N)[n]``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.api import EnvState, Environment, batch_reset, batch_step_keys

Array = jax.Array

# policy(env_state, is_first [N], carry, key) -> (action [N, *action_shape], carry, extras):
# env_state is the batch of environments (leaves [N, ...]); most policies read env_state.obs,
# an oracle planner env_state.inner. extras is any pytree with leaves [N, ...].
Policy = Callable[[EnvState, Array, Any, Array], Tuple[Array, Any, Any]]
# probe(env_state, keys [N]) -> pytree with leaves [N, ...], run before every step with the keys
# the environments step with (their adapter_step keys when auto_reset is False).
Probe = Callable[[EnvState, Array], Any]


@struct.dataclass
class Rollout:
    """What :func:`play` returns for ``N`` environments and ``T`` steps (batch axis first)."""

    returns: Array  # [N] float32: return of each environment's first episode
    lengths: Array  # [N] int32: steps of the first episode (its end included), at most T
    ended: Array  # [N] bool: the first episode ended within the T steps
    valid: Array  # [N, T] bool: step t belongs to the first episode (t < lengths)
    final: EnvState  # leaves [N, ...]: the environments after the last step
    obs: Optional[Array] = None  # [N, T, *obs_shape]: the observation each action was taken in
    action: Optional[Array] = None  # [N, T, *action_shape]
    reward: Optional[Array] = None  # [N, T] float32
    next_obs: Optional[Array] = None  # [N, T, *obs_shape]: the step's true successor
    terminated: Optional[Array] = None  # [N, T] bool: next_obs is absorbing
    extras: Any = None  # leaves [N, T, ...]: the policy's extras
    probes: Any = None  # leaves [N, T, ...]: the probe's outputs (when a probe is given)

    def observations(self) -> Array:
        """``[N, T + 1, *obs_shape]``: the first observation, then each step's ``next_obs``.

        Without ``auto_reset`` this is the trajectory of observations, ``obs[:, t + 1] ==
        next_obs[:, t]``; with it, a reset breaks that after an episode's end."""
        return jnp.concatenate([self.obs[:, :1], self.next_obs], axis=1)


def legal_action_masks(env: Environment, env_state: EnvState) -> Optional[Array]:
    """``[N, num_actions]`` bool: the actions allowed on a batch of environments' ``obs`` where
    the task has masks (``env.spec.has_action_mask``); None on every other task."""
    if not env.spec.has_action_mask:
        return None
    return jax.vmap(env.legal_action_mask)(env_state)


def act_on(env: Environment, act: Callable, params: Any, env_state: EnvState, is_first: Array,
           carry: Any, key: Array, explore: bool):
    """:class:`core.types.Agent`'s ``act`` on a batch of environments (leaves ``[N, ...]``):
    ``act(params, env_state.obs, is_first, carry, key, explore)``, with the keyword
    ``legal_action_mask`` (:func:`legal_action_masks`) only on tasks with masks."""
    mask = legal_action_masks(env, env_state)
    if mask is None:
        return act(params, env_state.obs, is_first, carry, key, explore)
    return act(params, env_state.obs, is_first, carry, key, explore, legal_action_mask=mask)


def agent_policy(env: Environment, act: Callable, params: Any, explore: bool = False) -> Policy:
    """A :class:`Policy` from :class:`core.types.Agent`'s ``act`` on ``env`` (greedy unless
    ``explore``); it sees the legal-action mask where ``env`` has one (:func:`act_on`)."""
    def policy(env_state, is_first, carry, key):
        return act_on(env, act, params, env_state, is_first, carry, key, explore)
    return policy


def play(env: Environment, policy: Policy, key: Array, *, num_envs: int, length: int,
         carry: Any = (), auto_reset: bool = False, start: Optional[EnvState] = None,
         probe: Optional[Probe] = None, record: bool = True) -> Rollout:
    """``policy`` plays ``length`` steps in ``num_envs`` copies of ``env`` (module doc).

    Args:
      env: the environment (its adapter's step without ``auto_reset``).
      policy: ``policy(env_state, is_first, carry, key) -> (action, carry, extras)``, batched.
      key: PRNG key, used as the module doc says.
      num_envs: ``N``; length: ``T`` steps (static).
      carry: the policy's initial carry (leaves ``[N, ...]``), e.g. ``agent.initial_carry(N)``.
      auto_reset: step with the wrapper's time limit and reset instead of the adapter.
      start: environment states to start from (leaves ``[N, ...]``) instead of resetting
        (``reset_key`` then goes unused); the policy still sees ``is_first`` at step 0.
      probe: optional ``probe(env_state, keys)`` run before every step, stacked in ``probes``.
      record: stack the trajectory (``obs`` ... ``extras``); False keeps only the episode
        statistics, ``valid``, ``final`` and ``probes``.
    Returns:
      a :class:`Rollout`.
    """
    if length < 1:
        raise ValueError(f"play needs length >= 1, got {length}")
    reset_key, loop_key = jax.random.split(key)
    state = batch_reset(env, reset_key, num_envs) if start is None else start
    chex.assert_tree_shape_prefix(state, (num_envs,))

    def body(c, _):
        state, is_first, carry, ended, returns, k = c
        k, act_key, env_key = jax.random.split(k, 3)
        action, carry, extras = policy(state, is_first, carry, act_key)
        _check_action(env, action, num_envs)
        env_keys = jax.random.split(env_key, num_envs)
        probed = probe(state, env_keys) if probe is not None else None
        mover = jax.vmap(env.current_player)(state)
        next_state, next_obs, reward, terminated, done = _step(env, state, action, env_keys,
                                                               auto_reset)
        alive = ~ended
        own = jnp.where(mover == 0, reward, -reward) if env.spec.num_players == 2 else reward
        returns = returns + jnp.where(alive, own, 0.0)
        out = {"valid": alive, "probes": probed}
        if record:
            out.update(obs=state.obs, action=action, reward=reward, next_obs=next_obs,
                       terminated=terminated, extras=extras)
        next_first = done if auto_reset else jnp.zeros((num_envs,), bool)
        return (next_state, next_first, carry, ended | done, returns, k), out

    init = (state, jnp.ones((num_envs,), bool), carry, jnp.zeros((num_envs,), bool),
            jnp.zeros((num_envs,), jnp.float32), loop_key)
    (final, _, _, ended, returns, _), steps = jax.lax.scan(body, init, None, length=length)
    steps = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), steps)  # [T, N] -> [N, T]
    valid = steps.pop("valid")
    return Rollout(returns=returns, lengths=valid.sum(1, dtype=jnp.int32), ended=ended,
                   valid=valid, final=final, **steps)


def _check_action(env: Environment, action: Array, num_envs: int) -> None:
    expected = (num_envs,) + tuple(env.spec.action_shape)
    if tuple(np.shape(action)) != expected:
        raise ValueError(f"{env.spec.env_id}: the policy's action has shape "
                         f"{tuple(np.shape(action))}, expected {expected} (num_envs={num_envs}).")


def _step(env: Environment, state: EnvState, action: Array, keys: Array, auto_reset: bool):
    """One step of every environment: ``(state, next_obs, reward, terminated, done)``."""
    if auto_reset:  # the batched step: optimistic resets where the environment has them
        state, ts = batch_step_keys(env, state, action, keys)
        return state, ts.next_obs, ts.reward, ts.terminated, ts.done
    inner, next_obs, reward, terminated = jax.vmap(env.adapter_step)(state.inner, action, keys)
    reward = jnp.asarray(reward, jnp.float32)
    terminated = jnp.asarray(terminated, bool)
    state = EnvState(inner=inner, obs=next_obs, episode_return=state.episode_return + reward,
                     episode_length=state.episode_length + 1)
    return state, next_obs, reward, terminated, terminated
