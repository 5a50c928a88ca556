"""Compounding (k-step, open-loop) prediction error of ANY dynamics model, and real data for it.

For a real trajectory ``s_0 .. s_T`` with actions ``a_0 .. a_{T-1}`` and a start ``t`` with
``t + H <= T``, the model is rolled open loop on the real actions from the real start state:

    ŝ_t = encode(s_t),   ŝ_{t+k} = step(ŝ_{t+k-1}, a_{t+k-1}),   k = 1..H,

and its observed quantity ``o_k = observe(ŝ_{t+k})`` is compared with the real target
``y_{t+k}`` (by default the real state ``s_{t+k}``). With ``e_k = ||o_k - y_{t+k}||`` (Euclidean
norm over all non-batch axes):

    abs_error[k]             = mean over starts of e_k
    relative_error[k]        = mean over starts of e_k / max(||y_{t+k}||, norm_floor)
    pooled_relative_error[k] = abs_error[k] / mean over starts of ||y_{t+k}||

``norm_floor`` guards a division by a (near) zero real state; ``pooled_relative_error`` is the
ratio of means, which is not dominated by the few starts whose real state is tiny. "Starts" are
all ``(trajectory, t)`` pairs, ``N · (T - H + 1)`` of them, vmapped; time is a ``lax.scan``.
With a ``valid`` mask (e.g. real transitions before an episode's end) the error at ``k`` is
averaged over the starts whose transitions ``t .. t+k-1`` are all valid.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp

from core import rollout
from envs.api import Environment

Array = jax.Array


def _identity(x):
    return x


def k_step_error(step_fn: Callable, states: Array, actions: Array, horizon: int, *,
                 key: Optional[Array] = None, encode_fn: Optional[Callable] = None,
                 observe_fn: Optional[Callable] = None, targets: Optional[Array] = None,
                 valid: Optional[Array] = None, norm_floor: float = 1e-6) -> dict:
    """Open-loop k-step error of a model for ``k = 1..horizon`` (see module doc for the maths).

    Args:
      step_fn: one example. Deterministic: ``step_fn(model_state, action) -> model_state``
        (e.g. ``functools.partial(linear.predict, model)``); when ``key`` is given it is called as
        ``step_fn(model_state, action, key)`` with a fresh key per start and step.
      states: real states ``[N, T + 1, *state_shape]``.
      actions: real actions ``[N, T, *action_shape]`` (any dtype, e.g. discrete ints).
      horizon: ``H`` (static), ``1 <= H <= T``.
      key: PRNG key for a stochastic ``step_fn``; None for a deterministic one.
      encode_fn: real state -> model state at the start (default identity); e.g. an encoder.
      observe_fn: model state -> compared quantity (default identity); e.g. a decoder or a
        reward head, in which case pass the matching ``targets``.
      targets: real quantities ``[N, T, ...]`` aligned with transitions (``targets[:, t]``
        belongs to ``s_{t+1}``); default ``states[:, 1:]``.
      valid: optional ``[N, T]`` bool, ``valid[:, t]`` marks transition ``s_t -> s_{t+1}`` as
        one to score (e.g. False after a terminal, where the real system has no next state);
        a start counts at horizon ``k`` only if its transitions ``t .. t+k-1`` are all valid.
        Default: all valid.
      norm_floor: lower bound of the denominator of ``relative_error``.
    Returns:
      dict with ``horizons [H]`` (1..H), ``relative_error [H]``, ``pooled_relative_error [H]``,
      ``abs_error [H]``, ``target_norm [H]`` (mean ||y||), ``num_starts`` (int) and
      ``num_scored [H]`` (starts counted at each horizon; ``num_starts`` without a mask).
      The errors are NaN at a horizon where no start is valid.
    """
    num_traj, length = actions.shape[0], actions.shape[1]
    chex.assert_axis_dimension(states, 0, num_traj)
    chex.assert_axis_dimension(states, 1, length + 1)
    if not 1 <= horizon <= length:
        raise ValueError(f"horizon must be in [1, T={length}], got {horizon}.")
    encode_fn = encode_fn or _identity
    observe_fn = observe_fn or _identity
    targets = states[:, 1:] if targets is None else targets
    chex.assert_equal_shape_prefix([targets, actions], 2)
    valid = jnp.ones(actions.shape[:2], bool) if valid is None else jnp.asarray(valid, bool)
    chex.assert_shape(valid, actions.shape[:2])
    num_starts = length - horizon + 1
    stochastic = key is not None

    def one_start(traj, t, start_key):
        window = lambda x: jax.lax.dynamic_slice_in_dim(x, t, horizon)
        step_keys = jax.random.split(start_key, horizon) if stochastic else None
        traj_states, traj_actions, traj_targets, traj_valid = traj

        def body(model_state, inputs):
            action, step_key = inputs
            args = (model_state, action, step_key) if stochastic else (model_state, action)
            next_state = step_fn(*args)
            return next_state, observe_fn(next_state)

        _, predicted = jax.lax.scan(body, encode_fn(traj_states[t]),
                                    (window(traj_actions), step_keys))
        real = window(traj_targets)
        flat = lambda x: jnp.reshape(x, (horizon, -1)).astype(jnp.float32)
        return (jnp.linalg.norm(flat(predicted) - flat(real), axis=-1),
                jnp.linalg.norm(flat(real), axis=-1), jnp.cumprod(window(traj_valid)))

    starts = jnp.arange(num_starts)
    keys = jax.random.split(key, (num_traj, num_starts)) if stochastic else None
    per_start = jax.vmap(one_start, in_axes=(None, 0, 0))
    err, norm, mask = jax.vmap(per_start, in_axes=(0, None, 0))(
        (states, actions, targets, valid), starts, keys)  # [N, S, H]
    err, norm, mask = (x.reshape(-1, horizon).astype(jnp.float32) for x in (err, norm, mask))
    num_scored = mask.sum(0)
    mean = lambda x: jnp.where(num_scored > 0,
                               jnp.where(mask > 0, x, 0.0).sum(0) / jnp.maximum(num_scored, 1.0),
                               jnp.nan)
    abs_error, target_norm = mean(err), mean(norm)
    return {
        "horizons": jnp.arange(1, horizon + 1),
        "relative_error": mean(err / jnp.maximum(norm, norm_floor)),
        "pooled_relative_error": abs_error / jnp.maximum(target_norm, norm_floor),
        "abs_error": abs_error,
        "target_norm": target_norm,
        "num_starts": num_traj * num_starts,
        "num_scored": num_scored.astype(jnp.int32),
    }


def random_policy(env: Environment) -> Callable:
    """``policy(obs, key) -> action``: uniform random actions from the env's action space."""
    return lambda obs, key: env.spec.sample_action(key)


