"""DeepMind Control Suite tasks from MuJoCo Playground (MJX) as ``dmc/<domain>_<task>``.

Names follow dm_control's ``domain_task`` spelling (``cartpole_swingup``, ``walker_walk``,
``ball_in_cup_catch``, ...) and map to Playground's CamelCase ids (:data:`TASKS`).

* **Time limit.** DMC tasks never terminate (Playground's ``done`` only flags NaN physics), so
  episodes end by truncation after ``ceil(episode_length / action_repeat)`` agent steps, from
  the task config (``episode_length=1000`` control steps), unless ``max_episode_steps`` is given.
* **Action repeat.** Playground leaves ``action_repeat`` to brax's training wrapper; here the
  adapter repeats the action itself and sums the rewards (as DreamerV3 and brax do).
  Terminated is true if any repeated step flagged ``done``.
* **Physics.** ``impl`` defaults to ``"jax"`` (MJX's JAX implementation), which works on CPU,
  GPU and TPU under ``vmap``. Playground's own default is ``"warp"`` (MuJoCo Warp, GPU-oriented;
  on CPU it spends about a minute compiling kernels); pass ``impl="warp"`` to opt in.
* **Observations** are flat float32 vectors. Were a task to return a dict of arrays, the adapter
  concatenates the flattened entries in sorted key order. Pixel observations (``vision=True``)
  are not supported.
* **Actions** are float32 vectors in ``[-1, 1]`` (clipped). The step key is unused: Playground
  keeps its own ``info['rng']`` in the state.
* **Inner state** is Playground's ``State``, made selectable with ``jnp.where`` exactly as in
  the brax adapter (:func:`envs.brax_env.normalise_state` / :func:`envs.brax_env.conform_state`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from envs.api import EnvSpec, Environment
from envs.brax_env import built_once, conform_state, copy_dicts, normalise_state

TASKS = {
    "acrobot_swingup": "AcrobotSwingup",
    "acrobot_swingup_sparse": "AcrobotSwingupSparse",
    "ball_in_cup_catch": "BallInCup",
    "cartpole_balance": "CartpoleBalance",
    "cartpole_balance_sparse": "CartpoleBalanceSparse",
    "cartpole_swingup": "CartpoleSwingup",
    "cartpole_swingup_sparse": "CartpoleSwingupSparse",
    "cheetah_run": "CheetahRun",
    "finger_spin": "FingerSpin",
    "finger_turn_easy": "FingerTurnEasy",
    "finger_turn_hard": "FingerTurnHard",
    "fish_swim": "FishSwim",
    "hopper_hop": "HopperHop",
    "hopper_stand": "HopperStand",
    "humanoid_stand": "HumanoidStand",
    "humanoid_walk": "HumanoidWalk",
    "humanoid_run": "HumanoidRun",
    "pendulum_swingup": "PendulumSwingup",
    "point_mass_easy": "PointMass",
    "reacher_easy": "ReacherEasy",
    "reacher_hard": "ReacherHard",
    "swimmer_swimmer6": "SwimmerSwimmer6",
    "walker_run": "WalkerRun",
    "walker_stand": "WalkerStand",
    "walker_walk": "WalkerWalk",
}
NAMES = tuple(TASKS)

# Action repeats up to this are unrolled: in one measurement (shared 2-core CPU) XLA compiled
# cartpole's 2-step repeat in ~15 s unrolled vs ~38 s as a loop, and ran it no slower.
_MAX_UNROLL = 4


def flat_obs(obs: Any) -> jax.Array:
    """A float32 vector: ``obs`` itself, or a dict's flattened entries in sorted key order."""
    if isinstance(obs, Mapping):
        return jnp.concatenate([jnp.ravel(obs[k]).astype(jnp.float32) for k in sorted(obs)])
    return jnp.asarray(obs, jnp.float32)


def _config(name: str, overrides: dict):
    """Playground's default config for the task with ``overrides`` (flat or dotted keys)."""
    from mujoco_playground import dm_control_suite  # lazy: listing ids stays cheap

    config = dm_control_suite.get_default_config(TASKS[name]).lock()  # typos raise KeyError
    known = f"known: max_episode_steps and the config keys {sorted(config.keys())}"
    for key, value in {"impl": "jax", **overrides}.items():  # one at a time, to name the bad one
        default = config
        for part in key.split("."):
            if not hasattr(default, "keys") or part not in default.keys():
                raise ValueError(f"dmc/{name}: no option {key!r}; {known}")
            default = default[part]
        try:
            config.update_from_flattened_dict({key: value})
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            shown = "a group of options" if hasattr(default, "keys") else repr(default)
            raise ValueError(f"dmc/{name}: option {key}={value!r} does not fit its default "
                             f"{shown} ({type(default).__name__}); {known}") from err
    if config.get("vision", False):
        raise NotImplementedError(f"dmc/{name}: pixel observations (vision=True) are not supported")
    return config


