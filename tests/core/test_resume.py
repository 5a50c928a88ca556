"""Resuming is safe: a changed run is refused, ``--fresh`` moves it aside, a directory another
run is writing is refused, a damaged newest
checkpoint falls back to the previous one, SIGTERM leaves a checkpoint, the default device
count splits the environments."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from core import logger, rundir, sharding
from experiments import cli, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANDOM = ["--agent", "random", "--env", "linear/scalar_a1.1", "--num-envs", "2",
          "--log-every", "16", "--checkpoint-every", "16", "--no-progress"]


def _steps(logdir):
    return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(logdir, "checkpoints",
                                                                           "*"))
                  if os.path.basename(p).isdigit())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 64-step run of the random agent (checkpoints at 48 and 64 are kept)."""
    logdir = str(tmp_path_factory.mktemp("run") / "random")
    train.main(RANDOM + ["--steps", "64", "--logdir", logdir])
    return logdir


def test_config_records_provenance(finished_run):
    record = rundir.read_config(finished_run)
    prov = record["provenance"]
    assert prov["jax_version"] and prov["device_kind"] and prov["platform"] == "cpu"
    assert set(prov) >= {"library_version", "git_commit", "time"}
    assert record["agent"] == "random" and record["run"]["num_envs"] == 2


def test_changed_run_is_refused_naming_each_field(finished_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(train.main, RANDOM + ["--steps", "64", "--logdir", finished_run, "--seed", "3",
                                      "--buffer-size", "100"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    assert "run.seed: 0 -> 3" in err and "agent_config.buffer_size: 4096 -> 100" in err
    assert "--fresh" in err and "new --logdir" in err
    assert _steps(finished_run) == [48, 64]  # nothing touched


def test_differences_compare_only_identity_fields():
    old = {"agent": "mpc", "run": {"seed": 0, "steps": 10, "num_envs": 4},
           "agent_config": {"horizon": 15, "sizes": [1, 2]}}
    new = {"agent": "mpc", "run": {"seed": 0, "steps": 99, "num_envs": 4},
           "agent_config": {"horizon": 15, "sizes": (1, 2)}}
    assert rundir.differences(old, new) == []
    new["agent_config"] = {"horizon": 5, "sizes": (1, 2)}
    new["run"]["num_envs"] = 8
    assert rundir.differences(old, new) == [("agent_config.horizon", 15, 5),
                                            ("run.num_envs", 4, 8)]
    # A preset is compared by the configuration it gives, not by its name (a renamed preset).
    renamed = dict(old, preset="image")
    assert rundir.differences(dict(old, preset="default"), renamed) == []
    assert rundir.differences(dict(old, preset="default"),
                              dict(renamed, agent_config={"horizon": 5, "sizes": [1, 2]})) == [
        ("agent_config.horizon", 15, 5)]
    # A field added after the old run was recorded: no difference at its default, one else.
    new = {"agent": "mpc", "run": {"seed": 0, "steps": 99, "num_envs": 4},
           "agent_config": {"horizon": 15, "sizes": (1, 2), "noise": 0.0},
           "defaults": {"agent_config": {"horizon": 10, "noise": 0.0}}}
    assert rundir.differences(old, new) == []
    new["agent_config"]["noise"] = 0.3
    assert rundir.differences(old, new) == [("agent_config.noise", "<absent>", 0.3)]
    new["agent_config"]["horizon"] = 10  # a field the old run has is compared as before
    assert ("agent_config.horizon", 15, 10) in rundir.differences(old, new)


def test_a_field_whose_default_changed_behaviour_resumes_at_its_value_before():
    """Stochastic MuZero's code usage loss is on by default, but a run recorded before the field
    existed trained without it: it resumes at 0 and is refused at the default."""
    from agents.stochastic_muzero.config import StochasticMuZeroConfig
    cfg = StochasticMuZeroConfig()
    before = train.field_defaults(cfg)
    assert cfg.code_usage_loss_weight == 0.1 and before["code_usage_loss_weight"] == 0.0
    assert before["codebook_size"] == cfg.codebook_size
    old = {"agent_config": {"codebook_size": 32}}
    new = {"agent_config": {"codebook_size": 32, "code_usage_loss_weight": 0.1},
           "defaults": {"agent_config": before}}
    assert rundir.differences(old, new) == [
        ("agent_config.code_usage_loss_weight", "<absent>", 0.1)]
    new["agent_config"]["code_usage_loss_weight"] = 0.0
    assert rundir.differences(old, new) == []


def test_the_value_before_a_field_may_depend_on_the_task(tmp_path):
    """MuZero's board plane (``action_encoding="auto"``) changed the network only on tasks
    with an action layout: a run recorded before the field resumes at ``"broadcast"`` there,
    at the default elsewhere; the refusal names the flag that resumes it."""
    import envs
    from agents.muzero.config import MuZeroConfig
    cfg = MuZeroConfig()
    board = train.field_defaults(cfg, envs.make("pgx/tic_tac_toe").spec)
    vector = train.field_defaults(cfg, envs.make("gymnax/CartPole-v1").spec)
    assert board["action_encoding"] == "broadcast" and vector["action_encoding"] == "auto"
    old = {"agent_config": {"num_simulations": 50}}
    new = {"agent_config": {"num_simulations": 50, "action_encoding": "auto"},
           "defaults": {"agent_config": board}}
    assert rundir.differences(old, new) == [("agent_config.action_encoding", "<absent>", "auto")]
    new["defaults"] = {"agent_config": vector}
    assert rundir.differences(old, new) == []
    logdir = str(tmp_path / "run")
    os.makedirs(logdir)
    with open(os.path.join(logdir, rundir.CONFIG_FILE), "w") as f:
        json.dump(old, f)
    new["defaults"] = {"agent_config": board}
    with pytest.raises(rundir.RunMismatchError, match="it resumes with --action-encoding "
                                                      "broadcast; pass a new --logdir"):
        rundir.check_logdir(logdir, new)
    # A boolean field names its --field / --no-field flag.
    new = {"agent_config": {"num_simulations": 50, "gumbel_temperature": True},
           "defaults": {"agent_config": {"gumbel_temperature": False}}}
    with pytest.raises(rundir.RunMismatchError,
                       match="it resumes with --no-gumbel-temperature; pass a new --logdir"):
        rundir.check_logdir(logdir, new)
    # A field whose value changed (a preset's new default) is named at its old value.
    new = {"agent_config": {"num_simulations": 32, "policy_loss_weight": 0.25},
           "defaults": {"agent_config": {"policy_loss_weight": 1.0}}}
    with open(os.path.join(logdir, rundir.CONFIG_FILE), "w") as f:
        json.dump({"agent_config": {"num_simulations": 50, "policy_loss_weight": 1.0}}, f)
    with pytest.raises(rundir.RunMismatchError, match="it resumes with --num-simulations 50 "
                                                      "--policy-loss-weight 1.0; pass a new"):
        rundir.check_logdir(logdir, new)
    # A changed boolean names its flag, a string is quoted for the shell.
    with open(os.path.join(logdir, rundir.CONFIG_FILE), "w") as f:
        json.dump({"agent_config": {"gumbel_temperature": True, "search": "two words"}}, f)
    new = {"agent_config": {"gumbel_temperature": False, "search": "gumbel"}}
    with pytest.raises(rundir.RunMismatchError, match="it resumes with --gumbel-temperature "
                                                      "--search 'two words'; pass a new"):
        rundir.check_logdir(logdir, new)
    # No flag is named where one difference has none (the task, a list field, a field removed
    # since, or an old value of None).
    old = {"env": "gymnax/CartPole-v1",
           "agent_config": {"policy_loss_weight": 1.0, "temperatures": [0.5], "gone": 3,
                            "hidden": None}}
    with open(os.path.join(logdir, rundir.CONFIG_FILE), "w") as f:
        json.dump(old, f)
    same = {"policy_loss_weight": 0.25, "temperatures": [0.5], "gone": 3, "hidden": None}
    for record in ({"env": "gymnax/Acrobot-v1", "agent_config": same},
                   {"env": "gymnax/CartPole-v1", "agent_config": {**same, "temperatures": [1.0]}},
                   {"env": "gymnax/CartPole-v1",
                    "agent_config": {k: v for k, v in same.items() if k != "gone"}},
                   {"env": "gymnax/CartPole-v1", "agent_config": {**same, "hidden": 64}}):
        with pytest.raises(rundir.RunMismatchError) as err:
            rundir.check_logdir(logdir, record)
        assert "policy_loss_weight" in str(err.value) and "resumes with" not in str(err.value)


def test_a_run_recorded_before_a_field_existed_resumes(tmp_path):
    logdir = str(tmp_path / "run")
    train.main(RANDOM + ["--steps", "32", "--logdir", logdir])
    record = rundir.read_config(logdir)
    field = next(iter(record["agent_config"]))
    del record["agent_config"][field]  # as an older version wrote it
    with open(os.path.join(logdir, rundir.CONFIG_FILE), "w") as f:
        json.dump(record, f)
    summary = train.main(RANDOM + ["--steps", "48", "--logdir", logdir, "--eval-every", "-1"])
    assert summary["env_steps"] == 48


def test_budget_change_resumes_and_fresh_moves_aside(tmp_path):
    logdir = str(tmp_path / "run")
    train.main(RANDOM + ["--steps", "32", "--logdir", logdir])
    summary = train.main(RANDOM + ["--steps", "48", "--logdir", logdir, "--eval-every", "-1"])
    assert summary["env_steps"] == 48
    record = rundir.read_config(logdir)
    assert record["run"]["steps"] == 48 and len(record["resumes"]) == 1
    lines = logger.read_metrics(logdir)
    assert [r["env_steps"] for r in lines] == [16, 32, 48]

    train.main(RANDOM + ["--steps", "16", "--logdir", logdir, "--seed", "5", "--fresh"])
    aside = glob.glob(logdir + ".*")
    assert len(aside) == 1 and _steps(aside[0]) == [32, 48]
    assert _steps(logdir) == [16] and rundir.read_config(logdir)["run"]["seed"] == 5


def test_a_directory_another_run_is_writing_is_refused(tmp_path, capsys):
    """While another live process holds the log directory, a run on it (or ``--fresh``, which
    would move it away) stops with one line naming the holder; once the holder is killed the
    same command resumes."""
    logdir = str(tmp_path / "run")
    train.main(RANDOM + ["--steps", "32", "--logdir", logdir])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from core import rundir; "
         "lock = rundir.WriterLock(sys.argv[1]).acquire(); print('held', flush=True); "
         "time.sleep(600)", logdir], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--fresh"]):
            with pytest.raises(SystemExit) as exit_:
                cli.run(train.main, RANDOM + ["--steps", "48", "--logdir", logdir] + extra)
            assert exit_.value.code == 2
            err = capsys.readouterr().err.strip()
            assert "\n" not in err and err.startswith("error: ")
            assert f"being written by another run (pid {holder.pid} on" in err
            assert "another --logdir" in err
        assert not glob.glob(logdir + ".*") and _steps(logdir) == [16, 32]  # nothing moved
    finally:
        holder.kill()
        holder.wait()
    summary = train.main(RANDOM + ["--steps", "48", "--logdir", logdir])
    assert summary["env_steps"] == 48 and _steps(logdir)[-1] == 48


def _damage(checkpoint_dir):
    data = [p for p in glob.glob(os.path.join(checkpoint_dir, "state", "**", "d", "*"),
                                 recursive=True) if os.path.isfile(p)]
    assert data
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(4)


def test_damaged_newest_checkpoint_resumes_from_the_previous(tmp_path, capsys):
    logdir = str(tmp_path / "run")
    train.main(RANDOM + ["--steps", "64", "--logdir", logdir])
    assert _steps(logdir) == [48, 64]
    _damage(os.path.join(logdir, "checkpoints", "64"))
    capsys.readouterr()
    summary = train.main(RANDOM + ["--steps", "80", "--logdir", logdir])
    out = capsys.readouterr().out
    report = [line for line in out.splitlines() if "does not restore" in line]
    assert len(report) == 1 and "env_steps=64" in report[0] and "from env_steps=48" in report[0]
    assert summary["env_steps"] == 80
    assert os.path.isdir(os.path.join(logdir, "checkpoints", "64.damaged"))
    assert _steps(logdir)[-1] == 80
    steps = [r["env_steps"] for r in logger.read_metrics(logdir)]
    assert steps == sorted(steps) and steps[-2:] == [64, 80]


def test_sigterm_saves_a_checkpoint_then_resumes(tmp_path):
    logdir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "experiments.train", *RANDOM, "--steps", "100000000",
           "--checkpoint-every", "0", "--eval-every", "-1", "--logdir", logdir]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    metrics = os.path.join(logdir, "metrics.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out
    lines = logger.read_metrics(logdir)
    assert lines[-1]["stopped_by"] == "SIGTERM"
    assert _steps(logdir) == [lines[-1]["env_steps"]]
    summary = train.main(RANDOM + ["--steps", str(lines[-1]["env_steps"] + 16),
                                   "--logdir", logdir, "--checkpoint-every", "0",
                                   "--eval-every", "-1"])
    assert summary["env_steps"] == lines[-1]["env_steps"] + 16
    with open(os.path.join(logdir, "config.json")) as f:
        assert len(json.load(f)["resumes"]) == 1


def _start_and_wait_for_config(cmd, logdir, settle: float = 3.0):
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(logdir, "config.json")):
            break
        time.sleep(0.2)
    time.sleep(settle)  # into the first chunk
    return proc


def test_a_second_signal_stops_at_once_inside_a_long_chunk(tmp_path):
    """The main thread waits out a chunk inside compiled code, where Python runs no signal
    handler; the first SIGTERM is acknowledged at once all the same, and a second one, sent a
    while later, stops the process at once, not at the call's end. The loop's calls after the
    first two (which compile and time one iteration) last about ``runner.CALL_SECONDS``; with
    4,096 environments an iteration costs far more than a call's overhead, so the one-iteration
    timing is close and the call running 8 s after the start is a long one (one chunk of 400M
    steps here: a minute or more)."""
    logdir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "experiments.train", *RANDOM, "--num-envs", "4096",
           "--steps", "400000000", "--log-every", "400000000", "--checkpoint-every", "0",
           "--eval-every", "-1", "--logdir", logdir]
    proc = _start_and_wait_for_config(cmd, logdir, settle=8.0)
    try:
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # after the watcher's repeat window
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert time.time() - sent < 30, out
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM: saving a checkpoint when the running compiled call ends" in out, out
    assert "SIGTERM again: stopping at once" in out and "stopped by" not in out, out


