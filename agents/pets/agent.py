"""PETS (Chua et al. 2018): probabilistic ensemble + trajectory sampling + CEM planning.

Every ``refit_every`` environment steps the probabilistic ensemble of
:mod:`world_models.ensemble` is refitted on ALL data in replay
(:func:`world_models.ensemble_fit.fit_transitions`). At every step CEM
(:mod:`agents.mpc.cem`) plans an action sequence per environment: each candidate plan is rolled
out from the current observation by ``num_particles`` particles through the ensemble and scored by
the return averaged over particles. The first action is executed and the plan is shifted to
warm-start the next step (the carry, reset on ``is_first``).

Propagation (how particles use the members, :func:`member_assignment`):

* ``"ts1"``: every particle draws a random elite member at every step (TS-1);
* ``"tsinf"``: every particle draws one elite member and keeps it for the horizon (TS-∞);
* ``"mean"``: deterministic rollout of the mean prediction averaged over the elites (no
  sampling; one particle suffices, so ``num_particles`` is ignored).

With ``ts1``/``tsinf`` next observations (and learned rewards) are sampled
``mean + sqrt(var) z`` from the chosen member's Gaussian. Within one CEM iteration all candidate
plans share the member assignment and the noise (common random numbers), which lowers the
variance of the comparison between plans. The reward is the environment's known ``reward_fn``
when ``use_true_reward`` and the environment has one, else the ensemble's learned reward. With
``predict_termination`` the ensemble also models ``terminated`` and rewards are weighted by the
predicted probability of still being alive (needed e.g. by brax/inverted_pendulum, whose reward is
a constant 1 per step until the pole falls).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from agents.mpc import cem
from core import replay
from core.types import Agent, Schedule
from envs.api import Environment
from world_models import ensemble, ensemble_fit

Array = jax.Array
PROPAGATIONS = ("ts1", "tsinf", "mean")


@dataclasses.dataclass(frozen=True)
class PETSConfig:
    """Settings of the PETS agent.

    Attributes:
      horizon, population, elites, cem_iterations, alpha, init_std: the CEM planner.
      num_particles: particles per candidate plan (its value is their mean return).
      propagation: one of :data:`PROPAGATIONS` (see the module doc).
      ensemble_members, ensemble_elites: members trained / used for prediction.
      hidden_sizes, learning_rate, weight_decay, batch_size, train_steps, fit_eval_every,
        holdout_fraction: the ensemble and its fit (``fit_eval_every`` divides ``train_steps``).
      predict_termination: also model ``terminated`` and weight rewards by survival probability.
      use_true_reward: plan with ``env.reward_fn`` when the environment has one (else the
        learned reward is used anyway).
      refit_every: environment steps (per environment) between ensemble refits.
      prefill_steps: random-action steps (summed over environments) before the first fit.
      buffer_size: replay capacity in steps (all of it is used in each fit).
    """

    horizon: int = 25
    population: int = 400
    elites: int = 40
    cem_iterations: int = 5
    alpha: float = 0.1
    init_std: float = 0.5
    num_particles: int = 20
    propagation: str = "tsinf"
    ensemble_members: int = 5
    ensemble_elites: int = 5
    hidden_sizes: Tuple[int, ...] = (200, 200, 200)
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5
    batch_size: int = 256
    train_steps: int = 2000
    fit_eval_every: int = 100
    holdout_fraction: float = 0.2
    predict_termination: bool = False
    use_true_reward: bool = True
    refit_every: int = 200
    prefill_steps: int = 1000
    buffer_size: int = 100_000

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        checks = [
            ("horizon", self.horizon >= 1, ">= 1"),
            ("population", self.population >= 1, ">= 1"),
            ("elites", 1 <= self.elites <= self.population,
             f"in [1, population={self.population}]"),
            ("cem_iterations", self.cem_iterations >= 1, ">= 1"),
            ("alpha", 0.0 <= self.alpha < 1.0, "in [0, 1)"),
            ("init_std", self.init_std > 0, "> 0"),
            ("num_particles", self.num_particles >= 1, ">= 1"),
            ("propagation", self.propagation in PROPAGATIONS, f"one of {PROPAGATIONS}"),
            ("refit_every", self.refit_every >= 1, ">= 1"),
            ("prefill_steps", self.prefill_steps >= 0, ">= 0"),
            ("buffer_size", self.buffer_size >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"PETSConfig.{name} must be {expected}, "
                                 f"got {getattr(self, name)!r}")
        self.ensemble()  # validates the ensemble fields (raises ValueError)

    def cem(self) -> cem.CEMConfig:
        return cem.CEMConfig(horizon=self.horizon, population=self.population,
                             elites=self.elites, iterations=self.cem_iterations,
                             alpha=self.alpha, init_std=self.init_std)

    def ensemble(self) -> ensemble.EnsembleConfig:
        return ensemble.EnsembleConfig(
            num_members=self.ensemble_members, num_elites=self.ensemble_elites,
            hidden_sizes=self.hidden_sizes, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, batch_size=self.batch_size,
            holdout_fraction=self.holdout_fraction, train_steps=self.train_steps,
            eval_every=self.fit_eval_every, predict_reward=True,
            predict_termination=self.predict_termination)


PRESETS: Dict[str, PETSConfig] = {
    # PETS paper scale (population 400, 40 elites, 5 CEM iterations, 20 particles, 5 members
    # all used for prediction).
    "default": PETSConfig(),
    # Seconds on CPU: for tests on linear/* systems.
    "tiny": PETSConfig(horizon=8, population=64, elites=8, cem_iterations=3, num_particles=4,
                       ensemble_members=3, ensemble_elites=2, hidden_sizes=(32, 32),
                       batch_size=64, train_steps=200, fit_eval_every=50, refit_every=10,
                       prefill_steps=40, buffer_size=2_000),
    # brax/inverted_pendulum on CPU: reward is 1 per step until the pole falls, so termination
    # is modelled and the reward is learned (the env has no reward_fn).
    "inverted_pendulum": PETSConfig(horizon=15, population=200, elites=20, cem_iterations=3,
                                    num_particles=8, ensemble_members=5, ensemble_elites=5,
                                    hidden_sizes=(64, 64, 64), batch_size=128, train_steps=1000,
                                    fit_eval_every=100, predict_termination=True,
                                    refit_every=100, prefill_steps=500, buffer_size=20_000),
}


@struct.dataclass
class PETSState:
    model: ensemble.EnsembleState  # the probabilistic ensemble
    fits: Array  # () int32: number of refits so far


def member_assignment(key: Array, elites: Array, num_particles: int, horizon: int,
                      propagation: str) -> Array:
    """Member index per particle per step, ``[P, H]`` int32, drawn from ``elites [K]``.

    ``ts1``: a fresh random elite per particle and step; ``tsinf``: one random elite per particle,
    constant over the horizon; ``mean``: ``-1`` everywhere (the elite average is used).
    """
    if propagation == "ts1":
        idx = jax.random.randint(key, (num_particles, horizon), 0, elites.shape[0])
        return elites[idx].astype(jnp.int32)
    if propagation == "tsinf":
        idx = jax.random.randint(key, (num_particles, 1), 0, elites.shape[0])
        return jnp.broadcast_to(elites[idx], (num_particles, horizon)).astype(jnp.int32)
    if propagation == "mean":
        return jnp.full((num_particles, horizon), -1, jnp.int32)
    raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")


RewardFn = Callable[[Array, Array, Array], Array]


def particle_returns(model: ensemble.EnsembleState, obs: Array, plans: Array, key: Array,
                     propagation: str, num_particles: int,
                     reward_fn: Optional[RewardFn] = None) -> Array:
    """Returns ``[Pop, P]`` of the plans ``[Pop, H, m]`` from ``obs [d_s]`` per particle.

    All plans share the member assignment and the sampling noise (common random numbers). With
    ``propagation="mean"`` the rollout is deterministic (independent of ``key``) and ``P = 1``.
    ``reward_fn=None`` uses the learned reward (sampled with ``ts1``/``tsinf``).
    """
    horizon = plans.shape[1]
    d_s = obs.shape[-1]
    use_term = model.config.predict_termination
    num_members = model.config.num_members
    if propagation == "mean":
        num_particles = 1
    member_key, obs_key, reward_key = jax.random.split(key, 3)
    members = member_assignment(member_key, model.elites, num_particles, horizon, propagation)
    z_obs = jax.random.normal(obs_key, (num_particles, horizon, d_s))
    z_rew = jax.random.normal(reward_key, (num_particles, horizon))

    def predict(s, a, member):
        # All members at once (stacked parameters, no per-particle parameter gather), then select.
        pred = ensemble.predict_all(model, s, a)
        if use_term:
            p_term = jax.vmap(ensemble.termination_prob, in_axes=(None, 0, None, None))(
                model, jnp.arange(num_members), s, a)
        else:
            p_term = jnp.zeros((num_members,))
        if propagation == "mean":
            sel = lambda x: jnp.mean(x[model.elites], axis=0)
            return (sel(pred.next_obs_mean), jnp.zeros((d_s,)), sel(pred.reward_mean),
                    jnp.zeros(()), sel(p_term))
        return (pred.next_obs_mean[member], pred.next_obs_var[member], pred.reward_mean[member],
                pred.reward_var[member], p_term[member])

    def rollout(actions, member_seq, zo, zr):
        def step(carry, inp):
            s, alive = carry
            a, member, zo_t, zr_t = inp
            mean, var, r_mean, r_var, p_term = predict(s, a, member)
            s_next = mean + jnp.sqrt(var) * zo_t
            if reward_fn is not None:
                r = reward_fn(s, a, s_next)
            else:
                r = r_mean + jnp.sqrt(r_var) * zr_t
            return (s_next, alive * (1.0 - p_term)), alive * r
        _, rewards = jax.lax.scan(step, (obs, jnp.ones(())), (actions, member_seq, zo, zr))
        return rewards.sum()

    per_particle = jax.vmap(rollout, in_axes=(None, 0, 0, 0))
    return jax.vmap(per_particle, in_axes=(0, None, None, None))(plans, members, z_obs, z_rew)


def make(cfg: PETSConfig, env: Environment, num_envs: int) -> Agent:
    """Builds the PETS agent for ``num_envs`` copies of ``env``."""
    spec = env.spec
    cem.check_spec(spec, "pets")
    planner = cfg.cem()
    ens_cfg = cfg.ensemble()
    reward_fn = env.reward_fn if cfg.use_true_reward else None
    low = jnp.asarray(spec.action_low, jnp.float32)
    high = jnp.asarray(spec.action_high, jnp.float32)
    buffer = replay.make_buffer(num_envs=num_envs, capacity=cfg.buffer_size, batch_size=1)
    obs_size, action_size = spec.obs_shape[0], spec.action_shape[0]

    def init(key):
        return PETSState(model=ensemble.init(key, obs_size, action_size, ens_cfg),
                         fits=jnp.zeros((), jnp.int32))

    def initial_carry(n_envs):
        return cem.initial_plans(planner, low, high, n_envs)

    def objective_for(model, obs):
        def objective(plans, eval_key):
            returns = particle_returns(model, obs, plans, eval_key, cfg.propagation,
                                       cfg.num_particles, reward_fn)
            return returns.mean(axis=1)
        return objective

    def act(state: PETSState, obs, is_first, carry, key, explore: bool):
        del explore  # planning is the exploration; nothing is added
        action, next_carry, _ = cem.plan_batch(lambda o: objective_for(state.model, o),
                                               obs.astype(jnp.float32), is_first, carry, key,
                                               planner, low, high)
        return action, next_carry, {}

    def update(state: PETSState, buffer_state, key):
        data, mask = replay.all_steps(buffer_state)
        model, fit_metrics = ensemble_fit.fit_transitions(state.model, data, mask, key)
        metrics = {name: jnp.asarray(fit_metrics[name], jnp.float32)
                   for name in ("train_nll", "elite_holdout_mse", "holdout_mse_mean",
                                "num_train", "num_holdout")}
        metrics["mean_train_steps"] = jnp.mean(fit_metrics["train_steps"].astype(jnp.float32))
        return PETSState(model=model, fits=state.fits + 1), buffer_state, metrics

    schedule = Schedule(env_steps_per_iteration=cfg.refit_every, updates_per_iteration=1,
                        prefill_steps=cfg.prefill_steps)
    return Agent(init=init, initial_carry=initial_carry, act=act, update=update, buffer=buffer,
                 schedule=schedule)
