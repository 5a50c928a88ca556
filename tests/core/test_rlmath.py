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


def test_support_h_transform_by_hand_and_round_trip():
    support = rlmath.Support(5, 2.0, "signed_hyperbolic")  # points -2, -1, 0, 1, 2 in h-space
    # h(3) = 1.003 -> 0.997 on the point 1 and 0.003 on the point 2.
    np.testing.assert_allclose(support.encode(jnp.array(3.0)), [0, 0, 0, 0.997, 0.003],
                               atol=1e-5)
    wide = rlmath.Support(41, 20.0, "signed_hyperbolic")
    x = jnp.array([-250.0, -3.7, 0.0, 0.4, 17.0, 300.0])
    logits = jnp.log(wide.encode(x) + 1e-30)
    np.testing.assert_allclose(wide.decode(logits), x, rtol=1e-3, atol=1e-3)
    # Out of range values are clipped to the support's end: h^-1(2) = 8.0 (up to eps terms).
    np.testing.assert_allclose(support.decode(jnp.log(support.encode(jnp.array(100.0)) + 1e-30)),
                               rlmath.signed_parabolic(jnp.array(2.0)), rtol=1e-5)
    # clipped() names them: the last point 2 is h(7.952); h(7.9) = 1.9912, h(8.1) = 2.0247.
    np.testing.assert_array_equal(support.clipped(jnp.array([-8.1, -7.9, 0.0, 7.9, 8.1, 100.0])),
                                  [True, False, False, False, True, True])
    # 41 bins over [-20, 20] hold values up to h^-1(20) = 422.4, not inverted_double_pendulum's
    # 920 (9.2 per step at discount 0.99); 101 bins over [-50, 50] hold up to 2,364.
    np.testing.assert_allclose(rlmath.signed_parabolic(jnp.array(20.0)), 422.44, rtol=1e-4)
    assert bool(wide.clipped(jnp.array(920.0)))
    assert not bool(rlmath.Support(101, 50.0, "signed_hyperbolic").clipped(jnp.array(2300.0)))


def test_support_symlog_and_identity_by_hand():
    # symlog(e - 1) = 1: all mass on the point 1 of the points -2, -1, 0, 1, 2.
    symlog = rlmath.Support(5, 2.0, "symlog")
    np.testing.assert_allclose(symlog.encode(jnp.array(np.e - 1.0)), [0, 0, 0, 1, 0], atol=1e-6)
    # Equal logits on the identity support: the mean of the points, 0; the cross-entropy with a
    # target of 0.25 (0.75 on 0 and 0.25 on 1) is log 5 and its gradient softmax - labels.
    identity = rlmath.Support(5, 2.0, "identity")
    zeros = jnp.zeros(5)
    np.testing.assert_allclose(identity.decode(zeros), 0.0, atol=1e-6)
    np.testing.assert_allclose(identity.cross_entropy(zeros, jnp.array(0.25)), np.log(5.0),
                               rtol=1e-6)
    grad = jax.grad(lambda lg: identity.cross_entropy(lg, jnp.array(0.25)))(zeros)
    np.testing.assert_allclose(grad, [0.2, 0.2, 0.2 - 0.75, 0.2 - 0.25, 0.2], atol=1e-6)
    # Batched: leading axes pass through.
    assert identity.cross_entropy(jnp.zeros((3, 2, 5)), jnp.zeros((3, 2))).shape == (3, 2)


@pytest.mark.parametrize("bad, message", [
    (dict(size=1, max_value=1.0, transform="symlog"), "Support.size must be >= 2"),
    (dict(size=5, max_value=0.0, transform="symlog"), "Support.max_value must be > 0"),
    (dict(size=5, max_value=1.0, transform="log"), "Support.transform must be one of"),
])
def test_support_rejects_bad_fields(bad, message):
    with pytest.raises(ValueError, match=message):
        rlmath.Support(**bad)


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


def test_running_moments_merge_to_the_whole_sample_and_standardise():
    """Merging batches gives the whole sample's mean and (population) variance; standardise
    divides by at least the floor, is the identity before any data, and unstandardise undoes
    it."""
    x = np.random.RandomState(0).randn(101, 3) * [1.0, 4.0, 0.0] + [0.0, 5.0, 2.0]
    m = rlmath.moments_init((3,))
    z = jnp.asarray(x[:5])
    np.testing.assert_array_equal(rlmath.standardise(m, z, 0.01), z)  # no data yet
    for part in (x[:1], x[1:40], x[40:]):
        m = rlmath.moments_update(m, jnp.asarray(part))
    assert float(m.count) == 101
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rlmath.moments_std(m, 0.01), [x[:, 0].std(), x[:, 1].std(), 0.01],
                               rtol=1e-4)
    s = rlmath.standardise(m, jnp.asarray(x), 0.01)
    np.testing.assert_allclose(s[:, :2].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(s[:, :2].std(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(s[:, 2], 0.0, atol=1e-4)  # constant: (x - mean) / floor
    np.testing.assert_allclose(rlmath.unstandardise(m, s, 0.01), x, rtol=1e-5, atol=1e-5)
