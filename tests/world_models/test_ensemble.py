"""Tests of the probabilistic ensemble against closed forms and properties (tiny networks)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from world_models import ensemble, ensemble_fit
from core.types import Transition
from world_models.evaluation import k_step_error

CONFIG = ensemble.EnsembleConfig(num_members=5, num_elites=3, hidden_sizes=(32, 32),
                                 learning_rate=3e-3, batch_size=64, train_steps=800,
                                 eval_every=50, patience=5)
NUM_ROWS, NUM_VALID = 512, 400


def true_delta(s, a):
    return 0.5 * jnp.sin(3.0 * s) + 0.1 * a


def true_reward(s):
    return jnp.cos(2.0 * s[..., 0])


def make_data(seed):
    """1-D state and action in [-1, 1]; the first NUM_VALID of NUM_ROWS rows are valid."""
    rng = np.random.default_rng(seed)  # host-side test data: nothing to compile
    obs = rng.uniform(-1.0, 1.0, (NUM_ROWS, 1)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (NUM_ROWS, 1)).astype(np.float32)
    noise = 0.01 * rng.standard_normal((NUM_ROWS, 1)).astype(np.float32)
    next_obs = obs + 0.5 * np.sin(3.0 * obs) + 0.1 * actions + noise
    mask = (np.arange(NUM_ROWS) < NUM_VALID).astype(np.float32)
    return tuple(map(jnp.asarray, (obs, actions, next_obs, np.cos(2.0 * obs[:, 0]), mask)))


# Jitted once and reused: eager op-by-op dispatch and repeated compiles dominate test time.
_jit_fit = jax.jit(ensemble_fit.fit)
_jit_init = jax.jit(ensemble.init, static_argnums=(1, 2, 3))


@pytest.fixture(scope="module")
def fitted():
    data = make_data(0)
    state = _jit_init(jax.random.PRNGKey(1), 1, 1, CONFIG)
    new_state, metrics = _jit_fit(state, *data, jax.random.PRNGKey(2))
    return state, new_state, metrics, data


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_elites"):
        ensemble.EnsembleConfig(num_members=3, num_elites=5)
    with pytest.raises(ValueError, match="eval_every"):
        ensemble.EnsembleConfig(train_steps=100, eval_every=30)
    with pytest.raises(ValueError, match="holdout_fraction"):
        ensemble.EnsembleConfig(holdout_fraction=1.0)
    pets = ensemble.EnsembleConfig.pets()
    assert (pets.num_members, pets.num_elites) == (5, 5)


def test_bound_logvar_soft_clamp():
    max_lv, min_lv = jnp.array(0.5), jnp.array(-10.0)
    bound = functools.partial(ensemble.bound_logvar, max_logvar=max_lv, min_logvar=min_lv)
    raw = jnp.linspace(-50.0, 50.0, 101)
    out = bound(raw)
    # softplus(z) - z = log(1 + e^-z) <= e^-z, so the min clamp overshoots max by <= e^(min-max).
    assert jnp.all((out >= min_lv) & (out <= max_lv + jnp.exp(min_lv - max_lv) + 1e-6))
    np.testing.assert_allclose(bound(jnp.array(-4.0)), -4.0, atol=0.02)  # identity inside
    np.testing.assert_allclose(bound(jnp.array(50.0)), 0.5, atol=1e-4)
    np.testing.assert_allclose(bound(jnp.array(-50.0)), -10.0, atol=1e-4)
    # Hand-derived: raw = max gives l1 = max - log 2, then min + log(1 + e^(l1 - min)).
    l1 = 0.5 - math.log(2.0)
    np.testing.assert_allclose(bound(max_lv), -10.0 + math.log1p(math.exp(l1 + 10.0)), rtol=1e-5)


def test_member_loss_is_gaussian_nll_plus_penalties():
    config = ensemble.EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(8,),
                                     predict_termination=True)

    # Hand-built member parameters and data (flax's initialiser and jax.random are slow to
    # compile on CPU).
    rng = np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    params = {"network": {"Dense_0": {"kernel": normal(3, 8), "bias": normal(8)},
                          "Dense_1": {"kernel": normal(8, 7) / 3, "bias": normal(7)}},
              "max_logvar": jnp.full((3,), 0.5), "min_logvar": jnp.full((3,), -10.0)}
    x, y = normal(6, 3), normal(6, 3)  # y = [delta (2), reward]
    term = jnp.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])

    @jax.jit
    def losses(params, x, y, term):
        loss, nll = ensemble_fit.member_loss(params, config, x, y, term)
        mean, logvar, logit = jax.vmap(ensemble.forward, in_axes=(None, None, 0))(config, params,
                                                                                  x)
        ref_nll = jnp.mean(-jax.scipy.stats.norm.logpdf(y, mean, jnp.exp(0.5 * logvar)))
        bce = jnp.mean(-(term * jax.nn.log_sigmoid(logit)
                         + (1 - term) * jax.nn.log_sigmoid(-logit)))
        return loss, nll, ref_nll, bce

    loss, nll, ref_nll, bce = losses(params, x, y, term)
    penalty = 0.01 * (3 * 0.5 - 3 * (-10.0))
    np.testing.assert_allclose(nll, ref_nll, rtol=1e-5)
    np.testing.assert_allclose(loss, ref_nll + penalty + bce, rtol=1e-5)


@jax.jit
def _grid_predictions(state):
    s = jnp.linspace(-0.9, 0.9, 19)[:, None]
    a = jnp.linspace(0.8, -0.8, 19)[:, None]
    mean = jax.vmap(ensemble.mean_next_obs, in_axes=(None, 0, 0))(state, s, a)
    reward = jax.vmap(ensemble.predict, in_axes=(None, None, 0, 0))(
        state, state.elites[0], s, a).reward_mean
    return s, a, mean, reward


def test_fits_nonlinear_dynamics(fitted):
    _, state, metrics, _ = fitted
    assert metrics["elite_holdout_mse"] < 0.01  # normalised units: < 1% unexplained variance
    assert int(metrics["num_holdout"]) == int(0.2 * NUM_VALID)
    assert int(metrics["num_train"]) == NUM_VALID - int(0.2 * NUM_VALID)
    s, a, mean, reward = _grid_predictions(state)
    np.testing.assert_allclose(mean, s + true_delta(s, a), atol=0.05)
    np.testing.assert_allclose(reward, true_reward(s), atol=0.05)
    assert np.isfinite(float(metrics["train_nll"]))
    steps = np.asarray(metrics["train_steps"])
    assert np.all((steps > 0) & (steps <= CONFIG.train_steps) & (steps % CONFIG.eval_every == 0))


def test_variance_grows_away_from_data(fitted):
    _, state, _, _ = fitted
    points = jnp.array([[-0.5], [0.0], [0.5], [-4.0], [4.0]])
    aleatoric, epistemic = jax.jit(jax.vmap(ensemble.uncertainty, in_axes=(None, 0, 0)))(
        state, points, jnp.zeros_like(points))
    total = np.asarray(aleatoric + epistemic)[:, 0]
    assert total[3:].min() > 10.0 * total[:3].max()


@jax.jit
def _holdout_mse_by_predict(state, obs, actions, next_obs, rewards):
    """Normalised MSE of every member on the given rows, via the public predict: [N]."""
    pred = jax.vmap(jax.vmap(ensemble.predict, in_axes=(None, None, 0, 0)),
                    in_axes=(None, 0, None, None))(
        state, jnp.arange(CONFIG.num_members), obs, actions)  # [N, H, ...]
    predicted = jnp.concatenate([pred.next_obs_mean - obs, pred.reward_mean[..., None]], -1)
    actual = jnp.concatenate([next_obs - obs, rewards[:, None]], -1)
    return jnp.mean(((predicted - actual) / state.normaliser.target_std) ** 2, axis=(1, 2))


def test_elites_are_best_holdout_members(fitted):
    _, state, metrics, (obs, actions, next_obs, rewards, _) = fitted
    rows = np.flatnonzero(np.asarray(metrics["holdout_mask"]))
    assert len(rows) == int(metrics["num_holdout"])
    assert np.all(rows < NUM_VALID)
    mse = np.asarray(_holdout_mse_by_predict(state, obs[rows], actions[rows], next_obs[rows],
                                             rewards[rows]))
    np.testing.assert_allclose(mse, metrics["holdout_mse"], rtol=2e-3, atol=1e-7)
    elites = np.asarray(state.elites)
    assert set(elites.tolist()) == set(np.argsort(mse)[:CONFIG.num_elites].tolist())
    others = np.setdiff1d(np.arange(CONFIG.num_members), elites)
    assert mse[elites].max() <= mse[others].min()


def test_masked_rows_are_ignored(fitted):
    _, reference, ref_metrics, (obs, actions, next_obs, rewards, mask) = fitted
    invalid = mask == 0
    garbage = lambda x, value: jnp.where(invalid.reshape((-1,) + (1,) * (x.ndim - 1)), value, x)
    state = _jit_init(jax.random.PRNGKey(1), 1, 1, CONFIG)
    new_state, metrics = _jit_fit(state, garbage(obs, jnp.nan), garbage(actions, 1e6),
                                  garbage(next_obs, -jnp.inf), garbage(rewards, jnp.nan), mask,
                                  jax.random.PRNGKey(2))
    for leaf in jax.tree.leaves(new_state.params):
        assert np.all(np.isfinite(leaf))
    jax.tree.map(np.testing.assert_array_equal, new_state.params, reference.params)
    np.testing.assert_array_equal(metrics["holdout_mse"], ref_metrics["holdout_mse"])


def test_shapes_under_vmap(fitted):
    initial, state, metrics, _ = fitted
    n = CONFIG.num_members
    assert jax.tree.leaves(initial.params)[0].shape[0] == n
    kernel = initial.params["network"]["Dense_0"]["kernel"]
    assert kernel.shape == (n, 2, 32) and not np.allclose(kernel[0], kernel[1])
    assert metrics["holdout_mse"].shape == (n,) and state.elites.shape == (CONFIG.num_elites,)
    # Shapes by abstract evaluation (no compilation).
    obs, act = jnp.zeros((7, 1)), jnp.zeros((7, 1))
    pred = jax.eval_shape(jax.vmap(ensemble.predict_all, in_axes=(None, 0, 0)), state, obs, act)
    assert pred.next_obs_mean.shape == (7, n, 1) and pred.reward_var.shape == (7, n)
    keys = jax.random.split(jax.random.PRNGKey(3), 7)
    next_obs, reward = jax.eval_shape(
        jax.vmap(ensemble.sample_next, in_axes=(None, 0, 0, 0)), state, obs, act, keys)
    assert next_obs.shape == (7, 1) and reward.shape == (7,)
    errors = jax.eval_shape(lambda st: k_step_error(
        functools.partial(ensemble.mean_next_obs, st), jnp.zeros((2, 5, 1)),
        jnp.zeros((2, 4, 1)), 3), state)
    assert errors["abs_error"].shape == (3,)
    stochastic = jax.eval_shape(lambda st: k_step_error(
        functools.partial(ensemble.sample_next_obs, st), jnp.zeros((2, 5, 1)),
        jnp.zeros((2, 4, 1)), 3, key=jax.random.PRNGKey(0)), state)
    assert stochastic["abs_error"].shape == (3,)
    # Termination head, no reward, 3-D observations: shapes of the one-example API.
    config = ensemble.EnsembleConfig(num_members=2, num_elites=1, hidden_sizes=(4,),
                                     predict_reward=False, predict_termination=True)
    small = jax.eval_shape(lambda k: ensemble.init(k, 3, 2, config), jax.random.PRNGKey(0))
    assert small.params["max_logvar"].shape == (2, 3)
    pred = jax.eval_shape(ensemble.predict, small, 1, jnp.ones(3), jnp.ones(2))
    assert pred.next_obs_var.shape == (3,) and pred.reward_mean.shape == ()
    prob = jax.eval_shape(ensemble.termination_prob, small, 0, jnp.ones(3), jnp.ones(2))
    assert prob.shape == ()


def test_fit_transitions_traces_with_discrete_actions_and_termination():
    """Abstract evaluation (tracing only) of the replay entry point and the termination loss."""
    config = ensemble.EnsembleConfig(num_members=3, num_elites=2, hidden_sizes=(4,),
                                     batch_size=8, train_steps=20, eval_every=10,
                                     predict_termination=True)
    state = jax.eval_shape(lambda k: ensemble.init(k, 2, 3, config), jax.random.PRNGKey(0))
    rows = 16
    transitions = Transition(
        obs=jnp.zeros((rows, 2)), action=jnp.zeros((rows,), jnp.int32), reward=jnp.zeros(rows),
        next_obs=jnp.zeros((rows, 2)), terminated=jnp.zeros(rows, bool),
        truncated=jnp.zeros(rows, bool), is_first=jnp.zeros(rows, bool), extras=())
    new_state, metrics = jax.eval_shape(ensemble_fit.fit_transitions, state, transitions,
                                        jnp.ones(rows), jax.random.PRNGKey(1))
    assert new_state.elites.shape == (2,) and metrics["holdout_mask"].shape == (rows,)
    with pytest.raises(ValueError, match="terminated"):
        jax.eval_shape(ensemble_fit.fit, state, *transitions_to_arrays(transitions),
                       jnp.ones(rows), jax.random.PRNGKey(1))


def transitions_to_arrays(t):
    return t.obs, jax.nn.one_hot(t.action, 3), t.next_obs, t.reward


def test_empty_buffer_leaves_the_model_untouched(fitted):
    initial, _, _, (obs, actions, next_obs, rewards, mask) = fitted
    new_state, metrics = _jit_fit(initial, obs, actions, next_obs, rewards, jnp.zeros_like(mask),
                                  jax.random.PRNGKey(2))
    np.testing.assert_array_equal(metrics["train_steps"], 0)
    assert int(metrics["num_train"]) == 0 and np.isfinite(float(metrics["holdout_mse_mean"]))
    jax.tree.map(np.testing.assert_array_equal, new_state.params, initial.params)


def test_a_member_with_nonfinite_gradients_skips_its_steps(fitted):
    initial, reference, ref_metrics, data = fitted
    assert float(ref_metrics["skipped_updates"]) == 0.0
    # Member 0's first weight matrix is NaN: every one of its steps has NaN gradients.
    poison = lambda p: p.at[0].set(jnp.nan) if p.ndim == 3 else p
    state = initial.replace(params=jax.tree.map(poison, initial.params))
    new_state, metrics = _jit_fit(state, *data, jax.random.PRNGKey(2))
    steps = np.asarray(metrics["train_steps"])
    assert steps[0] > 0  # it took (skipped) steps until its patience ran out
    np.testing.assert_allclose(float(metrics["skipped_updates"]), steps[0] / steps.sum(),
                               rtol=1e-6)
    # The skipped member's parameters and optimiser moments are as they were, with no NaN
    # spread to the moments; the other members train and stay finite.
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)
    jax.tree.map(np.testing.assert_array_equal, first(new_state.params), first(state.params))
    jax.tree.map(np.testing.assert_array_equal, first(new_state.opt_state),
                 first(state.opt_state))
    for leaf in jax.tree.leaves(jax.tree.map(lambda x: x[1:], new_state.params)):
        assert np.all(np.isfinite(leaf))
    assert 0 not in np.asarray(new_state.elites)


def test_samples_match_predicted_gaussian(fitted):
    _, state, _, _ = fitted
    obs, act, member = jnp.array([0.3]), jnp.array([-0.2]), jnp.array(2)
    keys = jax.random.split(jax.random.PRNGKey(4), 4000)

    @jax.jit
    def draw(state):
        samples = jax.vmap(ensemble.sample_next, in_axes=(None, None, None, 0, None))(
            state, obs, act, keys, member)
        return samples, ensemble.predict(state, member, obs, act)

    (samples, rewards), pred = draw(state)
    std = np.sqrt(np.asarray(pred.next_obs_var))
    np.testing.assert_allclose(samples.mean(0), pred.next_obs_mean, atol=float(5 * std[0] / 63))
    np.testing.assert_allclose(samples.std(0), std, rtol=0.1)
    np.testing.assert_allclose(rewards.mean(), pred.reward_mean,
                               atol=float(5 * np.sqrt(pred.reward_var) / 63))


def test_optimizer_decays_only_weight_matrices(fitted):
    tx = ensemble.optimizer(CONFIG)

    @jax.jit
    def first_update(params):
        zero_grads = jax.tree.map(jnp.zeros_like, params)
        return tx.update(zero_grads, tx.init(params), params)[0]

    updates = first_update(ensemble.member_params(fitted[0], 0))
    assert np.all(np.asarray(updates["max_logvar"]) == 0)
    assert np.any(np.asarray(updates["network"]["Dense_0"]["kernel"]) != 0)
    assert np.all(np.asarray(updates["network"]["Dense_0"]["bias"]) == 0)
