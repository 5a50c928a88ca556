"""DreamerV3 agent: returns and normaliser by hand, policy maths, config, and a learning test."""

from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents.dreamer import PRESETS, DreamerConfig, make, schedule_for
from agents.dreamer import actor_critic as ac
from agents.dreamer.agent import Dreamer
from core import replay, rlmath
from core.types import Transition
from envs.api import EnvSpec
from world_models import dreamer_nets as nets
from world_models import rssm
from world_models.dreamer_wm import WorldModel, first_steps
from world_models.rssm import features


def test_lambda_returns_and_weights_by_hand():
    # states s_0..s_3 with (reward, continue logit, value); rewards / continues of s_1..s_3
    # drive R_0..R_2; s_3 is terminal.
    heads = jnp.array([[0.0, 5.0, 10.0], [1.0, 5.0, 10.0], [2.0, 5.0, 20.0],
                       [3.0, -5.0, 30.0]])

    def targets(h, **kw):
        return ac.targets(h[1:, 0], h[:, 1], h[:, 2], discount=0.9, lambda_=0.5, **kw)

    out = targets(heads, contdisc=False)
    # R_2 = r_3 + 0.9 c_3 v_3 = 3 (c_3 = 0)
    # R_1 = r_2 + 0.9 c_2 (0.5 v_2 + 0.5 R_2) = 2 + 0.9 (10 + 1.5) = 12.35
    # R_0 = r_1 + 0.9 c_1 (0.5 v_1 + 0.5 R_1) = 1 + 0.9 (5 + 6.175) = 11.0575
    np.testing.assert_allclose(out["ret"], [11.0575, 12.35, 3.0], rtol=1e-5)
    # w_k = 0.9^k c_1 ... c_k (the 2023 code's cumprod(discount c) / discount)
    np.testing.assert_allclose(out["weight"], [1.0, 0.9, 0.81], rtol=1e-6)
    np.testing.assert_allclose(out["cont"], [1.0, 1.0, 0.0])
    terminal = heads.at[1, 1].set(-5.0)  # s_1 terminal: later steps get weight 0
    np.testing.assert_allclose(targets(terminal, contdisc=False)["weight"], [1.0, 0.0, 0.0])
    # contdisc (2024): c_k = sigmoid(logit) carries the discount; w_k = c_0 ... c_k.
    c, d = 1 / (1 + np.exp(-5.0)), 1 / (1 + np.exp(5.0))
    out = targets(heads)
    r2 = 3 + d * 30
    r1 = 2 + c * (0.5 * 20 + 0.5 * r2)
    r0 = 1 + c * (0.5 * 10 + 0.5 * r1)
    np.testing.assert_allclose(out["ret"], [r0, r1, r2], rtol=1e-5)
    np.testing.assert_allclose(out["weight"], [c, c * c, c ** 3], rtol=1e-5)
    np.testing.assert_allclose(out["cont"], [c, c, d], rtol=1e-5)


