"""MuZero agent: targets and absorbing states by hand, priorities, and one learning test."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flashbax.buffers import sum_tree

import envs
from agents import gumbel_muzero, muzero
from agents.muzero import agent as muzero_agent
from agents.muzero import targets
from core import runner
from core.loop import make_loop
from core.types import Transition
from envs.api import EnvSpec, Environment

F, T = False, True


def _targets(rewards, terminated, truncated, is_first, values, k, n, discount=0.5):
    length = len(rewards)
    policies = jnp.tile(jnp.array([[0.25, 0.75]]), (length, 1))
    return targets.unroll_targets(
        jnp.asarray(rewards, jnp.float32), jnp.asarray(terminated), jnp.asarray(truncated),
        jnp.asarray(is_first), policies, jnp.asarray(values, jnp.float32), unroll_steps=k,
        n_step=n, discount=discount)


def test_n_step_targets_without_episode_end():
    # G_t = 1 + 0.5 * 1 + 0.25 * v = 1.5 + 0.25 * 8 = 3.5 for every t (n = 2).
    out = _targets([1.0] * 4, [F] * 4, [F] * 4, [F] * 4, [8.0] * 4, k=2, n=2)
    np.testing.assert_allclose(out.value, [3.5, 3.5, 3.5])
    np.testing.assert_allclose(out.reward, [0, 1, 1])
    np.testing.assert_allclose(out.reward_mask, [0, 1, 1])
    np.testing.assert_allclose(out.value_mask, [1, 1, 1])
    np.testing.assert_allclose(out.policy_mask, [1, 1, 1])


def test_targets_past_a_terminal_are_absorbing():
    # Step 1 terminates; the window then runs into the next episode (is_first at step 2).
    # z_0 = 1 + 0.5 * 2 (no bootstrap past the terminal) = 2; z_1 = 2; past it: value 0,
    # reward 0 (trained), policy not trained.
    out = _targets([1.0, 2, 3, 4, 5], [F, T, F, F, F], [F] * 5, [F, F, T, F, F],
                   [10.0, 20, 30, 40, 50], k=3, n=2)
    np.testing.assert_allclose(out.value, [2, 2, 0, 0])
    np.testing.assert_allclose(out.value_mask, [1, 1, 1, 1])
    np.testing.assert_allclose(out.reward, [0, 1, 2, 0])
    np.testing.assert_allclose(out.reward_mask, [0, 1, 1, 1])
    np.testing.assert_allclose(out.policy_mask, [1, 1, 0, 0])
    np.testing.assert_allclose(out.alive, [1, 1, 0, 0])


def test_targets_at_a_truncation_bootstrap_then_mask():
    # Step 1 is cut by the time limit: z_0 = 1 + 0.5 * 1 + 0.25 * V(next_obs_1) = 1.5 + 5 =
    # 6.5; z_1 = 1 + 0.5 * 20 = 11; step 2 belongs to another episode: masked, not absorbing.
    out = _targets([1.0] * 5, [F] * 5, [F, T, F, F, F], [F, F, T, F, F],
                   [10.0, 20, 30, 40, 50], k=2, n=3)
    np.testing.assert_allclose(out.value, [6.5, 11, 0])
    np.testing.assert_allclose(out.value_mask, [1, 1, 0])
    np.testing.assert_allclose(out.reward, [0, 1, 1])
    np.testing.assert_allclose(out.reward_mask, [0, 1, 1])
    np.testing.assert_allclose(out.policy_mask, [1, 1, 0])


def test_importance_weights_by_hand():
    p = jnp.array([0.1, 0.2, 0.4])
    np.testing.assert_allclose(targets.importance_weights(p, 1.0), [1, 0.5, 0.25], rtol=1e-6)
    np.testing.assert_allclose(targets.importance_weights(p, 0.5), [1, 2 ** -0.5, 0.5],
                               rtol=1e-6)
    np.testing.assert_allclose(targets.importance_weights(p, 0.0), [1, 1, 1])


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="MuZeroConfig.search"):
        muzero.MuZeroConfig(search="alphazero")
    with pytest.raises(ValueError, match="MuZeroConfig.reanalyse_fraction"):
        muzero.MuZeroConfig(reanalyse_fraction=1.5)
    with pytest.raises(ValueError, match="at least one window of the batch of 32"):
        muzero.MuZeroConfig(reanalyse_fraction=0.01, batch_size=32)  # would round to none
    with pytest.raises(ValueError, match="strictly increasing"):
        muzero.MuZeroConfig(temperature_boundaries=(100, 100), temperatures=(1.0, 0.5, 0.25))
    with pytest.raises(ValueError, match="MuZeroConfig.value_support_size must be >= 2"):
        muzero.MuZeroConfig(value_support_size=1)
    with pytest.raises(ValueError, match="MuZeroConfig.q_normalisation"):
        muzero.MuZeroConfig(q_normalisation="global")
    with pytest.raises(ValueError, match="with search='gumbel'"):
        muzero.MuZeroConfig(search="gumbel", q_normalisation="tree")
    with pytest.raises(ValueError, match="gumbel_value_scale must be left at 0.1 with search"):
        muzero.MuZeroConfig(search="muzero", gumbel_value_scale=0.02)
    assert muzero.MuZeroConfig(search="gumbel", gumbel_value_scale=0.02).gumbel_value_scale == 0.02
    with pytest.raises(ValueError, match="gumbel_temperature must be off with search='muzero'"):
        muzero.MuZeroConfig(search="muzero", gumbel_temperature=True)
    assert all(c.search == "gumbel" and c.num_simulations <= 16
               for c in gumbel_muzero.PRESETS.values())
    assert "cartpole_v1" in muzero.PRESETS and "cartpole_v1" in gumbel_muzero.PRESETS
    # The evaluations and benchmarks look the model up by agent name, so a gumbel_muzero run's
    # MuZero evaluation needs gumbel_muzero.build_model.
    assert set(muzero.__all__) <= set(dir(gumbel_muzero))


@pytest.fixture(scope="module")
def tiny_cartpole():
    """CartPole, the tiny preset with reanalyse, priorities (exponent 0.5) and the
    reconstruction loss on, a loop state after 80 random steps on 2 environments and the
    jitted update (one compile shared by the tests that take it)."""
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], reanalyse_fraction=0.5,
                              priority_exponent=0.5, reconstruction_loss_weight=1.0)
    agent = muzero.make(cfg, env, 2)
    fns = make_loop(env, agent, num_envs=2, iterations=1, prefill_iterations=40)
    state = jax.jit(fns.prefill)(fns.init(jax.random.PRNGKey(0)))[0]
    return env, cfg, agent, state, jax.jit(agent.update)


def test_update_writes_value_error_priorities(tiny_cartpole):
    """At initialisation every value head predicts 0 (zero-initialised), so the first update's
    priority of a CartPole window (reward 1 per step) is |0 - z_0| = sum_{i<m} gamma^i, with
    m the steps up to the episode's end within n, for the reanalysed windows too; the buffer
    stores (priority + eps)^alpha. The reconstruction loss is on: the update trains the decoder
    without touching that."""
    _, cfg, agent, state, update = tiny_cartpole
    key = jax.random.PRNGKey(3)
    new_agent, buffer_state, metrics = update(state.agent, state.buffer, key)
    assert 0.0 < float(metrics["reconstruction_loss"]) < np.inf
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                         new_agent.params["params"]["obs_decoder"],
                         state.agent.params["params"]["obs_decoder"])
    assert min(jax.tree.leaves(moved)) > 0.0
    sample = agent.buffer.sample(state.buffer, jax.random.split(key)[0])
    done = np.asarray(sample.experience.terminated | sample.experience.truncated)[:, :cfg.n_step]
    alive = np.cumprod(np.concatenate([np.ones((done.shape[0], 1)), 1 - done[:, :-1]], 1), 1)
    z0 = (alive * cfg.discount ** np.arange(cfg.n_step)).sum(1)
    stored = sum_tree.get_batch(buffer_state.sum_tree_state, sample.indices)
    np.testing.assert_allclose(stored, (z0 + cfg.priority_eps) ** 0.5, rtol=1e-4)


@pytest.mark.slow
def test_shrink_and_perturb_every_period_updates():
    """keep = 0 replaces the parameters by a fresh initialisation at every ``shrink_period``-th
    update up to ``shrink_stop`` only (LayerNorm scales, trained away from 1, return to 1)."""
    env = envs.make("gymnax/CartPole-v1")
    base = dataclasses.replace(muzero.PRESETS["tiny"], reanalyse_fraction=0.0)

    def two_updates(**kw):
        agent = muzero.make(dataclasses.replace(base, **kw), env, 2)
        fns = make_loop(env, agent, num_envs=2, iterations=1, prefill_iterations=40)
        state = jax.jit(fns.prefill)(fns.init(jax.random.PRNGKey(0)))[0]
        update = jax.jit(agent.update)
        a1, b1, _ = update(state.agent, state.buffer, jax.random.PRNGKey(1))
        a2, _, _ = update(a1, b1, jax.random.PRNGKey(2))
        return a1.params, a2.params

    def leaves(tree, name=None):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return [np.asarray(v) for p, v in flat if name is None or name in jax.tree_util.keystr(p)]

    off1, off2 = two_updates()
    reset1, reset2 = two_updates(shrink_period=2, shrink_keep=0.0)
    for a, b in zip(leaves(reset1), leaves(off1)):  # update 1: not due
        np.testing.assert_array_equal(a, b)
    trained_scales = leaves(off2, "scale")
    assert trained_scales and not all(np.allclose(s, 1.0) for s in trained_scales)
    assert all(np.array_equal(s, np.ones_like(s)) for s in leaves(reset2, "scale"))
    stopped1, stopped2 = two_updates(shrink_period=1, shrink_keep=0.0, shrink_stop=1)
    assert all(np.array_equal(s, np.ones_like(s)) for s in leaves(stopped1, "scale"))
    assert not all(np.array_equal(s, np.ones_like(s)) for s in leaves(stopped2, "scale"))
    with pytest.raises(ValueError, match="MuZeroConfig.shrink_keep"):
        muzero.MuZeroConfig(shrink_keep=1.5)


def test_mirror_augmentation_flips_half_the_windows_consistently():
    """Each window is either untouched or mirrored as a whole: observations negated, actions
    and policies swapped (CartPole's symmetry); rewards and root values never change."""
    sym = envs.make("gymnax/CartPole-v1").symmetry
    b, length = 64, 3
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    policy = jax.nn.softmax(jax.random.normal(keys[0], (b, length, 2)))
    window = Transition(
        obs=jax.random.normal(keys[1], (b, length, 4)),
        action=jax.random.randint(keys[2], (b, length), 0, 2),
        reward=jax.random.normal(keys[3], (b, length)),
        next_obs=jax.random.normal(keys[0], (b, length, 4)) + 5.0,
        terminated=jnp.zeros((b, length), bool), truncated=jnp.zeros((b, length), bool),
        is_first=jnp.zeros((b, length), bool),
        extras={"search_policy": policy, "root_value": jnp.ones((b, length))})
    out = jax.jit(muzero_agent.mirror_windows, static_argnums=1)(window, sym,
                                                                 jax.random.PRNGKey(7))
    flipped = np.asarray(out.action != window.action)[:, 0]
    assert 10 < flipped.sum() < b - 10
    for new, old, mirrored in ((out.obs, window.obs, -window.obs),
                               (out.next_obs, window.next_obs, -window.next_obs),
                               (out.action, window.action, 1 - window.action),
                               (out.extras["search_policy"], policy, policy[..., ::-1])):
        np.testing.assert_array_equal(new[flipped], mirrored[flipped])
        np.testing.assert_array_equal(new[~flipped], old[~flipped])
    np.testing.assert_array_equal(out.reward, window.reward)
    np.testing.assert_array_equal(out.extras["root_value"], window.extras["root_value"])
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], mirror_augmentation=True)
    with pytest.raises(ValueError, match="MountainCar-v0 declares none"):
        muzero.make(cfg, envs.make("gymnax/MountainCar-v0"), 2)


