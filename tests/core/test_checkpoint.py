"""Checkpoints round-trip states that hold zero-size arrays (MJX env states do)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import checkpoint


def test_round_trip_with_zero_size_leaves(tmp_path):
    state = {"env": {"act": jnp.zeros((3, 0), jnp.float32), "qpos": jnp.arange(6.0).reshape(3, 2)},
             "step": jnp.array(7, jnp.int32), "empty_int": jnp.zeros((0,), jnp.int32)}
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(5, state, {"env_steps": 5})
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    restored, meta = ckpt.restore(abstract)
    ckpt.close()
    assert meta == {"env_steps": 5}
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_restore_onto_other_shapes_or_dtypes_names_the_array(tmp_path):
    state = {"params": jnp.ones((2, 3), jnp.float32), "step": jnp.array(1, jnp.int32)}
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(3, state, {"env_steps": 3})
    step = jax.ShapeDtypeStruct((), jnp.int32)
    for shape, dtype, message in (((2, 4), jnp.float32, r"\(2, 4\) and float32"),
                                  ((2, 3), jnp.bfloat16, r"\(2, 3\) and bfloat16")):
        abstract = {"params": jax.ShapeDtypeStruct(shape, dtype), "step": step}
        with pytest.raises(checkpoint.CheckpointMismatchError,
                           match=r"\['params'\] of shape \(2, 3\) and dtype float32 where "
                           rf"this run has {message};"):
            ckpt.restore(abstract)
    ckpt.close()
