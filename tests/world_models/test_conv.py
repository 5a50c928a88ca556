"""world_models.conv.Conv computes nn.Conv's function with nn.Conv's parameters."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from world_models.conv import Conv


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 10, 10, 4), (3, 3), (1, 1), "SAME"),
    ((3, 2, 9, 7, 3), (3, 3), (2, 2), "SAME"),
    ((10, 10, 4), (1, 1), (1, 1), "SAME"),
    ((2, 8, 9, 2), (3, 2), (2, 1), "VALID"),
])
def test_matches_flax_conv(shape, kernel, strides, padding):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    ref = nn.Conv(5, kernel, strides=strides, padding=padding)
    params = ref.init(jax.random.PRNGKey(1), x)
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    want = ref.apply(params, x)
    for impl in ("patches", "lax", "auto"):
        mine = Conv(5, kernel, strides=strides, padding=padding, impl=impl)
        assert jax.tree_util.tree_structure(mine.init(jax.random.PRNGKey(1), x)) == \
            jax.tree_util.tree_structure(params)
        got = mine.apply(params, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bad_settings_are_named():
    x = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="impl"):
        Conv(2, impl="cudnn").init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="padding"):
        Conv(2, padding="CIRCULAR", impl="patches").init(jax.random.PRNGKey(0), x)
