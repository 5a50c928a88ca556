"""orbax checkpoints of the whole run state (replay included) plus host-side metadata.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact; a resumed run starts from the newest
complete one.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores ``(run_state, meta)`` under ``<logdir>/checkpoints/<env_steps>``."""

    def __init__(self, logdir: str, max_to_keep: int = 2):
        self.directory = os.path.join(os.path.abspath(logdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: Dict) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(self, abstract_state: Any, step: Optional[int] = None) -> Tuple[Any, Dict]:
        """Restores onto the shapes, dtypes and shardings of ``abstract_state``."""
        step = self.latest_step() if step is None else step
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                  meta=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return restored["state"], dict(restored["meta"])

    def close(self) -> None:
        self.manager.close()


def abstract_like(shapes: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` tree carrying the target shardings, for :meth:`Checkpointer.restore`."""
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