@pytest.mark.slow
def test_update_trains_on_mirrored_windows_when_asked():
    """The update applies the augmentation: from the same state and key, two updates without it
    agree exactly, and the update with it moves the parameters elsewhere."""
    env = envs.make("gymnax/CartPole-v1")
    base = dataclasses.replace(muzero.PRESETS["tiny"], reanalyse_fraction=0.0)

    def one_update(mirror):
        agent = muzero.make(dataclasses.replace(base, mirror_augmentation=mirror), env, 2)
        fns = make_loop(env, agent, num_envs=2, iterations=1, prefill_iterations=40)
        state = jax.jit(fns.prefill)(fns.init(jax.random.PRNGKey(0)))[0]
        params = jax.jit(agent.update)(state.agent, state.buffer, jax.random.PRNGKey(1))[0].params
        return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(params)])

    plain = one_update(False)
    np.testing.assert_array_equal(one_update(False), plain)
    assert np.abs(one_update(True) - plain).max() > 1e-6


def test_reward_targets_beyond_the_support_are_counted(tiny_cartpole):
    """``reward_target_clipped``: CartPole's rewards of 1 fit the tiny preset's reward support
    (|r| <= 8) and none is counted; rewards of 20 are clipped on every live step (core.runner
    warns about a share above 1%: tests/core/test_runner.py)."""
    _, _, _, state, update = tiny_cartpole
    _, _, metrics = update(state.agent, state.buffer, jax.random.PRNGKey(1))
    assert float(metrics["reward_target_clipped"]) == 0.0
    experience = state.buffer.experience
    large = state.buffer.replace(experience=experience.replace(reward=experience.reward * 20))
    _, _, metrics = update(state.agent, large, jax.random.PRNGKey(1))
    assert float(metrics["reward_target_clipped"]) > 0.5, metrics


