"""CEM finds the optimum of a known quadratic objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.mpc import cem


def test_cem_finds_quadratic_optimum():
    cfg = cem.CEMConfig(horizon=4, population=256, elites=25, iterations=8, alpha=0.1)
    target = jnp.array([[0.3, -0.5], [0.0, 0.9], [-0.7, 0.2], [0.5, 0.5]])
    low, high = -jnp.ones(2), jnp.ones(2)
    objective = lambda plans, key: -((plans - target) ** 2).sum(axis=(1, 2))
    mean, info = jax.jit(lambda k: cem.optimize(objective, cem.initial_mean(cfg, low, high), k,
                                                cfg, low, high))(jax.random.PRNGKey(0))
    np.testing.assert_allclose(mean, target, atol=0.05)
    assert float(info["best_value"]) > -0.01


def test_cem_respects_bounds_and_shift():
    cfg = cem.CEMConfig(horizon=3, population=64, elites=8, iterations=3)
    low, high = jnp.array([-0.5]), jnp.array([0.25])
    objective = lambda plans, key: plans.sum(axis=(1, 2))  # optimum at the upper bound
    mean, _ = cem.optimize(objective, cem.initial_mean(cfg, low, high), jax.random.PRNGKey(1),
                           cfg, low, high)
    assert float(mean.max()) <= 0.25 + 1e-6 and float(mean.min()) > 0.1
    shifted = cem.shift(mean, low, high)
    np.testing.assert_allclose(shifted[:-1], mean[1:])
    np.testing.assert_allclose(shifted[-1], [-0.125])


@pytest.mark.parametrize("kwargs", [dict(elites=0), dict(elites=500), dict(alpha=1.0),
                                    dict(horizon=0)])
def test_cem_config_errors(kwargs):
    with pytest.raises(ValueError):
        cem.CEMConfig(population=400, **kwargs)
