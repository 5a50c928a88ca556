"""DreamerV3 (Hafner et al. 2023; 2024 revision): RSSM world model + actor-critic in imagination.

``--agent dreamer``; CPU-sized presets ``default`` (every task no preset names) and
``cartpole_v1`` (auto-picked for gymnax/CartPole-v1), ``tiny`` (tests); for accelerators
``cartpole_swingup`` / ``pendulum_swingup`` (DMC proprio: ``1m``, train ratio 1024), the sizes
``1m 12m 25m 50m 100m 200m`` (2024 variant) and ``<size>_2023``.
"""

from agents.dreamer.agent import ActCarry, Dreamer, DreamerState, make, schedule_for
from agents.dreamer.config import PRESETS, SIZES, DreamerConfig, cpu_sized, sized

RUN_DEFAULTS = {
    "*": dict(steps=50_000, num_envs=4, log_every=5_000, eval_every=10_000, eval_episodes=8,
              checkpoint_every=0),
    "gymnax/CartPole-v1": dict(steps=50_000, num_envs=4, log_every=2_500, eval_every=2_500,
                               eval_episodes=8, checkpoint_every=0),
}

__all__ = ["PRESETS", "RUN_DEFAULTS", "SIZES", "ActCarry", "Dreamer", "DreamerConfig",
           "DreamerState", "cpu_sized", "make", "schedule_for", "sized"]
