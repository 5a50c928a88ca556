"""Model-predictive control with a closed-form linear model and a CEM planner."""

from agents.mpc.agent import PRESETS, MPCConfig, MPCState, make

__all__ = ["PRESETS", "MPCConfig", "MPCState", "make"]