def test_update_with_nonfinite_gradients_is_skipped_and_counted(tiny_cartpole):
    """An update whose gradients are not finite keeps the parameters and Adam state and reports
    ``skipped_updates`` = 1 (core.runner stops a seed that skips a whole chunk)."""
    _, _, _, state, update = tiny_cartpole
    good, _, metrics = update(state.agent, state.buffer, jax.random.PRNGKey(1))
    assert float(metrics["skipped_updates"]) == 0.0 and float(metrics["grad_norm"]) > 0
    experience = state.buffer.experience
    broken = state.buffer.replace(experience=experience.replace(
        obs=jnp.full_like(experience.obs, jnp.inf)))
    bad, bad_buffer, metrics = update(state.agent, broken, jax.random.PRNGKey(1))
    assert float(metrics["skipped_updates"]) == 1.0 and float(metrics["grad_norm"]) == 0.0
    assert runner.tree_allclose((bad.params, bad.opt_state),
                                (state.agent.params, state.agent.opt_state), rtol=0, atol=0)
    assert not runner.tree_allclose(good.params, state.agent.params, rtol=0, atol=0)
    # Its priorities (NaN here) are not written: the sum tree keeps what it had.
    assert np.isnan(float(metrics["priority"]))
    np.testing.assert_allclose(bad_buffer.sum_tree_state.nodes, broken.sum_tree_state.nodes,
                               rtol=1e-5)


