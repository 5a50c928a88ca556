"""Least-squares linear model: exact recovery, noise, masking, rank deficiency, ridge."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import envs.linear
from world_models import linear

fit = jax.jit(linear.fit, static_argnames=("fit_bias",))  # one compilation per shape
design_matrices = jax.jit(linear.design_matrices, static_argnames=("fit_bias",))
NUM = 2048  # transitions in the random_4x2 data sets (shared shape, shared compilation)

# The lesson's five exact samples of s' = 0.5 s + 1.0 a.
FIVE_S = np.array([[2.0], [1.0], [1.0], [0.5], [0.0]], np.float32)
FIVE_A = np.array([[-1.0], [-1.0], [0.5], [0.0], [1.0]], np.float32)
FIVE_NEXT = 0.5 * FIVE_S + FIVE_A


def _random_4x2_data(noise_std, seed=0):
    """Host-side reference data: s ~ N(0, I), a ~ U(-2, 2), s' = A s + B a + noise_std · z."""
    sys = envs.linear.system("random_4x2")
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(NUM, 4))
    a = rng.uniform(-2.0, 2.0, size=(NUM, 2))
    s_next = s @ sys.A.T + a @ sys.B.T + noise_std * rng.normal(size=(NUM, 4))
    return sys, s.astype(np.float32), a.astype(np.float32), s_next.astype(np.float32)


def test_design_matrices_of_the_five_samples():
    xtx, xty = design_matrices(FIVE_S, FIVE_A, FIVE_NEXT)
    np.testing.assert_allclose(xtx, [[6.25, -2.5], [-2.5, 3.25]])
    np.testing.assert_allclose(xty, [[0.625], [2.0]])
    np.testing.assert_allclose(np.linalg.det(np.asarray(xtx, np.float64)), 14.0625)


def test_five_samples_and_ridge_closed_form():
    model = linear.check_fit(fit(FIVE_S, FIVE_A, FIVE_NEXT))
    np.testing.assert_allclose([model.A[0, 0], model.B[0, 0]], [0.5, 1.0], atol=1e-6)
    # By hand, ridge 1: [[7.25, -2.5], [-2.5, 4.25]] θ = [0.625, 2], det 24.5625,
    # θ = [4.25·0.625 + 2.5·2, 2.5·0.625 + 7.25·2] / 24.5625 = [7.65625, 16.0625] / 24.5625.
    ridged = linear.check_fit(fit(FIVE_S, FIVE_A, FIVE_NEXT, ridge=1.0))
    np.testing.assert_allclose([ridged.A[0, 0], ridged.B[0, 0]],
                               [7.65625 / 24.5625, 16.0625 / 24.5625], rtol=1e-5)
    assert not bool(ridged.rank_deficient)
    assert float(ridged.ridge_used) == 1.0


def test_ridge_shrinks_towards_zero():
    _, s, a, s_next = _random_4x2_data(noise_std=0.1)
    norms = [np.linalg.norm(np.concatenate([m.A, m.B], axis=1))
             for m in (fit(s, a, s_next, ridge=r) for r in (0.0, 100.0, 1e4))]
    assert norms[0] > norms[1] > norms[2]


def test_exact_recovery_on_noise_free_random_4x2():
    sys, s, a, s_next = _random_4x2_data(noise_std=0.0)
    model = linear.check_fit(fit(s, a, s_next))
    np.testing.assert_allclose(model.A, sys.A, atol=1e-4)
    np.testing.assert_allclose(model.B, sys.B, atol=1e-4)
    np.testing.assert_allclose(model.c, np.zeros(4))
    np.testing.assert_allclose(model.noise_cov, np.zeros((4, 4)), atol=1e-9)
    assert not bool(model.rank_deficient)
    assert 1.0 <= float(model.condition_number) < 100.0
    assert float(model.num_samples) == NUM


