"""PETS (Chua et al. 2018): probabilistic ensemble + trajectory sampling + CEM planning.

Every ``refit_every`` environment steps the probabilistic ensemble of
:mod:`world_models.ensemble` is refitted on ALL data in replay
(:func:`world_models.ensemble_fit.fit_transitions`). At every step CEM
(:mod:`agents.mpc.cem`) plans an action sequence per environment: each candidate plan is rolled
out from the current observation by ``num_particles`` particles through the ensemble and scored by
the return averaged over particles. The first action is executed and the plan is shifted to
warm-start the next step (the carry, reset on ``is_first``).

Propagation (how particles use the members, :func:`member_assignment`):

* ``"ts1"``: particles are re-split evenly and at random over the elites at every step (TS-1);
* ``"tsinf"``: one random even split of the particles over the elites, kept for the horizon
  (TS-∞);
* ``"mean"``: deterministic rollout of the mean prediction averaged over the elites (no
  sampling; one particle suffices, so ``num_particles`` is ignored).

Particles are sorted by member so that each elite runs ONE batched matrix product over all its
``population * particles / elites`` inputs per step (:func:`world_models.ensemble.predict_members`):
no member computes predictions that are thrown away, and no weights are gathered per example.

With ``ts1``/``tsinf`` next observations (and learned rewards) are sampled
``mean + sqrt(var) z`` from the chosen member's Gaussian. Within one CEM iteration all candidate
plans share the member assignment and the noise (common random numbers), which lowers the
variance of the comparison between plans. The reward is the environment's known ``reward_fn``
when ``use_true_reward`` and the environment has one, else the ensemble's learned reward.
Rewards are weighted by the probability of still being alive (needed e.g. by
brax/inverted_pendulum, whose reward is a constant 1 per step until the pole falls): from the
environment's known ``termination_fn`` when ``use_true_termination`` and it has one, else from
the ensemble's termination head when ``predict_termination``.

Two optional additions to the plan score, both off by default: ``obs_cost`` (a planning-only
quadratic cost on the imagined observations, e.g. on the cart position of
brax/inverted_pendulum, whose survival reward says nothing about the end of the rail until it
is too late) and ``terminal_value`` (a TD(0)-learned value of the last imagined state,
:mod:`agents.pets.value`). The planner can also use iCEM's options (``noise_beta``,
``keep_elites``, ``return_best``; :mod:`agents.mpc.cem`).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from agents.mpc import cem
from agents.pets.config import PROPAGATIONS, PETSConfig
from core import replay
from core.types import Agent, Schedule
from envs.api import Environment
from agents.pets import value as pets_value
from world_models import ensemble, ensemble_fit

Array = jax.Array
@struct.dataclass
class PETSState:
    model: ensemble.EnsembleState  # the probabilistic ensemble
    fits: Array  # () int32: number of refits so far
    value: Optional[pets_value.ValueState] = None  # the terminal value (terminal_value=True)


def member_assignment(key: Array, elites: Array, num_particles: int, horizon: int,
                      propagation: str) -> Array:
    """Member index per particle per step, ``[P, H]`` int32, drawn from ``elites [K]``.

    As in PETS, particles are split evenly over the elites (``P`` must be a multiple of ``K``):
    ``tsinf`` draws one random balanced assignment and keeps it for the horizon; ``ts1`` draws a
    fresh random balanced assignment at every step (each particle's member is uniform over the
    elites at every step); ``mean``: ``-1`` everywhere (the elite average is used).
    """
    num_elites = elites.shape[0]
    if propagation == "mean":
        return jnp.full((num_particles, horizon), -1, jnp.int32)
    if propagation not in ("ts1", "tsinf"):
        raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
    if num_particles % num_elites:
        raise ValueError(f"num_particles={num_particles} must be a multiple of the number of "
                         f"elite members ({num_elites}) for {propagation}")
    balanced = jnp.repeat(elites.astype(jnp.int32), num_particles // num_elites)
    steps = horizon if propagation == "ts1" else 1
    perms = jax.vmap(lambda k: jax.random.permutation(k, balanced))(jax.random.split(key, steps))
    return jnp.broadcast_to(perms.T, (num_particles, horizon))


RewardFn = Callable[[Array, Array, Array], Array]


def _grouped_step(model: ensemble.EnsembleState, s: Array, a: Array, member: Array):
    """Predictions for states ``s [Pop, P, d_s]`` under actions ``a [Pop, d_a]`` where particle
    ``p`` uses member ``member[p]`` (a balanced assignment): particles are sorted by member so
    that each member runs one batched matrix product over its ``Pop * P / K`` inputs."""
    pop, num_particles, d_s = s.shape
    num_elites = model.elites.shape[0]
    order = jnp.argsort(member, stable=True)
    groups = member[order].reshape(num_elites, -1)[:, 0]  # the member of each group
    per = num_particles // num_elites

    def to_groups(x):  # [Pop, P, ...] -> [K, Pop * P/K, ...]
        x = x[:, order].reshape((pop, num_elites, per) + x.shape[2:])
        return jnp.swapaxes(x, 0, 1).reshape((num_elites, pop * per) + x.shape[3:])

    def from_groups(x):  # inverse of to_groups
        x = jnp.swapaxes(x.reshape((num_elites, pop, per) + x.shape[2:]), 0, 1)
        x = x.reshape((pop, num_particles) + x.shape[3:])
        return x[:, jnp.argsort(order)]

    actions = jnp.broadcast_to(a[:, None], (pop, num_particles, a.shape[-1]))
    pred, p_term = ensemble.predict_members(model, groups, to_groups(s), to_groups(actions))
    return jax.tree.map(from_groups, pred), from_groups(p_term)


def _mean_step(model: ensemble.EnsembleState, s: Array, a: Array):
    """Elite-averaged mean predictions for ``s [Pop, 1, d_s]``, ``a [Pop, d_a]``."""
    num_elites = model.elites.shape[0]
    tile = lambda x: jnp.broadcast_to(x[None], (num_elites,) + x.shape)
    pred, p_term = ensemble.predict_members(model, model.elites, tile(s[:, 0]), tile(a))
    avg = lambda x: jnp.mean(x, axis=0)[:, None]
    return (pred._replace(next_obs_mean=avg(pred.next_obs_mean),
                          next_obs_var=jnp.zeros_like(s), reward_mean=avg(pred.reward_mean),
                          reward_var=jnp.zeros(s.shape[:2])), avg(p_term))


def particle_returns(model: ensemble.EnsembleState, obs: Array, plans: Array, key: Array,
                     propagation: str, num_particles: int,
                     reward_fn: Optional[RewardFn] = None,
                     termination_fn: Optional[RewardFn] = None,
                     obs_cost: Optional[Array] = None,
                     terminal_value: Optional[Callable[[Array], Array]] = None,
                     discount: float = 1.0) -> Array:
    """Returns ``[Pop, P]`` of the plans ``[Pop, H, m]`` from ``obs [d_s]`` per particle.

    All plans share the member assignment and the sampling noise (common random numbers). With
    ``propagation="mean"`` the rollout is deterministic (independent of ``key``) and ``P = 1``.
    ``reward_fn=None`` uses the learned reward (sampled with ``ts1``/``tsinf``). Step rewards
    are weighted by the probability of not having terminated before the step: from the known
    ``termination_fn`` when given, else from the ensemble's termination head if it has one.
    ``obs_cost [d_s]`` (optional) subtracts ``sum_i obs_cost[i] * s'_i^2`` from each step's reward.
    ``terminal_value`` (optional, ``V(s [..., d_s]) -> [...]``) adds ``discount^H alive_H V(s_H)``
    and discounts step ``t``'s reward by ``discount^t`` (``discount`` is used only with it).
    """
    pop, horizon = plans.shape[:2]
    d_s = obs.shape[-1]
    if propagation == "mean":
        num_particles = 1
    member_key, obs_key, reward_key = jax.random.split(key, 3)
    members = member_assignment(member_key, model.elites, num_particles, horizon, propagation)
    z_obs = jax.random.normal(obs_key, (horizon, num_particles, d_s))
    z_rew = jax.random.normal(reward_key, (horizon, num_particles))

    def step(carry, inp):
        s, alive = carry  # [Pop, P, d_s], [Pop, P]
        a, member, zo, zr = inp
        if propagation == "mean":
            pred, p_term = _mean_step(model, s, a)
        else:
            pred, p_term = _grouped_step(model, s, a, member)
        s_next = pred.next_obs_mean + jnp.sqrt(pred.next_obs_var) * zo
        act = jnp.broadcast_to(a[:, None], (pop, num_particles, a.shape[-1]))
        if termination_fn is not None:
            p_term = jax.vmap(jax.vmap(termination_fn))(s, act, s_next).astype(jnp.float32)
        if reward_fn is not None:
            r = jax.vmap(jax.vmap(reward_fn))(s, act, s_next)
        else:
            r = pred.reward_mean + jnp.sqrt(pred.reward_var) * zr
        if obs_cost is not None:
            r = r - jnp.sum(obs_cost * s_next ** 2, axis=-1)
        return (s_next, alive * (1.0 - p_term)), alive * r

    s0 = jnp.broadcast_to(obs.astype(jnp.float32), (pop, num_particles, d_s))
    (s_last, alive), rewards = jax.lax.scan(step, (s0, jnp.ones((pop, num_particles))),
                                            (jnp.swapaxes(plans, 0, 1), members.T, z_obs, z_rew))
    if terminal_value is None:
        return rewards.sum(axis=0)
    weights = discount ** jnp.arange(horizon, dtype=jnp.float32)
    return (jnp.tensordot(weights, rewards, axes=1)
            + discount ** horizon * alive * terminal_value(s_last))


def _obs_stats(model: ensemble.EnsembleState) -> Tuple[Array, Array]:
    """The ensemble's input normaliser restricted to the observation columns."""
    d_s = model.obs_size
    return model.normaliser.input_mean[:d_s], model.normaliser.input_std[:d_s]


