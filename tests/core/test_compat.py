"""The jax.device_put_replicated shim that brax.training needs under jax 0.11."""

import jax
import numpy as np

from core import compat


def test_device_put_replicated_shim_feeds_pmap():
    compat.install()
    devices = jax.local_devices()
    tree = {"w": np.arange(6.0).reshape(2, 3), "step": np.int32(4)}
    out = jax.device_put_replicated(tree, devices)
    assert out["w"].shape == (len(devices), 2, 3) and out["step"].shape == (len(devices),)
    doubled = jax.pmap(lambda t: jax.tree_util.tree_map(lambda x: 2 * x, t))(out)
    np.testing.assert_allclose(doubled["w"][0], 2 * tree["w"])


def test_brax_training_imports_and_bcast_runs():
    compat.install()
    from brax.training import pmap
    from brax.training.agents.ppo import train as ppo_train  # noqa: F401
    from brax.training.agents.sac import train as sac_train  # noqa: F401
    out = pmap.bcast_local_devices(np.ones(3), jax.local_device_count())
    assert out.shape == (jax.local_device_count(), 3)