def test_noisy_data_gives_close_estimates_and_noise_cov():
    sys, s, a, s_next = _random_4x2_data(noise_std=0.1)
    model = linear.check_fit(fit(s, a, s_next))
    # Standard error of each coefficient ≈ 0.1 / sqrt(2048 · var) ≈ 0.002.
    np.testing.assert_allclose(model.A, sys.A, atol=0.015)
    np.testing.assert_allclose(model.B, sys.B, atol=0.015)
    np.testing.assert_allclose(model.noise_cov, 0.01 * np.eye(4), atol=1.5e-3)


def test_weights_mask_ignores_garbage_rows():
    sys, s, a, s_next = _random_4x2_data(noise_std=0.0)
    weights = np.zeros(NUM, np.float32)
    weights[: NUM // 2] = 1.0
    s_next = s_next.copy()
    s_next[NUM // 2:] = 1e6
    s = s.copy()
    s[NUM // 2:: 2] = np.nan  # a partly filled buffer may hold anything
    model = linear.check_fit(fit(s, a, s_next, weights=weights))
    np.testing.assert_allclose(model.A, sys.A, atol=1e-4)
    np.testing.assert_allclose(model.B, sys.B, atol=1e-4)
    np.testing.assert_allclose(model.noise_cov, np.zeros((4, 4)), atol=1e-9)
    assert float(model.num_samples) == NUM // 2


def _free_response(num=16, a_true=1.1):
    s = np.cumprod(np.full((num, 1), a_true), axis=0).astype(np.float32)  # 1.1, 1.21, ...
    return s, a_true * s


def test_constant_zero_action_is_flagged_and_check_fit_explains():
    s, s_next = _free_response()
    model = fit(s, np.zeros_like(s), s_next)
    assert bool(model.rank_deficient)
    assert float(model.ridge_used) > 0.0
    assert np.all(np.isfinite(model.A)) and np.all(np.isfinite(model.B))
    np.testing.assert_allclose(model.A, [[1.1]], rtol=1e-3)  # the fallback barely shrinks A
    np.testing.assert_allclose(model.B, [[0.0]])
    with pytest.raises(ValueError, match=r"a\[0\].*constant zero.*varied actions.*ridge>0"):
        linear.check_fit(model)
    with pytest.raises(ValueError, match="rank deficient"):
        linear.fit_checked(s, np.zeros_like(s), s_next)
    linear.check_fit(fit(s, np.zeros_like(s), s_next, ridge=0.1))  # explicit ridge: accepted


def test_constant_action_with_bias_is_flagged():
    s, s_next = _free_response()
    actions = np.ones_like(s)
    model = fit(s, actions, s_next + actions, fit_bias=True)
    assert bool(model.rank_deficient)
    with pytest.raises(ValueError, match=r"a\[0\], 1 \(bias\).*constant"):
        linear.check_fit(model)


def test_too_few_samples_are_flagged():
    model = fit(FIVE_S[:1], FIVE_A[:1], FIVE_NEXT[:1])
    assert bool(model.rank_deficient)
    assert np.all(np.isfinite(model.A)) and np.all(np.isfinite(model.B))
    with pytest.raises(ValueError, match="only 1 samples for 2 unknowns.*collect more data"):
        linear.check_fit(model)


def test_predict_and_sample():
    cov = np.array([[0.04, 0.01], [0.01, 0.09]], np.float32)
    model = linear.from_matrices([[1.0, 0.5], [0.0, 0.9]], [[0.0], [1.0]], c=[0.1, -0.1],
                                 noise_cov=cov)
    state, action = np.array([1.0, 2.0], np.float32), np.array([3.0], np.float32)
    mean = np.array([1.0 + 1.0 + 0.1, 1.8 + 3.0 - 0.1])
    np.testing.assert_allclose(linear.predict(model, state, action), mean, rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = jax.vmap(linear.sample, in_axes=(None, None, None, 0))(model, state, action, keys)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), cov, atol=0.004)
    exact = linear.from_matrices(model.A, model.B, c=model.c)  # zero covariance
    np.testing.assert_allclose(linear.sample(exact, state, action, keys[0]), mean, rtol=1e-6)
