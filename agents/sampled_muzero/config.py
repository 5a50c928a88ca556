"""Settings of Sampled MuZero: MuZero's, plus the sampling; validated at construction."""

from __future__ import annotations

import dataclasses
from typing import Dict

from agents.muzero.config import MuZeroConfig
from core.config import at_least, positive, require


@dataclasses.dataclass(frozen=True)
class SampledMuZeroConfig(MuZeroConfig):
    """MuZero's settings (:class:`agents.muzero.config.MuZeroConfig`, every field) plus:

    Attributes:
      num_samples: K, actions sampled at every node of the search (mctx's ``num_actions``).
      root_std_scale: at the root, while acting, the samples come from the policy with its
        standard deviation times this (>= 1: wider than the policy, for exploration); the
        prior corrects for it (:mod:`agents.sampled_muzero.search`).
      policy_min_std: floor of the Gaussian policy's standard deviation (pre-squash).

    ``mirror_augmentation`` is refused (no continuous-action symmetry is declared), and
    ``max_num_considered_actions`` of the gumbel search is capped at ``num_samples``.

    ``search`` defaults to ``"gumbel"`` here (MuZero's default is ``"muzero"``). With a few
    simulations per sample (32 over 16), PUCT spends nearly all of them on the sample whose
    Q-value is highest after the min-max rescaling over the parent and siblings, however small
    their spread, so the visit-count target is close to one-hot on one sample, and the
    Gaussian's log-likelihood of that one sample drags the mean to it and the standard
    deviation down. The Gumbel search's improved policy,
    ``softmax(prior logits + sigma(completed Q))``, keeps the prior's importance weights and
    moves them by the action values, so the policy only narrows where the values say so
    (``docs/results/muzero.md``, Sampled MuZero).
    """

    search: str = "gumbel"
    num_samples: int = 16
    root_std_scale: float = 1.5
    policy_min_std: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        require(self, [
            *at_least(self, ("num_samples",), 2),
            *at_least(self, ("root_std_scale",), 1.0),
            *positive(self, ("policy_min_std",)),
            ("policy_min_std", self.policy_min_std < 1.0,
             "< 1 (the policy starts at standard deviation 1)"),
            ("mirror_augmentation", not self.mirror_augmentation,
             "False (Sampled MuZero declares no symmetry of continuous actions)"),
        ])


# Continuous control on a 2-core CPU (brax/*, dmc/*): small nets, 16 samples and 32
# simulations of the gumbel search, discount 0.99 with 10-step value targets, two updates
# (batch 64) per environment step with 8 environments, no reanalyse; with ``--search muzero``
# the visit temperature falls after 5,000 and 10,000 updates. The value support (101 bins over
# [-50, 50] in h-space) holds values up to 2,364, i.e. rewards up to about 23 per step at
# discount 0.99 (brax's inverted_double_pendulum pays about 9.36 per step, values up to about 936;
# 41 bins over [-20, 20] hold only 422); the reward support holds rewards up to 34. The logged
# ``value_target_clipped`` is the share of value targets beyond the support.
_CPU = dict(model_size="small", num_samples=16, num_simulations=32, discount=0.99, n_step=10,
            unroll_steps=5, batch_size=64, learning_rate=1e-3, buffer_size=100_000,
            priority_exponent=0.6, importance_exponent=0.4, reanalyse_fraction=0.0,
            temperature_boundaries=(5_000, 10_000), value_support_size=101,
            value_support_max=50.0, reward_support_size=21, reward_support_max=5.0,
            env_steps_per_iteration=1, updates_per_iteration=16, prefill_steps=512,
            target_update_period=100)

PRESETS: Dict[str, SampledMuZeroConfig] = {
    "default": SampledMuZeroConfig(**_CPU),
    "tiny": SampledMuZeroConfig(model_size="tiny", num_samples=4, num_simulations=4,
                                batch_size=16, n_step=3, unroll_steps=3, buffer_size=2_000,
                                prefill_steps=32, value_support_size=11,
                                value_support_max=5.0, reward_support_size=5,
                                reward_support_max=2.0, max_num_considered_actions=4),
}

# Run defaults read by experiments.presets.run_defaults.
RUN_DEFAULTS = {
    "*": dict(steps=10_000, num_envs=8, log_every=1_000, eval_every=1_000, eval_episodes=5,
              checkpoint_every=0),
}
