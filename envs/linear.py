"""Linear-Gaussian systems ``s' = A s + B a + w``, ``w ~ N(0, noise_std^2 I)``, quadratic cost.

The reward is ``-(s^T Q s + a^T R a)`` (the negated quadratic cost), evaluated on the state the
action is taken in. The observation is the full state. There is no termination; the time limit
truncates. The scalar presets are the lesson's systems (A=0.5/B=1.0, A=1.05, A=1.1).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from envs.api import EnvSpec, Environment


@dataclasses.dataclass(frozen=True)
class LinearSystem:
    """Parameters of a linear-Gaussian system (numpy arrays are turned into constants)."""

    A: np.ndarray  # [n, n]
    B: np.ndarray  # [n, m]
    noise_std: float = 0.1
    Q: Optional[np.ndarray] = None  # [n, n], default identity
    R: Optional[np.ndarray] = None  # [m, m], default 0.01 * identity
    init_std: float = 1.0
    action_bound: float = 2.0
    max_episode_steps: int = 50

    @property
    def state_dim(self) -> int:
        return self.A.shape[0]

    @property
    def action_dim(self) -> int:
        return self.B.shape[1]


def _random_system(state_dim: int, action_dim: int, seed: int, radius: float) -> LinearSystem:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(state_dim, state_dim))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.normal(size=(state_dim, action_dim))
    return LinearSystem(A=A, B=B)


def _presets():
    dt = 0.1
    return {
        "scalar_a0.5": LinearSystem(A=np.array([[0.5]]), B=np.array([[1.0]])),
        "scalar_a1.05": LinearSystem(A=np.array([[1.05]]), B=np.array([[1.0]])),
        "scalar_a1.1": LinearSystem(A=np.array([[1.1]]), B=np.array([[1.0]])),
        "double_integrator": LinearSystem(A=np.array([[1.0, dt], [0.0, 1.0]]),
                                          B=np.array([[0.0], [dt]]), noise_std=0.01,
                                          max_episode_steps=100),
        "random_4x2": _random_system(4, 2, seed=0, radius=1.05),
    }


NAMES = tuple(_presets())


def system(name: str, **overrides) -> LinearSystem:
    """The preset ``name`` with fields replaced by ``overrides`` (e.g. ``A=[[1.1]]``)."""
    base = _presets()[name]
    fields = {f.name for f in dataclasses.fields(LinearSystem)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"linear/{name}: unknown option(s) {sorted(unknown)}; "
                         f"known: {sorted(fields)}")
    matrices = ("A", "B", "Q", "R")
    overrides = {k: (np.asarray(v, np.float64) if k in matrices and v is not None else v)
                 for k, v in overrides.items()}
    sys = dataclasses.replace(base, **overrides)
    n, m = sys.state_dim, sys.action_dim
    if sys.A.shape != (n, n) or sys.B.shape != (n, m):
        raise ValueError(f"linear/{name}: A must be [n, n] and B [n, m]; "
                         f"got {sys.A.shape}, {sys.B.shape}")
    return sys


def make_from_system(sys: LinearSystem, env_id: str = "linear/custom") -> Environment:
    """Wraps a :class:`LinearSystem` as an :class:`Environment`."""
    n, m = sys.state_dim, sys.action_dim
    A = jnp.asarray(sys.A, jnp.float32)
    B = jnp.asarray(sys.B, jnp.float32)
    Q = jnp.asarray(sys.Q if sys.Q is not None else np.eye(n), jnp.float32)
    R = jnp.asarray(sys.R if sys.R is not None else 0.01 * np.eye(m), jnp.float32)

    def reward_fn(obs, action, next_obs):
        del next_obs
        return -(obs @ Q @ obs + action @ R @ action)

    def reset(key):
        state = sys.init_std * jax.random.normal(key, (n,), jnp.float32)
        return state, state

    def step(state, action, key):
        action = jnp.clip(action, -sys.action_bound, sys.action_bound)
        noise = sys.noise_std * jax.random.normal(key, (n,), jnp.float32)
        next_state = A @ state + B @ action + noise
        return next_state, next_state, reward_fn(state, action, next_state), jnp.array(False)

    spec = EnvSpec(env_id=env_id, obs_shape=(n,), obs_dtype=np.float32, discrete=False,
                   action_shape=(m,), action_low=(-sys.action_bound,) * m,
                   action_high=(sys.action_bound,) * m, max_episode_steps=sys.max_episode_steps)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step, reward_fn=reward_fn)


def make(name: str, **overrides) -> Environment:
    return make_from_system(system(name, **overrides), env_id=f"linear/{name}")


def rollout_states(sys: LinearSystem, s0: Sequence[float], actions: np.ndarray) -> np.ndarray:
    """Noise-free states ``[T + 1, n]`` from ``s0`` under ``actions [T, m]`` (numpy, for tests)."""
    states = [np.asarray(s0, np.float64)]
    for a in np.asarray(actions, np.float64):
        states.append(sys.A @ states[-1] + sys.B @ a)
    return np.stack(states)
