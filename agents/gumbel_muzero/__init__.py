"""Gumbel MuZero: the MuZero agent with ``mctx.gumbel_muzero_policy`` (16 simulations or fewer).

Same code as :mod:`agents.muzero`; only the presets differ (``search="gumbel"``).
"""

import dataclasses

from agents.muzero import PRESETS as _MUZERO_PRESETS
from agents.muzero import RUN_DEFAULTS, MuZeroConfig, make

PRESETS = {name: dataclasses.replace(cfg, search="gumbel",
                                     num_simulations=min(cfg.num_simulations, 16))
           for name, cfg in _MUZERO_PRESETS.items()}

__all__ = ["PRESETS", "RUN_DEFAULTS", "MuZeroConfig", "make"]