def make(cfg: PETSConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the PETS agent for ``num_envs`` copies of ``env``."""
    spec = env.spec
    cem.check_spec(spec, "pets")
    planner = cfg.cem()
    ens_cfg = cfg.ensemble()
    reward_fn = env.reward_fn if cfg.use_true_reward else None
    termination_fn = env.termination_fn if cfg.use_true_termination else None
    low = jnp.asarray(spec.action_low, jnp.float32)
    high = jnp.asarray(spec.action_high, jnp.float32)
    buffer = replay.make_buffer(num_envs=num_envs, capacity=cfg.buffer_size, batch_size=1)
    obs_size, action_size = spec.obs_shape[0], spec.action_shape[0]
    if cfg.obs_cost and len(cfg.obs_cost) != obs_size:
        raise ValueError(f"PETSConfig.obs_cost has {len(cfg.obs_cost)} weights but {spec.env_id} "
                         f"observations have {obs_size} dimensions; give one weight per "
                         f"dimension or none")
    obs_cost = jnp.asarray(cfg.obs_cost, jnp.float32) if cfg.obs_cost else None

    def init(key):
        model_key, value_key = jax.random.split(key)
        value = (pets_value.init(value_key, obs_size, cfg.value_hidden, cfg.value_learning_rate)
                 if cfg.terminal_value else None)
        return PETSState(model=ensemble.init(model_key, obs_size, action_size, ens_cfg),
                         fits=jnp.zeros((), jnp.int32), value=value)

    def initial_carry(n_envs):
        return cem.initial_plans(planner, low, high, n_envs)

    def objective_for(state, obs):
        terminal = None
        if cfg.terminal_value:
            obs_mean, obs_std = _obs_stats(state.model)
            terminal = lambda s: pets_value.apply(state.value.params, cfg.value_hidden, s,
                                                  obs_mean, obs_std, cfg.value_discount)

        def objective(plans, eval_key):
            returns = particle_returns(state.model, obs, plans, eval_key, cfg.propagation,
                                       cfg.num_particles, reward_fn, termination_fn, obs_cost,
                                       terminal, cfg.value_discount)
            return returns.mean(axis=1)
        return objective

    def act(state: PETSState, obs, is_first, carry, key, explore: bool, *,
            legal_action_mask=None):  # continuous actions: never masked
        del explore  # planning is the exploration; nothing is added
        action, next_carry, _ = cem.plan_batch(lambda o: objective_for(state, o),
                                               obs.astype(jnp.float32), is_first, carry, key,
                                               planner, low, high)
        return action, next_carry, {}

    def update(state: PETSState, buffer_state, key):
        data, mask = replay.all_steps(buffer_state)
        model_key, value_key = jax.random.split(key)
        model, fit_metrics = ensemble_fit.fit_transitions(state.model, data, mask, model_key)
        metrics = {name: jnp.asarray(fit_metrics[name], jnp.float32)
                   for name in ("train_nll", "elite_holdout_mse", "holdout_mse_mean",
                                "num_train", "num_holdout", "skipped_updates")}
        metrics["mean_train_steps"] = jnp.mean(fit_metrics["train_steps"].astype(jnp.float32))
        value = state.value
        if cfg.terminal_value:
            rows = mask.shape[0]
            obs_mean, obs_std = _obs_stats(model)
            value, value_metrics = pets_value.fit(
                value, data.obs.reshape(rows, -1).astype(jnp.float32), data.reward.reshape(rows),
                data.next_obs.reshape(rows, -1).astype(jnp.float32),
                data.terminated.reshape(rows).astype(jnp.float32), mask, obs_mean, obs_std,
                value_key, hidden=cfg.value_hidden, discount=cfg.value_discount,
                learning_rate=cfg.value_learning_rate, steps=cfg.value_train_steps,
                batch_size=cfg.value_batch_size, tau=cfg.value_tau)
            metrics.update(value_metrics)
        return (PETSState(model=model, fits=state.fits + 1, value=value), buffer_state,
                metrics)

    schedule = Schedule(env_steps_per_iteration=cfg.refit_every, updates_per_iteration=1,
                        prefill_steps=cfg.prefill_steps)
    return Agent(init=init, initial_carry=initial_carry, act=act, update=update, buffer=buffer,
                 schedule=schedule)
