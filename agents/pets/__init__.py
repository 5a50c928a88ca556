"""PETS: model-predictive control with a probabilistic ensemble and trajectory sampling."""

from agents.pets.agent import PETSState, make, member_assignment, particle_returns
from agents.pets.config import PRESETS, PROPAGATIONS, PETSConfig

__all__ = ["PRESETS", "PROPAGATIONS", "PETSConfig", "PETSState", "make", "member_assignment",
           "particle_returns"]
