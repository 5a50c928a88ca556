"""orbax checkpoints of the whole run state (replay included) plus host-side metadata.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact; a resumed run starts from the newest
complete one.

orbax cannot write zero-size arrays (MJX environment states have some, e.g. ``data.act`` of
a system without activations), so the state is stored as ``{leaf index: leaf}`` for its
non-empty leaves only, and the empty ones are rebuilt from the restore target's shapes.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


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

    def restore(self, abstract_state: Any, step: Optional[int] = None) -> Tuple[Any, Dict]:
        """Restores onto the shapes, dtypes and shardings of ``abstract_state``."""
        step = self.latest_step() if step is None else step
        abstract_leaves, treedef = jax.tree_util.tree_flatten(abstract_state)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(_non_empty(abstract_leaves)),
            meta=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        saved = restored["state"]

        def leaf(i, abstract):
            if str(i) in saved:
                return saved[str(i)]
            empty = jnp.zeros(abstract.shape, abstract.dtype)
            sharding = getattr(abstract, "sharding", None)
            return jax.device_put(empty, sharding) if sharding is not None else empty

        leaves = [leaf(i, a) for i, a in enumerate(abstract_leaves)]
        return jax.tree_util.tree_unflatten(treedef, leaves), dict(restored["meta"])

    def close(self) -> None:
        self.manager.close()


def abstract_like(shapes: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` tree carrying the target shardings, for :meth:`Checkpointer.restore`."""
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
