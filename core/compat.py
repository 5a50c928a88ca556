"""Compatibility shims for pinned third-party code.

brax 0.14.2's ``brax.training`` (PPO, SAC, APG and ``pmap.bcast_local_devices``) calls
``jax.device_put_replicated(x, devices)``, which jax removed before 0.11. We provide it again,
with the old semantics: every leaf gets a leading axis of ``len(devices)`` and each slice lives
on one device (what ``jax.pmap`` consumes). Call :func:`install` before using brax.training.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp


def device_put_replicated(x: Any, devices: Sequence) -> Any:
    """``x`` stacked ``len(devices)`` times along a new axis 0, one slice per device."""
    devices = list(devices)
    broadcast = jax.pmap(lambda _, tree: tree, in_axes=(0, None), devices=devices)
    return broadcast(jnp.arange(len(devices)), x)


def install() -> None:
    """Adds ``jax.device_put_replicated`` when this jax lacks it (idempotent)."""
    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = device_put_replicated
