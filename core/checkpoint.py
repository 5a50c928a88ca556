"""orbax checkpoints of the whole run state (replay included) plus host-side metadata.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact; a resumed run starts from the newest
complete one.

A checkpoint that fails to restore (damaged files, a crash of the file system) is set aside as
``checkpoints/<env_steps>.damaged`` by :meth:`Checkpointer.restore_newest`, which then resumes
from the newest one that restores.

orbax cannot write zero-size arrays (MJX environment states have some, e.g. ``data.act`` of
a system without activations), so the state is stored as ``{leaf index: leaf}`` for its
non-empty leaves only, and the empty ones are rebuilt from the restore target's shapes.

A checkpoint restores onto any devices and any number of processes whose mesh splits its
environment axis; one written with other shapes (another ``num_envs``, ``num_seeds`` or agent
configuration) raises :class:`CheckpointMismatchError`, which names the first differing array,
before orbax reads any data.

With several processes (``jax.distributed``) every process calls the same methods: orbax
writes each process's shards and renames the checkpoint once all are written; whether a
checkpoint restores is agreed by all processes, and process 0 alone sets a damaged one aside.
The log directory must be on a file system every process sees.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from core import sharding as sharding_lib

STATE_ITEM = "state"


def _non_empty(leaves) -> Dict[str, Any]:
    return {str(i): leaf for i, leaf in enumerate(leaves) if leaf.size > 0}


class Checkpointer:
    """Saves and restores ``(run_state, meta)`` under ``<logdir>/checkpoints/<env_steps>``."""

    def __init__(self, logdir: str, max_to_keep: int = 2):
        self.directory = os.path.join(os.path.abspath(logdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: Dict) -> None:
        leaves = jax.tree_util.tree_leaves(state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(_non_empty(leaves)),
                                  meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def check_shapes(self, abstract_state: Any, step: int) -> None:
        """Raises :class:`CheckpointMismatchError` when the checkpoint at ``step`` holds other
        arrays, shapes or dtypes than ``abstract_state`` (it was written with other settings).

        Reads only the checkpoint's metadata; when that is unreadable it says nothing, and the
        restore reports the damage.
        """
        try:
            saved = ocp.StandardCheckpointHandler().metadata(
                epath.Path(self.directory) / str(step) / STATE_ITEM)
            saved = {key: (tuple(value.shape), np.dtype(value.dtype))
                     for key, value in saved.items()}
        except Exception:  # noqa: BLE001 - damaged metadata is the restore's to report
            return
        with_paths, _ = jax.tree_util.tree_flatten_with_path(abstract_state)
        expected = {str(i): (jax.tree_util.keystr(path), (tuple(leaf.shape), np.dtype(leaf.dtype)))
                    for i, (path, leaf) in enumerate(with_paths) if leaf.size > 0}
        fix = ("restore it with the settings of the run that wrote it (its config.json: "
               "--num-envs, --num-seeds, the agent and its config), or start a new run")
        if saved.keys() != expected.keys():
            raise CheckpointMismatchError(
                f"the checkpoint at env_steps={step} in {self.directory} holds {len(saved)} "
                f"arrays where this run has {len(expected)}; {fix}")
        for key, (name, (shape, dtype)) in expected.items():
            if saved[key] != (shape, dtype):
                (saved_shape, saved_dtype) = saved[key]
                raise CheckpointMismatchError(
                    f"the checkpoint at env_steps={step} in {self.directory} holds {name} of "
                    f"shape {saved_shape} and dtype {saved_dtype} where this run has {shape} "
                    f"and {dtype}; {fix}")

    def restore(self, abstract_state: Any, step: Optional[int] = None) -> Tuple[Any, Dict]:
        """Restores onto the shapes, dtypes and shardings of ``abstract_state``; raises
        :class:`CheckpointMismatchError` when the checkpoint holds other shapes."""
        step = self.latest_step() if step is None else step
        self.check_shapes(abstract_state, step)
        abstract_leaves, treedef = jax.tree_util.tree_flatten(abstract_state)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(_non_empty(abstract_leaves)),
            meta=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        saved = restored["state"]

        def leaf(i, abstract):
            if str(i) in saved:
                return saved[str(i)]
            sharding = getattr(abstract, "sharding", None)
            # a jitted constant: the one way to make an array on another process's devices
            return jax.jit(lambda: jnp.zeros(abstract.shape, abstract.dtype),
                           out_shardings=sharding)()

        leaves = [leaf(i, a) for i, a in enumerate(abstract_leaves)]
        return jax.tree_util.tree_unflatten(treedef, leaves), dict(restored["meta"])

    def restore_newest(self, abstract_state: Any, report: Callable[[str], None] = print
                       ) -> Tuple[Any, Dict, int]:
        """Restores the newest checkpoint that restores; returns ``(state, meta, step)``.

        Each newer one that fails is reported in one line through ``report`` and set aside
        (renamed ``<step>.damaged``, kept on disk) once an older one restores. When none
        restores, nothing is renamed and :class:`CheckpointError` names the newest failure.
        """
        failures: List[Tuple[int, BaseException]] = []
        # Process 0's listing: on a shared file system another host's may lag behind.
        steps = sharding_lib.primary_decides(
            lambda: sorted((int(s) for s in self.manager.all_steps()), reverse=True),
            "checkpoint_steps")
        for step in steps:
            error = None
            try:
                state, meta = self.restore(abstract_state, step)
            except CheckpointMismatchError:  # not damage: every checkpoint of the run has it
                raise
            except Exception as err:  # orbax / tensorstore raise many kinds
                error = err
            failed_somewhere, = sharding_lib.agree_any([error is not None])
            if failed_somewhere:
                failures.append((step, error or RuntimeError(
                    "it does not restore in another process")))
                continue
            for bad, err in failures:
                target = self.set_aside(bad)
                if sharding_lib.is_primary():
                    report(f"[train] checkpoint at env_steps={bad} does not restore "
                           f"({_reason(err)}); set aside as {target}, resuming from "
                           f"env_steps={step}")
            return state, meta, step
        if not failures:
            raise CheckpointError(f"no checkpoint under {self.directory}")
        step, err = failures[0]
        raise CheckpointError(
            f"no checkpoint under {self.directory} restores (newest, env_steps={step}: "
            f"{_reason(err)}); if the library or the configuration changed since it was "
            f"written, start over with --fresh (the old run is moved aside, not deleted)")

    def set_aside(self, step: int) -> str:
        """Renames ``<step>`` to ``<step>.damaged`` (or ``.damaged-N``) so it is not tried
        again; returns the new path."""
        def rename():
            source = os.path.join(self.directory, str(step))
            target, i = source + ".damaged", 1
            while os.path.exists(target):
                target, i = f"{source}.damaged-{i}", i + 1
            os.rename(source, target)
            return target

        target = sharding_lib.primary_decides(rename, f"set_aside:{step}")
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.close()


class CheckpointError(RuntimeError):
    """No checkpoint of a run restores."""


class CheckpointMismatchError(ValueError):
    """A checkpoint holds other arrays or shapes than the run that restores it expects."""


def _reason(err: BaseException, limit: int = 240) -> str:
    """The most telling line of an orbax / tensorstore error (the innermost cause that carries
    a status code such as OUT_OF_RANGE), shortened to ``limit`` characters."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    codes = ("OUT_OF_RANGE", "DATA_LOSS", "NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION")
    for candidate in reversed(chain):
        for line in str(candidate).splitlines():
            if any(code in line for code in codes):
                text = line.strip()
                return text if len(text) <= limit else text[:limit - 3] + "..."
    first = str(chain[0]).strip().splitlines()
    text = f"{type(chain[0]).__name__}: {first[0] if first else ''}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def abstract_like(shapes: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` tree carrying the target shardings, for :meth:`Checkpointer.restore`."""
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
