"""Brax environments (``brax.envs``) as ``brax/<name>``.

The adapter uses ``brax.envs.get_environment`` without brax's ``EpisodeWrapper`` /
``AutoResetWrapper``: :class:`envs.api.Environment` applies the time limit (default 1000 steps)
and resets, so ``brax.envs.State.done`` is termination only (a hopper or walker falling, the
inverted pendulum tipping over). Actions are float32 vectors of shape ``(env.action_size,)``,
clipped to ``[-1, 1]`` (brax envs scale that range to the actuators' control range). The step
key is unused: brax dynamics are deterministic given the reset.

The inner state is brax's ``State`` pytree. ``Environment.step`` selects between a reset and a
stepped state leaf by leaf with ``jnp.where``, and scans carry the state, so both must have the
same tree structure and dtypes. Brax does not guarantee that: some envs return Python floats
(``reward = 1.0`` in inverted_pendulum, ``metrics['reward_healthy']`` in hopper and walker2d,
``metrics['reward_survive']`` in ant) and ``metrics`` / ``info`` are free-form dicts. Hence
:func:`normalise_state` (every leaf a strong-typed array) after reset and
:func:`conform_state` after each step (``metrics`` / ``info`` keep exactly the keys the incoming
state had, a key the step dropped keeps its old value, and each leaf is cast to the incoming
dtype). Playground's DMC adapter (envs/dmc.py) reuses both.

brax 0.14.2 warns at every environment load that brax is not actively maintained (and points
to MJX, on which MuJoCo Playground's ``dmc/`` tasks here run); the adapter silences that one
notice (:data:`_UNMAINTAINED`) so that it does not precede every run's output and every
one-line error of the command line.

Left out of ``NAMES``: ``swimmer`` (brax 0.14.2's ``brax/fluid.py`` calls
``jnp.clip(..., a_min=...)``, which jax 0.11 removed, so its step fails) and ``fast`` (a test
double).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from envs.api import EnvSpec, Environment

NAMES = ("ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_pendulum",
         "inverted_double_pendulum", "pusher", "reacher", "walker2d")

_DICT_FIELDS = ("metrics", "info")
# The start of brax's maintenance notice (``brax/io/mjcf.py``), a regular expression.
_UNMAINTAINED = re.escape("Brax System, piplines and environments are not actively being "
                          "maintained")


def normalise_state(state: Any) -> Any:
    """``state`` with every leaf a strong-typed array (Python floats become float32 arrays)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), state)


def conform_state(new: Any, old: Any) -> Any:
    """``new`` (a stepped brax/Playground State) given exactly the structure and dtypes of ``old``.

    The ``metrics`` and ``info`` dicts keep the keys of ``old`` (new keys are dropped, missing
    ones keep the old value); then each leaf is cast to the dtype of ``old``'s leaf. Raises
    ValueError if the structures still differ (e.g. a changed ``pipeline_state`` layout).
    """
    replaced = {}
    for field in _DICT_FIELDS:
        old_dict, new_dict = getattr(old, field), getattr(new, field)
        replaced[field] = {k: new_dict.get(k, v) for k, v in old_dict.items()}
    new = normalise_state(new.replace(**replaced))
    if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(old):
        raise ValueError("the stepped state's tree structure differs from the reset state's:\n"
                         f"{jax.tree_util.tree_structure(new)}\nvs\n"
                         f"{jax.tree_util.tree_structure(old)}")
    return jax.tree_util.tree_map(lambda x, ref: jnp.asarray(x, ref.dtype), new, old)


def copy_dicts(state: Any) -> Any:
    """``state`` with shallow copies of ``metrics`` / ``info``: some envs write into them."""
    return state.replace(**{field: dict(getattr(state, field)) for field in _DICT_FIELDS})


def load(name: str, **env_kwargs):
    """``brax.envs.get_environment(name, **env_kwargs)`` without brax's maintenance notice
    (:data:`_UNMAINTAINED`; the module doc says why); every brax load here goes through it."""
    import brax.envs  # lazy: listing ids must not pay for importing brax

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_UNMAINTAINED, category=UserWarning)
        return brax.envs.get_environment(name, **env_kwargs)


_BUILT: Dict[Any, Any] = {}


def built_once(key: Tuple[str, str, Mapping[str, Any]], build: Callable[[], Any]) -> Any:
    """``build()``, computed once per ``(family, name, options)`` in a process.

    For the pure and slow part of building a physics environment (loading the model and
    tracing a reset for the observation's shape, about a second each on a CPU), so that every
    ``make`` with the same options shares it. Options that cannot be hashed build anew; option
    values are keyed with their type (``1`` and ``1.0`` build apart). What is built stays for
    the life of the process.
    """
    family, name, options = key
    try:
        hashable = (family, name, tuple(sorted((k, type(v), v) for k, v in options.items())))
        hash(hashable)
    except TypeError:
        return build()
    if hashable not in _BUILT:
        _BUILT[hashable] = build()
    return _BUILT[hashable]


