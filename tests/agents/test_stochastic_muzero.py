"""Stochastic MuZero: the straight-through code and the chance losses by hand, the masks of the
loss, acting under a legal-action mask, an update, the loop, and learning a gamble.

The fast tests run on small vector tasks (an MLP model, quick to compile); ``pgx/2048``'s
residual model takes minutes to compile on a 2-core CPU, so its update is a slow test.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import muzero, stochastic_muzero
from agents.muzero.targets import UnrollTargets
from agents.stochastic_muzero.losses import (batch_loss, chance_losses, code_perplexity,
                                             code_usage_loss, example_loss)
from core import runner
from core.loop import make_loop
from envs.api import EnvSpec, Environment
from world_models.muzero import Support
from world_models.stochastic_muzero import chance_code

TINY = stochastic_muzero.PRESETS["tiny"]
NUM_ENVS = 2


def gamble_env() -> Environment:
    """One decision, then a coin: action 0 takes 0.6 and ends the episode; action 1 tosses a
    fair coin that the next observation shows, and calling it (action = coin) earns 1, missing
    it 0. Optimum 1 (gamble, then call the coin); taking the 0.6 is the best a player that
    cannot see the coin does. Observation: one-hot of (start, heads, tails)."""

    def reset(key):
        return jnp.zeros((), jnp.int32), jnp.eye(3)[0]

    def step(phase, action, key):
        coin = jax.random.bernoulli(key).astype(jnp.int32)
        start = phase == 0
        next_phase = jnp.where(start & (action == 1), 1 + coin, 0)
        reward = jnp.where(start, jnp.where(action == 0, 0.6, 0.0),
                           (action == phase - 1).astype(jnp.float32))
        terminated = ~start | (action == 0)
        return next_phase, jnp.eye(3)[next_phase], reward, terminated

    spec = EnvSpec(env_id="test/gamble", obs_shape=(3,), discrete=True, num_actions=2,
                   max_episode_steps=2)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step)


def masked_env(num_actions: int = 6) -> Environment:
    """A task of ``num_actions`` actions with a legal-action mask (acting tests only: its
    steps are never taken)."""
    spec = EnvSpec(env_id="test/masked", obs_shape=(3,), discrete=True,
                   num_actions=num_actions, max_episode_steps=2, has_action_mask=True)
    return dataclasses.replace(gamble_env(), spec=spec,
                               legal_action_mask_fn=lambda inner: jnp.ones(num_actions, bool))


def test_config_validation_names_the_field():
    cfg = stochastic_muzero.StochasticMuZeroConfig
    with pytest.raises(ValueError, match="StochasticMuZeroConfig.codebook_size"):
        cfg(codebook_size=0)
    with pytest.raises(ValueError, match="StochasticMuZeroConfig.search"):
        cfg(search="gumbel")
    with pytest.raises(ValueError, match="StochasticMuZeroConfig.use_consistency_loss"):
        cfg(use_consistency_loss=True)
    with pytest.raises(ValueError, match="StochasticMuZeroConfig.reconstruction_loss_weight"):
        cfg(reconstruction_loss_weight=1.0)
    # MuZero's default trains with the reconstruction loss; the recipe taken from it does not
    assert muzero.PRESETS["default"].reconstruction_loss_weight > 0
    assert stochastic_muzero.PRESETS["default"].reconstruction_loss_weight == 0
    with pytest.raises(ValueError, match="StochasticMuZeroConfig.commitment_loss_weight"):
        cfg(commitment_loss_weight=-1.0)
    with pytest.raises(ValueError, match="StochasticMuZeroConfig.code_usage_loss_weight"):
        cfg(code_usage_loss_weight=-0.1)
    with pytest.raises(ValueError, match="needs a discrete action space"):
        stochastic_muzero.make(TINY, envs.make("linear/random_4x2"), 2)
    # its search backs values up with +discount: a two-player game would need -1 per ply
    with pytest.raises(ValueError, match="does not play two-player games.*--agent muzero"):
        stochastic_muzero.make(TINY, envs.make("pgx/tic_tac_toe"), 2)


def test_chance_code_is_one_hot_forward_with_the_softmax_gradient_by_hand():
    """logits (0, log 3, 0): softmax (1/5, 3/5, 1/5), code (0, 1, 0). The gradient of the
    code's first entry is that of p_0: p_0 (e_0 - p) = (4/25, -3/25, -1/25)."""
    logits = jnp.array([0.0, np.log(3.0), 0.0])
    code, onehot, probs = jax.jit(chance_code)(logits)
    np.testing.assert_allclose(code, [0.0, 1.0, 0.0], atol=1e-7)
    np.testing.assert_array_equal(onehot, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(probs, [0.2, 0.6, 0.2], rtol=1e-6)
    grad = jax.jit(jax.grad(lambda x: chance_code(x)[0][0]))(logits)
    np.testing.assert_allclose(grad, [4 / 25, -3 / 25, -1 / 25], rtol=1e-5, atol=1e-7)


def test_chance_losses_by_hand():
    """Uniform chance logits over C = 4: CE = log 4 whatever the code. Encoder softmax
    (0.7, 0.1, 0.1, 0.1) against the code e_0: 0.3^2 + 3 * 0.1^2 = 0.12; against e_1:
    0.7^2 + 0.9^2 + 2 * 0.1^2 = 1.32. Perplexity of codes used 2 and 2 times: 2."""
    probs = jnp.array([[0.7, 0.1, 0.1, 0.1]] * 2)
    codes = jnp.eye(4)[:2]
    ce, commitment = jax.jit(chance_losses)(jnp.zeros((2, 4)), codes, probs)
    np.testing.assert_allclose(ce, [np.log(4)] * 2, rtol=1e-6)
    np.testing.assert_allclose(commitment, [0.12, 1.32], rtol=1e-5)
    np.testing.assert_allclose(code_perplexity(jnp.array([2.0, 2.0, 0.0, 0.0])), 2.0,
                               rtol=1e-6)


def test_code_usage_loss_by_hand():
    """``log C - H(mean softmax)`` from the summed probabilities: 0 for a batch spread evenly
    over C = 4 codes, log 4 when all mass is on one code, log 4 - log 2 for two codes used
    equally, 0 without an observed transition. Its gradient lowers the most used code and
    raises the rest, most of all the unused ones."""
    usage = jax.jit(code_usage_loss)
    np.testing.assert_allclose(usage(jnp.full(4, 3.0)), 0.0, atol=1e-6)
    np.testing.assert_allclose(usage(jnp.array([5.0, 0.0, 0.0, 0.0])), np.log(4), rtol=1e-5)
    np.testing.assert_allclose(usage(jnp.array([2.0, 2.0, 0.0, 0.0])), np.log(2), rtol=1e-5)
    assert float(usage(jnp.zeros(4))) == 0.0
    grad = jax.grad(code_usage_loss)(jnp.array([3.0, 1.0, 0.0, 0.0]))
    assert float(grad[0]) > 0.0 > float(grad[1]) > float(grad[2]), grad
    np.testing.assert_allclose(grad[2], grad[3])


def test_batch_loss_adds_the_weighted_code_usage_loss():
    """The batch loss at ``code_usage_loss_weight`` 0.3 is the loss at 0 plus 0.3 times the
    logged ``code_usage_loss``, which is ``log C - H`` of the observed transitions' mean
    encoder softmax."""
    env = gamble_env()
    model = stochastic_muzero.build_model(TINY, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    params = jax.tree.map(lambda x: x + 0.05, params)  # off the heads' zero initialisation
    k = TINY.unroll_steps
    obs = jnp.stack([jnp.eye(3)[jnp.array([0, 1, 0, 2])], jnp.eye(3)[jnp.array([0, 2, 0, 1])]])
    actions = jnp.array([[1, 0, 1], [1, 1, 1]])
    ones = jnp.ones((2, k + 1))
    alive = jnp.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    targets = UnrollTargets(value=ones, value_mask=ones, reward=ones, reward_mask=ones,
                            policy=jnp.full((2, k + 1, 2), 0.5), policy_mask=ones, alive=alive)

    def loss_at(weight):
        cfg = dataclasses.replace(TINY, code_usage_loss_weight=weight)
        return batch_loss(params, obs, actions, targets, jnp.ones(2), model=model, cfg=cfg)

    (loss0, out0), (loss3, out3) = jax.jit(lambda: (loss_at(0.0), loss_at(0.3)))()
    usage = out3["metrics"]["code_usage_loss"]
    np.testing.assert_allclose(loss3 - loss0, 0.3 * usage, rtol=1e-4)
    probs = jax.vmap(lambda o: jax.nn.softmax(model.encode(params, o[:-1], o[1:]), -1))(obs)
    observed = alive[:, 1:]
    mean = (probs * observed[..., None]).sum((0, 1)) / observed.sum()
    np.testing.assert_allclose(usage, np.log(TINY.codebook_size)
                               + np.sum(mean * np.log(mean)), rtol=1e-4)


def test_example_loss_masks_the_chance_terms_past_the_episode_end():
    """A fresh model's chance and afterstate-value heads output zeros, so each unmasked
    transition adds CE = log C to the chance loss and log(value bins) to the Q loss. With
    ``alive = (1, 1, 0, 0)`` only transition 0 has a real successor: chance loss log 8 / K.
    The reward loss reaches the encoder through the straight-through code."""
    env = gamble_env()
    model = stochastic_muzero.build_model(TINY, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    k = TINY.unroll_steps
    obs = jnp.eye(3)[jnp.array([0, 1, 0, 2])]
    actions = jnp.array([1, 0, 1])
    ones = jnp.ones(k + 1)
    targets = UnrollTargets(value=ones, value_mask=jnp.array([1.0, 1.0, 1.0, 0.0]),
                            reward=jnp.array([0.0, 0.0, 1.0, 0.0]), reward_mask=ones,
                            policy=jnp.full((k + 1, 2), 0.5), policy_mask=ones,
                            alive=jnp.array([1.0, 1.0, 0.0, 0.0]))
    loss_fn = lambda p: example_loss(p, obs, actions, targets, model=model, cfg=TINY)  # noqa
    # Off the zero initialisation of the heads, the reward loss reaches the encoder.
    reward_grad = jax.grad(lambda p: loss_fn(p)[1]["reward_loss"])
    (loss, parts), grads = jax.jit(lambda p: (loss_fn(p), reward_grad(
        jax.tree.map(lambda x: x + 0.1, p))))(params)
    np.testing.assert_allclose(parts["chance_loss"], np.log(TINY.codebook_size) / k, rtol=1e-5)
    np.testing.assert_allclose(parts["afterstate_value_loss"],
                               np.log(TINY.value_support_size) * 3 / k, rtol=1e-5)
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(parts["code_counts"].sum(), 1.0)
    np.testing.assert_allclose(parts["code_probs"].sum(), 1.0, rtol=1e-5)
    encoder = [g for name, g in grads["params"].items() if name.startswith("encoder")]
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(encoder)) > 0.0


def test_acting_never_picks_an_illegal_action():
    """Random legal-action masks (at least one legal action each) over 6 actions and a model
    off its uniform initialisation: neither the exploring nor the greedy search takes an
    illegal action or puts visits on one."""
    env = masked_env(6)
    agent = stochastic_muzero.make(dataclasses.replace(TINY, num_simulations=12), env, 1)
    state = agent.init(jax.random.PRNGKey(0))
    state = state.replace(params=jax.tree.map(lambda x: x + 0.3, state.params))
    batch = 16
    obs = jax.random.uniform(jax.random.PRNGKey(1), (batch, 3))
    mask = jax.random.bernoulli(jax.random.PRNGKey(2), 0.4, (batch, 6)).at[:, 5].set(True)
    act = jax.jit(agent.act, static_argnums=5)
    first, carry = jnp.zeros(batch, bool), agent.initial_carry(batch)
    for explore in (True, False):
        action, _, extras = act(state, obs,
                                first, carry, jax.random.PRNGKey(3), explore,
                                legal_action_mask=mask)
        legal = np.take_along_axis(np.asarray(mask), np.asarray(action)[:, None], 1)
        assert legal.all(), explore
        assert (np.asarray(extras["search_policy"])[~np.asarray(mask)] == 0.0).all()
        np.testing.assert_allclose(extras["search_policy"].sum(-1), 1.0, rtol=1e-5)
        assert extras["root_value"].shape == (batch,)


def test_model_k_step_errors_one_step_by_hand():
    """At horizon 1 the ``observed`` reward error is the mean |r̂ - r| of one afterstate and
    dynamics step from ``h(o_t)`` with ``a_t`` and the encoder's code of ``(o_t, o_{t+1})``;
    the ``likely`` one steps with sigma's most likely code instead (here another code on some
    steps, so the two differ); the value targets are the network's values of the real
    ``o_{t+1}``, 0 where terminated."""
    from agents.stochastic_muzero import evaluation
    env = gamble_env()
    model = stochastic_muzero.build_model(TINY, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    leaves, tree = jax.tree_util.tree_flatten(params)  # off the (zero) initial heads
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    n, t = 2, 3
    obs = jax.random.normal(jax.random.PRNGKey(2), (n, t + 1, 3))
    actions = jax.random.randint(jax.random.PRNGKey(3), (n, t), 0, 2)
    rewards = jax.random.normal(jax.random.PRNGKey(4), (n, t))
    terminated = jnp.zeros((n, t), bool).at[:, -1].set(True)
    out = evaluation.model_k_step_errors(model, params, obs, actions, rewards, 1,
                                         terminated=terminated)
    assert set(out) == {"reward_observed", "value_observed", "reward_likely", "value_likely"}

    def one_step(o, o_next, a, likely):
        s = model.represent(params, o[None])
        after = model.afterstate(params, s, a[None])
        chance_logits, _ = model.afterstate_predict(params, after)
        code = (jnp.argmax(chance_logits[0]) if likely
                else jnp.argmax(model.encode(params, o[None], o_next[None])[0]))
        reward_logits, _ = model.dynamics(params, after,
                                          jax.nn.one_hot(code, model.codebook_size)[None])
        return model.reward_support.decode(reward_logits[0]), code

    codes = {}
    for likely, name in ((False, "reward_observed"), (True, "reward_likely")):
        predicted, codes[name] = jax.vmap(jax.vmap(
            lambda o, o1, a: one_step(o, o1, a, likely)))(obs[:, :-1], obs[:, 1:], actions)
        np.testing.assert_allclose(out[name]["abs_error"][0],
                                   np.abs(np.asarray(predicted - rewards)).mean(), rtol=1e-4)
    assert not np.array_equal(codes["reward_observed"], codes["reward_likely"])  # they differ
    values = np.array(jax.vmap(lambda o: model.value(params, o))(obs[:, 1:]))
    values[:, -1] = 0.0
    np.testing.assert_allclose(out["value_observed"]["target_norm"][0], np.abs(values).mean(),
                               rtol=1e-4)


def _round_trip(support: Support, x: np.ndarray) -> np.ndarray:
    """``decode(log(encode(x)))``: ``x`` itself when the support covers it, else clipped."""
    return np.asarray(support.decode(jnp.log(support.encode(jnp.asarray(x)) + 1e-30)))


def test_the_2048_preset_supports_cover_its_rewards_and_scores():
    """The preset ``pgx/2048`` gets by default (``image``): a move's reward is the sum of the
    tiles it merges, from 4 up to thousands, and a game's return reaches tens of thousands; the
    two-hot targets of both must not be clipped. The supports before this preset's (rewards
    on [-10, 10] in h-space) clipped every merge of 128 or more."""
    from experiments import presets
    name = presets.default_preset("stochastic_muzero", "pgx/2048",
                                  envs.make("pgx/2048").spec.obs_kind)
    assert name == "image"
    cfg = stochastic_muzero.PRESETS[name]
    tiles = 2.0 ** np.arange(2, 13)                      # 4 ... 4,096
    rewards = np.unique(np.concatenate([tiles, tiles[:, None] + tiles[None, :]], None))
    rewards = rewards.astype(np.float32)
    reward_support = Support(cfg.reward_support_size, cfg.reward_support_max,
                             "signed_hyperbolic")
    np.testing.assert_allclose(_round_trip(reward_support, rewards), rewards, rtol=1e-4)
    narrow = Support(21, 10.0, "signed_hyperbolic")
    assert _round_trip(narrow, np.float32([128.0]))[0] < 120
    value_support = Support(cfg.value_support_size, cfg.value_support_max, "signed_hyperbolic")
    scores = np.float32([-50_000.0, 1_000.0, 20_000.0, 50_000.0])
    np.testing.assert_allclose(_round_trip(value_support, scores), scores, rtol=1e-4)


@pytest.mark.slow
def test_trains_through_the_runner():
    """A few hundred steps of the gamble through :func:`core.runner.train`: updates taken,
    none skipped, every loss finite, the chance loss at most log C (the fresh chance head is
    uniform and learns from there), the code perplexity within [1, C]."""
    env = gamble_env()
    agent = stochastic_muzero.make(TINY, env, 4)
    result = runner.train(env, agent, runner.RunConfig(
        steps=200, num_envs=4, num_seeds=1, log_every=200, eval_every=-1, logdir=None,
        progress=False, seed=0))
    last = result.history[-1]
    assert last["env_steps"] >= 200 and int(result.state.agent.steps[0]) > 0, last
    assert last["skipped_updates"] == 0.0, last
    for name in ("loss", "value_loss", "reward_loss", "policy_loss", "afterstate_value_loss",
                 "commitment_loss"):
        assert np.isfinite(last[name]), (name, last)
    assert 0.0 <= last["chance_loss"] <= np.log(TINY.codebook_size) + 1e-4, last
    assert 1.0 <= last["code_perplexity"] <= TINY.codebook_size, last


@pytest.mark.slow
def test_one_update_on_pgx_2048_image_planes():
    """The residual model on ``pgx/2048``'s ``[4, 4, 31]`` planes: prefill, one update with
    finite metrics, a greedy action that is legal."""
    env = envs.make("pgx/2048")
    agent = stochastic_muzero.make(TINY, env, NUM_ENVS)
    fns = make_loop(env, agent, num_envs=NUM_ENVS, iterations=1, prefill_iterations=24)
    state = jax.jit(fns.prefill)(fns.init(jax.random.PRNGKey(0)))[0]
    _, _, metrics = jax.jit(agent.update)(state.agent, state.buffer, jax.random.PRNGKey(1))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    obs = state.buffer.experience.obs[:, 0]
    mask = state.buffer.experience.legal_action_mask[:, 0]
    action, _, _ = agent.act(state.agent, obs, jnp.zeros(NUM_ENVS, bool),
                             agent.initial_carry(NUM_ENVS), jax.random.PRNGKey(2), False,
                             legal_action_mask=mask)
    assert np.take_along_axis(np.asarray(mask), np.asarray(action)[:, None], 1).all()


@pytest.mark.slow
def test_learns_to_gamble_and_call_the_coin():
    """Fails if learning breaks: a player that does not call the coin it sees returns at most
    0.6 (the sure 0.6); both seeds must return 1 (gamble, then call the coin the observation
    shows). The acting search starts from the real observation of the coin, so that part holds
    whether or not the model tells the coin's sides apart; the chance model is checked apart:
    the encoder gives heads and tails different codes, and the chance head at the gamble's
    afterstate puts about half on each (a fair coin). Without the code usage loss
    (``code_usage_loss_weight=0``) the codes collapse to one on some seeds
    (docs/results/stochastic_muzero.md)."""
    env = gamble_env()
    cfg = dataclasses.replace(TINY, num_simulations=8, learning_rate=3e-3,
                              updates_per_iteration=2, prefill_steps=64, n_step=2,
                              unroll_steps=2, temperature_boundaries=(300, 600),
                              target_update_period=50, codebook_size=4)
    agent = stochastic_muzero.make(cfg, env, 4)
    result = runner.train(env, agent, runner.RunConfig(
        steps=2_500, num_envs=4, num_seeds=2, log_every=500, eval_every=2_500,
        eval_episodes=8, logdir=None, progress=False, seed=0))
    last = result.history[-1]
    assert last["eval_return_per_seed"] == [1.0, 1.0], last
    assert last["skipped_updates"] == 0.0, last
    model = stochastic_muzero.build_model(cfg, env)
    start, heads, tails = jnp.eye(3)
    for seed in range(2):
        params = jax.tree.map(lambda x: x[seed], result.state.agent.params)
        codes = jnp.argmax(model.encode(params, jnp.stack([start, start]),
                                        jnp.stack([heads, tails])), -1)
        afterstate = model.afterstate(params, model.represent(params, start[None]),
                                      jnp.array([1]))
        sigma = jax.nn.softmax(model.afterstate_predict(params, afterstate)[0][0])
        assert int(codes[0]) != int(codes[1]), (seed, codes)
        np.testing.assert_allclose(sigma[codes], [0.5, 0.5], atol=0.15, err_msg=str(seed))
