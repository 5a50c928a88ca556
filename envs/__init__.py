"""Environments: one functional API, adapters per family, and a registry of string ids."""

from envs.api import EnvSpec, EnvState, Environment, TimeStep, batch_reset, batch_step
from envs.registry import make, register, registered_ids

__all__ = ["EnvSpec", "EnvState", "Environment", "TimeStep", "batch_reset", "batch_step",
           "make", "register", "registered_ids"]
