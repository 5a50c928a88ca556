"""The host loop: outputs, seeds as an axis, resume after SIGKILL, sharding, NaN guard, CLI."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import random as random_agent
from agents import registry
from core import runner
from experiments import cli, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--agent", "mpc", "--env", "linear/scalar_a1.1", "--preset", "tiny", "--num-envs", "2",
        "--log-every", "40", "--eval-every", "-1", "--no-progress"]


def _run(args, extra_env=None, **kwargs):
    env = dict(os.environ, **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_cli_outputs_and_overrides(tmp_path):
    logdir = str(tmp_path / "run")
    summary = train.main(TINY + ["--steps", "120", "--logdir", logdir, "--eval-every", "0",
                                 "--horizon", "6", "--env-option", "max_episode_steps=30"])
    config = json.load(open(os.path.join(logdir, "config.json")))
    assert config["agent_config"]["horizon"] == 6 and config["run"]["num_envs"] == 2
    assert config["env_options"] == {"max_episode_steps": 30}
    lines = [json.loads(x) for x in open(os.path.join(logdir, "metrics.jsonl"))]
    assert all("env_steps" in r and "wall_time" in r for r in lines)
    assert any("episode_return_mean" in r for r in lines)
    assert "eval_return_mean" in lines[-1] and summary["env_steps"] >= 120
    files = os.listdir(logdir)
    assert "returns.png" in files and any(f.startswith("events.out.tfevents") for f in files)
    assert os.listdir(os.path.join(logdir, "checkpoints"))
    # The evaluations of trained runs rebuild the run from its logdir.
    env, agent_cfg, state, record = train.load_run(logdir)
    assert env.spec.env_id == "linear/scalar_a1.1" and record["agent"] == "mpc"
    assert env.spec.max_episode_steps == 30  # the env options travel with the run
    assert agent_cfg.horizon == 6 and dataclasses.asdict(agent_cfg) == record["agent_config"]
    assert int(np.asarray(state.env_steps)) == summary["env_steps"]  # seed 0, no seed axis
    # A run whose command no longer gives its configuration (a preset whose settings changed
    # since): rebuilt with the recorded fields, not today's.
    record["argv"] = [a for a in record["argv"] if a not in ("--horizon", "6")]
    json.dump(record, open(os.path.join(logdir, "config.json"), "w"))
    _, agent_cfg, again, _ = train.load_run(logdir)
    assert agent_cfg.horizon == 6
    assert runner.tree_allclose(again, state)


@pytest.mark.parametrize("argv, message", [
    (["--agent", "nope", "--env", "linear/scalar_a0.5"], "known agents: .*mpc"),
    (["--agent", "mpc", "--env", "linear/nope"], "Known linear ids: linear/scalar_a0.5"),
    (["--agent", "mpc", "--env", "nope/x"], "family one of"),
    (["--agent", "mpc", "--env", "linear/scalar_a0.5", "--preset", "huge"], "known presets"),
    (["--agent", "mpc", "--env", "linear/scalar_a0.5", "--num-envs", "0"], "num-envs must be"),
    (["--agent", "mpc", "--env", "linear/scalar_a0.5", "--elites", "9999"], "elites must be"),
    (["--agent", "mpc", "--env", "linear/scalar_a0.5", "--env-option", "4"], "KEY=VALUE"),
    (["--agent", "mpc", "--env", "linear/scalar_a0.5", "--env-option", "bogus=1"],
     "unknown option.*bogus"),
])
def test_cli_errors_name_the_problem(argv, message):
    with pytest.raises((ValueError, cli.UsageError), match=message):
        train.build(argv)


def test_cli_unknown_override_field_is_a_usage_error():
    with pytest.raises(cli.UsageError, match="bogus-field"):
        train.build(["--agent", "mpc", "--env", "linear/scalar_a0.5", "--bogus-field", "3"])


def test_a_budget_within_the_prefill_is_refused(tmp_path):
    """``--steps`` that end during the random prefill would learn and evaluate nothing: one
    error naming the prefill and the fix, before anything is compiled or written."""
    logdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"--steps 20 ends before learning starts.*collects 20 "
                                         r"random environment steps.*--steps above 20"):
        train.main(TINY + ["--steps", "20", "--logdir", logdir])  # tiny's prefill_steps=20
    assert not os.path.exists(logdir)
    proc = _run(TINY + ["--steps", "4", "--prefill-steps", "8", "--logdir", logdir])
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 2 and out.strip().splitlines()[-1].startswith(
        "error: --steps 4 ends before learning starts"), out
    # checked before --fresh moves the run that is there aside
    train.main(TINY + ["--steps", "60", "--logdir", logdir])
    with pytest.raises(ValueError, match="ends before learning starts"):
        train.main(TINY + ["--steps", "20", "--logdir", logdir, "--fresh"])
    assert [p for p in os.listdir(tmp_path)] == ["run"]
    # MuZero's prefill also covers one training window per environment: the message says so
    with pytest.raises(ValueError, match=r"collects 288 random.*fewer --num-envs"):
        train.build(["--agent", "muzero", "--env", "gymnax/CartPole-v1", "--steps", "280",
                     "--prefill-steps", "1"])


def test_targets_clipped_by_a_support_are_warned_about_once(capsys):
    warned = set()
    runner._warn_clipped({"env_steps": 100, "value_target_clipped": 0.005,
                          "reward_target_clipped": 0.25}, warned)
    runner._warn_clipped({"env_steps": 200, "reward_target_clipped": 0.5}, warned)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["[train] warning: 25.0% of the reward targets at env_steps=100 lie beyond the "
                   "reward support and are clipped to its ends; widen it "
                   "(--reward-support-max, in the transformed space) if this persists"], out
    # a training run warns once, from the metrics its updates report
    env = envs.make("linear/scalar_a0.5")
    base = random_agent.make(random_agent.RandomConfig(buffer_size=64), env, num_envs=2)

    def update(state, buffer_state, key):
        return state + 1, buffer_state, {"reward_target_clipped": jnp.float32(0.5)}

    from core.types import Agent, Schedule
    agent = Agent(init=base.init, initial_carry=base.initial_carry, act=base.act, update=update,
                  buffer=base.buffer, schedule=Schedule(env_steps_per_iteration=5))
    runner.train(env, agent, runner.RunConfig(steps=60, num_envs=2, log_every=20, eval_every=-1,
                                              progress=False))
    warnings = [line for line in capsys.readouterr().out.splitlines()
                if "of the reward targets" in line]
    assert len(warnings) == 1 and "--reward-support-max" in warnings[0], warnings


def test_four_seeds_in_one_program():
    env = envs.make("linear/scalar_a0.5")
    agent = random_agent.make(random_agent.RandomConfig(buffer_size=64), env, num_envs=2)
    cfg = runner.RunConfig(steps=100, num_envs=2, num_seeds=4, log_every=50, eval_every=-1,
                           progress=False)
    result = runner.train(env, agent, cfg)
    assert result.state.env.obs.shape == (4, 2, 1)
    per_seed = result.history[-1]["episode_return_per_seed"]
    assert len(per_seed) == 4 and len(set(per_seed)) == 4  # independent seeds differ
    np.testing.assert_array_equal(np.asarray(result.state.env_steps), [100] * 4)


def test_evaluations_as_often_as_asked_below_log_every():
    """``eval_every`` shorter than ``log_every`` shortens the chunks: an evaluation every 40
    steps, not at each 100-step metric line."""
    env = envs.make("linear/scalar_a0.5")
    agent = random_agent.make(random_agent.RandomConfig(buffer_size=64), env, num_envs=2)
    cfg = runner.RunConfig(steps=200, num_envs=2, log_every=100, eval_every=40, eval_episodes=2,
                           progress=False)
    history = runner.train(env, agent, cfg).history
    evaluated = [r["env_steps"] for r in history if "eval_return_mean" in r]
    assert evaluated == [40, 80, 120, 160, 200], evaluated


def test_a_budget_just_past_the_prefill_ends_within_one_chunk_of_it():
    """Chunks start where the random prefill ends: a budget one iteration (2 environments x
    10 steps) past the 20-step prefill ends there, at 40 steps, not a whole 40-step metric
    period (``log_every``) past it; one step more takes one iteration more."""
    for steps, ends in ((40, [20, 40]), (41, [20, 40, 60])):
        _, agent, cfg, _ = train.build(TINY + ["--steps", str(steps)])
        cfg = dataclasses.replace(cfg, logdir=None)
        assert runner.prefill_env_steps(agent.schedule, cfg.num_envs) == 20
        history = runner.train(envs.make("linear/scalar_a1.1"), agent, cfg).history
        assert [r["env_steps"] for r in history] == ends


def test_max_seconds_stops_with_final_eval_and_checkpoint_then_resumes(tmp_path):
    env = envs.make("linear/scalar_a0.5")
    agent = random_agent.make(random_agent.RandomConfig(buffer_size=64), env, num_envs=2)
    cfg = runner.RunConfig(steps=200, num_envs=2, log_every=20, eval_every=0, eval_episodes=2,
                           progress=False, logdir=str(tmp_path), max_seconds=1e-9)
    stopped = runner.train(env, agent, cfg)
    assert stopped.env_steps == 2  # one iteration, then the wall-clock budget is spent
    last = stopped.history[-1]
    assert last["stopped_by"] == "max_seconds" and "eval_return_mean" in last
    assert os.listdir(os.path.join(str(tmp_path), "checkpoints"))
    finished = runner.train(env, agent, dataclasses.replace(cfg, max_seconds=0.0))
    # resumed: the rest of the stopped chunk first, so the metric lines keep their steps
    assert [r["env_steps"] for r in finished.history[:2]] == [20, 40]
    assert finished.env_steps == 200
    assert "stopped_by" not in finished.history[-1]
    with pytest.raises(ValueError, match="max_seconds must be >= 0"):
        runner.RunConfig(max_seconds=-1.0)


def test_call_sizes_follow_the_measured_pace_and_the_deadline():
    call = runner._call_iterations
    assert [call(50, None, calls, 0.0, math.inf) for calls in (0, 1, 2)] == [1, 1, 50]
    assert call(500, 0.01, 5, 0.0, math.inf) == 500  # 5 s: one call
    assert call(500, 1.0, 5, 0.0, math.inf) == int(runner.CALL_SECONDS)  # split
    assert call(500, 1.0, 5, 100.0, 105.5) == 5  # what fits before the deadline
    assert call(500, 1.0, 5, 100.0, 100.2) == 1  # at least one


@pytest.mark.parametrize("cause", ["max_seconds", "SIGTERM"])
def test_a_stop_within_the_last_chunk_resumes_to_its_end(tmp_path, monkeypatch, cause):
    """The last chunk (iterations 11-20, steps 22-40) ends past ``steps`` = 30; a stop after
    its 6th call (one iteration each), at 32 steps, is a stop, not the end of training, and
    the resumed run trains to 40 as an uninterrupted one does."""
    env = envs.make("linear/scalar_a1.1")
    agent = random_agent.make(random_agent.RandomConfig(buffer_size=64), env, num_envs=2)
    cfg = runner.RunConfig(steps=30, num_envs=2, log_every=20, eval_every=-1,
                           progress=False, logdir=str(tmp_path))
    monkeypatch.setattr(runner, "CALL_SECONDS", 1e-9)  # one iteration per call
    checks = []
    real = runner.sharding.agree_any

    def stop_at_32_steps(flags):  # a check opens each chunk, and one follows every call
        checks.append(1)
        out = np.asarray(real(flags)).copy()
        out[0 if cause == "SIGTERM" else 1] |= len(checks) == 11 + 1 + 6
        return out

    monkeypatch.setattr(runner.sharding, "agree_any", stop_at_32_steps)
    stopped = runner.train(env, agent, cfg)
    assert stopped.env_steps == 32 and stopped.stopped_by == cause
    assert stopped.history[-1] == {**stopped.history[-1], "env_steps": 32, "stopped_by": cause}
    monkeypatch.undo()
    finished = runner.train(env, agent, cfg)
    assert [r["env_steps"] for r in finished.history] == [40]
    assert finished.env_steps == 40 and finished.stopped_by is None


def test_a_chunk_split_into_calls_logs_what_one_call_logs(monkeypatch):
    """A chunk runs as several compiled calls where one would be long (``CALL_SECONDS``); its
    metric line sums their episodes and averages their update metrics by iterations."""
    env = envs.make("linear/scalar_a1.1")
    agent = registry.agent_module("mpc").make(registry.preset("mpc", "tiny"), env, 2)
    cfg = runner.RunConfig(steps=120, num_envs=2, log_every=50, eval_every=-1,
                           progress=False, logdir=None)
    whole = runner.train(env, agent, cfg).history
    calls = []
    monkeypatch.setattr(runner, "CALL_SECONDS", 1e-9)  # one iteration per call
    real = runner._call_iterations
    monkeypatch.setattr(runner, "_call_iterations",
                        lambda *a: calls.append(real(*a)) or calls[-1])
    split = runner.train(env, agent, cfg).history
    per_iteration = cfg.num_envs * agent.schedule.env_steps_per_iteration
    assert len(whole) > 2  # the prefill's line, then chunks of several iterations
    assert calls == [1] * ((whole[-1]["env_steps"] - whole[0]["env_steps"]) // per_iteration)
    assert [r["env_steps"] for r in split] == [r["env_steps"] for r in whole]
    for one, many in zip(whole, split):
        assert set(one) == set(many)
        for name, value in one.items():
            if name != "wall_time" and isinstance(value, float):
                assert many[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    target = 400
    killed = str(tmp_path / "killed")
    # A long run checkpointing every chunk, killed right after its first checkpoint lands.
    proc = _run(TINY + ["--steps", "1000000", "--logdir", killed, "--checkpoint-every", "40"])
    ckpt_dir = os.path.join(killed, "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_at_kill = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    assert steps_at_kill < target, steps_at_kill
    resumed = _run(TINY + ["--steps", str(target), "--logdir", killed,
                           "--checkpoint-every", "40"])
    out = resumed.communicate()[0].decode()
    assert resumed.returncode == 0 and "resumed from" in out, out[-2000:]
    fresh = str(tmp_path / "fresh")
    proc = _run(TINY + ["--steps", str(target), "--logdir", fresh])
    assert proc.wait() == 0, proc.stdout.read().decode()[-2000:]

    states = []
    for logdir in (killed, fresh):
        env, agent, cfg, _ = train.build(TINY + ["--steps", str(target), "--logdir", logdir])
        states.append(runner.restore(env, agent, cfg))
    a, b = states
    assert int(a.env_steps[0]) == int(b.env_steps[0]) >= target
    np.testing.assert_array_equal(np.asarray(a.agent.model.A), np.asarray(b.agent.model.A))
    assert runner.tree_allclose(a, b, rtol=0, atol=0)
    steps = [json.loads(x)["env_steps"] for x in open(os.path.join(killed, "metrics.jsonl"))]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no repeated lines


def test_sharded_over_four_devices_matches_one(tmp_path):
    script = f"""