def test_imagine_is_time_major_and_its_heads_match_the_states():
    """``imagine`` keeps s_0..s_{H-1} in ``feats``, s_H in ``last``, and its in-scan reward
    and continue heads are those of s_1..s_H (continue: s_0..s_H); the block-diagonal core
    (``blocks`` 2 in ``tiny``) reproduces the dense form of its block-linear map."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = PRESETS["tiny"]
    dreamer = Dreamer(cfg, env)
    state = dreamer.init(jax.random.PRNGKey(0))
    n, h = 3, cfg.horizon
    starts = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape),
                                    dreamer.model.initial())
    traj = jax.jit(lambda s, k: ac.imagine(dreamer.model, s.wm_params, dreamer.actor,
                                           s.actor_params, starts, k, h, False))(
        state, jax.random.PRNGKey(1))
    assert traj["feats"].shape == (h, n, dreamer.feat_dim)
    assert traj["last"].shape == (n, dreamer.feat_dim)
    np.testing.assert_allclose(traj["feats"][0], features(starts))
    heads = jax.vmap(jax.vmap(lambda f: dreamer.model.apply(
        state.wm_params, f, method=WorldModel.reward_continue)))
    every = jnp.concatenate([traj["feats"], traj["last"][None]])  # [H+1, N, F]
    rew_logits, cont_logit = heads(every)
    np.testing.assert_allclose(traj["reward"], nets.SUPPORT.decode(rew_logits)[1:], atol=1e-5)
    np.testing.assert_allclose(traj["cont_logit"], cont_logit, atol=1e-5)
    w = state.wm_params["params"]["rssm"]["dyn_hidden"]["kernel"]  # [blocks, n_in, n_out]
    x = jax.random.normal(jax.random.PRNGKey(2), (w.shape[0], w.shape[1]))
    own = w.shape[1] - 5
    dense = jnp.einsum("gi,gio->go", x, w)
    split = rssm.BlockLinear(w.shape[0], w.shape[2]).apply(
        {"params": {"kernel": w, "bias": jnp.zeros(w.shape[::2])}}, x[:, :own],
        jnp.broadcast_to(x[0, own:], (5,)))
    shared = x.at[:, own:].set(x[0, own:])
    np.testing.assert_allclose(split, jnp.einsum("gi,gio->go", shared, w), rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(dense, split)  # a different shared input changes the output


@pytest.mark.slow
def test_backprop_actor_objective_subtracts_the_value_baseline():
    """The 2023 backprop objective is ``(R_k - v(s_k)) / S`` with both terms live: R_0 does
    not depend on s_0, so the only gradient reaching s_0's features is the baseline's."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = PRESETS["tiny"]
    dreamer = Dreamer(cfg, env)
    state = dreamer.init(jax.random.PRNGKey(0))
    n = 4
    starts = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape),
                                    dreamer.model.initial())
    traj = ac.imagine(dreamer.model, state.wm_params, dreamer.actor, state.actor_params, starts,
                      jax.random.PRNGKey(1), cfg.horizon, False)
    critic_params = dreamer.critic.init(jax.random.PRNGKey(2), traj["last"])
    # a critic that is not zero everywhere (the two-hot head starts at zero)
    critic_params = jax.tree_util.tree_map(
        lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(3), x.shape), critic_params)
    ret_state = (jnp.zeros(()), jnp.zeros(()), jnp.zeros((), jnp.int32))

    def actor_loss(feats):
        loss, _, _, _, metrics = ac.actor_critic_loss(
            state.actor_params, critic_params, critic_params, dict(traj, feats=feats),
            ret_state, actor=dreamer.actor, critic=dreamer.critic, cfg=cfg, backprop=True)
        return loss, metrics["return_scale"]

    grad0, scale = jax.grad(actor_loss, has_aux=True)(traj["feats"])
    grad0 = grad0[0]  # [N, F]
    weight0 = ac.targets(traj["reward"][:, 0], traj["cont_logit"][:, 0], jnp.zeros(
        cfg.horizon + 1), discount=cfg.discount, lambda_=cfg.lambda_,
        contdisc=cfg.contdisc)["weight"][0]
    value0 = jax.grad(lambda f: nets.SUPPORT.decode(dreamer.critic.apply(critic_params, f)).sum())
    expected = weight0 * value0(traj["feats"][0]) / (scale * cfg.horizon * n)
    assert float(jnp.abs(expected).max()) > 1e-4
    np.testing.assert_allclose(grad0[0], expected[0], rtol=1e-4, atol=1e-7)


def test_replay_returns_by_hand():
    # a window of 4 steps; the episode terminates at t = 2, a new one starts at t = 3
    reward, boot = jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([10.0, 20.0, 30.0, 40.0])
    term = jnp.array([False, False, True, False])
    first = jnp.array([False, False, False, True])
    ret, mask = ac.replay_returns(reward, term, first, boot, discount=0.9, lambda_=0.8)
    # R_3 = boot_3 (left out); R_2 = r_2 (terminal); R_1 = 2 + 0.9 (0.2 * 30 + 0.8 * 3);
    # R_0 = 1 + 0.9 (0.2 * 20 + 0.8 R_1)
    r1 = 2 + 0.9 * (0.2 * 30 + 0.8 * 3)
    np.testing.assert_allclose(ret, [1 + 0.9 * (0.2 * 20 + 0.8 * r1), r1, 3.0, 40.0], rtol=1e-6)
    np.testing.assert_allclose(mask, [1, 1, 1, 0])
    # a truncation at t = 2 has no successor state: R_2 = boot_2 is left out of the loss and
    # the steps before it bootstrap on it
    reward_t = reward.at[2].set(2.5)
    ret, mask = ac.replay_returns(reward_t, jnp.zeros(4, bool), first, boot, discount=0.9,
                                  lambda_=0.8)
    r1 = 2 + 0.9 * 30
    np.testing.assert_allclose(ret, [1 + 0.9 * (0.2 * 20 + 0.8 * r1), r1, 30.0, 40.0],
                               rtol=1e-6)
    np.testing.assert_allclose(mask, [1, 1, 0, 0])
    # one episode through the window: the recursion starts from the last step's bootstrap
    ret, mask = ac.replay_returns(reward, jnp.zeros(4, bool), jnp.zeros(4, bool), boot,
                                  discount=0.9, lambda_=0.8)
    r2 = 3 + 0.9 * 40
    r1 = 2 + 0.9 * (0.2 * 30 + 0.8 * r2)
    np.testing.assert_allclose(ret, [1 + 0.9 * (0.2 * 20 + 0.8 * r1), r1, r2, 40.0], rtol=1e-6)
    np.testing.assert_allclose(mask, [1, 1, 1, 0])
    # constant reward 1 and a bootstrap at its fixed point: every target is that value
    value = 1 / (1 - 0.9)
    ret, _ = ac.replay_returns(jnp.ones(32), jnp.zeros(32, bool), jnp.zeros(32, bool),
                               jnp.full(32, value), discount=0.9, lambda_=0.95)
    np.testing.assert_allclose(ret, value, rtol=1e-5)


