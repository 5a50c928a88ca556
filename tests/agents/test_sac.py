"""SAC: hand-derived critic targets, the squashed-Gaussian density, the update, and learning."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import sac
from agents.sac import losses, networks
from core import runner


def _learner(**overrides):
    cfg = dataclasses.replace(sac.PRESETS["tiny"], **overrides)
    return sac.make_learner(cfg, obs_shape=(3,), action_low=(-2.0,), action_high=(2.0,))


def _batch(key, size=16, terminated=False):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return sac.Batch(obs=jax.random.normal(k1, (size, 3)),
                     action=jax.random.uniform(k2, (size, 1), minval=-2.0, maxval=2.0),
                     reward=jax.random.normal(k3, (size,)),
                     next_obs=jax.random.normal(k4, (size, 3)),
                     terminated=jnp.full((size,), terminated))


def test_critic_target_bootstraps_unless_terminated():
    # Row 0 terminated (absorbing): y = r. Row 1 was truncated by the time limit, which is NOT
    # termination: y = r + gamma * (Qbar - alpha * log pi) = 1 + 0.9 * (10 + 0.5 * 1) = 10.45.
    target = losses.critic_target(
        reward=jnp.array([1.0, 1.0]), terminated=jnp.array([True, False]),
        next_q_min=jnp.array([10.0, 10.0]), next_log_prob=jnp.array([-1.0, -1.0]),
        alpha=jnp.asarray(0.5), discount=0.9)
    np.testing.assert_allclose(np.asarray(target), [1.0, 10.45], rtol=1e-6)


def test_critic_loss_target_is_reward_when_all_terminated():
    learner = _learner()
    state = learner.init(jax.random.PRNGKey(0))
    batch = _batch(jax.random.PRNGKey(1), terminated=True)
    args = (state.critic_params, state.target_critic_params, state.actor_params,
            state.log_alpha, batch, jax.random.PRNGKey(2))
    _, metrics = losses.critic_loss(*args, networks=learner.networks, discount=0.99,
                                    reward_scale=2.0)
    np.testing.assert_allclose(float(metrics["target_mean"]), 2.0 * float(batch.reward.mean()),
                               rtol=1e-5, atol=1e-6)
    live = batch.replace(terminated=jnp.zeros_like(batch.terminated))
    args = args[:4] + (live, args[5])
    _, live_metrics = losses.critic_loss(*args, networks=learner.networks, discount=0.99)
    assert abs(float(live_metrics["target_mean"]) - float(batch.reward.mean())) > 1e-3


def _normal_cdf(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@pytest.mark.parametrize("mean,log_std", [(0.3, math.log(0.7)), (-1.2, math.log(1.5))])
def test_squashed_log_prob_matches_numerical_density(mean, log_std):
    # p(u) = d/du P(tanh(x) <= u) = d/du Phi((atanh(u) - mean) / std), by central differences.
    std, h = math.exp(log_std), 1e-5
    for u in np.linspace(-0.95, 0.95, 13):
        cdf = lambda v: _normal_cdf((math.atanh(v) - mean) / std)  # noqa: E731
        numerical = (cdf(u + h) - cdf(u - h)) / (2 * h)
        x = jnp.array([math.atanh(u)], jnp.float32)
        log_prob = networks.squashed_gaussian_log_prob_pre_tanh(
            x, jnp.array([mean], jnp.float32), jnp.array([log_std], jnp.float32))
        np.testing.assert_allclose(float(jnp.exp(log_prob)), numerical, rtol=2e-3)


def test_squashed_sample_in_box_and_dims_add():
    mean = jnp.array([[0.1, -2.0], [3.0, 0.0]])
    log_std = jnp.array([[0.0, -1.0], [0.5, 1.0]])
    u, log_prob = networks.squashed_gaussian_sample(mean, log_std, jax.random.PRNGKey(0))
    assert u.shape == (2, 2) and log_prob.shape == (2,)
    assert bool(jnp.all(jnp.abs(u) < 1.0))
    x = jnp.arctanh(jnp.clip(u, -1 + 1e-6, 1 - 1e-6))
    per_dim = [networks.squashed_gaussian_log_prob_pre_tanh(x[:, i:i + 1], mean[:, i:i + 1],
                                                            log_std[:, i:i + 1])
               for i in range(2)]
    np.testing.assert_allclose(np.asarray(log_prob), np.asarray(per_dim[0] + per_dim[1]),
                               rtol=1e-3, atol=1e-3)
    big = jnp.array([-20.0, 0.0, 20.0])
    np.testing.assert_allclose(np.asarray(networks.log1m_tanh_sq(big))[1], 0.0, atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(networks.log1m_tanh_sq(big))))


def test_action_rescaling_round_trips():
    low, high = jnp.array([-2.0, 0.0]), jnp.array([2.0, 1.0])
    np.testing.assert_allclose(np.asarray(networks.to_env(jnp.array([-1.0, 1.0]), low, high)),
                               [-2.0, 1.0])
    a = jnp.array([0.5, 0.25])
    np.testing.assert_allclose(np.asarray(networks.to_env(networks.to_unit(a, low, high), low,
                                                          high)), np.asarray(a), rtol=1e-6)


def test_sac_update_shapes_and_polyak_targets():
    learner = _learner(tau=0.1)
    state = learner.init(jax.random.PRNGKey(0))
    update = jax.jit(sac.make_sac_update(learner))
    new, metrics = update(state, _batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2))
    assert int(new.steps) == 1
    for name, value in metrics.items():
        assert np.shape(value) == () and np.isfinite(float(value)), name
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
    expected = jax.tree_util.tree_map(lambda q, t: 0.1 * q + 0.9 * t, new.critic_params,
                                      state.target_critic_params)
    assert runner.tree_allclose(new.target_critic_params, expected)
    assert not runner.tree_allclose(new.actor_params, state.actor_params)
    # The tiny preset's actor starts near entropy 0 > target -1, so alpha must fall.
    assert float(new.log_alpha) < float(state.log_alpha)


def test_act_explores_or_takes_the_mean():
    env = envs.make("gymnax/Pendulum-v1")
    agent = sac.make(sac.PRESETS["tiny"], env, num_envs=3)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (3, 3))
    carry = agent.initial_carry(3)
    first = jnp.zeros((3,), bool)
    greedy = [agent.act(state, obs, first, carry, jax.random.PRNGKey(k), False) for k in (2, 3)]
    np.testing.assert_array_equal(np.asarray(greedy[0][0]), np.asarray(greedy[1][0]))
    sampled = [agent.act(state, obs, first, carry, jax.random.PRNGKey(k), True)[0]
               for k in (2, 3)]
    assert not np.allclose(np.asarray(sampled[0]), np.asarray(sampled[1]))
    for action in sampled + [greedy[0][0]]:
        assert action.shape == (3, 1) and bool(jnp.all(jnp.abs(action) <= 2.0))
    assert greedy[0][1].shape == (3,) and greedy[0][2] == {}


def test_config_validation_and_discrete_rejection():
    with pytest.raises(ValueError, match="SACConfig.tau"):
        sac.SACConfig(tau=0.0)
    with pytest.raises(ValueError, match="SACConfig.discount"):
        sac.SACConfig(discount=1.0)
    with pytest.raises(ValueError, match="SACConfig.actor_hidden"):
        sac.SACConfig(actor_hidden=())
    env = envs.make("gymnax/Pendulum-v1")
    discrete = envs.Environment(
        spec=envs.EnvSpec(env_id="test/discrete", obs_shape=(3,), discrete=True, num_actions=2),
        adapter_reset=env.adapter_reset, adapter_step=env.adapter_step)
    with pytest.raises(ValueError, match="discrete"):
        sac.make(sac.PRESETS["tiny"], discrete, 1)


@pytest.mark.slow
def test_sac_learns_pendulum():
    # Random actions score about -1200..-1500 per 200-step episode; swing-up policies about
    # -150. Greedy evaluations during SAC's learning on Pendulum dip transiently (one seed went
    # -160 -> -780 -> back), so the test takes the best of the last three evaluations. Measured
    # on 2 CPU cores (8 eval episodes): seeds 0-7 all had an evaluation above -200 within
    # 4000-6000 steps; seed 0 gives -415, -123, -106.
    env = envs.make("gymnax/Pendulum-v1")
    agent = sac.make(dataclasses.replace(sac.PRESETS["pendulum_v1"], updates_per_step=4), env,
                     num_envs=4)
    cfg = runner.RunConfig(steps=6_000, num_envs=4, seed=0, log_every=1_000, eval_every=1_000,
                           eval_episodes=8, progress=False)
    result = runner.train(env, agent, cfg)
    first = result.history[0]["episode_return_mean"]
    evals = [r["eval_return_mean"] for r in result.history if "eval_return_mean" in r]
    assert first < -900, first
    assert max(evals[-3:]) > -400, (first, evals)
