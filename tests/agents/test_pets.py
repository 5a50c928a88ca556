"""PETS: trajectory-sampling assignments, deterministic mean propagation, and learning a
regulator for an unstable linear system through the shared training loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import pets
from core import runner
from world_models import ensemble


@pytest.fixture(scope="module")
def trained():
    env = envs.make("linear/scalar_a1.1")
    agent = pets.make(pets.PRESETS["tiny"], env, num_envs=2)
    cfg = runner.RunConfig(steps=400, num_envs=2, log_every=100, eval_every=0,
                           eval_episodes=4, progress=False)
    return runner.train(env, agent, cfg)


@pytest.mark.slow
def test_pets_learns_to_regulate_unstable_system(trained):
    returns = [r["episode_return_mean"] for r in trained.history if "episode_return_mean" in r]
    # The first episodes include the random prefill: on A=1.1 random actions blow the state up
    # (costs of 1e4..1e6 per episode); the controlled system stays near 0 (about -13 observed).
    assert returns[0] < -1000, returns
    final = trained.history[-1]["eval_return_mean"]
    assert final > -30, final
    state = runner.seed_slice(trained.state, 0).agent
    assert int(state.fits) >= 10
    # Only scalar metrics reach the logger.
    for name in ("train_nll", "elite_holdout_mse", "holdout_mse_mean"):
        value = trained.history[-1][name]
        assert np.ndim(value) == 0 and np.isfinite(value), (name, value)


def test_member_assignment_balanced_ts1_varies_tsinf_constant():
    elites = jnp.array([4, 1, 3], jnp.int32)
    key = jax.random.PRNGKey(0)
    ts1 = np.asarray(pets.member_assignment(key, elites, 15, 10, "ts1"))
    tsinf = np.asarray(pets.member_assignment(key, elites, 15, 10, "tsinf"))
    assert ts1.shape == tsinf.shape == (15, 10)
    for table in (ts1, tsinf):  # every step: 5 particles on each of the 3 elites
        for t in range(10):
            assert sorted(np.unique(table[:, t], return_counts=True)[1]) == [5, 5, 5]
        assert set(np.unique(table)) == {1, 3, 4}
    assert np.all(tsinf == tsinf[:, :1])  # one member per particle for the whole horizon
    assert np.any(ts1 != ts1[:, :1])  # TS-1 resamples over time
    np.testing.assert_array_equal(pets.member_assignment(key, elites, 6, 2, "mean"), -1)
    with pytest.raises(ValueError, match="propagation"):
        pets.member_assignment(key, elites, 6, 3, "bogus")
    with pytest.raises(ValueError, match="multiple"):
        pets.member_assignment(key, elites, 4, 3, "ts1")


def test_grouped_rollout_matches_per_particle_members():
    """Particle p at step t must use member assignment[p, t]: compare with a direct rollout."""
    model, cfg = _model()
    plans = jax.random.uniform(jax.random.PRNGKey(3), (3, 5, 1), minval=-1, maxval=1)
    obs = jnp.array([0.3])
    key = jax.random.PRNGKey(4)
    got = pets.particle_returns(model, obs, plans, key, "ts1", 4)
    member_key, obs_key, reward_key = jax.random.split(key, 3)
    members = pets.member_assignment(member_key, model.elites, 4, 5, "ts1")
    z_obs = jax.random.normal(obs_key, (5, 4, 1))
    z_rew = jax.random.normal(reward_key, (5, 4))
    for i in range(3):
        for p in range(4):
            s, total = obs, 0.0
            for t in range(5):
                pred = ensemble.predict(model, members[p, t], s, plans[i, t])
                s = pred.next_obs_mean + jnp.sqrt(pred.next_obs_var) * z_obs[t, p]
                total += pred.reward_mean + jnp.sqrt(pred.reward_var) * z_rew[t, p]
            np.testing.assert_allclose(got[i, p], total, rtol=1e-4, atol=1e-5)


def _model():
    cfg = pets.PRESETS["tiny"]
    state = ensemble.init(jax.random.PRNGKey(1), 1, 1, cfg.ensemble())
    return state, cfg


def test_mean_propagation_is_deterministic_and_sampling_is_not():
    model, cfg = _model()
    plans = jax.random.uniform(jax.random.PRNGKey(2), (5, cfg.horizon, 1), minval=-2, maxval=2)
    obs = jnp.array([0.5])
    returns = jax.jit(pets.particle_returns, static_argnums=(4, 5, 6))
    ret = lambda prop, seed, reward_fn=None: np.asarray(returns(
        model, obs, plans, jax.random.PRNGKey(seed), prop, 4, reward_fn))
    mean_a, mean_b = ret("mean", 0), ret("mean", 7)
    assert mean_a.shape == (5, 1)
    np.testing.assert_array_equal(mean_a, mean_b)
    for prop in ("ts1", "tsinf"):
        a, b = ret(prop, 0), ret(prop, 7)
        assert a.shape == (5, 4) and np.all(np.isfinite(a))
        assert not np.allclose(a, b)
        np.testing.assert_array_equal(a, ret(prop, 0))  # same key, same particles
    # A known reward function is used when given.
    env = envs.make("linear/scalar_a1.1")
    assert not np.allclose(ret("mean", 0, env.reward_fn), mean_a)


def test_obs_cost_lowers_each_step_by_the_quadratic_cost():
    model, cfg = _model()
    plans = jax.random.uniform(jax.random.PRNGKey(3), (4, cfg.horizon, 1), minval=-1, maxval=1)
    obs = jnp.array([0.5])
    zero = lambda s, a, s2: jnp.zeros(())
    no_cost = pets.particle_returns(model, obs, plans, jax.random.PRNGKey(0), "mean", 1, zero)
    cost = pets.particle_returns(model, obs, plans, jax.random.PRNGKey(0), "mean", 1, zero,
                                 obs_cost=jnp.array([0.3]))
    np.testing.assert_array_equal(no_cost, 0.0)
    # With a zero reward the returns are minus the cost summed along the mean rollout.
    step = lambda s, a: jnp.mean(jax.vmap(lambda m: ensemble.predict(model, m, s, a)
                                          .next_obs_mean)(model.elites), axis=0)
    s, expected = obs, []
    for plan in np.asarray(plans):
        s, total = obs, 0.0
        for a in plan:
            s = step(s, jnp.asarray(a))
            total -= 0.3 * float(s[0]) ** 2
        expected.append(total)
    np.testing.assert_allclose(np.asarray(cost)[:, 0], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one weight per"):
        pets.make(dataclasses.replace(pets.PRESETS["tiny"], obs_cost=(1.0, 1.0)), env_1d(), 1)
    with pytest.raises(ValueError, match="obs_cost"):
        pets.PETSConfig(obs_cost=(-1.0,))


def env_1d():
    return envs.make("linear/scalar_a1.1")


def test_config_validation_and_presets():
    for name in ("default", "paper", "tiny", "inverted_pendulum"):
        cfg = pets.PRESETS[name]
        assert cfg.propagation in pets.PROPAGATIONS
        cfg.ensemble()
    paper = pets.PRESETS["paper"]
    assert (paper.population, paper.elites, paper.horizon, paper.num_particles,
            paper.ensemble_members) == (400, 40, 25, 20, 5)
    # what a task without its own preset gets: CPU-sized, the known reward where there is one
    default = pets.PRESETS["default"]
    assert (default.population, default.cem_iterations, default.num_particles,
            default.use_true_reward) == (100, 3, 5, True)
    with pytest.raises(ValueError, match="propagation"):
        pets.PETSConfig(propagation="ts2")
    with pytest.raises(ValueError, match="elites"):
        pets.PETSConfig(population=10, elites=20)
    with pytest.raises(ValueError, match="multiple"):
        dataclasses.replace(pets.PRESETS["tiny"], num_particles=5)
    with pytest.raises(ValueError, match="num_elites"):
        dataclasses.replace(pets.PRESETS["tiny"], ensemble_elites=5)


def test_pets_rejects_discrete_actions():
    env = envs.make("linear/scalar_a0.5")
    discrete = envs.Environment(
        spec=envs.EnvSpec(env_id="test/discrete", obs_shape=(1,), discrete=True, num_actions=2),
        adapter_reset=env.adapter_reset, adapter_step=env.adapter_step)
    with pytest.raises(ValueError, match="discrete"):
        pets.make(pets.PRESETS["tiny"], discrete, 1)


def test_terminal_value_fits_td_targets_and_scores_the_last_state():
    from agents.pets import value as pets_value
    key = jax.random.PRNGKey(0)
    obs = jax.random.uniform(key, (512, 2), minval=-1, maxval=1)
    loop = obs[:, 0] > 0  # a self-loop with reward 1 (V = 1 / (1 - 0.5) = 2) ...
    reward = jnp.where(loop, 1.0, 0.5)  # ... or a terminal step with reward 0.5 (V = 0.5)
    state = pets_value.init(key, 2, (32, 32), 3e-3)
    stats = (jnp.zeros(2), jnp.ones(2))
    state, metrics = jax.jit(lambda s: pets_value.fit(
        s, obs, reward, obs, (~loop).astype(jnp.float32), jnp.ones(512), *stats,
        jax.random.PRNGKey(1), hidden=(32, 32), discount=0.5, learning_rate=3e-3, steps=1500,
        batch_size=128, tau=0.05))(state)
    v = np.asarray(pets_value.apply(state.params, (32, 32), obs, *stats, 0.5))
    np.testing.assert_allclose(v[np.asarray(loop)].mean(), 2.0, atol=0.15)
    np.testing.assert_allclose(v[~np.asarray(loop)].mean(), 0.5, atol=0.15)
    assert np.isfinite(float(metrics["value_loss"]))

    # In the plan score: sum_t gamma^t r_t + gamma^H V(s_H) (no termination here).
    model, cfg = _model()
    plans = jnp.zeros((3, cfg.horizon, 1))
    one = lambda s, a, s2: jnp.ones(())
    score = pets.particle_returns(model, jnp.array([0.5]), plans, key, "mean", 1, one,
                                  terminal_value=lambda s: jnp.full(s.shape[:-1], 10.0),
                                  discount=0.9)
    h = cfg.horizon
    np.testing.assert_allclose(score, (1 - 0.9 ** h) / 0.1 + 0.9 ** h * 10.0, rtol=1e-5)
