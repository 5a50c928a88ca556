"""Stochastic MuZero (Antonoglou et al., 2022): afterstates, a learned chance-outcome encoder
with a one-hot codebook, and ``mctx.stochastic_muzero_policy``."""

from agents.stochastic_muzero.agent import MuZeroState, build_model, make
from agents.stochastic_muzero.config import PRESETS, RUN_DEFAULTS, StochasticMuZeroConfig

__all__ = ["PRESETS", "RUN_DEFAULTS", "MuZeroState", "StochasticMuZeroConfig", "build_model",
           "make"]