def _perturbed(agent_state, key, scale=0.3):
    """``agent_state`` with noise on every parameter (online and target alike): the value and
    reward heads start at zero, and then a search's root value equals V everywhere."""
    leaves, treedef = jax.tree_util.tree_flatten(agent_state.params)
    keys = jax.random.split(key, len(leaves))
    params = treedef.unflatten([p + scale * jax.random.normal(k, p.shape, p.dtype)
                                for p, k in zip(leaves, keys)])
    return agent_state.replace(params=params, target_params=params)


def _prefilled_cartpole(cfg):
    """CartPole, a loop state after 80 random steps on 2 environments, and its agent state
    with perturbed (non-zero) parameters."""
    env = envs.make("gymnax/CartPole-v1")
    fns = make_loop(env, muzero.make(cfg, env, 2), num_envs=2, iterations=1,
                    prefill_iterations=40)
    state = jax.jit(fns.prefill)(fns.init(jax.random.PRNGKey(0)))[0]
    return env, state, _perturbed(state.agent, jax.random.PRNGKey(1))


@pytest.mark.slow
def test_reanalysed_rows_are_drawn_at_random():
    """flashbax returns a batch ordered by buffer position (here rows 0-7 come from
    environment 0, rows 8-15 from environment 1), so reanalysing a fixed slice of it would
    always refresh the same environment's data; the update reanalyses a fresh random draw.

    A reanalysed window bootstraps its value target on the fresh search's root values rather
    than on the target network's V, so the priority |v_0 - z_0| the update writes for it
    differs from the one written by the same update (same state, same key, same sample)
    without reanalyse: those rows are the reanalysed ones."""
    base = dataclasses.replace(muzero.PRESETS["tiny"], reanalyse_fraction=0.0)
    env, state, agent_state = _prefilled_cartpole(base)
    keys = jax.random.split(jax.random.PRNGKey(2), 8)

    def written_priorities(reanalyse_fraction):
        agent = muzero.make(dataclasses.replace(base, reanalyse_fraction=reanalyse_fraction),
                            env, 2)

        def one(key):
            buffer_state = agent.update(agent_state, state.buffer, key)[1]
            # The update samples with the first half of its key (as in the priority test).
            indices = agent.buffer.sample(state.buffer, jax.random.split(key)[0]).indices
            return indices, sum_tree.get_batch(buffer_state.sum_tree_state, indices)
        return jax.tree_util.tree_map(np.asarray, jax.jit(jax.vmap(one))(keys))

    indices, plain = written_priorities(0.0)
    same_indices, fresh = written_priorities(0.25)  # 4 of the 16 rows
    np.testing.assert_array_equal(same_indices, indices)
    reanalysed = ~np.isclose(fresh, plain, rtol=1e-5, atol=0)  # [draw, row]
    # A window whose episode ends within n steps does not bootstrap: at most 4 per draw.
    assert reanalysed.sum(1).max() <= 4 and reanalysed.sum() >= 2 * len(keys), reanalysed
    rows = set(np.nonzero(reanalysed)[1].tolist())
    # Any fixed slice of 4 rows would give at most 4 distinct rows over the draws.
    assert len(rows) >= 10 and rows & set(range(8)) and rows & set(range(8, 16)), rows


@pytest.mark.slow
def test_reanalysed_bootstrap_values_come_from_a_search_without_root_noise():
    """Root noise is for acting: it sends visits to worse actions and lowers the root value.
    The priorities |v_0 - z_0| of a reanalysing update depend on the bootstrap values alone
    (not on the reanalysed policies), so the noise's weight must not change them."""
    base = dataclasses.replace(muzero.PRESETS["tiny"], reanalyse_fraction=0.5)
    env, state, agent_state = _prefilled_cartpole(base)
    key = jax.random.PRNGKey(2)

    def written_priorities(cfg):
        agent = muzero.make(cfg, env, 2)
        buffer_state = jax.jit(agent.update)(agent_state, state.buffer, key)[1]
        indices = agent.buffer.sample(state.buffer, jax.random.split(key)[0]).indices
        return np.asarray(sum_tree.get_batch(buffer_state.sum_tree_state, indices))

    quiet = written_priorities(dataclasses.replace(base, dirichlet_fraction=0.1))
    loud = written_priorities(dataclasses.replace(base, dirichlet_fraction=0.9))
    plain = written_priorities(dataclasses.replace(base, reanalyse_fraction=0.0))
    assert not np.allclose(quiet, plain, rtol=1e-5, atol=0)  # some rows were reanalysed
    np.testing.assert_allclose(quiet, loud, rtol=1e-5)