import sys; sys.path.insert(0, {ROOT!r})
import jax
from experiments import train
from core import runner
assert len(jax.devices()) == 4, jax.devices()
states = []
for n in (1, 4):
    env, agent, cfg, _ = train.build({TINY!r} + ["--steps", "160", "--num-envs", "4",
                                      "--num-devices", str(n)])
    import dataclasses
    cfg = dataclasses.replace(cfg, logdir=None)
    states.append(runner.train(env, agent, cfg).state)
sharding = states[1].env.obs.sharding
assert len(sharding.device_set) == 4, sharding
assert runner.tree_allclose(states[0], states[1], rtol=1e-4, atol=1e-5)
print("SHARDED_OK")
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=600)
    assert "SHARDED_OK" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


def test_nonfinite_metric_stops_with_name_and_step(tmp_path):
    env = envs.make("linear/scalar_a0.5")
    base = random_agent.make(random_agent.RandomConfig(buffer_size=64), env, num_envs=2)

    def update(state, buffer_state, key):
        loss = jnp.where(state > 2, jnp.nan, 1.0)  # becomes NaN at the 4th update
        return state + 1, buffer_state, {"loss": loss}

    from core.types import Agent, Schedule
    agent = Agent(init=base.init, initial_carry=base.initial_carry, act=base.act, update=update,
                  buffer=base.buffer, schedule=Schedule(env_steps_per_iteration=5))
    cfg = runner.RunConfig(steps=200, num_envs=2, log_every=10, eval_every=-1,
                           checkpoint_every=10, logdir=str(tmp_path / "nan"), progress=False)
    with pytest.raises(runner.NonFiniteMetricError, match=r"'loss' is nan at env_steps=40"):
        runner.train(env, agent, cfg)
    assert max(int(d) for d in os.listdir(tmp_path / "nan" / "checkpoints")) == 30


