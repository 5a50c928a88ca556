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

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from agents.mpc import cem
from core import replay
from core.types import Agent, Schedule
from envs.api import Environment
from agents.pets import value as pets_value
from world_models import ensemble, ensemble_fit

Array = jax.Array
PROPAGATIONS = ("ts1", "tsinf", "mean")


@dataclasses.dataclass(frozen=True)
class PETSConfig:
    """Settings of the PETS agent.

    Attributes:
      horizon, population, elites, cem_iterations, alpha, init_std: the CEM planner.
      noise_beta, keep_elites, return_best: iCEM's options (:mod:`agents.mpc.cem`; off = CEM).
      num_particles: particles per candidate plan (its value is their mean return).
      propagation: one of :data:`PROPAGATIONS` (see the module doc).
      ensemble_members, ensemble_elites: members trained / used for prediction.
      hidden_sizes, learning_rate, weight_decay, batch_size, train_steps, fit_eval_every,
        holdout_fraction: the ensemble and its fit (``fit_eval_every`` divides ``train_steps``).
      predict_termination: also model ``terminated`` and weight rewards by survival probability.
      use_true_reward: plan with ``env.reward_fn`` when the environment has one (else the
        learned reward is used anyway).
      use_true_termination: plan with ``env.termination_fn`` when the environment has one
        (else the termination head if ``predict_termination``, else no termination).
      terminal_value: score plans with a learned value of their last state
        (:mod:`agents.pets.value`): ``sum_t gamma^t alive_t r_t + gamma^H alive_H V(s_H)``
        with ``gamma = value_discount``.
      value_hidden, value_discount, value_learning_rate, value_train_steps, value_batch_size,
        value_tau: the value network and its TD(0) fit after each ensemble refit.
      obs_cost: planning-only quadratic cost weights, one per observation dimension (empty:
        none): each imagined step's reward is lowered by ``sum_i obs_cost[i] * s'_i^2``. The
        agent's returns (logged and evaluated) stay the environment's own.
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
    noise_beta: float = 0.0
    keep_elites: bool = False
    return_best: bool = False
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
    use_true_termination: bool = True
    obs_cost: Tuple[float, ...] = ()
    terminal_value: bool = False
    value_hidden: Tuple[int, ...] = (64, 64)
    value_discount: float = 0.99
    value_learning_rate: float = 1e-3
    value_train_steps: int = 500
    value_batch_size: int = 256
    value_tau: float = 0.01
    refit_every: int = 200
    prefill_steps: int = 1000
    buffer_size: int = 100_000

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "obs_cost", tuple(float(w) for w in self.obs_cost))
        object.__setattr__(self, "value_hidden", tuple(int(h) for h in self.value_hidden))
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
            ("obs_cost", all(w >= 0 for w in self.obs_cost), "non-negative weights"),
            ("value_discount", 0.0 <= self.value_discount < 1.0, "in [0, 1)"),
            ("value_learning_rate", self.value_learning_rate > 0, "> 0"),
            ("value_train_steps", self.value_train_steps >= 1, ">= 1"),
            ("value_batch_size", self.value_batch_size >= 1, ">= 1"),
            ("value_tau", 0.0 < self.value_tau <= 1.0, "in (0, 1]"),
            ("value_hidden", all(h >= 1 for h in self.value_hidden), "positive widths"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"PETSConfig.{name} must be {expected}, "
                                 f"got {getattr(self, name)!r}")
        self.ensemble()  # validates the ensemble fields (raises ValueError)
        if self.propagation != "mean" and self.num_particles % self.ensemble_elites:
            raise ValueError(f"PETSConfig.num_particles ({self.num_particles}) must be a multiple "
                             f"of ensemble_elites ({self.ensemble_elites}) for "
                             f"{self.propagation} (particles are split evenly over the elites)")

    def cem(self) -> cem.CEMConfig:
        return cem.CEMConfig(horizon=self.horizon, population=self.population,
                             elites=self.elites, iterations=self.cem_iterations,
                             alpha=self.alpha, init_std=self.init_std,
                             noise_beta=self.noise_beta, keep_elites=self.keep_elites,
                             return_best=self.return_best)

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
    # The PETS paper's HalfCheetah planner (population 500, 50 elites, 5 iterations, horizon 30,
    # 20 particles, 5 members; 4 x 200 hidden as in mbrl-lib). The reward is learned.
    "halfcheetah": PETSConfig(horizon=30, population=500, elites=50, cem_iterations=5,
                              num_particles=20, ensemble_members=5, ensemble_elites=5,
                              hidden_sizes=(200, 200, 200, 200), use_true_reward=False),
    # The PETS paper's cartpole planner (population 400, 40 elites, horizon 25) for
    # dmc/cartpole_swingup with the env's known reward (envs.dmc); 1,000-step episodes.
    "cartpole_swingup": PETSConfig(horizon=25, population=400, elites=40, cem_iterations=5,
                                   num_particles=20, hidden_sizes=(200, 200, 200),
                                   refit_every=250, prefill_steps=1000),
    # dmc/cartpole_swingup on a 2-core CPU, meant for `--env-option action_repeat=4` (the agent
    # acts every 4 control steps, 250 actions per episode, so the 25-step horizon sees 1 s
    # ahead): population 100, 3 CEM iterations, 5 TS-inf particles, 5 members of 128 x 3, the
    # learned reward (the known reward is exact only without action repeat), refits every 125
    # steps per environment.
    "cartpole_swingup_cpu": PETSConfig(horizon=25, population=100, elites=10, cem_iterations=3,
                                       num_particles=5, hidden_sizes=(128, 128, 128),
                                       use_true_reward=False, refit_every=125,
                                       prefill_steps=500),
    # Seconds on CPU: for tests on linear/* systems.
    "tiny": PETSConfig(horizon=8, population=64, elites=8, cem_iterations=3, num_particles=4,
                       ensemble_members=3, ensemble_elites=2, hidden_sizes=(32, 32),
                       batch_size=64, train_steps=200, fit_eval_every=50, refit_every=10,
                       prefill_steps=40, buffer_size=2_000),
    # brax/inverted_pendulum on CPU: the env's known reward (1 per step) and termination
    # (|pole angle| > 0.2) are used for planning, as PETS uses known costs; the ensemble learns
    # the dynamics. Sized to fit 3 seeds x 5,000 steps on a 2-core CPU. A 15-step horizon
    # cannot see the cart running into the end of its rail, even with the true simulator as
    # the model (experiments.oracle_mpc), so: horizon 30, iCEM's coloured noise / kept elites /
    # best plan, the deterministic elite-mean rollout (sampled particles diverge over 30 steps
    # of this unstable system) and a planning-only cost 0.1 x^2 on the cart position.
    "inverted_pendulum": PETSConfig(horizon=30, population=100, elites=10, cem_iterations=3,
                                    noise_beta=2.0, keep_elites=True, return_best=True,
                                    propagation="mean", obs_cost=(0.1, 0.0, 0.0, 0.0),
                                    num_particles=5, ensemble_members=5, ensemble_elites=5,
                                    hidden_sizes=(64, 64, 64), batch_size=128, train_steps=1000,
                                    fit_eval_every=100, refit_every=100, prefill_steps=500,
                                    buffer_size=20_000),
}


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

    def act(state: PETSState, obs, is_first, carry, key, explore: bool):
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
                                "num_train", "num_holdout")}
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