def zero_policy(env: Environment) -> Callable:
    """``policy(obs, key) -> action``: the all-zero action (the free response of the system)."""
    return lambda obs, key: jnp.zeros(env.spec.action_shape, env.spec.action_dtype)


@functools.partial(jax.jit, static_argnames=("env", "num_trajectories", "length", "policy"))
def collect_trajectories(env: Environment, key: Array, num_trajectories: int, length: int,
                         policy: Optional[Callable] = None):
    """Real trajectories of ``env`` under ``policy``, jitted, without automatic reset.

    :func:`core.rollout.play` on the adapter, so a trajectory never crosses an episode boundary
    (nor the time limit: ``length`` may exceed ``max_episode_steps``). For an environment that
    terminates, states after termination are whatever its adapter returns.

    Args:
      env: any :class:`envs.Environment` (hashable; a static argument).
      key: PRNG key.
      num_trajectories: ``N``; length: ``T`` transitions per trajectory.
      policy: ``policy(obs, key) -> action`` for one example (hashable, static: pass the same
        object again to reuse the compilation); default uniform random actions.
    Returns:
      ``(states [N, T + 1, *obs_shape], actions [N, T, *action_shape])``.
    """
    policy = policy or random_policy(env)

    def batched(env_state, is_first, carry, key):
        keys = jax.random.split(key, num_trajectories)
        return jax.vmap(policy)(env_state.obs, keys), carry, ()

    out = rollout.play(env, batched, key, num_envs=num_trajectories, length=length)
    return out.observations(), out.action
