"""Agent names used on the command line -> config class, presets and constructor."""

from __future__ import annotations

import importlib
from typing import Dict, Tuple

# name -> module with PRESETS (dict of frozen config dataclasses) and make(cfg, env, num_envs);
# optionally RUN_DEFAULTS (see experiments.presets.run_defaults).
AGENTS: Dict[str, str] = {
    "dreamer": "agents.dreamer",
    "gumbel_muzero": "agents.gumbel_muzero",
    "mbpo": "agents.mbpo",
    "mpc": "agents.mpc",
    "muzero": "agents.muzero",
    "pets": "agents.pets",
    "random": "agents.random",
    "sac": "agents.sac",
    "sampled_muzero": "agents.sampled_muzero",
    "stochastic_muzero": "agents.stochastic_muzero",
}


def agent_module(name: str):
    if name not in AGENTS:
        raise ValueError(f"Unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}.")
    return importlib.import_module(AGENTS[name])


def preset(name: str, preset_name: str = "default"):
    """The config of agent ``name`` under ``preset_name``."""
    presets = agent_module(name).PRESETS
    if preset_name not in presets:
        raise ValueError(f"Unknown preset {preset_name!r} for agent {name!r}; known presets: "
                         f"{', '.join(sorted(presets))}.")
    return presets[preset_name]


def names() -> Tuple[str, ...]:
    return tuple(sorted(AGENTS))
