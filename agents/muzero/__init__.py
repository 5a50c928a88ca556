"""MuZero (mctx ``muzero_policy``) and Gumbel MuZero (``gumbel_muzero_policy``) agents."""

from agents.muzero.agent import MuZeroState, build_model, make
from agents.muzero.config import PRESETS, RUN_DEFAULTS, MuZeroConfig

__all__ = ["PRESETS", "RUN_DEFAULTS", "MuZeroConfig", "MuZeroState", "build_model", "make"]
