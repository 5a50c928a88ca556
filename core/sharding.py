"""Data parallelism with ``jax.sharding``: the environment axis is sharded, the rest replicated.

The run state of ``num_seeds`` seeds has leaves ``[num_seeds, ...]``. Leaves of the per-env
parts (environment states, ``is_first``, the acting carry, replay experience) have the
environment axis at position 1; they are split over a 1-D mesh axis ``"data"``. Parameters,
optimiser states and counters are replicated. XLA's partitioner inserts the collectives, so
the same program runs on 1 CPU, several GPUs, or several hosts after
``jax.distributed.initialize()``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence] = None) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (all devices when None)."""
    devices = list(devices if devices is not None else jax.devices())
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices but only {len(devices)} are "
                             f"visible ({devices[0].platform}); on CPU set XLA_FLAGS="
                             f"--xla_force_host_platform_device_count={num_devices}")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (DATA_AXIS,))


def default_num_devices(num_envs: int, available: Optional[int] = None) -> int:
    """The most devices (of the ``available`` ones, all visible by default) that split
    ``num_envs`` environments evenly."""
    available = jax.device_count() if available is None else available
    return max(d for d in range(1, min(available, num_envs) + 1) if num_envs % d == 0)


def run_state_shardings(shapes, mesh: Mesh, num_envs: int):
    """Shardings for a (seed-batched) run-state shape tree, see module doc."""
    n = mesh.devices.size
    if num_envs % n:
        raise ValueError(f"num_envs={num_envs} does not split over {n} devices; pass --num-envs "
                         f"as a multiple of {n}, or --num-devices 1 (or another divisor of "
                         f"{num_envs})")
    replicated = NamedSharding(mesh, P())
    by_env = NamedSharding(mesh, P(None, DATA_AXIS))

    def per_env(tree):
        return jax.tree_util.tree_map(
            lambda s: by_env if len(s.shape) >= 2 and s.shape[1] == num_envs else replicated,
            tree)

    everything = jax.tree_util.tree_map(lambda _: replicated, shapes)
    buffer = shapes.buffer
    buffer_shardings = jax.tree_util.tree_map(lambda _: replicated, buffer)
    buffer_shardings = buffer_shardings.replace(experience=per_env(buffer.experience))
    return everything.replace(env=per_env(shapes.env), is_first=per_env(shapes.is_first),
                              carry=per_env(shapes.carry), buffer=buffer_shardings)
