"""k-step (compounding) error against closed forms, and trajectory collection."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from world_models import evaluation, linear


def _free_response(a_true, s0=(1.0, -2.0, 0.5), length=12):
    """Noise-free ``s_t = a^t s_0`` as ``[N, T + 1, 1]`` with zero actions ``[N, T, 1]``."""
    powers = a_true ** np.arange(length + 1)
    states = np.asarray(s0)[:, None, None] * powers[None, :, None]
    return states.astype(np.float32), np.zeros((len(s0), length, 1), np.float32)


@pytest.mark.parametrize("a_true,a_model", [(1.1, 1.05), (1.05, 1.1), (0.5, 0.6)])
def test_relative_error_matches_closed_form(a_true, a_model):
    states, actions = _free_response(a_true)
    step = functools.partial(linear.predict, linear.from_matrices(a_model, 1.0))
    result = evaluation.k_step_error(step, states, actions, 10)
    ks = np.arange(1, 11)
    closed_form = np.abs(1.0 - (a_model / a_true) ** ks)
    np.testing.assert_array_equal(result["horizons"], ks)
    np.testing.assert_allclose(result["relative_error"], closed_form, rtol=1e-4)
    np.testing.assert_allclose(result["pooled_relative_error"], closed_form, rtol=1e-4)
    assert result["num_starts"] == 3 * (12 - 10 + 1)


def test_lesson_numbers():
    states, actions = _free_response(1.1)
    result = evaluation.k_step_error(
        functools.partial(linear.predict, linear.from_matrices(1.05, 1.0)), states, actions, 10)
    assert round(float(result["relative_error"][4]), 2) == 0.21
    assert round(float(result["relative_error"][9]), 2) == 0.37
    states, actions = _free_response(1.05)
    result = evaluation.k_step_error(
        functools.partial(linear.predict, linear.from_matrices(1.1, 1.0)), states, actions, 10)
    assert round(float(result["relative_error"][9]), 2) == 0.59


def test_abs_and_relative_error_averaged_over_starts():
    # Real s' = s + a with a = 1 from s_0 = 0, so s_t = t; the model ignores the action.
    # From start t the k-step error is k and the real state t + k.
    length, horizon = 6, 3
    states = np.arange(length + 1, dtype=np.float32)[None, :, None]
    actions = np.ones((1, length, 1), np.float32)
    result = evaluation.k_step_error(lambda s, a: s, states, actions, horizon)
    starts = np.arange(length - horizon + 1)
    ks = np.arange(1, horizon + 1)
    expected = np.mean(ks[None, :] / (starts[:, None] + ks[None, :]), axis=0)
    np.testing.assert_allclose(result["abs_error"], ks, rtol=1e-6)
    np.testing.assert_allclose(result["relative_error"], expected, rtol=1e-6)
    np.testing.assert_allclose(result["target_norm"], starts.mean() + ks, rtol=1e-6)
    np.testing.assert_allclose(result["pooled_relative_error"], ks / (starts.mean() + ks))


def test_valid_mask_scores_only_starts_before_the_end():
    """The same system, but the episode ends after transition 3 (s_4 is its last real state)
    and the states after it are garbage (1e6): a start counts at horizon k only if its k
    transitions are valid, so the garbage never enters the means."""
    length, horizon = 6, 3
    states = np.arange(length + 1, dtype=np.float32)[None, :, None]
    states[0, 5:] = 1e6
    actions = np.ones((1, length, 1), np.float32)
    valid = np.arange(length)[None] < 4  # transitions 0..3
    result = evaluation.k_step_error(lambda s, a: s, states, actions, horizon, valid=valid)
    ks = np.arange(1, horizon + 1)
    counted = [[t for t in range(length - horizon + 1) if t + k <= 4] for k in ks]
    np.testing.assert_array_equal(result["num_scored"], [len(c) for c in counted])  # 4, 3, 2
    np.testing.assert_allclose(result["abs_error"], ks, rtol=1e-6)
    expected = [np.mean([k / (t + k) for t in c]) for k, c in zip(ks, counted)]
    np.testing.assert_allclose(result["relative_error"], expected, rtol=1e-6)
    none_valid = evaluation.k_step_error(lambda s, a: s, states, actions, horizon,
                                         valid=np.zeros((1, length), bool))
    assert np.isnan(none_valid["abs_error"]).all()
    assert none_valid["num_scored"].tolist() == [0, 0, 0]


def test_zero_real_states_use_the_norm_floor():
    states, actions = np.zeros((1, 4, 2), np.float32), np.zeros((1, 3, 1), np.float32)
    result = evaluation.k_step_error(lambda s, a: s + 1.0, states, actions, 2, norm_floor=0.5)
    np.testing.assert_allclose(result["abs_error"], [np.sqrt(2), np.sqrt(8)], rtol=1e-6)
    np.testing.assert_allclose(result["relative_error"], [2 * np.sqrt(2), 2 * np.sqrt(8)],
                               rtol=1e-6)


def test_stochastic_step_fn_gets_a_key():
    states, actions = _free_response(1.1)
    model = linear.from_matrices(1.1, 1.0, noise_cov=[[0.0]])
    step = functools.partial(linear.sample, model)  # step(state, action, key)
    result = evaluation.k_step_error(step, states, actions, 5, key=jax.random.PRNGKey(1))
    np.testing.assert_allclose(result["relative_error"], np.zeros(5), atol=1e-6)
    noisy = linear.from_matrices(1.1, 1.0, noise_cov=[[0.01]])
    result = evaluation.k_step_error(functools.partial(linear.sample, noisy), states, actions, 5,
                                     key=jax.random.PRNGKey(1))
    assert np.all(np.asarray(result["abs_error"]) > 0.0)


def test_observe_fn_compares_a_decoded_quantity():
    # A MuZero-like model state (latent, last reward); reward r(s, a) = -s^2 of the state acted in.
    states, actions = _free_response(0.9)
    rewards = -states[:, :-1, 0] ** 2  # [N, T], aligned with transitions
    encode = lambda s: (2.0 * s, jnp.zeros(()))  # (latent = 2 s)
    step = lambda z, a: (0.9 * z[0], -(0.5 * z[0][0]) ** 2)
    result = evaluation.k_step_error(step, states, actions, 4, encode_fn=encode,
                                     observe_fn=lambda z: z[1], targets=rewards)
    np.testing.assert_allclose(result["abs_error"], np.zeros(4), atol=1e-6)
    wrong = lambda z, a: (0.9 * z[0], -(z[0][0]) ** 2)  # (reward 4 times too big)
    result = evaluation.k_step_error(wrong, states, actions, 4, encode_fn=encode,
                                     observe_fn=lambda z: z[1], targets=rewards)
    np.testing.assert_allclose(result["relative_error"], 3.0 * np.ones(4), rtol=1e-5)


def test_horizon_longer_than_data_is_rejected():
    states, actions = _free_response(1.1, length=3)
    with pytest.raises(ValueError, match="horizon"):
        evaluation.k_step_error(lambda s, a: s, states, actions, 4)


def test_collect_trajectories_follows_the_dynamics_without_reset():
    env = envs.make("linear/scalar_a1.1", noise_std=0.0)  # time limit 50 steps
    states, actions = evaluation.collect_trajectories(env, jax.random.PRNGKey(0), 3, 60)
    assert states.shape == (3, 61, 1) and actions.shape == (3, 60, 1)
    assert np.all(np.abs(actions) <= 2.0) and np.std(actions) > 0.5  # uniform on [-2, 2]
    # No reset at the time limit: every step, including step 50, is s' = 1.1 s + a.
    np.testing.assert_allclose(states[:, 1:], 1.1 * states[:, :-1] + actions, rtol=1e-5)
    zeros = evaluation.zero_policy(env)
    states, actions = evaluation.collect_trajectories(env, jax.random.PRNGKey(0), 2, 5,
                                                      policy=zeros)
    np.testing.assert_array_equal(actions, np.zeros((2, 5, 1)))
    np.testing.assert_allclose(states[:, 1:], 1.1 * states[:, :-1], rtol=1e-6)