def _build(name: str, env_kwargs: Dict[str, Any]):
    env = load(name, **env_kwargs)
    return env, jax.eval_shape(env.reset, jax.random.PRNGKey(0))


def make(name: str, *, max_episode_steps: int = 1000, backend: Optional[str] = None,
         **env_kwargs) -> Environment:
    """Builds ``brax/<name>``.

    Args:
      name: a brax env name from :data:`NAMES`, e.g. ``"inverted_pendulum"``.
      max_episode_steps: time limit in agent steps.
      backend: brax physics pipeline (``"generalized"``, ``"positional"``, ``"spring"``,
        ``"mjx"``); None keeps the env's own default (``"generalized"`` for these envs).
      **env_kwargs: passed to the brax env constructor (e.g. ``ctrl_cost_weight``).
    """
    if name not in NAMES:
        raise ValueError(f"Unknown brax environment {name!r}; known: {', '.join(NAMES)}")
    if backend is not None:
        env_kwargs["backend"] = backend
    # Tracing (not running) reset gives the observation's shape without a compile.
    env, abstract = built_once(("brax", name, env_kwargs), lambda: _build(name, env_kwargs))
    if not hasattr(abstract.obs, "shape"):
        raise NotImplementedError(f"brax/{name}: dict observations are not supported")
    action_size = int(env.action_size)

    def reset(key):
        state = normalise_state(env.reset(key))
        return state, jnp.asarray(state.obs, jnp.float32)

    def step(state, action, key):
        del key  # brax dynamics are deterministic
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        next_state = conform_state(env.step(copy_dicts(state), action), state)
        return (next_state, jnp.asarray(next_state.obs, jnp.float32),
                jnp.asarray(next_state.reward, jnp.float32), next_state.done > 0)

    spec = EnvSpec(env_id=f"brax/{name}", obs_shape=tuple(abstract.obs.shape),
                   obs_dtype=np.float32, discrete=False, action_shape=(action_size,),
                   action_low=(-1.0,) * action_size, action_high=(1.0,) * action_size,
                   max_episode_steps=int(max_episode_steps))
    known = _KNOWN_FUNCTIONS.get(name, {})
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step,
                       reward_fn=known.get("reward"), termination_fn=known.get("termination"))


# Reward and termination read off brax's source, for model-based planners and rollouts.
# inverted_pendulum: obs = [cart x, pole angle, cart v, pole angular v]; reward 1 every step
# (the terminal one included); terminated when |pole angle| > 0.2 rad.
#
# inverted_double_pendulum: obs = [cart x, sin q1, sin q2, cos q1, cos q2, cart v, q1', q2']
# (q2 relative to the first pole, velocities clipped to [-10, 10]). The tip, 0.6 along each
# pole, is at x = cart x + 0.6 sin q1 + 0.6 sin(q1 + q2), height y = 0.6 cos q1 + 0.6 cos(q1 + q2);
# terminated when y <= 1; reward (1 - terminated) 10 - 0.01 x^2 - (y - 2)^2 - 1e-3 q1'^2
# - 5e-3 q2'^2, exact unless a velocity is clipped.


def _double_pendulum_tip(obs):
    sin1, sin2, cos1, cos2 = obs[1], obs[2], obs[3], obs[4]
    x = obs[0] + 0.6 * sin1 + 0.6 * (sin1 * cos2 + cos1 * sin2)
    y = 0.6 * cos1 + 0.6 * (cos1 * cos2 - sin1 * sin2)
    return x, y


def _double_pendulum_done(obs, action, next_obs):
    del obs, action
    return _double_pendulum_tip(next_obs)[1] <= 1.0


def _double_pendulum_reward(obs, action, next_obs):
    x, y = _double_pendulum_tip(next_obs)
    alive = jnp.where(_double_pendulum_done(obs, action, next_obs), 0.0, 10.0)
    penalty = 0.01 * x ** 2 + (y - 2.0) ** 2 + 1e-3 * next_obs[6] ** 2 + 5e-3 * next_obs[7] ** 2
    return (alive - penalty).astype(jnp.float32)


_KNOWN_FUNCTIONS = {
    "inverted_pendulum": {
        "reward": lambda obs, action, next_obs: jnp.ones((), jnp.float32),
        "termination": lambda obs, action, next_obs: jnp.abs(next_obs[1]) > 0.2,
    },
    "inverted_double_pendulum": {
        "reward": _double_pendulum_reward,
        "termination": _double_pendulum_done,
    },
}
