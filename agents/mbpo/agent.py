"""MBPO (Janner et al. 2019, "When to trust your model") on the shared training loop.

The core calls ``update`` once per vectorised environment step (one loop iteration). The agent
counts iterations (``MBPOState.iterations``; environment steps since the prefill are
``iterations * E``) and in each call

1. refits the ensemble on ALL real data in replay when ``iterations`` is a multiple of
   ``model_train_every / E`` (:func:`world_models.ensemble_fit.fit_transitions`; bootstrap,
   early stopping on held-out data, elites);
2. samples ``rollout_batch_size`` real states from replay and appends branched model rollouts of
   the scheduled length (:func:`agents.mbpo.config.rollout_length` of
   ``epoch = iterations * E // epoch_length``) to the model-data ring buffer
   (:mod:`agents.mbpo.model_buffer`);
3. takes ``updates_per_step`` SAC steps (:class:`agents.sac.SACLearner`, a ``lax.scan``), each on
   ``n_real = round(real_ratio * B)`` real and ``B - n_real`` model transitions.

Why no ``lax.cond`` for the refit: :mod:`core.runner` vmaps the run over seeds, and a
``lax.cond`` whose predicate is batched becomes a ``select`` that runs BOTH branches, i.e. a
full refit at every step. A ``lax.while_loop`` whose body clears the flag (:func:`run_if`) runs
as long as its longest batch member: zero times when no seed is due, once when all are (the
seeds share the schedule). The first call (right after the prefill) always refits, so rollouts
never come from an untrained model.
"""

from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp
from flax import struct

from agents.mbpo import model_buffer
from agents.mbpo.config import MBPOConfig, rollout_length
from agents.mbpo.rollout import branched_rollouts
from agents.sac import Batch, SACState, make_learner
from core import replay
from core.types import Agent, Schedule, Transition
from envs.api import Environment
from world_models import ensemble, ensemble_fit

Array = jax.Array
# Metric name -> the model fit's metric it reports (the fit's skipped steps are named apart from
# SAC's ``skipped_updates``, which the runner watches).
_FIT_METRICS = {"train_nll": "train_nll", "elite_holdout_mse": "elite_holdout_mse",
                "holdout_mse_mean": "holdout_mse_mean", "model_skipped_updates": "skipped_updates"}


@struct.dataclass
class MBPOState:
    sac: SACState  # actor, critics, targets, temperature, optimiser states
    model: ensemble.EnsembleState  # the probabilistic ensemble (elites chosen at each fit)
    model_data: model_buffer.ModelBuffer  # ring buffer of model transitions
    iterations: Array  # () int32: update calls so far (one per vectorised env step)
    fits: Array  # () int32: ensemble refits so far
    rollout_length: Array  # () int32: length of the latest batch of rollouts
    model_metrics: Dict[str, Array]  # () float32 each: metrics of the latest fit


# Uniform draws of stored real steps (the shared replay helper; kept under MBPO's name).
sample_real = replay.sample_steps


def mixed_batch(real: Transition, model_rows) -> Batch:
    """Real rows ``[n_real, ...]`` followed by model rows ``[n_model, ...]`` as one SAC batch.

    ``model_rows = (obs, action, reward, next_obs, terminated)``; ``real`` may be None.
    """
    parts = [model_rows]
    if real is not None:
        parts.insert(0, (real.obs, real.action, real.reward, real.next_obs, real.terminated))
    cat = [jnp.concatenate([jnp.asarray(p[i], jnp.float32 if i < 4 else bool) for p in parts])
           for i in range(5)]
    return Batch(obs=cat[0], action=cat[1], reward=cat[2], next_obs=cat[3], terminated=cat[4])


def run_if(flag: Array, fn, operand):
    """``fn(operand)`` if ``flag`` else ``operand``, skipping the work also under ``vmap``.

    A ``lax.while_loop`` over ``(flag, operand)`` whose body applies ``fn`` and clears the
    flag; under ``vmap`` it runs once if any member's flag is set (members whose flag is clear
    keep their operand) and not at all otherwise, unlike a batched ``lax.cond``.
    """
    def body(carry):
        return jnp.zeros((), bool), fn(carry[1])

    return jax.lax.while_loop(lambda carry: carry[0], body, (jnp.asarray(flag, bool),
                                                             operand))[1]


def _check_env(env: Environment, cfg: MBPOConfig) -> None:
    spec = env.spec
    if spec.discrete:
        raise ValueError(f"agent 'mbpo' needs a continuous action space; {spec.env_id} has a "
                         f"discrete one ({spec.num_actions} actions). Use a continuous task such "
                         f"as brax/inverted_pendulum (or --agent muzero for discrete actions).")
    if len(spec.action_shape) != 1 or len(spec.obs_shape) != 1:
        raise ValueError(f"agent 'mbpo' needs vector observations and a flat action vector; "
                         f"{spec.env_id} has observations of shape {tuple(spec.obs_shape)} and "
                         f"actions of shape {tuple(spec.action_shape)}. Use a vector task such "
                         f"as brax/inverted_pendulum.")
    if cfg.termination == "known" and env.termination_fn is None:
        raise ValueError(f"MBPOConfig.termination='known' but {spec.env_id} has no known "
                         f"termination function (envs with one: brax/inverted_pendulum, "
                         f"brax/inverted_double_pendulum); use 'learned' or 'none'")