@pytest.mark.slow
def test_update_on_images_trains_the_residual_network():
    """MinAtar's [10, 10, C] observations go through the residual torso (a convolution and a
    residual block per trunk, a 1x1 reducing convolution before each head). One update,
    reanalyse included, returns finite metrics and moves every part of the network that a
    loss reaches, and only those: without weight decay and consistency loss the projection
    gets no gradient. The parameters start perturbed: at initialisation the heads' last
    layers are zero, so no gradient would reach the trunks in a first update."""
    env = envs.make("gymnax/Breakout-MinAtar")
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], reanalyse_fraction=0.25, weight_decay=0.0)
    assert len(env.spec.obs_shape) == 3 and muzero.build_model(cfg, env).net.kind == "resnet"
    agent = muzero.make(cfg, env, 2)
    fns = make_loop(env, agent, num_envs=2, iterations=1, prefill_iterations=12)
    state = jax.jit(fns.prefill)(fns.init(jax.random.PRNGKey(0)))[0]
    start = _perturbed(state.agent, jax.random.PRNGKey(1), scale=0.1)
    new, _, metrics = jax.jit(agent.update)(start, state.buffer, jax.random.PRNGKey(2))
    metrics = {name: float(value) for name, value in metrics.items()}
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    assert metrics["skipped_updates"] == 0.0 and metrics["grad_norm"] > 0, metrics
    before = {jax.tree_util.keystr(p): v
              for p, v in jax.tree_util.tree_flatten_with_path(start.params)[0]}
    moved = {name: not np.array_equal(v, before[name]) for name, v in
             ((jax.tree_util.keystr(p), v)
              for p, v in jax.tree_util.tree_flatten_with_path(new.params)[0])}
    assert sum("Conv_" in name for name in moved) == 8  # 2 trunks x ResBlock x 2 convolutions
    for name, changed in moved.items():
        assert changed == ("projection" not in name), name


# "Copy the context": each step shows a random bit c (one-hot) and pays 1 for action c; four
# steps per episode. Random play returns 2, the optimal policy 4.
def _copy_env() -> Environment:
    def observe(context, t):
        return jnp.concatenate([jax.nn.one_hot(context, 2), (t / 4.0)[None]])

    def reset(key):
        context = jax.random.bernoulli(key).astype(jnp.int32)
        return (context, jnp.zeros((), jnp.float32)), observe(context, jnp.zeros(()))

    def step(inner, action, key):
        context, t = inner
        reward = (action == context).astype(jnp.float32)
        new_context = jax.random.bernoulli(key).astype(jnp.int32)
        return (new_context, t + 1), observe(new_context, t + 1), reward, t + 1 >= 4

    spec = EnvSpec(env_id="test/copy", obs_shape=(3,), discrete=True, num_actions=2,
                   max_episode_steps=10)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step)


@pytest.mark.slow
def test_learns_to_copy_the_context():
    """Fails if learning breaks: random play returns 2, the learned search policy ~4."""
    env = _copy_env()
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], learning_rate=3e-3, batch_size=32,
                              reanalyse_fraction=0.0, temperature_boundaries=(100, 200),
                              updates_per_iteration=2, prefill_steps=64)
    agent = muzero.make(cfg, env, 4)
    fns = make_loop(env, agent, num_envs=4, iterations=150, prefill_iterations=16)
    state = jax.jit(fns.prefill)(jax.jit(fns.init)(jax.random.PRNGKey(0)))[0]
    train = jax.jit(fns.train)
    returns = []
    for _ in range(2):  # 2 x 600 env steps, 2 x 300 updates
        state, stats = train(state)
        returns.append(float(stats["episode_return_sum"] / stats["episodes"]))
    # The second chunk acts at temperature 0.25 (after 200 updates).
    assert returns[-1] >= 3.5, returns


def test_learning_rate_decays_linearly_then_stays():
    from agents.muzero import losses
    cfg = muzero.MuZeroConfig(learning_rate=1e-2, lr_decay_steps=10, lr_final_fraction=0.1,
                              max_grad_norm=0.0)
    opt = losses.optimizer(cfg)
    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    sizes = []
    for _ in range(14):  # constant gradient: Adam's step is the learning rate
        update, state = opt.update({"w": jnp.ones(())}, state, params)
        sizes.append(float(-update["w"]))
    np.testing.assert_allclose(sizes[0], 1e-2, rtol=1e-3)
    np.testing.assert_allclose(sizes[5], 1e-2 * (1 - 0.9 * 5 / 10), rtol=1e-3)
    np.testing.assert_allclose(sizes[10:], 1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="lr_final_fraction"):
        muzero.MuZeroConfig(lr_final_fraction=1.5)


