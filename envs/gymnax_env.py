"""gymnax environments (classic control, MinAtar, bsuite Catch) as ``gymnax/<name>``.

gymnax's own ``Environment.step`` auto-resets and folds its time limit into ``done``, so a
time-out would look like a termination. This adapter calls ``reset_env`` / ``step_env``
(no auto-reset) with ``params.max_steps_in_episode`` set so large that gymnax never times
out, and moves gymnax's default limit (500 for CartPole-v1, 200 for Pendulum-v1, 1000 for
the MinAtar games, 2500 for Freeway) into ``EnvSpec.max_episode_steps``, where
:class:`envs.api.Environment` truncates. ``step_env``'s ``done`` is then termination only:
in gymnax 1.0.1 ``is_terminal`` no longer includes the time check (tests/envs/test_gymnax.py
checks this on Pendulum, which never terminates).

Conventions:

* Observations are float32. The MinAtar games observe a ``10 x 10 x C`` grid of 0/1
  channels, already float32 in gymnax 1.0.1 (cast anyway, so ``obs_shape`` is ``(10, 10, C)``
  with dtype float32 on every version).
* Discrete actions are int32 scalars (``action_shape=()``); Pendulum-v1 and
  MountainCarContinuous-v0 take float32 actions of shape ``(1,)`` with the space's bounds
  (gymnax clips to them).
* gymnax states hold Python ints/bools (``time=0`` at reset); :func:`envs.api.as_arrays` turns
  them into strong-typed arrays and each step casts back to the incoming dtypes, so the state
  tree is the same (structure and dtypes) after reset and after a step, as ``jnp.where``
  selection and ``lax.scan`` carries need.
* ``action_repeat=k`` (1 by default) applies each action k times and sums the rewards, as
  ``dmc/`` does; the first repeated step that terminates ends the agent step, and the default
  time limit becomes gymnax's divided by k, rounded up (in agent steps).
* Freeway ends after 2500 steps in MinAtar; here that limit is a truncation, like every
  gymnax time limit.

Left out of ``NAMES``: the bandits and chains (not control tasks), DeepSea-bsuite (its horizon
is ``max_steps_in_episode``, so it would never end), MNISTBandit-bsuite (downloads MNIST) and
the ``-misc`` environments.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from envs.api import NEVER_REACHED, EnvSpec, Environment, Symmetry, as_arrays, cast_like

CLASSIC_CONTROL = ("CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0",
                   "MountainCarContinuous-v0")
MINATAR = ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
           "SpaceInvaders-MinAtar")
BSUITE = ("Catch-bsuite",)
NAMES = CLASSIC_CONTROL + MINATAR + BSUITE

# Exact mirror symmetries (envs.api.Symmetry), for agents' data augmentation. CartPole-v1
# under x -> -x: (x, x_dot, theta, theta_dot) all negate and push-left / push-right swap;
# reward (1 per step) and termination (|x| > 2.4 or |theta| > 12 degrees) are unchanged.
# Acrobot-v1 under every angle and velocity negated: the observation (cos, sin of both angles,
# both velocities) keeps its cosines and negates the rest, torques -1 and +1 swap (0 stays);
# the equations of motion are odd in (angles, velocities, torque), the start state is uniform
# on a symmetric box and the goal test (-cos a1 - cos(a1 + a2) > 1) is even.
_ACROBOT_SIGNS = (1.0, -1.0, 1.0, -1.0, -1.0, -1.0)
SYMMETRIES = {
    "CartPole-v1": Symmetry(obs=lambda o: -o, action_permutation=(1, 0)),
    "Acrobot-v1": Symmetry(obs=lambda o: o * jnp.asarray(_ACROBOT_SIGNS, o.dtype),
                           action_permutation=(2, 1, 0)),
}



# Repeated steps up to this many are unrolled at trace time (a longer repeat loops).
_MAX_UNROLL = 4


def _replace_params(name: str, params: Any, overrides: dict) -> Any:
    """``params`` with fields replaced; a ValueError lists the known fields on a typo."""
    fields = {f.name for f in dataclasses.fields(params)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"gymnax/{name}: unknown option(s) {sorted(unknown)}; known: "
                         f"max_episode_steps and the EnvParams fields {sorted(fields)}")
    return params.replace(**overrides)


def make(name: str, *, max_episode_steps: Optional[int] = None, action_repeat: int = 1,
         **env_params) -> Environment:
    """Builds ``gymnax/<name>``.

    Args:
      name: a gymnax id from :data:`NAMES`, e.g. ``"CartPole-v1"``.
      max_episode_steps: time limit in agent steps; defaults to gymnax's
        ``max_steps_in_episode`` divided by ``action_repeat``, rounded up.
      action_repeat: each action is applied this many times and the rewards summed, as
        ``dmc/`` tasks do; the episode stops at the first repeated step that terminates.
      **env_params: overrides of gymnax's ``EnvParams`` fields (e.g. ``gravity=9.0``).
    """
    if name not in NAMES:
        raise ValueError(f"Unknown gymnax environment {name!r}; known: {', '.join(NAMES)}")
    if "max_steps_in_episode" in env_params:
        raise ValueError(f"gymnax/{name}: pass max_episode_steps, not max_steps_in_episode "
                         "(the time limit is applied by envs.api.Environment)")
    import gymnax  # lazy: listing ids stays cheap
    from gymnax.environments import spaces

    if (isinstance(action_repeat, bool) or not isinstance(action_repeat, (int, np.integer))
            or action_repeat < 1):
        raise ValueError(f"gymnax/{name}: action_repeat must be an integer >= 1, got "
                         f"{action_repeat!r}")
    repeat = int(action_repeat)
    env, params = gymnax.make(name)
    limit = int(math.ceil(params.max_steps_in_episode / repeat) if max_episode_steps is None
                else max_episode_steps)
    params = _replace_params(name, params, {**env_params, "max_steps_in_episode": NEVER_REACHED})

    action_space = env.action_space(params)
    discrete = isinstance(action_space, spaces.Discrete)
    obs_shape = tuple(env.observation_space(params).shape)
    if discrete:
        action_kw = dict(discrete=True, num_actions=int(action_space.n), action_shape=())
    else:
        shape = tuple(action_space.shape)
        low = np.broadcast_to(np.asarray(action_space.low, np.float32), shape).ravel()
        high = np.broadcast_to(np.asarray(action_space.high, np.float32), shape).ravel()
        action_kw = dict(discrete=False, action_shape=shape,
                         action_low=tuple(float(v) for v in low),
                         action_high=tuple(float(v) for v in high))
    action_dtype = jnp.int32 if discrete else jnp.float32

    def reset(key):
        obs, state = env.reset_env(key, params)
        return as_arrays(state), jnp.asarray(obs, jnp.float32)

    def one_step(state, action, key):
        obs, next_state, reward, done, _ = env.step_env(key, state, action, params)
        next_state = cast_like(as_arrays(next_state), state)
        return (next_state, jnp.asarray(obs, jnp.float32), jnp.asarray(reward, jnp.float32),
                jnp.asarray(done, bool))

    def step(state, action, key):
        action = jnp.asarray(action, action_dtype)
        if repeat == 1:
            return one_step(state, action, key)
        keys = jax.random.split(key, repeat)

        def repeated(carry, k):  # a terminated episode's state is held, its rewards not added
            state, obs, total, done = carry
            nxt, nxt_obs, reward, nxt_done = one_step(state, action, k)
            state = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), state, nxt)
            return (state, jnp.where(done, obs, nxt_obs), total + jnp.where(done, 0.0, reward),
                    done | nxt_done), None

        first = one_step(state, action, keys[0])
        return jax.lax.scan(repeated, first, keys[1:], unroll=min(repeat - 1, _MAX_UNROLL))[0]

    # MinAtar's observations are [10, 10, C] planes of 0/1 floats; the others are vectors.
    image = len(obs_shape) == 3
    spec = EnvSpec(env_id=f"gymnax/{name}", obs_shape=obs_shape, obs_dtype=np.float32,
                   max_episode_steps=limit, obs_kind="image" if image else "vector",
                   obs_range=(0.0, 1.0) if image else None, **action_kw)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step,
                       symmetry=SYMMETRIES.get(name))
