"""Settings and presets of the PETS agent (:mod:`agents.pets.agent`)."""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from agents.mpc import cem
from core.config import at_least, one_of, positive, require, widths, within
from world_models import ensemble

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
        require(self, [
            *at_least(self, ("horizon", "population", "cem_iterations", "num_particles",
                             "refit_every", "buffer_size", "value_train_steps",
                             "value_batch_size"), 1),
            ("elites", 1 <= self.elites <= self.population,
             f"in [1, population={self.population}]"),
            *within(self, ("alpha", "value_discount"), 0.0, 1.0, "[)"),
            *positive(self, ("init_std", "value_learning_rate")),
            one_of(self, "propagation", PROPAGATIONS),
            *at_least(self, ("prefill_steps",), 0),
            ("obs_cost", all(w >= 0 for w in self.obs_cost), "non-negative weights"),
            *within(self, ("value_tau",), 0.0, 1.0, "(]"),
            *widths(self, ("value_hidden",)),
        ])
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
    # all used for prediction), for an accelerator.
    "paper": PETSConfig(),
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

# What a task without a preset of its own gets, sized for a 2-core CPU: the
# cartpole_swingup_cpu planner and ensemble (population 100, 3 CEM iterations, 5 TS-inf
# particles, 5 members of 128 x 3), planning with the task's known reward where it has one
# (as PETS does), else the learned one.
PRESETS["default"] = dataclasses.replace(PRESETS["cartpole_swingup_cpu"], use_true_reward=True)

# brax/inverted_double_pendulum on CPU: the inverted_pendulum planner and ensemble with the env's
# known reward (alive bonus, tip height and velocity penalties) and termination (the tip below
# height 1), without the cart-position cost: the reward already penalises the tip's distance.
PRESETS["inverted_double_pendulum"] = dataclasses.replace(
    PRESETS["inverted_pendulum"], obs_cost=(), buffer_size=50_000)
