"""Crafter in JAX (craftax) as ``craftax/<name>``, symbolic observations.

``Craftax-Classic-Symbolic-v1`` is Crafter's world (64 x 64 map, 17 actions, 22 achievements)
with a 1,345-dimensional symbolic observation (the local map, inventory and status as 0/1 or
scaled entries in ``[0, 1]``); ``Craftax-Symbolic-v1`` is the larger Craftax game (several
floors, 43 actions, 67 achievements, an 8,268-dimensional observation).

Like the gymnax adapter, this one calls craftax's ``reset_env`` / ``step_env`` (no automatic
reset) with ``EnvParams.max_timesteps`` set so large that craftax never times out, and moves
craftax's limit (10,000 steps for Classic, 100,000 for Craftax) into
``EnvSpec.max_episode_steps``, where :class:`envs.api.Environment` truncates. ``step_env``'s
``done`` is then termination only: the player died (or, in Classic, walked into lava; in
Craftax, beat the final boss). The reward is craftax's: for each achievement unlocked for the
first time in the episode +1 in Classic (in Craftax 1 to 8 by difficulty), and +-0.1 per point
of health gained or lost.

Each episode reports the achievements it unlocked in ``TimeStep.episode_metrics`` as
``achievement_<name>`` (1.0 or 0.0, e.g. ``achievement_collect_wood``); their means over
episodes are the success rates from which the Crafter score (their geometric mean with a 1%
offset) is computed.

World generation costs more than a step, and automatic reset would generate a fresh world for
every environment at every step (to select it where an episode ends). The adapter therefore
uses optimistic resets (``Environment.reset_ratio``, :mod:`envs.api`'s module doc), as
craftax's own baselines do: by default a batch of ``N`` environments generates
``ceil(N / 16)`` worlds per step and the environments whose episode ended take them in turn
(two share a world only when more than ``ceil(N / 16)`` episodes end in the same step).
``reset_ratio=1`` restores one world per environment and step. Compilation is slow on the CPU
(minutes for the Classic step and world generation); ``Craftax-Symbolic-v1``'s programs are
larger still. Throughput: ``docs/results/craftax.md``.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax.numpy as jnp
import numpy as np

from envs.api import NEVER_REACHED, EnvSpec, Environment, as_arrays, cast_like

NAMES = ("Craftax-Classic-Symbolic-v1", "Craftax-Symbolic-v1")
RESET_RATIO = 16  # craftax's baselines: min(16, num_envs) environments per fresh world


def _achievement_names(name: str):
    if name.startswith("Craftax-Classic"):
        from craftax.craftax_classic.constants import Achievement
    else:
        from craftax.craftax.constants import Achievement
    return tuple(a.name.lower() for a in sorted(Achievement, key=lambda a: a.value))


def observation_groups(name: str) -> Optional[Dict[str, np.ndarray]]:
    """Which elements of ``Craftax-Classic-Symbolic-v1``'s observation show what (the layout
    of craftax's classic ``render_craftax_symbolic``), as index arrays into the flat
    observation: ``map`` (the 7 x 9 cells around the player, one-hot over 17 block types),
    ``mobs`` (the same cells, one 0/1 entry per zombie, cow, skeleton and arrow),
    ``inventory`` (12 counts / 10: wood, stone, coal, iron, diamond, sapling, then the wood,
    stone and iron pickaxes and swords), ``status`` (health, food, drink, energy / 10),
    ``direction`` (one-hot of 4) and ``light, sleep`` (the light level, asleep). ``None`` for
    the other names (``Craftax-Symbolic-v1``)."""
    if name != "Craftax-Classic-Symbolic-v1":
        return None
    from craftax.craftax_classic.constants import OBS_DIM, BlockType

    cells, blocks, mobs = OBS_DIM[0] * OBS_DIM[1], len(BlockType), 4
    channel = np.tile(np.arange(blocks + mobs), cells)  # the map is [cells, blocks + mobs]
    start = cells * (blocks + mobs)
    groups = {"map": np.flatnonzero(channel < blocks), "mobs": np.flatnonzero(channel >= blocks)}
    for group, size in (("inventory", 12), ("status", 4), ("direction", 4), ("light, sleep", 2)):
        groups[group] = np.arange(start, start + size)
        start += size
    return groups


def make(name: str, *, max_episode_steps: Optional[int] = None,
         reset_ratio: int = RESET_RATIO) -> Environment:
    """Builds ``craftax/<name>``.

    Args:
      name: a craftax id from :data:`NAMES`, e.g. ``"Craftax-Classic-Symbolic-v1"``.
      max_episode_steps: time limit; defaults to craftax's ``max_timesteps`` (10,000 for
        Classic, 100,000 for Craftax).
      reset_ratio: environments per freshly generated world in a batched step (optimistic
        resets, module doc); 1 generates one per environment.
    """
    if name not in NAMES:
        raise ValueError(f"Unknown craftax environment {name!r}; known: {', '.join(NAMES)}")
    from craftax.craftax_env import make_craftax_env_from_name  # lazy: listing ids stays cheap

    env = make_craftax_env_from_name(name, auto_reset=False)
    params = env.default_params
    limit = int(params.max_timesteps if max_episode_steps is None else max_episode_steps)
    if limit < 1:
        raise ValueError(f"craftax/{name}: max_episode_steps must be >= 1, got {limit}")
    params = params.replace(max_timesteps=NEVER_REACHED)
    obs_shape = tuple(env.observation_space(params).shape)
    names = _achievement_names(name)

    def reset(key):
        obs, state = env.reset_env(key, params)
        return as_arrays(state), jnp.asarray(obs, jnp.float32)

    def step(state, action, key):
        obs, next_state, reward, done, _ = env.step_env(key, state, jnp.asarray(action, jnp.int32),
                                                        params)
        next_state = cast_like(as_arrays(next_state), state)
        return (next_state, jnp.asarray(obs, jnp.float32), jnp.asarray(reward, jnp.float32),
                jnp.asarray(done, bool))

    def episode_metrics(state):
        unlocked = jnp.asarray(state.achievements, jnp.float32)
        return {f"achievement_{n}": unlocked[i] for i, n in enumerate(names)}

    spec = EnvSpec(env_id=f"craftax/{name}", obs_shape=obs_shape, obs_dtype=np.float32,
                   obs_kind="vector", obs_range=(0.0, 1.0), discrete=True,
                   num_actions=int(env.num_actions), action_shape=(), max_episode_steps=limit)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step,
                       episode_metrics_fn=episode_metrics, reset_ratio=reset_ratio)