def test_one_request_delivered_twice_still_checkpoints(tmp_path):
    """Two SIGTERMs within the repeat window (GNU timeout signals the process, then its
    group) are one request: the run stops at the chunk's end with a checkpoint."""
    logdir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "experiments.train", *RANDOM, "--num-envs", "16",
           "--steps", "400000000", "--log-every", "2000000", "--checkpoint-every", "0",
           "--eval-every", "-1", "--logdir", logdir]
    proc = _start_and_wait_for_config(cmd, logdir)
    try:
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # two deliveries (a pending signal sent again would merge into one)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out and "stopping at once" not in out, out
    assert out.count("saving a checkpoint when the running compiled call ends") == 1, out
    assert _steps(logdir) == [logger.read_metrics(logdir)[-1]["env_steps"]]


def test_an_evaluation_a_signal_skipped_is_made_on_resume(tmp_path, monkeypatch):
    """A signal seen after the third chunk (evaluations every chunk) stops the run without that
    chunk's evaluation; the resumed run makes it first, once, however often it resumes."""
    from core import runner

    logdir = str(tmp_path / "run")
    argv = RANDOM + ["--steps", "80", "--eval-every", "16", "--checkpoint-every", "0",
                     "--logdir", logdir]
    calls = []

    def signal_after_third_chunk(flags):  # called before and after every chunk
        calls.append(1)
        out = np.asarray(flags, bool).copy()
        out[0] = out[0] or len(calls) == 6
        return out

    monkeypatch.setattr(runner.sharding, "agree_any", signal_after_third_chunk)
    monkeypatch.setattr(runner, "_call_iterations", lambda left, *_: left)  # a call per chunk
    with pytest.raises(SystemExit):
        train.main(argv)
    lines = logger.read_metrics(logdir)
    assert lines[-1]["env_steps"] == 48 and lines[-1]["stopped_by"] == "SIGTERM"
    assert "eval_return_mean" not in lines[-1] and _steps(logdir) == [48]
    monkeypatch.undo()
    evaluated = lambda: [r["env_steps"] for r in logger.read_metrics(logdir)  # noqa: E731
                         if "eval_return_mean" in r]
    assert evaluated() == [16, 32]
    train.main(argv[:argv.index("--steps") + 1] + ["48"] + argv[argv.index("--steps") + 2:])
    assert evaluated() == [16, 32, 48]  # the owed one, at the restored step
    train.main(argv)
    assert evaluated() == [16, 32, 48, 64, 80]  # made once, not again on the next resume