def test_percentile_scale_by_hand():
    ret = jnp.arange(101.0)  # P5 = 5, P95 = 95
    state = (jnp.zeros(()), jnp.zeros(()), jnp.zeros((), jnp.int32))
    scale, (lo, hi, n) = ac.percentile_scale(ret, state, 0.99)
    np.testing.assert_allclose([lo, hi, n], [0.05, 0.95, 1], rtol=1e-5)
    np.testing.assert_allclose(scale, 1.0)  # no bias correction: max(1, 0.95 - 0.05)
    scale, _ = ac.percentile_scale(ret * 100, (lo, hi, n), 0.99)
    np.testing.assert_allclose(scale, 0.99 * 0.9 + 0.01 * 9000 - 0.0, rtol=1e-4)
    scale, _ = ac.percentile_scale(ret * 0.001, state, 0.99)
    np.testing.assert_allclose(scale, 1.0)  # max(1, 0.0009)


def test_policy_log_prob_and_entropy_closed_forms():
    logits = jnp.log(jnp.array([0.2, 0.8]))
    np.testing.assert_allclose(ac.policy_log_prob(logits, jnp.array([0.0, 1.0]), True),
                               np.log(0.8), rtol=1e-6)
    np.testing.assert_allclose(ac.policy_entropy(logits, True),
                               -(0.2 * np.log(0.2) + 0.8 * np.log(0.8)), rtol=1e-6)
    out = (jnp.array([0.5]), jnp.array([2.0]))
    np.testing.assert_allclose(ac.policy_log_prob(out, jnp.array([1.5]), False),
                               -0.125 - np.log(2.0) - 0.5 * np.log(2 * np.pi), rtol=1e-6)
    np.testing.assert_allclose(ac.policy_entropy(out, False),
                               np.log(2.0) + 0.5 * np.log(2 * np.pi * np.e), rtol=1e-6)


def test_schedule_from_train_ratio_and_config_errors():
    cfg = DreamerConfig(batch_size=16, seq_len=64, train_ratio=1024.0)
    assert schedule_for(cfg, 1).updates_per_iteration == 1
    assert schedule_for(cfg, 4).updates_per_iteration == 4
    low = dataclasses.replace(cfg, train_ratio=64.0)
    assert schedule_for(low, 4).env_steps_per_iteration == 4
    with pytest.raises(ValueError, match="DreamerConfig.blocks"):
        DreamerConfig(deter=100, blocks=8)
    with pytest.raises(ValueError, match="DreamerConfig.optimizer"):
        DreamerConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="DreamerConfig.compute_dtype"):
        DreamerConfig(compute_dtype="float16")
    # rewards of a two-player game are the mover's: one return over plies mixes the sides
    with pytest.raises(ValueError, match="does not play two-player games.*--agent muzero"):
        make(PRESETS["tiny"], envs.make("pgx/connect_four"), 2)


def test_size_presets_and_variants():
    assert PRESETS["12m"].deter == 2048 and PRESETS["200m"].classes == 64
    assert PRESETS["1m_2023"].kl_dyn == 0.5 and PRESETS["1m"].kl_dyn == 1.0
    assert PRESETS["1m"].contdisc and not PRESETS["1m_2023"].contdisc
    assert PRESETS["1m"].actor_unimix == 0.0 and PRESETS["1m_2023"].actor_unimix == 0.01


# The official DreamerV3 (danijar/dreamerv3 e3f02248, `--configs dmc_proprio size<N>`) on DMC
# cartpole_swingup prints these trainable parameter counts (world model, policy and value;
# docs/results/dreamer.md); image: `dmc_vision size1m`, 64x64x3 frames.
OFFICIAL_COUNTS = {"1m": 637_446, "12m": 9_724_422, "25m": 21_762_566, "50m": 38_584_838,
                   "100m": 86_581_766, "200m": 153_715_206}
CARTPOLE_SWINGUP = EnvSpec(env_id="dmc/cartpole_swingup", obs_shape=(5,), discrete=False,
                           action_shape=(1,), action_low=(-1.0,), action_high=(1.0,))


@pytest.mark.parametrize("size", sorted(OFFICIAL_COUNTS))
def test_parameter_count_equals_the_official_code(size):
    env = types.SimpleNamespace(spec=CARTPOLE_SWINGUP)  # Dreamer reads only the spec
    assert Dreamer(PRESETS[size], env).param_count() == OFFICIAL_COUNTS[size]
    if size == "1m":
        assert Dreamer(PRESETS["1m_2023"], env).param_count() == OFFICIAL_COUNTS[size]
        image = dataclasses.replace(CARTPOLE_SWINGUP, obs_shape=(64, 64, 3), obs_dtype=np.uint8,
                                    obs_kind=None, obs_range=None)
        assert Dreamer(PRESETS[size], types.SimpleNamespace(spec=image)).param_count() == 685_876