def make(cfg: MBPOConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the MBPO agent for ``num_envs`` copies of ``env``."""
    _check_env(env, cfg)
    spec = env.spec
    obs_size, action_size = spec.obs_shape[0], spec.action_shape[0]
    learner = make_learner(cfg.sac(), obs_shape=spec.obs_shape, action_low=spec.action_low,
                           action_high=spec.action_high)
    ens_cfg = cfg.ensemble()
    buffer = replay.make_buffer(num_envs=num_envs, capacity=max(cfg.buffer_size, 2 * num_envs),
                                batch_size=1)
    done_fn = env.termination_fn if cfg.termination == "known" else None
    reward_fn = env.reward_fn if cfg.use_true_reward else None
    fit_every = max(1, cfg.model_train_every // num_envs)  # in loop iterations
    num_real, num_model = cfg.num_real, cfg.sac_batch_size - cfg.num_real

    def init(key):
        sac_key, model_key = jax.random.split(key)
        return MBPOState(
            sac=learner.init(sac_key), model=ensemble.init(model_key, obs_size, action_size,
                                                           ens_cfg),
            model_data=model_buffer.init(cfg.model_buffer_size, obs_size, action_size),
            iterations=jnp.zeros((), jnp.int32), fits=jnp.zeros((), jnp.int32),
            rollout_length=jnp.zeros((), jnp.int32),
            model_metrics={name: jnp.zeros((), jnp.float32) for name in _FIT_METRICS})

    def act(state: MBPOState, obs, is_first, carry, key, explore: bool, *,
            legal_action_mask=None):  # continuous actions: never masked
        del is_first
        return learner.policy(state.sac, obs.astype(jnp.float32), key, explore), carry, {}

    def refit(operand):
        state, buffer_state, key = operand
        data, mask = replay.all_steps(buffer_state)
        model, metrics = ensemble_fit.fit_transitions(state.model, data, mask, key)
        state = state.replace(model=model, fits=state.fits + 1, model_metrics={
            name: jnp.asarray(metrics[fit_name], jnp.float32)
            for name, fit_name in _FIT_METRICS.items()})
        return state, buffer_state, key

    def rollout(state: MBPOState, buffer_state, key) -> MBPOState:
        start_key, roll_key = jax.random.split(key)
        length = rollout_length(cfg.rollout_schedule,
                                state.iterations * num_envs // cfg.epoch_length)
        start = sample_real(buffer_state, start_key, cfg.rollout_batch_size).obs
        policy = lambda obs, k: learner.policy(state.sac, obs, k, True)  # noqa: E731
        out = branched_rollouts(state.model, policy, start, length, roll_key,
                                max_length=cfg.max_rollout_length, termination=cfg.termination,
                                done_fn=done_fn, reward_fn=reward_fn)
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731  [L, B, ...] -> [L B, ...]
        data = model_buffer.add(state.model_data, flat(out.obs), flat(out.action),
                                flat(out.reward), flat(out.next_obs), flat(out.terminated),
                                flat(out.valid))
        return state.replace(model_data=data, rollout_length=length)

    def sac_step(carry, key):
        sac_state, model_data, buffer_state = carry
        real_key, model_key, sac_key = jax.random.split(key, 3)
        real = sample_real(buffer_state, real_key, num_real) if num_real else None
        model_rows = model_buffer.sample(model_data, model_key, num_model)
        sac_state, metrics = learner.update(sac_state, mixed_batch(real, model_rows), sac_key)
        return (sac_state, model_data, buffer_state), metrics

    def update(state: MBPOState, buffer_state, key):
        fit_key, roll_key, sac_key = jax.random.split(key, 3)
        state, _, _ = run_if(state.iterations % fit_every == 0, refit,
                             (state, buffer_state, fit_key))
        state = rollout(state, buffer_state, roll_key)
        (sac_state, _, _), metrics = jax.lax.scan(
            sac_step, (state.sac, state.model_data, buffer_state),
            jax.random.split(sac_key, cfg.updates_per_step))
        metrics = {**jax.tree_util.tree_map(jnp.mean, metrics), **state.model_metrics,
                   "model_fits": state.fits.astype(jnp.float32),
                   "rollout_length": state.rollout_length.astype(jnp.float32),
                   "model_buffer_rows": state.model_data.size.astype(jnp.float32)}
        return (state.replace(sac=sac_state, iterations=state.iterations + 1), buffer_state,
                metrics)

    schedule = Schedule(env_steps_per_iteration=1, updates_per_iteration=1,
                        prefill_steps=cfg.prefill_steps)
    return Agent(init=init, initial_carry=lambda n: jnp.zeros((n,)), act=act, update=update,
                 buffer=buffer, schedule=schedule)


__all__: Any = ["MBPOState", "make", "mixed_batch", "run_if", "sample_real"]
