"""Sampled MuZero: the prior and the policy loss by hand, acting, an update, and learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import sampled_muzero
from agents.muzero.targets import UnrollTargets
from agents.sampled_muzero.losses import sampled_policy_loss
from agents.sampled_muzero.search import root_prior_logits
from core import runner
from core.loop import make_loop
from envs.api import EnvSpec, Environment

LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def test_config_validation_names_the_field():
    cfg = sampled_muzero.SampledMuZeroConfig
    with pytest.raises(ValueError, match="SampledMuZeroConfig.num_samples"):
        cfg(num_samples=1)
    with pytest.raises(ValueError, match="SampledMuZeroConfig.root_std_scale"):
        cfg(root_std_scale=0.5)
    with pytest.raises(ValueError, match="SampledMuZeroConfig.policy_min_std"):
        cfg(policy_min_std=0.0)
    with pytest.raises(ValueError, match="SampledMuZeroConfig.mirror_augmentation"):
        cfg(mirror_augmentation=True)
    with pytest.raises(ValueError, match="SampledMuZeroConfig.search"):  # MuZero's checks too
        cfg(search="alphazero")
    with pytest.raises(ValueError, match="discrete actions"):
        sampled_muzero.make(sampled_muzero.PRESETS["tiny"], envs.make("gymnax/CartPole-v1"), 2)


def test_root_prior_corrects_for_the_wider_sampling_distribution_by_hand():
    """pi = N(0, 1), beta = N(0, 2^2): log pi(u) - log beta(u) = log 2 - u^2/2 + u^2/8, i.e.
    log 2 = 0.6931 at u = 0 and log 2 - 1.5 = -0.8069 at u = 2 (the prior beta_hat/beta pi
    with 1/K on each sample); with beta = pi every logit is 0 (uniform)."""
    u = jnp.array([[[0.0], [2.0]]])  # [B=1, K=2, A=1]
    mean, std = jnp.zeros((1, 1)), jnp.ones((1, 1))
    np.testing.assert_allclose(root_prior_logits(u, mean, std, 2 * std),
                               [[np.log(2), np.log(2) - 1.5]], rtol=1e-6)
    np.testing.assert_allclose(root_prior_logits(u, mean, std, std), [[0.0, 0.0]], atol=1e-7)


def test_policy_loss_is_the_visit_weighted_log_likelihood_by_hand():
    """A zero head is N(0, 1) (std = min_std + softplus(offset) = 1). Step 0: samples u = 0 and
    u = 1 with visit weights 3/4 and 1/4: -(3/4 log N(0) + 1/4 log N(1)) = log sqrt(2 pi) +
    1/4 * 1/2 = 1.04394. Step 1: mean 1 (head (1, 0)), one sample at u = 1 with weight 1:
    log sqrt(2 pi) = 0.91894."""
    policy_out = jnp.array([[0.0, 0.0], [1.0, 0.0]])  # [K+1=2, 2A]
    samples = jnp.array([[[0.0], [1.0]], [[1.0], [5.0]]])  # [2, N=2, A=1]
    weights = jnp.array([[0.75, 0.25], [1.0, 0.0]])
    zeros = jnp.zeros(2)
    targets = UnrollTargets(value=zeros, value_mask=zeros, reward=zeros, reward_mask=zeros,
                            policy=weights, policy_mask=zeros + 1, alive=zeros + 1,
                            policy_actions=samples)
    got = sampled_policy_loss(policy_out, targets, min_std=0.05)
    np.testing.assert_allclose(got, [LOG_SQRT_2PI + 0.125, LOG_SQRT_2PI], rtol=1e-5)


def test_acting_shapes_bounds_and_deterministic_greedy():
    env = envs.make("linear/random_4x2")  # 2-D actions in [-2, 2]
    cfg = sampled_muzero.PRESETS["tiny"]
    assert cfg.search == "gumbel"  # the default (config docstring)
    agent = sampled_muzero.make(cfg, env, 3)
    state = agent.init(jax.random.PRNGKey(0))
    # Start from a policy far outside the bounds' centre, so squashing matters.
    state = state.replace(params=jax.tree.map(lambda p: p + 0.3, state.params))
    obs = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    act = jax.jit(agent.act, static_argnums=5)
    first = jnp.zeros(3, bool)
    carry = agent.initial_carry(3)
    actions, _, extras = act(state, obs, first, carry, jax.random.PRNGKey(2), True)
    assert actions.shape == (3, 2) and actions.dtype == jnp.float32
    assert extras["sampled_actions"].shape == (3, cfg.num_samples, 2)
    assert extras["search_policy"].shape == (3, cfg.num_samples)
    assert extras["root_value"].shape == (3,)
    np.testing.assert_allclose(extras["search_policy"].sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.abs(np.asarray(actions)) <= 2.0)
    # The taken action is one of the squashed samples.
    squashed = 2.0 * np.tanh(np.asarray(extras["sampled_actions"]))
    gap = np.abs(squashed - np.asarray(actions)[:, None]).max(-1).min(-1)
    np.testing.assert_allclose(gap, 0.0, atol=1e-5)
    other, _, _ = act(state, obs, first, carry, jax.random.PRNGKey(3), True)
    assert not np.allclose(actions, other)
    greedy = [act(state, obs, first, carry, jax.random.PRNGKey(k), False)[0] for k in (4, 5)]
    np.testing.assert_array_equal(greedy[0], greedy[1])
    assert np.all(np.abs(np.asarray(greedy[0])) <= 2.0)
    # The PUCT variant: mctx's muzero_policy over the same K samples.
    puct = sampled_muzero.make(dataclasses.replace(cfg, search="muzero"), env, 3)
    actions, _, extras = jax.jit(puct.act, static_argnums=5)(state, obs, first, carry,
                                                            jax.random.PRNGKey(2), True)
    assert actions.shape == (3, 2) and np.all(np.abs(np.asarray(actions)) <= 2.0)
    np.testing.assert_allclose(extras["search_policy"].sum(-1), 1.0, rtol=1e-5)
    # Exploration options hold a uniformly random action vector within the bounds.
    explorer = sampled_muzero.make(dataclasses.replace(cfg, explore_epsilon=1.0), env, 3)
    carry = explorer.initial_carry(3)
    actions, carry, _ = jax.jit(explorer.act, static_argnums=5)(state, obs, first, carry,
                                                               jax.random.PRNGKey(2), True)
    assert carry.action.shape == (3, 2) and carry.action.dtype == jnp.float32
    np.testing.assert_array_equal(actions, carry.action)
    assert np.all(np.abs(np.asarray(actions)) <= 2.0)


@pytest.mark.slow
def test_update_changes_parameters_with_finite_metrics():
    """One update on prefilled windows whose stored search policies and samples are filled in
    (prefill stores zeros, which the policy mask skips): every metric finite, the policy loss
    positive for a uniform policy target, the parameters changed, the observation decoder of
    the reconstruction loss among them."""
    env = envs.make("linear/scalar_a0.5")
    cfg = dataclasses.replace(sampled_muzero.PRESETS["tiny"], reconstruction_loss_weight=1.0)
    agent = sampled_muzero.make(cfg, env, 2)
    fns = make_loop(env, agent, num_envs=2, iterations=1, prefill_iterations=24)
    state = jax.jit(fns.prefill)(fns.init(jax.random.PRNGKey(0)))[0]
    experience = state.buffer.experience
    extras = dict(experience.extras)
    extras["search_policy"] = jnp.full_like(extras["search_policy"], 1.0 / cfg.num_samples)
    extras["sampled_actions"] = jax.random.normal(jax.random.PRNGKey(1),
                                                  extras["sampled_actions"].shape)
    buffer = state.buffer.replace(experience=experience.replace(extras=extras))
    new_agent, _, metrics = jax.jit(agent.update)(state.agent, buffer, jax.random.PRNGKey(2))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert float(metrics["policy_loss"]) > 0.5  # ~ log sqrt(2 pi) + 1/2 at N(0, 1)
    assert float(metrics["skipped_updates"]) == 0.0
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_agent.params,
                         state.agent.params)
    assert max(jax.tree.leaves(moved)) > 0.0
    assert max(jax.tree.leaves(moved["params"]["obs_decoder"])) > 0.0
    assert float(metrics["reconstruction_loss"]) > 0.0
    assert int(new_agent.steps) == 1


def _reach_env():
    """x starts at -0.5, x' = clip(x + a / 4, -1, 1) with a in [-1, 1]; reward 1 and the end
    of the episode once x >= 0.5 (at least 4 steps), nothing before; 12 steps at most. Only
    value targets that carry the delayed reward back (n-step, absorbing terminal) make the
    first steps' actions matter; the untrained greedy policy (mean 0) stays put: return 0."""

    def reset(key):
        x = jnp.array([-0.5], jnp.float32)
        return x, x

    def step(state, action, key):
        x = jnp.clip(state + 0.25 * jnp.clip(action, -1.0, 1.0), -1.0, 1.0)
        done = x[0] >= 0.5
        return x, x, done.astype(jnp.float32), done

    spec = EnvSpec(env_id="test/reach", obs_shape=(1,), action_shape=(1,), action_low=(-1.0,),
                   action_high=(1.0,), max_episode_steps=12)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step)


@pytest.mark.slow
@pytest.mark.parametrize("search", ["gumbel", "muzero"])
def test_learns_to_reach_a_delayed_reward(search):
    """Fails if learning breaks: random play reaches the goal in about 1 of 8 episodes; after
    800 steps (2 seeds, vmapped) both seeds' greedy evaluations reach it every time and the
    training episodes take about 5 steps (optimum 4), with either search."""
    env = _reach_env()
    cfg = dataclasses.replace(sampled_muzero.PRESETS["tiny"], search=search, num_samples=8,
                              num_simulations=16, n_step=5, discount=0.9, batch_size=32,
                              learning_rate=3e-3, updates_per_iteration=4, prefill_steps=128,
                              temperature_boundaries=(200, 400), target_update_period=50)
    agent = sampled_muzero.make(cfg, env, 4)
    result = runner.train(env, agent, runner.RunConfig(
        steps=800, num_envs=4, num_seeds=2, log_every=400, eval_every=400, eval_episodes=4,
        logdir=None, progress=False, seed=0))
    last = result.history[-1]
    assert last["eval_return_per_seed"] == [1.0, 1.0], last
    assert last["episode_length_mean"] < 7.0, last
