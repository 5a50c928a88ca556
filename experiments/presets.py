"""Run defaults per agent and environment family, and which agent preset an environment picks.

A new user's first run needs only ``--agent`` and ``--env``; these defaults make it finish
on a 2-core CPU in minutes. Flags on the command line override them.
"""

from __future__ import annotations

import fnmatch
from typing import Dict, Optional, Tuple

from agents import registry

_RUN_DEFAULTS: Dict[str, Dict] = {
    # key: "agent" or "agent:family" or "agent:env_id" (most specific wins)
    "mpc": dict(steps=2_000, num_envs=4, log_every=200, eval_every=1_000, eval_episodes=4,
                checkpoint_every=1_000),
    "pets": dict(steps=2_000, num_envs=4, log_every=200, eval_every=1_000, eval_episodes=4,
                 checkpoint_every=1_000),
    # SAC: one update per environment step with the presets' updates_per_step=1.
    "sac": dict(steps=10_000, num_envs=1, log_every=1_000, eval_every=2_000, eval_episodes=8,
                checkpoint_every=5_000),
    "random": dict(steps=10_000, num_envs=16, log_every=2_000, eval_every=-1,
                   checkpoint_every=0),
}

_GENERIC = dict(steps=10_000, num_envs=1, log_every=1_000, eval_every=5_000, eval_episodes=4,
                checkpoint_every=5_000)


def run_defaults(agent: str, env_id: str) -> Dict:
    """RunConfig fields for ``agent`` on ``env_id`` (a fresh dict).

    Sources, later ones winning: the generic defaults; the table above; the agent module's own
    ``RUN_DEFAULTS`` dict (keys ``"*"``, a family such as ``"gymnax"``, or a full env id).
    """
    family = env_id.split("/")[0]
    out = dict(_GENERIC)
    for key in (agent, f"{agent}:{family}", f"{agent}:{env_id}"):
        out.update(_RUN_DEFAULTS.get(key, {}))
    own = getattr(registry.agent_module(agent), "RUN_DEFAULTS", {})
    for key in ("*", family, env_id):
        out.update(own.get(key, {}))
    return out


# Environment-id patterns -> the agent preset they get when no preset is named after the task
# (only for agents that have that preset).
_PRESET_PATTERNS = (("gymnax/*-MinAtar", "minatar"),
                    *((f"pgx/{game}", "board_games")
                      for game in ("tic_tac_toe", "connect_four", "othello", "go_9x9")))

# Presets sized for an accelerator: on a CPU they run, but slowly (docs/results has the
# measured rates), so a run that picks one on a CPU says so at start.
ACCELERATOR_PRESETS: Dict[str, Tuple[str, ...]] = {
    "dreamer": ("1m", "12m", "25m", "50m", "100m", "200m", "1m_2023", "12m_2023",
                "25m_2023", "50m_2023", "100m_2023", "200m_2023", "cartpole_swingup",
                "pendulum_swingup"),
    "pets": ("paper", "halfcheetah", "cartpole_swingup"),
    "mbpo": ("paper",),
}


# The preset an image-observation task gets when nothing above names one (for agents that
# have it): MuZero's CPU-sized residual-network recipe (MinAtar's) with the wide supports of
# MuZero's Atari setup, since nothing tells an unknown task's reward scale. ``default`` is
# sized for vector observations (two updates per environment step), which on a residual
# network is far slower
# (pgx/2048 on a 2-core CPU: 455 s for the first 1,000 steps after the prefill against 43 s,
# compilation included in both; see CHANGELOG).
IMAGE_PRESET = "image"


def default_preset(agent: str, env_id: str, obs_kind: Optional[str] = None) -> str:
    """The agent preset named after the task (e.g. ``inverted_pendulum``), else the one of a
    pattern the id matches (``gymnax/*-MinAtar`` -> ``minatar``), else :data:`IMAGE_PRESET`
    for image observations (``obs_kind``, the task's ``EnvSpec.obs_kind``, when given), else
    ``default``."""
    name = env_id.split("/", 1)[-1].lower().replace("-", "_")
    presets = registry.agent_module(agent).PRESETS
    if name in presets:
        return name
    for pattern, preset in _PRESET_PATTERNS:
        if fnmatch.fnmatchcase(env_id, pattern) and preset in presets:
            return preset
    if obs_kind == "image" and IMAGE_PRESET in presets:
        return IMAGE_PRESET
    return "default"


def hardware_note(agent: str, preset: str, platform: str) -> Optional[str]:
    """A one-line warning when an accelerator-sized preset runs on a CPU, else None."""
    if platform != "cpu" or preset not in ACCELERATOR_PRESETS.get(agent, ()):
        return None
    return (f"preset {preset!r} of {agent} is sized for an accelerator and is slow on a CPU "
            f"(see the README's preset table); pass --preset with a CPU-sized one, or --steps "
            f"and --max-seconds to bound the run")
