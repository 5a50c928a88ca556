"""PETS: model-predictive control with a probabilistic ensemble and trajectory sampling."""

from agents.pets.agent import (PRESETS, PROPAGATIONS, PETSConfig, PETSState, make,
                               member_assignment, particle_returns)

__all__ = ["PRESETS", "PROPAGATIONS", "PETSConfig", "PETSState", "make", "member_assignment",
           "particle_returns"]