def test_a_signal_during_the_last_chunk_says_the_final_evaluation_is_owed(tmp_path,
                                                                          monkeypatch, capsys):
    """The last chunk ends the training, but a signal seen after it skips the final evaluation:
    the run says so and exits as a signalled stop, and the rerun makes the evaluation."""
    from core import runner

    logdir = str(tmp_path / "run")
    argv = RANDOM + ["--steps", "48", "--eval-every", "16", "--checkpoint-every", "0",
                     "--logdir", logdir]
    calls = []

    def signal_after_third_chunk(flags):
        calls.append(1)
        out = np.asarray(flags, bool).copy()
        out[0] = out[0] or len(calls) == 6
        return out

    monkeypatch.setattr(runner.sharding, "agree_any", signal_after_third_chunk)
    monkeypatch.setattr(runner, "_call_iterations", lambda left, *_: left)  # a call per chunk
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 128 + 15
    assert "at env_steps=48, the end of training, before its final evaluation; rerun" in (
        capsys.readouterr().out)
    assert logger.read_metrics(logdir)[-1]["stopped_by"] == "SIGTERM"
    monkeypatch.undo()
    evaluated = lambda: [r["env_steps"] for r in logger.read_metrics(logdir)  # noqa: E731
                         if "eval_return_mean" in r]
    assert evaluated() == [16, 32]
    train.main(argv)
    assert evaluated() == [16, 32, 48]


