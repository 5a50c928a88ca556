"""Sampled MuZero (Hubert et al., 2021): MuZero's search over K actions sampled from a
Gaussian policy, for continuous actions (``search="muzero"`` or ``"gumbel"``)."""

from agents.sampled_muzero.agent import MuZeroState, build_model, make
from agents.sampled_muzero.config import PRESETS, RUN_DEFAULTS, SampledMuZeroConfig

__all__ = ["PRESETS", "RUN_DEFAULTS", "MuZeroState", "SampledMuZeroConfig", "build_model",
           "make"]