def test_action_value_errors_against_the_real_step_by_hand():
    """Untrained nets predict reward 0 and value 0 (zero-initialised heads), so Q_model = 0 and
    Q_real(o, a) = [a == context] in the copy task: at every alive step exactly one action has
    error 1, the real gap is 1, the model gap 0, and only the 4 steps of each episode count."""
    from agents.muzero import evaluation
    env = _copy_env()
    cfg = muzero.PRESETS["tiny"]
    model = muzero.build_model(cfg, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    out = evaluation.action_value_errors(env, cfg, model, params, jax.random.PRNGKey(1),
                                         num=3, length=6)
    assert out["steps"] == 3 * 4
    np.testing.assert_allclose(out["real_gap"], 1.0, atol=1e-4)
    np.testing.assert_allclose(out["model_gap"], 0.0, atol=1e-4)
    np.testing.assert_allclose(out["taken_error"] + out["other_error"], 1.0, atol=1e-4)
    obs, actions, rewards, ended = evaluation.play(env, cfg, model, params,
                                                   jax.random.PRNGKey(1), 3, 6)
    np.testing.assert_allclose(out["taken_error"], np.asarray(rewards)[:, :4].mean(), atol=1e-4)
    assert np.asarray(ended).all() and obs.shape == (3, 7, 3)


def test_k_step_value_targets_are_zero_at_absorbing_states():
    """The model is trained to value an absorbing state at 0, and the network's value of a
    terminal observation is never trained: the k-step value target there is 0."""
    from agents.muzero import evaluation
    env = _copy_env()
    cfg = muzero.PRESETS["tiny"]
    model = muzero.build_model(cfg, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    leaves, tree = jax.tree_util.tree_flatten(params)  # non-zero value head
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    obs = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 3))
    actions = jnp.zeros((2, 4), jnp.int32)
    terminated = jnp.zeros((2, 4), bool).at[:, -1].set(True)
    got = evaluation.model_k_step_errors(model, params, obs, actions, jnp.zeros((2, 4)), 1,
                                         terminated=terminated)["value"]["target_norm"][0]
    values = np.abs(np.asarray(jax.vmap(lambda o: model.value(params, o))(obs[:, 1:])))
    assert values[:, -1].min() > 1e-3
    np.testing.assert_allclose(got, values[:, :-1].sum() / values.size, rtol=1e-4)


def test_action_frequencies_count_only_the_episodes_steps():
    from types import SimpleNamespace

    from agents.muzero import evaluation
    # two episodes of 3 actions; the second ended after 2 steps (its third step is not counted)
    out = SimpleNamespace(action=jnp.array([[2, 2, 0], [2, 1, 1]]),
                          valid=jnp.array([[True, True, True], [True, True, False]]))
    np.testing.assert_allclose(evaluation.action_frequencies(3, out), [0.2, 0.2, 0.6])
    # an action never taken counts 0
    np.testing.assert_allclose(evaluation.action_frequencies(4, out), [0.2, 0.2, 0.6, 0.0])