def test_default_device_count_splits_the_environments():
    assert sharding.default_num_devices(8, available=4) == 4
    assert sharding.default_num_devices(6, available=4) == 3
    assert sharding.default_num_devices(7, available=2) == 1
    assert sharding.default_num_devices(1, available=8) == 1
    with pytest.raises(ValueError, match="or --num-devices 1"):
        sharding.run_state_shardings(None, _FakeMesh(2), num_envs=3)


class _FakeMesh:
    """Just the device count that the divisibility check reads."""

    def __init__(self, n):
        import numpy as np
        self.devices = np.zeros(n)


def test_a_refusal_names_the_preset_whose_settings_the_old_run_has(tmp_path):
    """An old run whose agent config is that of another preset (e.g. one made at PETS'
    ``paper`` settings, rerun under ``default``) resumes with ``--preset NAME``, which the
    refusal names, even where the differences include lists (which no field flag can name);
    not where the new command also sets a field, which ``--preset NAME`` would not undo."""
    logdir = str(tmp_path / "run")
    os.makedirs(logdir)
    paper = {"population": 400, "hidden_sizes": [200, 200, 200]}
    cpu = {"population": 100, "hidden_sizes": [128, 128, 128]}
    with open(os.path.join(logdir, rundir.CONFIG_FILE), "w") as f:
        json.dump({"agent": "pets", "env": "linear/scalar_a1.1", "agent_config": paper}, f)
    new = {"agent": "pets", "env": "linear/scalar_a1.1", "preset": "default",
           "agent_config": cpu}
    presets = {"default": cpu, "paper": dict(paper, hidden_sizes=(200, 200, 200))}
    with pytest.raises(rundir.RunMismatchError,
                       match="it resumes with --preset paper; pass a new --logdir"):
        rundir.check_logdir(logdir, new, presets=presets)
    # another task: no preset resumes it
    with pytest.raises(rundir.RunMismatchError) as err:
        rundir.check_logdir(logdir, {**new, "env": "linear/scalar_a0.5"}, presets=presets)
    assert "resumes with" not in str(err.value)
    # no preset has its settings: the field flags as before (none here: a list differs)
    with pytest.raises(rundir.RunMismatchError) as err:
        rundir.check_logdir(logdir, new, presets={"default": cpu})
    assert "resumes with" not in str(err.value)
    # the new command sets a field on top of its preset: --preset paper alone would not resume
    flagged = {**new, "agent_config": dict(cpu, population=200)}
    with pytest.raises(rundir.RunMismatchError) as err:
        rundir.check_logdir(logdir, flagged, presets=presets)
    assert "--preset" not in str(err.value)
