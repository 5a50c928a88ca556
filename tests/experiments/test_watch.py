"""experiments.watch and envs.render: videos of tiny trained runs, drawer geometry, errors."""

import json
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageSequence

from envs import render
from envs.api import EnvSpec, Environment
from experiments import cli, train, watch

POLE_RGB = np.array([0xCA, 0x98, 0x65])


def _train(tmp_path_factory, name, env_id, num_seeds):
    logdir = str(tmp_path_factory.mktemp(name) / "run")
    train.main(["--agent", "random", "--env", env_id, "--steps", "8", "--num-envs", "2",
                "--num-seeds", str(num_seeds), "--log-every", "8", "--no-progress",
                "--logdir", logdir])
    return logdir


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    return _train(tmp_path_factory, "cartpole", "gymnax/CartPole-v1", num_seeds=2)


@pytest.fixture(scope="module")
def minatar_run(tmp_path_factory):
    return _train(tmp_path_factory, "minatar", "gymnax/Breakout-MinAtar", num_seeds=1)


def _gif_frames(path):
    with open(path, "rb") as f:
        assert f.read(4) == b"GIF8"
    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]


def _check_videos(result, num_seeds):
    assert sorted(result) == list(range(num_seeds))
    for seed, out in result.items():
        assert out["path"].endswith(f"seed{seed}.gif")
        frames = _gif_frames(out["path"])
        assert len(frames) > 1
        assert not np.array_equal(frames[0], frames[-1])  # the scene moves
        assert len(out["returns"]) == 2 and all(1 <= n <= 10 for n in out["lengths"])


def test_cartpole_gif_per_seed(cartpole_run, tmp_path, capsys):
    out = str(tmp_path / "videos")
    result = watch.main(["--logdir", cartpole_run, "--episodes", "2", "--max-steps", "10",
                         "--out", out])
    _check_videos(result, num_seeds=2)
    printed = capsys.readouterr().out
    assert "seed 0" in printed and "seed 1" in printed and out in printed


def test_minatar_gif(minatar_run):
    result = watch.main(["--logdir", minatar_run, "--episodes", "2", "--max-steps", "10"])
    _check_videos(result, num_seeds=1)


def _expect_usage_error(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        watch.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


def test_user_mistakes_print_one_error_line(cartpole_run, tmp_path, capsys, monkeypatch):
    _expect_usage_error(capsys, ["--logdir", str(tmp_path / "missing")], "no directory")
    _expect_usage_error(capsys, ["--logdir", str(tmp_path)], "no config.json")
    with open(f"{cartpole_run}/config.json") as f:
        record = json.load(f)
    (tmp_path / "config.json").write_text(json.dumps(record))
    _expect_usage_error(capsys, ["--logdir", str(tmp_path)], "no checkpoint")
    _expect_usage_error(capsys, ["--logdir", cartpole_run, "--seed-index", "2"], "out of range")
    _expect_usage_error(capsys, ["--logdir", cartpole_run, "--episodes", "0"], "--episodes")
    monkeypatch.setattr(watch.shutil, "which", lambda name: None)
    _expect_usage_error(capsys, ["--logdir", cartpole_run, "--format", "mp4"], "--format gif")
    (tmp_path / "checkpoints" / "8").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps({**record, "env": "gymnax/Nope-v0"}))
    _expect_usage_error(capsys, ["--logdir", str(tmp_path)], "no drawer for gymnax/Nope-v0")
    with pytest.raises(cli.UsageError, match="no drawer"):  # --debug: the exception itself
        watch.main(["--logdir", str(tmp_path), "--debug"])


def test_mujoco_failure_is_one_clear_error(monkeypatch):
    def no_gl(*args):
        raise RuntimeError("an OpenGL platform library has not been loaded")

    monkeypatch.setattr(render, "_mujoco_model", no_gl)
    with pytest.raises(render.DrawError, match=r"^cannot draw brax/hopper: .*OpenGL.*"
                                               r"set MUJOCO_GL=egl or osmesa"):
        render.make_drawer("brax/hopper")


def test_cartpole_pole_at_the_state_angle():
    assert render.cartpole_pole_tip(0.5, 0.0) == (0.5, 1.0)
    tip = render.cartpole_pole_tip(0.0, 0.2, pole_length=2.0)
    assert tip == pytest.approx((2 * math.sin(0.2), 2 * math.cos(0.2)))
    drawer = render.make_drawer("gymnax/CartPole-v1")
    frames = drawer.draw({"x": np.zeros(2), "theta": np.array([0.0, 0.4])})
    assert frames.shape == (2, 300, 600, 3) and frames.dtype == np.uint8
    upright = render.world_to_pixel((0.0, 0.8), "CartPole-v1")
    leaning = render.world_to_pixel((0.8 * math.sin(0.4), 0.8 * math.cos(0.4)), "CartPole-v1")
    is_pole = lambda frame, pixel: np.abs(frame[pixel].astype(int) - POLE_RGB).max() < 30
    assert is_pole(frames[0], upright) and not is_pole(frames[0], leaning)
    assert is_pole(frames[1], leaning) and not is_pole(frames[1], upright)


def test_minatar_channels_in_their_own_colours():
    grid = np.zeros((1, 10, 10, 3), np.float32)
    grid[0, 2, 5, 1] = 1.0
    grid[0, 7, 0, [0, 2]] = 1.0  # overlapping channels: the highest one shows
    frame = render.minatar_frames(grid)[0]
    colours = render.minatar_colours(3)
    cell = lambda r, c: frame[r * 24 + 12, c * 24 + 12]
    assert len({tuple(c) for c in colours}) == 4
    assert np.array_equal(cell(2, 5), colours[2]) and np.array_equal(cell(7, 0), colours[3])
    assert np.array_equal(cell(0, 0), colours[0])


def _counter_env():
    """Counts 0, 1, 2, ... with reward 1 per step and terminates on reaching 3."""
    def reset(key):
        return jnp.zeros(()), jnp.zeros((1,))

    def step(state, action, key):
        nxt = state + 1.0
        return nxt, nxt[None], jnp.ones(()), nxt >= 3

    spec = EnvSpec(env_id="test/counter", obs_shape=(1,), discrete=True, num_actions=2,
                   max_episode_steps=100)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step)


def test_play_episodes_ends_and_freezes_each_episode():
    agent = types.SimpleNamespace(
        initial_carry=lambda n: jnp.zeros((n,)),
        act=lambda params, obs, first, carry, key, explore: (
            jnp.zeros(obs.shape[:1], jnp.int32), carry, {}))
    view = lambda inner, obs: obs[0]
    import jax
    views, returns, lengths = watch.play_episodes(_counter_env(), agent, view, None,
                                                  jax.random.PRNGKey(0), num_episodes=2,
                                                  max_steps=5)
    assert np.asarray(views).shape == (6, 2)
    np.testing.assert_array_equal(np.asarray(views)[:, 0], [0, 1, 2, 3, 3, 3])
    np.testing.assert_array_equal(lengths, [3, 3])
    np.testing.assert_array_equal(returns, [3.0, 3.0])
    _, returns, lengths = watch.play_episodes(_counter_env(), agent, view, None,
                                              jax.random.PRNGKey(0), num_episodes=1,
                                              max_steps=2)
    np.testing.assert_array_equal(lengths, [2])
    np.testing.assert_array_equal(returns, [2.0])