def test_a_seed_skipping_every_update_of_a_chunk_stops_the_run(tmp_path):
    env = envs.make("linear/scalar_a0.5")
    base = random_agent.make(random_agent.RandomConfig(buffer_size=64), env, num_envs=2)

    def update(state, buffer_state, key):  # skips from update 3 on: chunk 2 half, chunk 3 all
        skipped = jnp.where(state >= 3, 1.0, 0.0)
        return state + 1, buffer_state, {"loss": jnp.ones(()), "skipped_updates": skipped}

    from core.types import Agent, Schedule
    agent = Agent(init=base.init, initial_carry=base.initial_carry, act=base.act, update=update,
                  buffer=base.buffer, schedule=Schedule(env_steps_per_iteration=5))
    cfg = runner.RunConfig(steps=200, num_envs=2, log_every=20, eval_every=-1,
                           logdir=str(tmp_path / "skip"), progress=False)
    with pytest.raises(runner.NonFiniteMetricError,
                       match=r"every update of the last chunk.*seeds \[0\]\) at env_steps=60"):
        runner.train(env, agent, cfg)
    lines = [json.loads(x) for x in open(tmp_path / "skip" / "metrics.jsonl")]
    assert [r["skipped_updates"] for r in lines if "skipped_updates" in r] == [0.0, 0.5]