def _build(name: str, config):
    """Playground's environment and the shape of its flat observation (a traced reset)."""
    from mujoco_playground import dm_control_suite

    env = dm_control_suite.load(TASKS[name], config=config)
    abstract_obs = jax.eval_shape(lambda k: flat_obs(env.reset(k).obs), jax.random.PRNGKey(0))
    return env, abstract_obs


def make(name: str, *, max_episode_steps: Optional[int] = None, **config_overrides) -> Environment:
    """Builds ``dmc/<name>``.

    Args:
      name: a task from :data:`NAMES`, e.g. ``"cartpole_swingup"``.
      max_episode_steps: time limit in agent steps; default
        ``ceil(episode_length / action_repeat)`` from the task config.
      **config_overrides: Playground config entries, e.g. ``action_repeat=2``,
        ``episode_length=500``, ``impl="warp"``.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown dmc task {name!r}; known: {', '.join(NAMES)}")
    config = _config(name, config_overrides)
    repeat = int(config.action_repeat)
    if repeat < 1:
        raise ValueError(f"dmc/{name}: action_repeat must be >= 1, got {repeat}")
    if max_episode_steps is None:
        max_episode_steps = math.ceil(int(config.episode_length) / repeat)
    env, abstract_obs = built_once(("dmc", name, config_overrides), lambda: _build(name, config))
    action_size = int(env.action_size)

    def reset(key):
        state = normalise_state(env.reset(key))
        return state, flat_obs(state.obs)

    def physics_step(state, action):
        return conform_state(env.step(copy_dicts(state), action), state)

    def step(state, action, key):
        del key  # Playground carries its own info['rng']
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        if repeat == 1:
            next_state = physics_step(state, action)
            reward, terminated = next_state.reward, next_state.done > 0
        else:
            def body(carry, _):
                inner, total, done = carry
                inner = physics_step(inner, action)
                return (inner, total + inner.reward, done | (inner.done > 0)), None

            init = (state, jnp.zeros((), jnp.float32), jnp.zeros((), bool))
            (next_state, reward, terminated), _ = jax.lax.scan(
                body, init, None, length=repeat, unroll=repeat <= _MAX_UNROLL)
        return next_state, flat_obs(next_state.obs), jnp.asarray(reward, jnp.float32), terminated

    spec = EnvSpec(env_id=f"dmc/{name}", obs_shape=tuple(abstract_obs.shape),
                   obs_dtype=np.float32, discrete=False, action_shape=(action_size,),
                   action_low=(-1.0,) * action_size, action_high=(1.0,) * action_size,
                   max_episode_steps=int(max_episode_steps))
    reward_fn = _KNOWN_REWARDS.get(name) if repeat == 1 else None
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step, reward_fn=reward_fn)


def _cartpole_reward(obs, action, next_obs):
    """Playground's dense cartpole reward from (action, next observation).

    ``next_obs = [cart x, cos θ, sin θ, cart v, θ']``; the reward is upright x centered x
    small_control x small_velocity with dm_control's ``tolerance`` shapes (Playground's
    ``_dense_reward``), evaluated on the state after the step.
    """
    from mujoco_playground._src import reward as rw

    del obs
    upright = (next_obs[1] + 1.0) / 2.0
    centered = (1.0 + rw.tolerance(next_obs[0], margin=2)) / 2.0
    small_control = (4.0 + rw.tolerance(action[0], margin=1, value_at_margin=0,
                                        sigmoid="quadratic")) / 5.0
    small_velocity = (1.0 + rw.tolerance(next_obs[4], margin=5)) / 2.0
    return (upright * centered * small_control * small_velocity).astype(jnp.float32)


# Known rewards (exact only without action repeat) for planners that use the true reward.
_KNOWN_REWARDS = {"cartpole_swingup": _cartpole_reward, "cartpole_balance": _cartpole_reward}
