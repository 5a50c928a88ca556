"""Gumbel MuZero: the MuZero agent with ``mctx.gumbel_muzero_policy`` (16 simulations or fewer).

Same code as :mod:`agents.muzero`; only the presets differ (``search="gumbel"``).
"""

import dataclasses

from agents.muzero import PRESETS as _MUZERO_PRESETS
from agents.muzero import RUN_DEFAULTS, MuZeroConfig, MuZeroState, build_model, make

PRESETS = {name: dataclasses.replace(cfg, search="gumbel",
                                     num_simulations=min(cfg.num_simulations, 16))
           for name, cfg in _MUZERO_PRESETS.items()}
# CartPole: MuZero's preset as it is (discount 0.997, 30-step targets, mirror augmentation, two
# updates per environment step). On eight 8-seed groups (--seed 0 ... 700): 63 of 64 seeds at
# 475 within 10k steps (58 at the end), against 59 (56) with discount 0.997 and one update per
# step, and 57 (47) with discount 0.99 and one update per step; 46 (36) with the latter and no
# mirror augmentation.

__all__ = ["PRESETS", "RUN_DEFAULTS", "MuZeroConfig", "MuZeroState", "build_model", "make"]