def _bandit_batch(key, spec, b, t):
    """Replay-like windows where the reward equals the (binary) action taken."""
    obs_key, act_key, first_key = jax.random.split(key, 3)
    obs = jax.random.normal(obs_key, (b, t + 1) + tuple(spec.obs_shape)) * 0.1
    action = jax.random.randint(act_key, (b, t), 0, 2)
    flag = jnp.zeros((b, t), bool)
    return Transition(obs=obs[:, :-1], action=action, reward=action.astype(jnp.float32),
                      next_obs=obs[:, 1:], terminated=flag, truncated=flag,
                      is_first=jax.random.bernoulli(first_key, 0.1, (b, t)), extras={})


def _layer_outputs(tree):
    """Outputs of every Dense / BlockLinear / norm layer in flax ``intermediates``."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        names = [str(getattr(p, "key", "")) for p in path]
        if any(n.startswith(("Dense_", "RMSNorm_", "gru", "dyn_hidden")) for n in names):
            out.append(leaf)
    return out


def test_replay_context_starts_windows_from_the_stored_state():
    """With ``replay_context`` a window's first state is the stored one (round-tripped through
    its bfloat16 / class-index entry), except where the entry is not valid or the step starts
    an episode: there it is the reset posterior, as without replay context, and only there is
    the first observation's reconstruction trained."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(PRESETS["tiny"], batch_size=4, seq_len=3, horizon=2)
    plain = Dreamer(cfg, env)
    dreamer = Dreamer(dataclasses.replace(cfg, replay_context=True), env)
    key = jax.random.PRNGKey(0)
    state = dreamer.init(key)
    batch = _bandit_batch(key, env.spec, 4, 3)
    batch = batch.replace(is_first=batch.is_first.at[:, 0].set(jnp.array([0, 0, 1, 0], bool)))
    stored = rssm.RSSMState(
        deter=jax.random.normal(key, (4, 3, cfg.deter)),
        stoch=jax.nn.one_hot(jax.random.randint(key, (4, 3, cfg.groups), 0, cfg.classes),
                             cfg.classes), logits=jnp.zeros((4, 3, cfg.groups, cfg.classes)))
    entry = dreamer.context_entry(stored)
    assert entry["deter"].dtype == jnp.bfloat16 and entry["stoch"].dtype == jnp.uint8
    entry["valid"] = entry["valid"].at[:, 0].set(jnp.array([1, 0, 1, 1], bool))
    loss = jax.jit(lambda m, b: m.world_model_loss(state.wm_params, b, key), static_argnums=0)
    _, (with_context, metrics) = loss(dreamer, batch.replace(extras=entry))
    _, (reset, _) = loss(plain, batch)
    used = np.array([True, False, False, True])  # valid and not an episode's first step
    assert float(metrics["context_fraction"]) == 0.5
    back = dreamer.context_state(jax.tree_util.tree_map(lambda x: x[:, 0], entry))
    np.testing.assert_array_equal(with_context.deter[used, 0], back.deter[used])
    np.testing.assert_array_equal(with_context.stoch[used, 0], stored.stoch[used, 0])
    np.testing.assert_allclose(back.deter, stored.deter[:, 0], rtol=1e-2)  # bfloat16
    np.testing.assert_allclose(with_context.deter[~used, 0], reset.deter[~used, 0], rtol=1e-6)
    assert not np.allclose(with_context.deter[used, 0], reset.deter[used, 0])
    firsts = jax.vmap(first_steps)({"is_first": batch.is_first,
                                    "has_context": entry["valid"][:, 0]})
    np.testing.assert_array_equal(np.asarray(firsts[:, 0]), ~used)


