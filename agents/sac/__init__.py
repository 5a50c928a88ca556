"""Soft actor-critic: twin critics, tanh-squashed Gaussian actor, learned temperature.

``SACLearner.update`` (also returned by :func:`make_sac_update`) is the pure
``sac_update(state, batch, key) -> (state, metrics)`` that MBPO reuses on model batches.
"""

from agents.sac.agent import (PRESETS, SACConfig, SACLearner, SACState, make, make_learner,
                              make_sac_update)
from agents.sac.losses import Batch

__all__ = ["PRESETS", "Batch", "SACConfig", "SACLearner", "SACState", "make", "make_learner",
           "make_sac_update"]
