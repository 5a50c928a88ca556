"""Data parallelism with ``jax.sharding``: the environment axis is sharded, the rest replicated.

The run state of ``num_seeds`` seeds has leaves ``[num_seeds, ...]``. Leaves of the per-env
parts (environment states, ``is_first``, the acting carry, replay experience) have the
environment axis at position 1; they are split over a 1-D mesh axis ``"data"``. Parameters,
optimiser states and counters are replicated. XLA's partitioner inserts the collectives, so
the same program runs on 1 CPU, several GPUs, or several hosts after
``jax.distributed.initialize()``.

Several processes (one per host, joined by :func:`initialize_distributed`) share one global
mesh; each holds, and steps, only the environments of its own devices. Host-side decisions must
then agree: :func:`agree_any` combines per-process flags (a signal, a deadline),
:func:`primary_decides` lets process 0 alone touch the log directory and tells the others the
outcome, :func:`replicated` puts a host value (a PRNG key) on every device of the mesh, and
:func:`compiled_together` keeps a process that compiles fast from running a program before the
others can join its collectives.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
# Read by initialize_distributed when no flag gives them; jax reads JAX_COORDINATOR_ADDRESS
# itself, and detects SLURM, Open MPI and Cloud TPU settings when none is set.
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           heartbeat_timeout_seconds: int = 100) -> None:
    """Joins this process to a multi-process run (``jax.distributed.initialize``).

    Each argument left None is read from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID``; what is still missing jax detects from the cluster (SLURM, Open
    MPI, Cloud TPU). CPU collectives go over gloo, so processes on CPUs (tests, a laptop) can
    join too. Must run before anything touches a device. A process whose peers stop sending
    heartbeats for ``heartbeat_timeout_seconds`` fails instead of waiting for them forever.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get(COORDINATOR_ENV) or None
    if num_processes is None and env.get(NUM_PROCESSES_ENV):
        num_processes = int(env[NUM_PROCESSES_ENV])
    if process_id is None and env.get(PROCESS_ID_ENV):
        process_id = int(env[PROCESS_ID_ENV])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds)


def is_primary() -> bool:
    """True in process 0, the one that writes the log directory."""
    return jax.process_index() == 0


def agree_any(flags: Sequence[bool]) -> np.ndarray:
    """Flag-wise OR over all processes (every process must call it at the same point)."""
    flags = np.asarray(flags, bool)
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather(flags.astype(np.int32))
    return np.asarray(gathered).reshape(-1, flags.size).any(axis=0)


def agree_min(value: int) -> int:
    """The smallest of ``value`` over all processes (every process must call it at the same
    point)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather(np.asarray([value], np.int32))
    return int(np.asarray(gathered).min())


_MESSAGE_BYTES = 8192


def primary_decides(fn: Callable[[], Any], name: str) -> Any:
    """``fn()`` run by process 0 alone (e.g. a check or a rename in the log directory), its
    JSON-able result or its error told to every process behind a barrier.

    In the other processes a ``ValueError`` raised by ``fn`` is raised again as a
    ``ValueError`` with the same message (a usage error stays one), anything else as a
    ``RuntimeError``.
    """
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils
    error = None
    outcome = {"ok": True, "value": None}
    if is_primary():
        try:
            outcome["value"] = fn()
        except Exception as err:  # told to the others, then raised here
            error = err
            outcome = {"ok": False, "value_error": isinstance(err, ValueError),
                       "message": str(err)}
    data = json.dumps(outcome, default=str).encode()
    if len(data) > _MESSAGE_BYTES and not outcome["ok"]:  # shorten the message, not the JSON
        outcome["message"] = outcome["message"][:_MESSAGE_BYTES // 8] + " ..."
        data = json.dumps(outcome, default=str).encode()[:_MESSAGE_BYTES]
    buffer = np.zeros(_MESSAGE_BYTES + 4, np.uint8)
    buffer[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
    buffer[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    buffer = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    multihost_utils.sync_global_devices(f"primary_decides:{name}")
    if error is not None:
        raise error
    size = int(np.frombuffer(buffer[:4].tobytes(), np.uint32)[0])
    outcome = json.loads(buffer[4:4 + size].tobytes().decode())
    if not outcome["ok"]:
        message = f"{outcome['message']} (decided by process 0)"
        raise ValueError(message) if outcome["value_error"] else RuntimeError(message)
    return outcome["value"]


def compiled_together(fn: Callable, name: str) -> Callable:
    """``fn`` (a jitted function) that, with several processes, is compiled for its first
    call's arguments in every process, and runs only once all have compiled it.

    A program's first collective sets up its gloo connections and gives up when a peer is 30 s
    late; process 0 reads the persistent compilation cache, the others may compile for minutes
    (see docs/distributed.md). Later calls must take arguments of the same shapes and
    shardings (a training chunk does).
    """
    if jax.process_count() == 1:
        return fn
    from jax.experimental import multihost_utils
    compiled = []

    def call(*args):
        if not compiled:
            compiled.append(fn.lower(*args).compile())
            multihost_utils.sync_global_devices(f"compiled:{name}")
        return compiled[0](*args)

    return call


def replicated(value: Any, mesh: Mesh) -> Any:
    """A host value (the same in every process, e.g. PRNG keys) as a global array replicated
    over ``mesh``: the form a jitted function over a multi-process mesh takes as input."""
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), value)


def make_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence] = None) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (all devices when None).

    ``num_devices`` counts global devices. With several processes the mesh takes
    ``num_devices / process_count`` devices of every process (:func:`devices_per_process`), in
    process order, so each process holds a contiguous block of environments.
    """
    if devices is None and jax.process_count() > 1:
        return Mesh(np.array(_per_process_devices(num_devices)), (DATA_AXIS,))
    devices = list(devices if devices is not None else jax.devices())
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(f"--num-devices {num_devices}: only {len(devices)} "
                             f"{devices[0].platform} devices are visible; pass --num-devices "
                             f"{len(devices)} or less (on CPU, XLA_FLAGS="
                             f"--xla_force_host_platform_device_count={num_devices} makes more)")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (DATA_AXIS,))