def _replay_context_agent(**changes):
    """A tiny CartPole agent with ``replay_context`` (and ``changes``), its initial state, one
    acting step's carry and extras, and a replay of 10 steps whose context entries are zero
    (not valid), as the prefill writes them."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(PRESETS["tiny"], batch_size=4, seq_len=4, horizon=2,
                              replay_context=True, **changes)
    agent, dreamer = make(cfg, env, 2), Dreamer(cfg, env)
    key = jax.random.PRNGKey(0)
    state = agent.init(key)
    obs = jax.random.normal(key, (2,) + tuple(env.spec.obs_shape))
    _, carry, extras = agent.act(state, obs, jnp.array([True, False]), agent.initial_carry(2),
                                 key, True)
    zero = jax.tree_util.tree_map(lambda x: jnp.zeros_like(x)[:, None], extras)  # as prefill
    steps = [_bandit_batch(jax.random.PRNGKey(t), env.spec, 2, 1).replace(extras=zero)
             for t in range(10)]  # leaves [envs 2, time 1, ...]
    buffer_state = agent.buffer.init(jax.tree_util.tree_map(lambda x: x[0, 0], steps[0]))
    for step in steps:
        buffer_state = agent.buffer.add(buffer_state, step)
    return agent, dreamer, state, key, carry, extras, buffer_state


def test_replay_context_acting_stores_the_posterior_it_acts_from():
    """Acting stores the posterior it acts from, as a valid entry. With ``obs_norm`` too, the
    update traces, and keeps the stored entries' and the moments' shapes (the slow tests below
    compile and check it)."""
    agent, dreamer, state, key, carry, extras, buffer_state = _replay_context_agent(
        obs_norm=True)
    chex_equal = jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), extras,
                                        dreamer.context_entry(carry.state))
    assert all(jax.tree_util.tree_leaves(chex_equal)) and bool(extras["valid"].all())
    new, written, _ = jax.eval_shape(agent.update, state, buffer_state, key)
    shapes = lambda tree: jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), tree)  # noqa
    assert shapes(written.experience.extras) == shapes(buffer_state.experience.extras)
    assert shapes(new.obs_moments) == shapes(state.obs_moments)


@pytest.mark.slow
def test_replay_context_updates_rewrite_the_posteriors():
    """An update rewrites, at every replayed step but each window's first, the posterior that
    the update computed there (one window's entry per step where windows overlap), and leaves
    other steps as they were. Slow: it compiles a whole update of its own."""
    agent, dreamer, state, key, _, _, buffer_state = _replay_context_agent()
    _, written, _ = jax.jit(agent.update)(state, buffer_state, key)

    sample_key, learn_key = jax.random.split(key)
    batch, (rows, times) = replay.sample_windows(buffer_state, sample_key, 4, 4)
    # the update's posteriors: its world-model loss (key: the first half of its learn key)
    # before the step, computed here without the gradients, which do not change them
    wm_key = jax.random.split(learn_key)[0]
    states = jax.jit(lambda p, b: dreamer.world_model_loss(p, b, wm_key)[1][0])(
        state.wm_params, batch)
    entry = jax.tree_util.tree_map(np.asarray, dreamer.context_entry(states))
    stored = jax.tree_util.tree_map(np.asarray, written.experience.extras)
    winner = {}
    for b in range(4):
        for t in range(1, 4):
            winner.setdefault((int(rows[b]), int(times[b, t])), (b, t))
    assert len(winner) >= 4
    for (row, time), (b, t) in winner.items():
        assert stored["valid"][row, time]
        np.testing.assert_array_equal(stored["stoch"][row, time], entry["stoch"][b, t])
        np.testing.assert_allclose(stored["deter"][row, time].astype(np.float32),
                                   entry["deter"][b, t].astype(np.float32), rtol=2e-2,
                                   atol=1e-3)
    assert int(stored["valid"].sum()) == len(winner)  # nothing else written


@pytest.mark.slow
def test_bfloat16_compute_dtype():
    """bfloat16: the layers compute in bf16 from the same float32 parameters, the heads' outputs
    are float32 and close to float32's, and an update is finite with float32 parameters and
    optimiser states; float32 (the default) computes in float32."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(PRESETS["tiny"], batch_size=2, seq_len=4, horizon=3)
    key = jax.random.PRNGKey(0)
    obs = jax.random.normal(key, env.spec.obs_shape)
    outputs, states = {}, {}
    for dtype in ("float32", "bfloat16"):
        dreamer = Dreamer(dataclasses.replace(cfg, compute_dtype=dtype), env)
        states[dtype] = state = jax.jit(dreamer.init)(key)
        heads, inter = dreamer.model.apply(state.wm_params, obs, jnp.array([1.0, 0.0]), key,
                                           capture_intermediates=True, mutable=["intermediates"])
        layers = _layer_outputs(inter)
        assert len(layers) >= 10
        assert all(x.dtype == jnp.dtype(dtype) for x in layers), {x.dtype for x in layers}
        assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(heads))
        outputs[dtype] = heads
    chex_equal = jax.tree_util.tree_map(lambda a, b: bool((a == b).all()),
                                        states["float32"].wm_params, states["bfloat16"].wm_params)
    assert all(jax.tree_util.tree_leaves(chex_equal))
    for got, want in zip(jax.tree_util.tree_leaves(outputs["bfloat16"]),
                         jax.tree_util.tree_leaves(outputs["float32"])):
        np.testing.assert_allclose(got, want, atol=0.05 * max(1.0, float(jnp.abs(want).max())))

    state = states["bfloat16"]
    batch = _bandit_batch(key, env.spec, cfg.batch_size, cfg.seq_len)
    new, metrics = jax.jit(dreamer.update)(state, batch, key)
    for tree in (new.wm_params, new.actor_params, new.critic_params, new.wm_opt):
        assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree_util.tree_leaves(tree))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert int(metrics["skipped_updates"]) == 0
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), new.wm_params,
                                   state.wm_params)
    assert max(jax.tree_util.tree_leaves(moved)) > 0