@pytest.mark.slow
def test_policy_action_values_by_rollout_by_hand():
    """Only the first action matters (1 pays 1, 0 pays 0.5; every later step pays 0.5; four
    steps), so the policy's action values are known whatever the policy does; a length cut at
    2 steps shortens every rollout; the untrained model predicts 0 everywhere."""
    from agents.muzero import evaluation

    def reset(key):
        return jnp.zeros((), jnp.int32), jnp.zeros((1,))

    def step(t, action, key):
        reward = jnp.where((t == 0) & (action == 1), 1.0, 0.5)
        return t + 1, ((t + 1) / 4.0)[None], reward, t + 1 >= 4

    env = Environment(spec=EnvSpec(env_id="test/first", obs_shape=(1,), discrete=True,
                                   num_actions=2, max_episode_steps=10),
                      adapter_reset=reset, adapter_step=step)
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], discount=0.9)
    model = muzero.build_model(cfg, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    tail = lambda n: sum(0.5 * 0.9 ** k for k in range(n))  # n steps paying 0.5
    out = evaluation.policy_action_values(env, cfg, model, params, jax.random.PRNGKey(1),
                                          length=6)
    np.testing.assert_array_equal(out["t"], [0, 1, 2, 3])  # the episode's four states
    expected = [[0.5 + 0.9 * tail(3), 1.0 + 0.9 * tail(3)]] + [[tail(n)] * 2 for n in (3, 2, 1)]
    np.testing.assert_allclose(out["q_policy"], expected, rtol=1e-5)
    np.testing.assert_allclose(out["q_model"], 0.0, atol=1e-4)
    summary = evaluation.policy_action_value_summary(out)
    assert summary["decided_states"] == 1 and summary["best_action_agreement"] == 0.0
    np.testing.assert_allclose(summary["true_gap"], 0.5 / 4, rtol=1e-5)
    cut = evaluation.policy_action_values(env, cfg, model, params, jax.random.PRNGKey(1),
                                          length=2)
    np.testing.assert_allclose(cut["q_policy"], [[0.5 + 0.9 * 0.5, 1.0 + 0.9 * 0.5],
                                                 [0.5, 0.5]], rtol=1e-5)
    with pytest.raises(ValueError, match="every >= 1"):
        evaluation.policy_action_values(env, cfg, model, params, jax.random.PRNGKey(1),
                                        length=6, every=0)


def test_negative_cosine_and_its_gradient_at_zero():
    from agents.muzero.losses import _neg_cosine
    a = jnp.array([[1.0, 2.0, -1.0], [1.0, 0.0, 0.0]])
    b = jnp.array([[2.0, 4.0, -2.0], [0.0, 3.0, 0.0]])
    np.testing.assert_allclose(_neg_cosine(a, b), [-1.0, 0.0], atol=1e-6)
    # A zero projection (e.g. a dead layer) must not turn the update into NaN.
    grad = jax.grad(lambda x: _neg_cosine(x, b[0]))(jnp.zeros(3))
    assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.slow
def test_consistency_loss_trains_the_projection_only_when_on():
    """EfficientZero's loss: -cos(predictor(proj(g(s, a))), sg(proj(h(o')))) over the unroll,
    in [-1, 1]; without it the projection heads get no gradient (weight decay off here)."""
    from agents.muzero import losses
    from agents.muzero.agent import build_model
    from agents.muzero.targets import UnrollTargets
    env = envs.make("gymnax/CartPole-v1")
    base = dataclasses.replace(muzero.PRESETS["tiny"], weight_decay=0.0)
    k, batch, num_actions = base.unroll_steps, 4, env.spec.num_actions
    model = build_model(base, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    obs = jax.random.normal(jax.random.PRNGKey(1), (batch, k + 1, 4))
    actions = jax.random.randint(jax.random.PRNGKey(2), (batch, k), 0, num_actions)
    ones = jnp.ones((batch, k + 1))
    tgt = UnrollTargets(value=ones, value_mask=ones, reward=ones, reward_mask=ones,
                        policy=jnp.full((batch, k + 1, num_actions), 1.0 / num_actions),
                        policy_mask=ones, alive=ones)

    def projection_grads(on: bool):
        cfg = dataclasses.replace(base, use_consistency_loss=on)
        grads, aux = jax.grad(losses.batch_loss, has_aux=True)(
            params, obs, actions, tgt, jnp.ones(batch), model=model, cfg=cfg)
        flat = jax.tree_util.tree_flatten_with_path(grads)[0]
        heads = [np.abs(np.asarray(g)).sum() for p, g in flat
                 if "projection" in jax.tree_util.keystr(p)]
        return heads, aux["metrics"]

    off, metrics_off = projection_grads(False)
    on, metrics_on = projection_grads(True)
    assert len(off) >= 2 and max(off) == 0.0 and "consistency_loss" not in metrics_off
    assert min(on) > 0.0
    assert -1.0 <= float(metrics_on["consistency_loss"]) <= 1.0


def test_reconstruction_loss_decodes_each_unrolled_state_to_its_observation():
    """``reconstruction_loss_weight``: the decoder of every unrolled state ``s_k`` is scored
    against ``symlog(o_k)`` (mean over the entries, the unroll's step weights, nothing past
    the episode's end), adds ``w_o`` times that to the loss, and its gradient reaches the
    representation and the dynamics; off (0), the model has no decoder at all. Image
    observations are refused in one line."""
    from agents.muzero import losses
    from agents.muzero.agent import build_model
    from agents.muzero.targets import UnrollTargets
    env = envs.make("gymnax/Acrobot-v1")
    base = dataclasses.replace(muzero.PRESETS["tiny"], weight_decay=0.0)
    cfg = dataclasses.replace(base, reconstruction_loss_weight=2.0)
    k, num_actions = cfg.unroll_steps, env.spec.num_actions
    assert "obs_decoder" not in build_model(base, env).init(
        jax.random.PRNGKey(0), env.spec.obs_shape)["params"]
    model = build_model(cfg, env)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)
    obs = 5.0 * jax.random.normal(jax.random.PRNGKey(1), (k + 1, 6))
    actions = jax.random.randint(jax.random.PRNGKey(2), (k,), 0, num_actions)
    ones = jnp.ones(k + 1)
    alive = ones.at[3:].set(0.0)  # the episode ends after the third real step
    tgt = UnrollTargets(value=ones, value_mask=ones, reward=ones, reward_mask=ones,
                        policy=jnp.full((k + 1, num_actions), 1.0 / num_actions),
                        policy_mask=ones, alive=alive)
    # jitted: one compile per program instead of one per operation
    loss = {c: jax.jit(functools.partial(losses.example_loss, model=model, cfg=c))
            for c in (cfg, base)}
    loss_on, parts = loss[cfg](params, obs, actions, tgt)
    decoded = jax.jit(lambda p: model.decode_obs(p, model.unroll(p, obs[0], actions).hidden))(
        params)
    errors = np.mean((np.asarray(decoded) - np.sign(obs) * np.log1p(np.abs(obs))) ** 2, -1)
    scale = np.array([1.0] + [1.0 / k] * k)
    expected = float((scale * errors * np.asarray(alive)).sum())
    np.testing.assert_allclose(float(parts["reconstruction_loss"]), expected, rtol=1e-5)
    loss_off, _ = loss[base](params, obs, actions, tgt)
    np.testing.assert_allclose(float(loss_on - loss_off), 2.0 * expected, rtol=1e-4)
    grads = jax.jit(jax.grad(lambda p: loss[cfg](p, obs, actions, tgt)[1]["reconstruction_loss"])
                    )(params)["params"]
    for net in ("representation", "dynamics_trunk", "obs_decoder"):
        assert sum(float(np.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads[net])) > 0
    with pytest.raises(ValueError, match="needs vector observations.*Breakout-MinAtar"):
        build_model(cfg, envs.make("gymnax/Breakout-MinAtar"))


def test_exploration_options_hold_a_random_action_for_zeta_durations():
    from agents.muzero import acting
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], explore_epsilon=0.2, explore_zeta=2.0,
                              explore_max_duration=50)
    sample = lambda key, mask=None: jax.random.randint(key, (), 0, 3)  # noqa: E731
    num, steps, search = 64, 200, jnp.full((64,), 7, jnp.int32)  # 7: "the search's action"

    def step(carry, key):
        action, carry = acting.explore_options(cfg, sample, carry, search,
                                               jnp.zeros((num,), bool), key)
        return carry, action
    _, actions = jax.lax.scan(step, acting.initial_explore_carry(num),
                              jax.random.split(jax.random.PRNGKey(0), steps))
    actions = np.asarray(actions).T  # [num, steps]
    # Runs of a random action between search actions: their lengths are the durations.
    runs = []
    for row in actions:
        length, prev = 0, None
        for a in row:
            if a != 7 and a == prev:
                length += 1
            else:
                if prev is not None and prev != 7:
                    runs.append(length)
                length = 1
            prev = a
    runs = np.array(runs)
    share = (actions != 7).mean()
    # zeta(2) truncated at 50: P(1) = 1 / sum n^-2 = 0.62, mean ~ 2.8 (runs of one action
    # back to back merge, so measured runs are a little longer)
    assert 0.5 < (runs == 1).mean() < 0.7 and 2.3 < runs.mean() < 4.0 and runs.max() > 10
    assert 0.25 < share < 0.5  # eps D / (1 + eps (D - 1)) with D ~ 2.8: 0.41
    assert set(np.unique(actions)) == {0, 1, 2, 7}
    # An episode start ends a running option; epsilon 0 never starts one.
    carry = acting.ExploreCarry(jnp.zeros((num,), jnp.int32), jnp.full((num,), 5, jnp.int32))
    action, after = acting.explore_options(dataclasses.replace(cfg, explore_epsilon=0.0), sample,
                                           carry, search, jnp.ones((num,), bool),
                                           jax.random.PRNGKey(1))
    assert (np.asarray(action) == 7).all() and (np.asarray(after.left) == 0).all()
    # An option whose action becomes illegal ends; the held action is kept while legal.
    mask = jnp.zeros((num, 3), bool).at[:, 1].set(True).at[: num // 2, 0].set(True)
    action, after = acting.explore_options(dataclasses.replace(cfg, explore_epsilon=0.0), sample,
                                           carry, search, jnp.zeros((num,), bool),
                                           jax.random.PRNGKey(1), mask)
    action = np.asarray(action)
    assert (action[: num // 2] == 0).all() and (action[num // 2:] == 7).all()
    assert (np.asarray(after.left)[: num // 2] == 4).all()


def test_exploration_options_act_through_the_agent():
    env = envs.make("gymnax/CartPole-v1")
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], explore_epsilon=1.0,
                              explore_max_duration=50)  # every env starts an option at once
    agent = muzero.make(cfg, env, 256)
    state = agent.init(jax.random.PRNGKey(0))
    act = jax.jit(agent.act, static_argnums=5)
    obs = jnp.zeros((256,) + env.spec.obs_shape)
    first = jnp.zeros((256,), bool)
    carry = agent.initial_carry(256)
    explored, carry, extras = act(state, obs, first, carry, jax.random.PRNGKey(1), True)
    assert abs(np.asarray(explored).mean() - 0.5) < 0.1  # uniform over CartPole's 2 actions
    assert extras["search_policy"].shape == (256, 2)  # the search's targets still stored
    left = np.asarray(carry.left)
    assert 0.2 < (left > 0).mean() < 0.6  # P(n > 1) = 1 - 1 / sum n^-2 = 0.39
    assert (np.asarray(carry.action) == np.asarray(explored)).all()
    again, after, _ = act(state, obs, first, carry, jax.random.PRNGKey(2), True)
    assert (np.asarray(again)[left > 0] == np.asarray(explored)[left > 0]).all()  # held
    assert (np.asarray(after.left)[left > 0] == left[left > 0] - 1).all()


def test_exploration_options_hold_continuous_actions():
    from agents.muzero import acting
    cfg = dataclasses.replace(muzero.PRESETS["tiny"], explore_epsilon=1.0,
                              explore_max_duration=3)
    sample = lambda key: jax.random.uniform(key, (2,), minval=-1, maxval=1)  # noqa: E731
    carry = acting.initial_explore_carry(64, (2,), jnp.float32)
    search = jnp.full((64, 2), 5.0)
    first, after = acting.explore_options(cfg, sample, carry, search, jnp.zeros((64,), bool),
                                          jax.random.PRNGKey(0))
    second, _ = acting.explore_options(cfg, sample, after, search, jnp.zeros((64,), bool),
                                       jax.random.PRNGKey(1))
    assert np.abs(np.asarray(first)).max() <= 1.0  # every env explores (epsilon 1)
    held = np.asarray(after.left) > 0  # those go on holding the same vector
    assert held.any() and np.allclose(np.asarray(second)[held], np.asarray(first)[held])