def test_nonfinite_message_names_a_fix_that_a_rerun_accepts():
    # A resume repeats the same updates and refuses a changed learning rate (core.rundir), so
    # the message must point to a new run, not to a resume.
    fix = runner._NONFINITE_FIX.format(30)
    assert "env_steps=30" in fix and "--fresh" in fix and "new --logdir" in fix
    assert "then rerun to resume" not in fix
    with pytest.raises(runner.NonFiniteMetricError, match=r"'loss' is nan.*new --logdir"):
        runner._check_finite({"env_steps": 40, "loss": float("nan")}, 30)
    with pytest.raises(runner.NonFiniteMetricError, match=r"seeds \[1\]\).*new --logdir"):
        runner._check_skipped({"skipped_updates": np.array([0.5, 1.0])}, 40, 30)


def test_steps_beyond_the_int32_step_counter_are_refused():
    from core.types import Schedule
    schedule = Schedule(env_steps_per_iteration=1, prefill_steps=0)
    cfg = runner.RunConfig(steps=2 ** 31 - 3000, num_envs=8, log_every=1000, eval_every=-1)
    runner.check_budget(schedule, cfg)
    with pytest.raises(ValueError, match=r"--steps 2147482648 is too large.*; 1000 steps here\)"):
        runner.check_budget(schedule, dataclasses.replace(cfg, steps=2 ** 31 - 1000))
    # a chunk is at least one iteration: 8 x 200 = 1,600 steps for log_every 1,000
    cfg = dataclasses.replace(cfg, steps=2 ** 31 - 1500)
    runner.check_budget(schedule, cfg)
    with pytest.raises(ValueError, match=r"; 1600 steps here\)"):
        runner.check_budget(Schedule(env_steps_per_iteration=200, prefill_steps=0), cfg)


def test_resumed_tensorboard_log_keeps_the_checkpoint_step(tmp_path):
    # TensorBoard drops the events at steps >= the step of a resumed writer's purge marker;
    # metrics.jsonl keeps the line at the checkpoint's step, so TensorBoard must too.
    import glob
    import struct
    from tensorboardX.proto import event_pb2
    from core.logger import MetricsLogger

    logger = MetricsLogger(str(tmp_path), resume_env_steps=20)
    logger.log({"env_steps": 30, "loss": 1.0})
    logger.close()
    markers = []
    for path in glob.glob(str(tmp_path / "events*")):
        data, i = open(path, "rb").read(), 0
        while i < len(data):  # TFRecord: length, its CRC, the record, its CRC
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 16 + length
            if event.HasField("session_log"):
                markers.append((event.session_log.status, event.step))
    assert markers == [(event_pb2.SessionLog.START, 21)]
