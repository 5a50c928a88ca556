"""Gumbel MuZero: the MuZero agent with ``mctx.gumbel_muzero_policy`` (16 simulations or fewer).

Same code as :mod:`agents.muzero`; only the presets differ (``search="gumbel"``).
"""

import dataclasses

from agents.muzero import PRESETS as _MUZERO_PRESETS
from agents.muzero import RUN_DEFAULTS, MuZeroConfig, MuZeroState, build_model, make

PRESETS = {name: dataclasses.replace(cfg, search="gumbel",
                                     num_simulations=min(cfg.num_simulations, 16))
           for name, cfg in _MUZERO_PRESETS.items()}
# The default (a task without a preset of its own) weighs the policy loss 0.25, as the value
# loss, where MuZero's weighs it 1. The Gumbel search's policy target is the improved policy
# softmax(logits + sigma(completed Q)), with the Q-values rescaled to [0, 1] at each node, so at
# 16 simulations over three actions the best-valued action gets about 5.7 nats over the worst
# however small the gap between their values. On Acrobot (3-seed runs at --seed 0, 100, 200,
# 300, 20k steps) weight 1 brought 4 of the 12 seeds to -100 and weight 0.25 all 12 (run
# medians 6,288-9,288 steps against PPO's 11,264); Catch reaches 1.0 on every seed by 2,288
# steps (docs/results/muzero.md).
PRESETS["default"] = dataclasses.replace(PRESETS["default"], policy_loss_weight=0.25)
# CartPole: MuZero's preset as it is (discount 0.997, 30-step targets, mirror augmentation, two
# updates per environment step). On eight 8-seed groups (--seed 0 ... 700): 63 of 64 seeds at
# 475 within 10k steps (58 at the end), against 59 (56) with discount 0.997 and one update per
# step, and 57 (47) with discount 0.99 and one update per step; 46 (36) with the latter and no
# mirror augmentation.

__all__ = ["PRESETS", "RUN_DEFAULTS", "MuZeroConfig", "MuZeroState", "build_model", "make"]
