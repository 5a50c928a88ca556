"""MBPO: SAC on a mix of real data and short branched rollouts of a probabilistic ensemble."""

from agents.mbpo.agent import MBPOState, make, mixed_batch, run_if, sample_real
from agents.mbpo.config import PRESETS, TERMINATIONS, MBPOConfig, rollout_length
from agents.mbpo.rollout import branched_rollouts

# Run defaults read by experiments.presets.run_defaults ("*", env family, env id).
RUN_DEFAULTS = {
    "*": dict(steps=10_000, num_envs=1, log_every=500, eval_every=1_000, eval_episodes=4,
              checkpoint_every=5_000),
    "brax/inverted_pendulum": dict(steps=5_000, log_every=250, eval_every=500),
    "gymnax": dict(steps=4_000, log_every=200, eval_every=1_000, eval_episodes=8),
    "linear": dict(steps=1_000, log_every=100, eval_every=500),
}

__all__ = ["MBPOConfig", "MBPOState", "PRESETS", "RUN_DEFAULTS",
           "TERMINATIONS", "branched_rollouts", "make", "mixed_batch", "rollout_length", "run_if",
           "sample_real"]