def devices_per_process(num_devices: int, processes: int, local: int) -> int:
    """How many of its ``local`` devices each of ``processes`` processes gives to a mesh of
    ``num_devices`` global devices (0: all of them).

    Every process steps its own environments on its own devices, so each must hold at least
    one device of the mesh, and all the same number: ``num_devices`` must be a multiple of
    ``processes`` between ``processes`` and ``processes * local``.
    """
    num_devices = num_devices or processes * local
    if num_devices % processes or not processes <= num_devices <= processes * local:
        choices = ", ".join(str(processes * k) for k in range(1, local + 1))
        raise ValueError(f"--num-devices {num_devices} counts global devices and must split "
                         f"evenly over the {processes} processes ({local} devices each); "
                         f"pass one of {choices}")
    return num_devices // processes


def _per_process_devices(num_devices: Optional[int]) -> list:
    per = devices_per_process(num_devices or 0, jax.process_count(), jax.local_device_count())
    by_process: dict = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    return [d for p in sorted(by_process) for d in sorted(by_process[p], key=lambda d: d.id)[:per]]


def default_num_devices(num_envs: int, available: Optional[int] = None) -> int:
    """The most devices (of the ``available`` ones, all visible by default) that split
    ``num_envs`` environments evenly; with several processes, the same number from each."""
    processes = jax.process_count() if available is None else 1
    if processes > 1:
        per = [k for k in range(1, jax.local_device_count() + 1)
               if num_envs % (k * processes) == 0]
        if not per:
            raise ValueError(f"--num-envs {num_envs} does not split over {processes} "
                             f"processes; pass a multiple of {processes}")
        return max(per) * processes
    available = jax.device_count() if available is None else available
    return max(d for d in range(1, min(available, num_envs) + 1) if num_envs % d == 0)


def run_state_shardings(shapes, mesh: Mesh, num_envs: int):
    """Shardings for a (seed-batched) run-state shape tree, see module doc."""
    n = mesh.devices.size
    if num_envs % n:
        step = jax.process_count()  # every process holds the same number of devices
        fits = [d for d in range(step, n + 1, step) if num_envs % d == 0]
        other = (f" or --num-devices {fits[-1]} (or another divisor of {num_envs}"
                 + (f" that is a multiple of {step})" if step > 1 else ")")) if fits else ""
        raise ValueError(f"--num-envs {num_envs} does not split over {n} devices; pass --num-envs "
                         f"as a multiple of {n} (a new run; a resumed or restored run keeps its "
                         f"own){other}")
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
