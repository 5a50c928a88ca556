"""MBPO: the rollout-length schedule, the real/model mixing ratio, the model-data ring buffer,
masked branched rollouts, and learning a regulator through the shared training loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import mbpo
from agents.mbpo import model_buffer
from core import runner
from world_models import ensemble

LEARN_ENV = "linear/scalar_a0.5"


@pytest.fixture(scope="module")
def trained():
    env = envs.make(LEARN_ENV)
    agent = mbpo.make(mbpo.PRESETS["tiny"], env, num_envs=1)
    cfg = runner.RunConfig(steps=500, num_envs=1, log_every=100, eval_every=-1, progress=False)
    return agent, runner.train(env, agent, cfg)


@pytest.mark.slow
def test_mbpo_learns_the_lqr_gain(trained):
    # scalar_a0.5: s' = 0.5 s + a + w (w ~ N(0, 0.1^2)), reward -(s^2 + 0.01 a^2), 50 steps.
    # Riccati: P = 1 + 0.25 P - 0.25 P^2 / (0.01 + P) gives P = 1.0025 and the optimal linear
    # policy a = -K s with K = 0.5 P / (0.01 + P) = 0.495. Random actions (Var a = 4/3) keep
    # E[s^2] = (4/3 + 0.01) / 0.75 = 1.79, i.e. about -90 per episode; the untrained actor's
    # greedy action is ~0 (slope 0). Measured (3 seeds, 2-core CPU): greedy slope -0.58 to -0.59
    # after 500 steps, training-episode return -86 (prefill) -> -7.
    agent, result = trained
    history = result.history
    assert history[0]["episode_return_mean"] < -50, history[0]
    assert history[-1]["episode_return_mean"] > -20, history[-1]
    state = runner.seed_slice(result.state, 0).agent
    grid = jnp.linspace(-2.0, 2.0, 9)[:, None]
    action, _, _ = agent.act(state, grid, jnp.zeros((9,), bool), agent.initial_carry(9),
                             jax.random.PRNGKey(0), False)
    slope, intercept = np.polyfit(np.asarray(grid[:, 0]), np.asarray(action[:, 0]), 1)
    assert -0.8 < slope < -0.35 and abs(intercept) < 0.2, (slope, intercept)
    # Refits every model_train_every=50 of the 400 learning steps, the first right away.
    assert int(state.fits) == 8
    assert int(state.rollout_length) == 3  # the end of the tiny schedule (0, 4, 1, 3)
    assert int(state.model_data.size) == mbpo.PRESETS["tiny"].model_buffer_size
    for name in ("train_nll", "elite_holdout_mse", "critic_loss", "rollout_length"):
        assert np.isfinite(history[-1][name]), name


@pytest.mark.parametrize("epoch,expected", [(0, 1), (20, 1), (21, 1), (26, 2), (60, 8),
                                            (99, 14), (100, 15), (500, 15)])
def test_rollout_length_schedule_by_hand(epoch, expected):
    # MBPO hopper schedule [20, 100, 1, 15]: 1 + (e - 20) / 80 * 14, clipped to [1, 15], floored:
    # e=26 -> 2.05 -> 2, e=60 -> 8, e=99 -> 14.825 -> 14.
    assert int(mbpo.rollout_length((20, 100, 1, 15), epoch)) == expected


def test_decreasing_rollout_schedule():
    # (0, 10, 5, 1): 5 - e / 10 * 4 -> e=5: 3, e=9: 1.4 -> 1, beyond: 1.
    assert [int(mbpo.rollout_length((0, 10, 5, 1), e)) for e in (0, 5, 9, 50)] == [5, 3, 1, 1]


def test_mixing_ratio_of_sac_batches():
    cfg = mbpo.PRESETS["paper"]
    assert (cfg.real_ratio, cfg.sac_batch_size, cfg.num_real) == (0.05, 256, 13)  # round(12.8)
    n_real, n_model = cfg.num_real, cfg.sac_batch_size - cfg.num_real
    # Rows are tagged: real ones have reward 1 and terminated True, model ones 0 and False.
    real = _transitions(n_real, 1)
    real = jax.tree_util.tree_map(lambda x: x[:, 0], real).replace(
        obs=jnp.ones((n_real, 3)), next_obs=jnp.ones((n_real, 3)), reward=jnp.ones((n_real,)),
        terminated=jnp.ones((n_real,), bool))
    zeros = lambda n, *s: jnp.zeros((n,) + s)  # noqa: E731
    model_rows = (zeros(n_model, 3), zeros(n_model, 1), zeros(n_model), zeros(n_model, 3),
                  jnp.zeros((n_model,), bool))
    batch = mbpo.mixed_batch(real, model_rows)
    assert batch.obs.shape == (256, 3) and batch.terminated.dtype == jnp.bool_
    assert float(batch.reward.sum()) == 13.0 and int(batch.terminated.sum()) == 13
    assert float(batch.reward[:13].min()) == 1.0  # real rows first


def test_sample_real_draws_only_filled_rows():
    env = envs.make(LEARN_ENV)
    agent = mbpo.make(mbpo.PRESETS["tiny"], env, num_envs=2)
    example = jax.tree_util.tree_map(lambda x: x[0, 0], _transitions(1, 1))
    state = agent.buffer.init(example)
    for t in range(3):  # 3 steps of 2 envs, reward = 10 * env + t
        state = agent.buffer.add(state, _transitions(2, 1, offset=t))
    rows = mbpo.sample_real(state, jax.random.PRNGKey(0), 500)
    assert set(np.unique(np.asarray(rows.reward))) == {0.0, 1.0, 2.0, 10.0, 11.0, 12.0}


def _transitions(num_envs, steps, offset=0):
    from core.types import Transition
    reward = (10.0 * jnp.arange(num_envs)[:, None] + offset + jnp.arange(steps)[None, :])
    zeros = jnp.zeros((num_envs, steps, 1))
    false = jnp.zeros((num_envs, steps), bool)
    return Transition(obs=zeros, action=zeros, reward=reward, next_obs=zeros, terminated=false,
                      truncated=false, is_first=false, extras={})


def test_model_buffer_packs_valid_rows_and_wraps():
    buf = model_buffer.init(5, 1, 1)
    col = lambda v: jnp.asarray(v, jnp.float32)[:, None]  # noqa: E731
    values = [1.0, 2.0, 3.0, 4.0]
    buf = model_buffer.add(buf, col(values), col(values), jnp.asarray(values), col(values),
                           jnp.zeros((4,), bool), jnp.array([True, False, True, True]))
    np.testing.assert_array_equal(np.asarray(buf.reward), [1.0, 3.0, 4.0, 0.0, 0.0])
    assert (int(buf.pointer), int(buf.size)) == (3, 3)
    more = [5.0, 6.0, 7.0]
    buf = model_buffer.add(buf, col(more), col(more), jnp.asarray(more), col(more),
                           jnp.ones((3,), bool), jnp.ones((3,), bool))
    np.testing.assert_array_equal(np.asarray(buf.reward), [7.0, 3.0, 4.0, 5.0, 6.0])
    np.testing.assert_array_equal(np.asarray(buf.obs[:, 0]), [7.0, 3.0, 4.0, 5.0, 6.0])
    assert (int(buf.pointer), int(buf.size)) == (1, 5)
    rows = model_buffer.sample(buf, jax.random.PRNGKey(0), 200)
    assert set(np.unique(np.asarray(rows[2]))) == {3.0, 4.0, 5.0, 6.0, 7.0}
    with pytest.raises(ValueError, match="capacity"):
        model_buffer.add(buf, col(values * 2), col(values * 2), jnp.ones((8,)), col(values * 2),
                         jnp.zeros((8,), bool), jnp.ones((8,), bool))


def test_branched_rollouts_mask_by_length_and_termination():
    model = ensemble.init(jax.random.PRNGKey(0), 2, 1, mbpo.PRESETS["tiny"].ensemble())
    policy = lambda obs, key: jnp.zeros((obs.shape[0], 1))  # noqa: E731
    start = jnp.array([[0.1, 0.0], [0.0, 0.3], [1.0, 1.0]])
    roll = jax.jit(mbpo.branched_rollouts, static_argnames=("max_length", "termination",
                                                            "done_fn", "policy"))
    out = roll(model, policy, start, jnp.asarray(2), jax.random.PRNGKey(1), max_length=4,
               termination="none")
    assert out.obs.shape == (4, 3, 2) and out.action.shape == (4, 3, 1)
    assert out.reward.shape == out.valid.shape == (4, 3)
    np.testing.assert_array_equal(np.asarray(out.valid), [[1] * 3, [1] * 3, [0] * 3, [0] * 3])
    np.testing.assert_array_equal(np.asarray(out.obs[0]), np.asarray(start))
    np.testing.assert_allclose(np.asarray(out.obs[1]), np.asarray(out.next_obs[0]))
    # A termination ends the rollout after the terminal transition (kept, marked terminated).
    done_fn = lambda obs, action, next_obs: obs[1] > 0.2  # noqa: E731  only row 1 at t=0
    out = roll(model, policy, start, jnp.asarray(3), jax.random.PRNGKey(1), max_length=4,
               termination="known", done_fn=done_fn)
    assert bool(out.valid[0, 1]) and bool(out.terminated[0, 1])
    assert not bool(jnp.any(out.valid[1:, 1]))


def test_run_if_skips_under_vmap():
    fn = lambda x: x * 10.0 + 1.0  # noqa: E731
    flags = jnp.array([True, False, True])
    out = jax.jit(jax.vmap(mbpo.run_if, in_axes=(0, None, 0)), static_argnums=1)(
        flags, fn, jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(np.asarray(out), [11.0, 2.0, 31.0])


def test_config_validation():
    with pytest.raises(ValueError, match="MBPOConfig.termination"):
        mbpo.MBPOConfig(termination="sometimes")
    with pytest.raises(ValueError, match="MBPOConfig.model_buffer_size"):
        mbpo.MBPOConfig(rollout_batch_size=100, model_buffer_size=100)
    with pytest.raises(ValueError, match="MBPOConfig.rollout_schedule"):
        mbpo.MBPOConfig(rollout_schedule=(10, 5, 1, 2))
    with pytest.raises(ValueError, match="SACConfig.tau"):
        mbpo.MBPOConfig(tau=0.0)
    for name in ("default", "paper", "tiny", "inverted_pendulum", "cartpole_swingup",
                 "pendulum_v1"):
        cfg = mbpo.PRESETS[name]
        assert cfg.ensemble().predict_termination == (cfg.termination == "learned")
    tiny = dataclasses.replace(mbpo.PRESETS["tiny"], termination="known")
    with pytest.raises(ValueError, match="no known termination"):
        mbpo.make(tiny, envs.make(LEARN_ENV), 1)
    assert mbpo.PRESETS["inverted_pendulum"].termination == "known"
    assert mbpo.PRESETS["default"].termination == "learned"  # for tasks nobody tuned it for
    assert envs.make("brax/inverted_pendulum").termination_fn is not None