@pytest.fixture(scope="module")
def bandit_run():
    """300 updates on replay-like windows whose reward is the action taken."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(PRESETS["tiny"], batch_size=8, seq_len=8, horizon=5,
                              wm_lr=3e-3, actor_lr=3e-3, critic_lr=3e-3)
    agent = make(cfg, env, 4)
    dreamer = Dreamer(cfg, env)

    @jax.jit
    def run(key):
        init_key, loop_key, obs_key, act_key = jax.random.split(key, 4)

        def body(state, k):
            batch_key, update_key = jax.random.split(k)
            batch = _bandit_batch(batch_key, env.spec, cfg.batch_size, cfg.seq_len)
            state, metrics = dreamer.update(state, batch, update_key)
            return state, metrics["imag_reward"]

        state, imag_reward = jax.lax.scan(body, agent.init(init_key),
                                          jax.random.split(loop_key, 300))
        obs = jax.random.normal(obs_key, (16,) + tuple(env.spec.obs_shape)) * 0.1

        def act(carry, first):  # two steps: reset, then from the carried state and action
            action, carry, _ = agent.act(state, obs, jnp.full((16,), first), carry, act_key,
                                         False)
            return carry, action

        carry, actions = jax.lax.scan(act, agent.initial_carry(16), jnp.array([True, False]))
        logits = dreamer.actor.apply(state.actor_params, features(carry.state))
        return (actions[0], actions[1], jax.nn.softmax(logits)[:, 1], imag_reward,
                state.wm_params, agent.init(init_key).wm_params, state)

    return dreamer, run(jax.random.PRNGKey(0))


@pytest.mark.slow
def test_learns_to_pick_the_rewarding_action(bandit_run):
    """World model + imagination + actor: reward = action; greedy policy must pick action 1."""
    _, (action, action2, prob_one, imag_reward, *_) = bandit_run
    assert float(action.mean()) >= 0.9, action
    assert float(action2.mean()) >= 0.9, action2
    # the initial policy is uniform up to 1e-3 (output init x 0.01): learning must move it
    # clearly towards action 1
    assert float(prob_one.mean()) > 0.55, prob_one
    assert float(imag_reward[-10:].mean()) > 0.35, imag_reward[-10:]


@pytest.mark.slow
def test_rssm_compounding_error_shapes_and_learning_lowers_reward_error(bandit_run):
    from agents.dreamer.evaluation import rssm_k_step_errors
    dreamer, (*_, trained, initial, _) = bandit_run
    key = jax.random.PRNGKey(3)
    batch = _bandit_batch(key, dreamer.spec, 4, 8)  # 4 trajectories of 8 steps, reward = action
    obs = jnp.concatenate([batch.obs, batch.next_obs[:, -1:]], axis=1)
    actions = jax.nn.one_hot(batch.action, 2)
    errors = lambda params: rssm_k_step_errors(dreamer, params, obs, actions, batch.reward,
                                               3, key)
    before, after = errors(initial), errors(trained)
    for res in (before, after):
        assert res["obs"]["num_starts"] == 4 * (8 - 3 + 1)
        assert len(res["obs"]["abs_error"]) == len(res["reward"]["abs_error"]) == 3
        assert np.all(np.isfinite(res["obs"]["abs_error"]))
        assert np.isfinite(res["reconstruction_abs_error"])
    # The untrained reward head predicts exactly 0 (zero-initialised output layer), so its k-step
    # error is the mean real reward r_{t+k-1} over the starts t = 0..5: checks the alignment.
    rewards = np.asarray(batch.reward)
    expected = [rewards[:, k - 1:k - 1 + 6].mean() for k in (1, 2, 3)]
    np.testing.assert_allclose(before["reward"]["abs_error"], expected, rtol=1e-5)
    # Trained on reward = action, the imagined reward after the real action is clearly closer.
    assert after["reward"]["abs_error"][0] < 0.8 * before["reward"]["abs_error"][0], after


def test_discounted_returns_stop_at_the_episode_end():
    from agents.dreamer.evaluation import discounted_returns
    rewards = np.array([[1.0, 1.0, 1.0, 5.0], [2.0, 3.0, 0.0, 0.0]])
    valid = np.array([[True, True, True, False], [True, False, False, False]])
    np.testing.assert_allclose(discounted_returns(rewards, valid, 0.5),
                               [[1.75, 1.5, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]])


@pytest.mark.slow
def test_value_calibration_aligns_the_reward_head_with_the_real_rewards(bandit_run):
    """Trained on reward = action, the reward head's prediction on the posterior after each
    action follows the real reward (a head read one step off would be uncorrelated with it, as
    the actions are independent); the untrained head predicts exactly 0."""
    from agents.dreamer.evaluation import discounted_returns, value_calibration
    dreamer, (*_, initial_wm, state) = bandit_run
    key = jax.random.PRNGKey(5)
    batch = _bandit_batch(key, dreamer.spec, 4, 8)
    obs = jnp.concatenate([batch.obs, batch.next_obs[:, -1:]], axis=1)
    actions = jax.nn.one_hot(batch.action, 2)
    valid = np.ones((4, 8), bool)
    valid[0, 5:] = False  # episode 0 ends at step 4
    ended = np.array([True, False, True, True])
    out = value_calibration(dreamer, state, obs, actions, batch.reward, valid, ended, key)
    rewards = np.asarray(batch.reward)
    reward = out["reward"]
    assert reward["correlation"] > 0.8, reward
    assert reward["num_events"] == int(rewards[valid].sum()) > 0
    assert reward["real_at_events"] == 1.0 and reward["predicted_at_events"] > 0.7, reward
    np.testing.assert_allclose(reward["real_mean"], rewards[valid].mean(), rtol=1e-6)
    value = out["value"]
    done = valid & ended[:, None]
    assert value["num_steps"] == int(done.sum()) == 5 + 8 + 8
    np.testing.assert_allclose(
        value["return_mean"],
        discounted_returns(rewards, valid, dreamer.cfg.discount)[done].mean(), rtol=1e-6)
    # the critic's value of the posterior of o_t (not of o_{t+1}), over the terminated steps
    from agents.dreamer.evaluation import _unpack, filtered_states
    cfg = dreamer.cfg
    packed = filtered_states(dreamer, state.wm_params, obs, actions, key)
    feats = features(_unpack(packed[:, :-1], cfg.deter, cfg.groups, cfg.classes))
    values = np.asarray(nets.SUPPORT.decode(dreamer.critic.apply(state.critic_params, feats)))
    # (one compiled program against op by op: the two-hot mean over bins up to symexp(20)
    # magnifies rounding in the small probabilities)
    np.testing.assert_allclose(value["critic_mean"], values[done].mean(), rtol=1e-3)
    shifted = features(_unpack(packed[:, 1:], cfg.deter, cfg.groups, cfg.classes))
    other = np.asarray(nets.SUPPORT.decode(dreamer.critic.apply(state.critic_params, shifted)))
    # the test tells them apart (0.074 apart with these seeds)
    assert abs(other[done].mean() - values[done].mean()) > 5e-3 * abs(values[done].mean())
    untrained = value_calibration(dreamer, state.replace(wm_params=initial_wm), obs, actions,
                                  batch.reward, valid, ended, key)["reward"]
    assert untrained["predicted_mean"] == 0.0 and untrained["correlation"] is None


def test_persistence_errors_score_the_unchanged_observation():
    from agents.dreamer.evaluation import persistence_errors
    obs = np.zeros((1, 4, 2))
    obs[0, :, 0] = [1.0, 2.0, 4.0, 7.0]  # o_t; differences 1, 2, 3
    out = persistence_errors(obs, 2)
    # k = 1: starts t = 0, 1 (T - H + 1 = 2): errors 1, 2 against norms 2, 4
    np.testing.assert_allclose(out["abs_error"], [1.5, 4.0])  # k = 2: errors 3, 5
    np.testing.assert_allclose(out["pooled_relative_error"], [1.5 / 3.0, 4.0 / 5.5])
    masked = persistence_errors(obs, 2, valid=np.array([[True, False, True]]))
    # only start 0 at k = 1 (transition 0 valid); no start at k = 2 has both transitions valid
    assert masked["abs_error"][0] == 1.0 and np.isnan(masked["abs_error"][1])


def test_play_samples_the_actor_only_when_asked():
    """``experiments.evaluate --sample-actions`` plays with the actor's samples (``explore``),
    the default with its mode."""
    from agents.dreamer import evaluation
    env = envs.make("gymnax/CartPole-v1")
    dreamer = Dreamer(PRESETS["tiny"], env)
    state = dreamer.init(jax.random.PRNGKey(0))
    act, seen = dreamer.act, []

    def spy(*args, **kwargs):
        seen.append(args[5])  # act(state, obs, is_first, carry, key, explore)
        return act(*args, **kwargs)

    dreamer.act = spy
    for sample in (False, True):
        seen.clear()
        out = evaluation.play(env, dreamer, state, jax.random.PRNGKey(1), 2, 3, sample)
        assert seen and all(explore is sample for explore in seen), (sample, seen)
        assert out[1].shape == (2, 3, 2)  # model actions [N, T, A]


def _obs_norm_dreamer():
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(PRESETS["tiny"], batch_size=4, seq_len=5, horizon=2)
    key = jax.random.PRNGKey(0)
    batch = _bandit_batch(key, env.spec, cfg.batch_size, cfg.seq_len)
    dreamer = Dreamer(dataclasses.replace(cfg, obs_norm=True), env)
    return env, cfg, key, batch, dreamer, dreamer.init(key)


def test_obs_norm_acting_sees_standardised_observations():
    """With ``obs_norm`` acting standardises the observations by the running moments (the
    same posterior as acting without moments on the standardised observations, and another
    than on the raw ones); ``denormalise`` inverts ``normalise``; images are refused."""
    env, cfg, key, batch, dreamer, state = _obs_norm_dreamer()
    assert state.obs_moments is not None
    obs = batch.obs[:, 0] * jnp.array([10.0, 0.1, 10.0, 0.1]) + 3.0
    fitted = state.replace(obs_moments=rlmath.moments_update(state.obs_moments,
                                                             obs.reshape(-1, 4)))
    act = jax.jit(lambda s, o: dreamer.act(s, o, jnp.ones((4,), bool), dreamer.initial_carry(4),
                                           key, False)[1].state.logits)
    std_obs = dreamer.normalise(fitted, obs)
    np.testing.assert_allclose(np.asarray(std_obs).mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(std_obs).std(0), 1.0, rtol=1e-2)
    np.testing.assert_allclose(dreamer.denormalise(fitted, std_obs), obs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(act(fitted, obs), act(fitted.replace(obs_moments=None), std_obs),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(act(fitted, obs), act(fitted.replace(obs_moments=None), obs))
    with pytest.raises(ValueError, match="obs_norm standardises vector observations"):
        Dreamer(dataclasses.replace(cfg, obs_norm=True), envs.make("gymnax/Breakout-MinAtar"))


@pytest.mark.slow
def test_obs_norm_makes_the_world_model_see_standardised_observations():
    """With ``obs_norm`` an update merges the batch's observations into the running moments and
    trains on them standardised, so a per-element affine change of the observations
    (``10 o + 3`` and ``0.1 o``) leaves the update unchanged, where without it the
    reconstruction loss changes. Slow: it compiles a whole update of its own."""
    env, cfg, key, batch, dreamer, state = _obs_norm_dreamer()
    scale = jnp.array([10.0, 0.1, 10.0, 0.1])
    moved = batch.replace(obs=batch.obs * scale + 3.0, next_obs=batch.next_obs * scale + 3.0)
    update = jax.jit(dreamer.update)
    (new, metrics), (new_moved, metrics_moved) = [update(state, b, key) for b in (batch, moved)]
    assert float(new.obs_moments.count) == cfg.batch_size * cfg.seq_len
    np.testing.assert_allclose(new.obs_moments.mean, batch.obs.reshape(-1, 4).mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics_moved["recon_loss"], metrics["recon_loss"], rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(new_moved.wm_params),
                    jax.tree_util.tree_leaves(new.wm_params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    # without obs_norm the world-model loss sees the batch as it comes, and its
    # reconstruction loss changes
    plain = Dreamer(cfg, env)
    plain_state = plain.init(key)
    assert plain_state.obs_moments is None
    recon = jax.jit(lambda b: plain.world_model_loss(plain_state.wm_params, b, key)[1][1][
        "recon_loss"])
    assert abs(float(recon(moved)) - float(recon(batch))) > 1.0


def test_evaluation_decodes_obs_norm_runs_back_to_the_task_scale():
    """The RSSM evaluation scores decoded observations on the task's scale (observations
    around 100 +- 10 are reconstructed within a few standard deviations by an untrained model,
    which decodes about the running mean, not 100 off) and filters them standardised."""
    from agents.dreamer.evaluation import rssm_k_step_errors

    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(PRESETS["tiny"], obs_norm=True)
    dreamer = Dreamer(cfg, env)
    key = jax.random.PRNGKey(0)
    state = dreamer.init(key)
    n, t = 2, 6
    obs = 100.0 + 10.0 * jax.random.normal(key, (n, t + 1, 4))
    moments = rlmath.moments_update(state.obs_moments, obs.reshape(-1, 4))
    actions = jax.nn.one_hot(jax.random.randint(key, (n, t), 0, 2), 2)
    result = rssm_k_step_errors(dreamer, state.wm_params, obs, actions, jnp.zeros((n, t)), 2,
                                key, obs_moments=moments)
    assert result["reconstruction_abs_error"] < 60.0  # sqrt(4) * 10 * a few
    assert len(result["reconstruction_correlation"]) == 4
    raw = rssm_k_step_errors(dreamer, state.wm_params, obs, actions, jnp.zeros((n, t)), 2, key)
    assert raw["reconstruction_abs_error"] > 150.0  # decodes about 0: ||(100, ...)|| = 200
    # the filter sees the observations standardised, as acting and training do (moments of
    # no data standardise as the identity: one compiled program for the three calls)
    from agents.dreamer.evaluation import filtered_states
    identity = rlmath.moments_init((4,))
    filtered = filtered_states(dreamer, state.wm_params, obs, actions, key, moments)
    np.testing.assert_allclose(
        filtered, filtered_states(dreamer, state.wm_params, rlmath.standardise(moments, obs, 0.01),
                                  actions, key, identity), rtol=1e-5, atol=1e-5)
    assert not np.allclose(filtered,
                           filtered_states(dreamer, state.wm_params, obs, actions, key, identity))
