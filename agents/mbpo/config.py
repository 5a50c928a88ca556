"""MBPO settings, presets and the rollout-length schedule."""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import jax.numpy as jnp

from agents.sac import SACConfig
from core.config import at_least, one_of, require, within
from world_models.ensemble import EnsembleConfig

TERMINATIONS = ("none", "learned", "known")


@dataclasses.dataclass(frozen=True)
class MBPOConfig:
    """Settings of MBPO (Janner et al. 2019).

    Attributes:
      actor_hidden, critic_hidden, sac_learning_rate, sac_batch_size, discount, tau, init_alpha,
        target_entropy_scale: the SAC learner (see :class:`agents.sac.SACConfig`).
      updates_per_step: SAC updates per vectorised environment step (MBPO: 20 to 40).
      real_ratio: fraction of each SAC batch drawn from real data (rest: model data).
      ensemble_members, ensemble_elites, model_hidden, model_learning_rate, model_weight_decay,
        model_batch_size, model_train_steps, model_eval_every, model_patience,
        model_holdout_fraction: the probabilistic ensemble and its fit (early stopping).
      model_train_every: environment steps (summed over envs) between refits on all real data.
      rollout_batch_size: real start states of the branched model rollouts made at every
        vectorised environment step (MBPO's 100k starts every 250 steps is 400 per step).
      rollout_schedule: ``(start_epoch, end_epoch, start_len, end_len)``; the rollout length is
        linear in the epoch between the two epochs and constant outside (:func:`rollout_length`).
      epoch_length: environment steps per epoch (after the prefill).
      model_buffer_size: rows of the model-data ring buffer (MBPO keeps about one epoch of
        rollouts: ``rollout_batch_size * rollout length * epoch_length / num_envs``).
      model_max_holdout: cap on the ensemble's held-out rows (each fit evaluates them).
      termination: how model rollouts end: ``"none"`` (the task never terminates), ``"learned"``
        (the ensemble's termination head, ``P(terminated) > 0.5``), ``"known"`` (the
        environment's ``termination_fn``, e.g. brax's inverted pendulums).
      use_true_reward: score model transitions with ``env.reward_fn`` when the task has one.
      prefill_steps: uniformly random environment steps before learning (summed over envs).
      buffer_size: real replay capacity in steps.
    """

    actor_hidden: Tuple[int, ...] = (256, 256)
    critic_hidden: Tuple[int, ...] = (256, 256)
    sac_learning_rate: float = 3e-4
    sac_batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    target_entropy_scale: float = 1.0
    updates_per_step: int = 20
    real_ratio: float = 0.05
    ensemble_members: int = 7
    ensemble_elites: int = 5
    model_hidden: Tuple[int, ...] = (200, 200, 200, 200)
    model_learning_rate: float = 1e-3
    model_weight_decay: float = 5e-5
    model_batch_size: int = 256
    model_train_steps: int = 2000
    model_eval_every: int = 100
    model_patience: int = 5
    model_holdout_fraction: float = 0.2
    model_train_every: int = 250
    rollout_batch_size: int = 400
    rollout_schedule: Tuple[int, int, int, int] = (20, 100, 1, 15)
    epoch_length: int = 1000
    model_buffer_size: int = 1_000_000
    model_max_holdout: int = 5000
    termination: str = "none"
    use_true_reward: bool = False
    prefill_steps: int = 5000
    buffer_size: int = 1_000_000

    def __post_init__(self):
        for name in ("actor_hidden", "critic_hidden", "model_hidden", "rollout_schedule"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        start_epoch, end_epoch, start_len, end_len = (self.rollout_schedule + (0,) * 4)[:4]
        require(self, [
            *at_least(self, ("updates_per_step", "model_train_every", "model_max_holdout",
                             "rollout_batch_size", "epoch_length"), 1),
            *within(self, ("real_ratio",), 0.0, 1.0),
            ("rollout_schedule", len(self.rollout_schedule) == 4 and end_epoch > start_epoch
             and min(start_len, end_len) >= 1,
             "(start_epoch, end_epoch, start_len, end_len) with end_epoch > start_epoch and "
             "lengths >= 1"),
            ("model_buffer_size", self.model_buffer_size >= self.rollout_batch_size
             * self.max_rollout_length,
             f">= rollout_batch_size * max rollout length = "
             f"{self.rollout_batch_size * self.max_rollout_length}"),
            one_of(self, "termination", TERMINATIONS),
            ("prefill_steps", self.prefill_steps >= 1, ">= 1 (the first fit needs data)"),
            *at_least(self, ("buffer_size",), 2),
        ])
        self.sac()  # validates the SAC fields
        self.ensemble()  # validates the ensemble fields

    @property
    def max_rollout_length(self) -> int:
        """The static rollout length; shorter rollouts are masked."""
        return max(self.rollout_schedule[2:4]) if len(self.rollout_schedule) == 4 else 1

    @property
    def num_real(self) -> int:
        """Real transitions per SAC batch, ``round(real_ratio * sac_batch_size)``."""
        return int(round(self.real_ratio * self.sac_batch_size))

    def sac(self) -> SACConfig:
        return SACConfig(actor_hidden=self.actor_hidden, critic_hidden=self.critic_hidden,
                         learning_rate=self.sac_learning_rate, batch_size=self.sac_batch_size,
                         discount=self.discount, tau=self.tau, init_alpha=self.init_alpha,
                         target_entropy_scale=self.target_entropy_scale,
                         updates_per_step=self.updates_per_step,
                         prefill_steps=self.prefill_steps, buffer_size=self.buffer_size)

    def ensemble(self) -> EnsembleConfig:
        return EnsembleConfig(
            num_members=self.ensemble_members, num_elites=self.ensemble_elites,
            hidden_sizes=self.model_hidden, learning_rate=self.model_learning_rate,
            weight_decay=self.model_weight_decay, batch_size=self.model_batch_size,
            holdout_fraction=self.model_holdout_fraction, train_steps=self.model_train_steps,
            max_holdout=self.model_max_holdout,
            eval_every=self.model_eval_every, patience=self.model_patience, predict_reward=True,
            predict_termination=self.termination == "learned")


def rollout_length(schedule: Tuple[int, int, int, int], epoch):
    """MBPO's schedule: ``clip(l0 + (e - e0) / (e1 - e0) * (l1 - l0), min(l0, l1), max(l0, l1))``,
    floored to an integer (``epoch`` may be a traced scalar; returns int32)."""
    start_epoch, end_epoch, start_len, end_len = schedule
    frac = (jnp.asarray(epoch, jnp.float32) - start_epoch) / (end_epoch - start_epoch)
    length = start_len + frac * (end_len - start_len)
    length = jnp.clip(length, min(start_len, end_len), max(start_len, end_len))
    return jnp.floor(length).astype(jnp.int32)


PRESETS: Dict[str, MBPOConfig] = {
    # Paper scale (MBPO hopper settings): rollouts 1 -> 15 over epochs 20-100, 400 start states
    # per environment step (100k per 250 steps in the paper), 20 SAC updates per step; for an
    # accelerator.
    "paper": MBPOConfig(),
    # Seconds on CPU, for tests on linear/* and gymnax/Pendulum-v1.
    "tiny": MBPOConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), sac_learning_rate=1e-3,
                       sac_batch_size=64, updates_per_step=4, ensemble_members=3,
                       ensemble_elites=2, model_hidden=(32, 32), model_batch_size=64,
                       model_train_steps=200, model_eval_every=50, model_max_holdout=200,
                       model_train_every=50, rollout_batch_size=16, rollout_schedule=(0, 4, 1, 3),
                       epoch_length=50, model_buffer_size=2_000, prefill_steps=100,
                       buffer_size=4_000),
    # brax/inverted_pendulum (obs 4, action 1): +1 per step until |angle| > 0.2. The known
    # termination function ends model rollouts; 1 -> 5 step rollouts over the first 2k steps.
    "inverted_pendulum": MBPOConfig(
        actor_hidden=(64, 64), critic_hidden=(64, 64), sac_learning_rate=1e-3,
        updates_per_step=10, ensemble_members=5, ensemble_elites=3, model_hidden=(64, 64, 64),
        model_train_steps=1000, model_max_holdout=1000, model_train_every=250,
        rollout_batch_size=20, rollout_schedule=(0, 8, 1, 5), epoch_length=250,
        model_buffer_size=25_000, termination="known", prefill_steps=500, buffer_size=50_000),
    # dmc/cartpole_swingup (obs 5, action 1, reward in [0, 1] per step, no termination).
    "cartpole_swingup": MBPOConfig(
        actor_hidden=(128, 128), critic_hidden=(128, 128), sac_learning_rate=1e-3,
        updates_per_step=10, ensemble_members=5, ensemble_elites=3, model_hidden=(128, 128, 128),
        model_train_steps=1000, model_max_holdout=1000, model_train_every=250,
        rollout_batch_size=20, rollout_schedule=(0, 10, 1, 5), epoch_length=500,
        model_buffer_size=50_000, prefill_steps=1000, buffer_size=100_000),
    # gymnax/Pendulum-v1 (obs 3, action 1 in [-2, 2], 200-step episodes, no termination).
    "pendulum_v1": MBPOConfig(
        actor_hidden=(64, 64), critic_hidden=(64, 64), sac_learning_rate=1e-3,
        updates_per_step=10, ensemble_members=5, ensemble_elites=3, model_hidden=(64, 64, 64),
        model_train_steps=1000, model_max_holdout=1000, model_train_every=200,
        rollout_batch_size=20, rollout_schedule=(0, 5, 1, 5), epoch_length=200,
        model_buffer_size=20_000, prefill_steps=400, buffer_size=50_000),
}

# What a task without a preset of its own gets, sized for a 2-core CPU: the pendulum_v1
# recipe (64 x 64 SAC, 10 updates per step, rollouts of 1 -> 5 steps over the first 1,000
# steps) with the ensemble's learned termination, so that rollouts can end on tasks that
# terminate (on a task that never does, the termination head sees no terminal transition).
PRESETS["default"] = dataclasses.replace(PRESETS["pendulum_v1"], termination="learned")

# brax/inverted_double_pendulum (obs 8, action 1, about 9.36 per step while balanced): the
# inverted_pendulum preset as it is; model rollouts end by the env's known termination (the tip
# below height 1).
PRESETS["inverted_double_pendulum"] = PRESETS["inverted_pendulum"]

# dmc/cartpole_swingup with `--env-option action_repeat=4` (250 agent steps per episode): the
# `cartpole_swingup` preset with epochs, refits and the random prefill scaled by 1/4 in agent
# steps (the same control steps).
PRESETS["cartpole_swingup_cpu"] = dataclasses.replace(
    PRESETS["cartpole_swingup"], model_train_every=125, epoch_length=125, prefill_steps=250)
