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


def test_coloured_noise_is_unit_variance_and_smoother_than_white():
    key = jax.random.PRNGKey(0)
    white = np.asarray(cem.coloured_noise(key, (2000, 16, 1), 0.0))
    red = np.asarray(cem.coloured_noise(key, (2000, 16, 1), 2.0))
    assert red.shape == (2000, 16, 1)
    np.testing.assert_allclose(red.std(axis=1).mean(), 1.0, rtol=0.02)
    lag1 = lambda x: np.mean(x[:, 1:] * x[:, :-1]) / np.mean(x * x)
    assert abs(lag1(white)) < 0.05 and lag1(red) > 0.5


def test_icem_options_find_the_optimum_and_return_the_best_plan():
    target = jnp.array([[0.3], [0.2], [0.1], [0.0], [-0.1], [-0.2]])
    low, high = -jnp.ones(1), jnp.ones(1)
    objective = lambda plans, key: -((plans - target) ** 2).sum(axis=(1, 2))
    cfg = cem.CEMConfig(horizon=6, population=128, elites=12, iterations=6, noise_beta=2.0,
                        keep_elites=True, return_best=True)
    plan, info = cem.optimize(objective, cem.initial_mean(cfg, low, high),
                              jax.random.PRNGKey(2), cfg, low, high)
    # The returned plan is the best one evaluated, so its value is the reported best value.
    np.testing.assert_allclose(objective(plan[None], None)[0], info["best_value"], rtol=1e-5)
    np.testing.assert_allclose(plan, target, atol=0.1)
    with pytest.raises(ValueError, match="keep_elites"):
        cem.CEMConfig(population=10, elites=10, keep_elites=True)
    with pytest.raises(ValueError, match="noise_beta"):
        cem.CEMConfig(noise_beta=-1.0)


def test_check_spec_refuses_discrete_actions_and_names_alternatives():
    import envs

    with pytest.raises(ValueError, match="agent 'pets' plans continuous actions with CEM; "
                                         "gymnax/CartPole-v1 .* brax/inverted_pendulum .* "
                                         "MuZero agents"):
        cem.check_spec(envs.make("gymnax/CartPole-v1").spec, "pets")
