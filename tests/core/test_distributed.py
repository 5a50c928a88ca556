"""Several processes joined by jax.distributed (2 processes of 2 fake CPU devices each) train
one run: it equals a 1-process run over 4 devices, only process 0 writes the log directory,
its checkpoint restores on 1 process, a run killed with SIGKILL resumes to the same end, and a
process that dies makes the other fail instead of waiting forever."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from core import logger, runner
from experiments import launch, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPC = ["--agent", "mpc", "--env", "linear/scalar_a1.1", "--preset", "tiny", "--num-envs", "4",
       "--steps", "320", "--log-every", "40", "--eval-every", "-1", "--checkpoint-every", "80",
       "--no-progress"]
TIMEOUT = 400


def _launch(args, processes=2, timeout=TIMEOUT):
    return subprocess.run([sys.executable, "-m", "experiments.launch", "--processes",
                           str(processes), "--local-devices", "2", "--", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _train(args, devices=4, extra_env=None, **kwargs):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def _joining(process_id, port):
    """What experiments.launch sets for process ``process_id`` of 2."""
    env = launch.process_env(process_id, 2, port, base={})
    return {k: env[k] for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}


def _restore(logdir, args=MPC):
    """The run's final state, restored on this process's one device."""
    env, agent, cfg, _ = train.build(args + ["--logdir", logdir, "--num-devices", "1"])
    return runner.restore(env, agent, cfg)


def _without_time(lines):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in lines]


def _assert_same_metrics(a, b):
    a, b = _without_time(logger.read_metrics(a)), _without_time(logger.read_metrics(b))
    assert [r["env_steps"] for r in a] == [r["env_steps"] for r in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], str):
                assert x[k] == y[k], k
            else:
                np.testing.assert_allclose(x[k], y[k], rtol=1e-5, atol=1e-6, err_msg=k)


RANDOM = ["--agent", "random", "--env", "linear/scalar_a1.1", "--num-envs", "4", "--steps", "64",
          "--log-every", "32", "--eval-every", "-1", "--checkpoint-every", "32", "--no-progress"]


def test_two_processes_train_one_run_written_by_process_0(tmp_path):
    """The fast check (about 10 s on an idle 2-core CPU): 2 processes join, train, and only
    process 0 reports and writes; their checkpoint restores on 1 process of 1 device."""
    logdir = str(tmp_path / "run")
    out = _launch(RANDOM + ["--logdir", logdir])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "processes=2 devices=4" in out.stdout and out.stdout.count("[train] done") == 1
    assert [r["env_steps"] for r in logger.read_metrics(logdir)] == [32, 64]
    assert len(glob.glob(os.path.join(logdir, "events.out.tfevents*"))) == 1
    assert int(np.asarray(_restore(logdir, RANDOM).env_steps)[0]) == 64


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """A 320-step MPC run of 2 processes of 2 CPU devices each."""
    logdir = str(tmp_path_factory.mktemp("dist") / "two")
    out = _launch(MPC + ["--logdir", logdir])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return logdir, out.stdout + out.stderr


@pytest.mark.slow
def test_two_processes_equal_one_process_over_four_devices(two_processes, tmp_path):
    logdir, output = two_processes
    single = str(tmp_path / "one")
    proc = _train(MPC + ["--logdir", single])
    stdout, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stdout[-3000:]

    config = json.load(open(os.path.join(logdir, "config.json")))
    assert config["provenance"]["process_count"] == 2
    assert config["provenance"]["device_count"] == 4
    assert output.count("[train] done") == 1  # process 0 alone reports
    assert len(glob.glob(os.path.join(logdir, "events.out.tfevents*"))) == 1
    _assert_same_metrics(logdir, single)  # each line once, the same values
    # A checkpoint of 2 processes restores on 1 process of 1 device.
    two, one = _restore(logdir), _restore(single)
    assert int(np.asarray(two.env_steps)[0]) == 340
    assert runner.tree_allclose(two.agent, one.agent, rtol=1e-5, atol=1e-6)
    assert runner.tree_allclose(two.env, one.env, rtol=1e-5, atol=1e-6)
    assert runner.tree_allclose(two.buffer, one.buffer, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigkill_of_both_processes_resumes_to_the_same_end(two_processes, tmp_path):
    logdir = str(tmp_path / "killed")
    args = MPC + ["--logdir", logdir, "--distributed"]
    port = launch.free_port()
    procs = [_train(args, devices=2, extra_env=_joining(i, port)) for i in range(2)]
    checkpoints = os.path.join(logdir, "checkpoints")
    deadline = time.time() + TIMEOUT
    while not (os.path.isdir(checkpoints) and any(
            d.isdigit() for d in os.listdir(checkpoints))):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
    assert kept and max(kept) < 340, kept  # killed before the end

    out = _launch(MPC + ["--logdir", logdir])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resumed from" in out.stdout
    _assert_same_metrics(two_processes[0], logdir)
    assert runner.tree_allclose(_restore(two_processes[0]), _restore(logdir), rtol=1e-5,
                                atol=1e-6)


@pytest.mark.slow
def test_a_process_that_dies_makes_the_other_fail(tmp_path):
    args = ["--agent", "random", "--env", "linear/scalar_a1.1", "--num-envs", "4",
            "--steps", "100000000", "--log-every", "400", "--eval-every", "-1",
            "--checkpoint-every", "0", "--logdir", str(tmp_path / "run"), "--distributed",
            "--heartbeat-timeout", "10"]
    port = launch.free_port()
    procs = [_train(args, devices=2, extra_env=_joining(i, port)) for i in range(2)]
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + TIMEOUT
    while not (metrics.exists() and metrics.read_text().strip()):  # training has started
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    try:
        stdout, _ = procs[0].communicate(timeout=120)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert procs[0].returncode != 0
    assert time.time() - killed < 120
    assert "died" in stdout or "unhealthy" in stdout, stdout[-2000:]


MUZERO = ["--agent", "muzero", "--env", "gymnax/CartPole-v1", "--preset", "tiny", "--num-envs",
          "4", "--steps", "64", "--log-every", "16", "--eval-every", "-1",
          "--checkpoint-every", "0", "--no-progress"]


@pytest.mark.slow
def test_muzero_on_two_processes_equals_one_process_after_two_chunks(tmp_path):
    """Prefill, then two chunks of acting with search and updates: the same actions, and
    parameters within 1e-5 (later a search's argmax may flip on float noise)."""
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    proc = _train(MUZERO + ["--logdir", one])
    out = _launch(MUZERO + ["--logdir", two])
    stdout, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stdout[-3000:]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    a, b = _restore(two, MUZERO), _restore(one, MUZERO)
    assert int(np.asarray(a.env_steps)[0]) == 64
    np.testing.assert_array_equal(np.asarray(a.buffer.experience.action),
                                  np.asarray(b.buffer.experience.action))
    assert runner.tree_allclose(a.agent, b.agent, rtol=1e-5, atol=1e-5)
    _assert_same_metrics(two, one)


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_process_at_one_checkpoint(tmp_path):
    logdir = str(tmp_path / "run")
    args = ["--agent", "random", "--env", "linear/scalar_a1.1", "--num-envs", "4",
            "--steps", "100000000", "--log-every", "400", "--eval-every", "-1",
            "--checkpoint-every", "0", "--logdir", logdir]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.launch", "--processes", "2",
                             "--local-devices", "2", "--", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(logdir, "metrics.jsonl")
    deadline = time.time() + TIMEOUT
    while not (os.path.exists(metrics) and open(metrics).read().strip()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stdout[-3000:]
    last = logger.read_metrics(logdir)[-1]
    assert last["stopped_by"] == "SIGTERM"
    steps = sorted(int(d) for d in os.listdir(os.path.join(logdir, "checkpoints")) if d.isdigit())
    assert steps[-1] == last["env_steps"]  # both processes saved the same step
    assert stdout.count("[train] stopped by SIGTERM") == 1
