"""core.rlmath against hand-derived numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import rlmath


def test_symlog_symexp_round_trip_and_values():
    x = jnp.array([-1000.0, -3.0, -0.5, 0.0, 0.5, 3.0, 1000.0])
    np.testing.assert_allclose(rlmath.symexp(rlmath.symlog(x)), x, rtol=1e-5)
    np.testing.assert_allclose(rlmath.symlog(jnp.array(np.e - 1.0)), 1.0, rtol=1e-6)
    # d/dx symlog(x) = 1 / (1 + |x|)
    np.testing.assert_allclose(jax.grad(rlmath.symlog)(-0.5), 1 / 1.5, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(rlmath.symexp)(2.0), np.exp(2.0), rtol=1e-6)


def test_signed_hyperbolic_pair():
    # h(3) = sqrt(4) - 1 + 0.003 = 1.003; h(-8) = -(3 - 1) - 0.008
    np.testing.assert_allclose(rlmath.signed_hyperbolic(jnp.array([3.0, -8.0, 0.0])),
                               [1.003, -2.008, 0.0], rtol=1e-6)
    x = jnp.linspace(-500.0, 500.0, 101)
    np.testing.assert_allclose(rlmath.signed_parabolic(rlmath.signed_hyperbolic(x)), x,
                               rtol=1e-4, atol=1e-3)


def test_two_hot_weights_mean_and_clipping():
    support = jnp.array([-2.0, 0.0, 1.0, 3.0])
    np.testing.assert_allclose(rlmath.two_hot(jnp.array(0.25), support), [0, 0.75, 0.25, 0])
    np.testing.assert_allclose(rlmath.two_hot(jnp.array(2.0), support), [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(rlmath.two_hot(jnp.array(1.0), support), [0, 0, 1, 0], atol=1e-7)
    np.testing.assert_allclose(rlmath.two_hot(jnp.array(9.0), support), [0, 0, 0, 1])
    np.testing.assert_allclose(rlmath.two_hot(jnp.array(-9.0), support), [1, 0, 0, 0])
    xs = jnp.linspace(-2.0, 3.0, 37)
    np.testing.assert_allclose(rlmath.two_hot(xs, support) @ support, xs, atol=1e-5)
    # a categorical whose logits are log two_hot has that mean
    logits = jnp.log(rlmath.two_hot(jnp.array(0.25), support) + 1e-12)
    np.testing.assert_allclose(rlmath.expectation(logits, support), 0.25, atol=1e-5)
    # gradient of the expectation wrt logits is p_i (s_i - mean)
    g = jax.grad(lambda lg: rlmath.expectation(lg, support))(jnp.zeros(4))
    np.testing.assert_allclose(g, 0.25 * (support - support.mean()), rtol=1e-6)


def test_lambda_returns_hand_worked():
    r = jnp.array([1.0, 2.0, 3.0])
    d = jnp.array([0.9, 0.9, 0.0])
    v = jnp.array([10.0, 20.0, 30.0])
    lam = 0.5
    g2 = 3.0 + 0.0 * 30.0
    g1 = 2.0 + 0.9 * (0.5 * 20.0 + 0.5 * g2)
    g0 = 1.0 + 0.9 * (0.5 * 10.0 + 0.5 * g1)
    np.testing.assert_allclose(rlmath.lambda_returns(r, d, v, lam), [g0, g1, g2], rtol=1e-6)
    # lambda = 0: one-step TD targets; lambda = 1: discounted Monte-Carlo + final bootstrap
    np.testing.assert_allclose(rlmath.lambda_returns(r, d, v, 0.0), r + d * v, rtol=1e-6)
    d1 = jnp.array([0.5, 0.5, 0.5])
    mc0 = 1.0 + 0.5 * 2.0 + 0.25 * 3.0 + 0.125 * 30.0
    np.testing.assert_allclose(rlmath.lambda_returns(r, d1, v, 1.0)[0], mc0, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_step_returns_hand_worked(n):
    r = jnp.array([1.0, 2.0, 3.0, 4.0])
    d = jnp.array([0.5, 0.5, 0.0, 0.5])  # terminal after step 2
    v = jnp.array([10.0, 20.0, 30.0, 40.0])
    out = rlmath.n_step_returns(r, d, v, n)
    expected = {
        1: [1 + 0.5 * 10, 2 + 0.5 * 20, 3 + 0.0, 4 + 0.5 * 40],
        2: [1 + 0.5 * 2 + 0.25 * 20, 2 + 0.5 * 3 + 0.0, 3 + 0.0, 4 + 0.5 * 40],
        5: [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 4 + 0.5 * 40],
    }[n]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
