"""A fixed-size, on-device ring buffer of model-generated transitions (MBPO's model pool).

Shapes are static: ``capacity`` rows of ``(obs [d_s], action [d_a], reward (), next_obs [d_s],
terminated ())``. :func:`add` writes a batch of ``n`` candidate rows of which only those with
``valid`` are kept, packed contiguously after the write pointer:

    position_i = (pointer + cumsum(valid)_i - 1) mod capacity   for valid rows,

invalid rows are scattered to index ``capacity`` with ``mode="drop"`` (i.e. discarded). The
oldest rows are overwritten once the buffer is full (MBPO keeps the last few epochs' rollouts).
``n <= capacity`` is required so that one write never overlaps itself.
"""

from __future__ import annotations

from typing import Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array


@struct.dataclass
class ModelBuffer:
    obs: Array  # [C, d_s]
    action: Array  # [C, d_a]
    reward: Array  # [C] float32
    next_obs: Array  # [C, d_s]
    terminated: Array  # [C] bool
    pointer: Array  # () int32: next row to write
    size: Array  # () int32: rows holding data, <= C


def init(capacity: int, obs_size: int, action_size: int) -> ModelBuffer:
    """An empty buffer of ``capacity`` rows."""
    if capacity < 1:
        raise ValueError(f"model buffer capacity must be >= 1, got {capacity}")
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
    return ModelBuffer(obs=zeros(capacity, obs_size), action=zeros(capacity, action_size),
                       reward=zeros(capacity), next_obs=zeros(capacity, obs_size),
                       terminated=jnp.zeros((capacity,), bool),
                       pointer=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(buffer: ModelBuffer, obs: Array, action: Array, reward: Array, next_obs: Array,
        terminated: Array, valid: Array) -> ModelBuffer:
    """Appends the rows ``[n, ...]`` where ``valid [n]`` is true (see the module doc)."""
    capacity = buffer.reward.shape[0]
    n = valid.shape[0]
    chex.assert_shape([reward, terminated], (n,))
    chex.assert_equal_shape_prefix([obs, action, next_obs], 1)
    if n > capacity:
        raise ValueError(f"cannot add {n} rows at once to a model buffer of capacity {capacity}")
    valid = valid.astype(bool)
    rank = jnp.cumsum(valid.astype(jnp.int32)) - 1
    index = jnp.where(valid, (buffer.pointer + rank) % capacity, capacity)
    put = lambda dst, src: dst.at[index].set(src.astype(dst.dtype), mode="drop")  # noqa: E731
    count = jnp.sum(valid.astype(jnp.int32))
    return ModelBuffer(obs=put(buffer.obs, obs), action=put(buffer.action, action),
                       reward=put(buffer.reward, reward), next_obs=put(buffer.next_obs, next_obs),
                       terminated=put(buffer.terminated, terminated),
                       pointer=(buffer.pointer + count) % capacity,
                       size=jnp.minimum(buffer.size + count, capacity))


def sample(buffer: ModelBuffer, key: Array, batch_size: int) -> Tuple[Array, ...]:
    """``batch_size`` rows drawn uniformly with replacement from the filled part.

    Returns ``(obs, action, reward, next_obs, terminated)``; with an empty buffer row 0 (zeros)
    is returned, so callers should add before sampling.
    """
    rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return (buffer.obs[rows], buffer.action[rows], buffer.reward[rows], buffer.next_obs[rows],
            buffer.terminated[rows])
