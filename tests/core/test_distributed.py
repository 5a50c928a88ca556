"""Several processes joined by jax.distributed (2 processes of 2 fake CPU devices each) train
one run. Fast: a process whose peer is killed fails instead of waiting forever; the killed run
resumes (on 2 of its 4 global devices) and equals a 1-process run over 4 devices, written by
process 0 alone; its checkpoint restores on 1 process, and restoring with shapes that do not fit
says what to pass. Slow: longer MPC runs (uninterrupted 2 processes equal 1; both processes
killed with SIGKILL resume to the uninterrupted end), MuZero, SIGTERM to the launcher."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from core import checkpoint, logger, runner, sharding
from experiments import evaluate, launch, train

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


# The fast checks share one MPC run of 2 processes x 2 devices: killed after its first
# checkpoint, then resumed by experiments.launch on 2 of the 4 global devices for one more chunk.
FAST = ["--agent", "mpc", "--env", "linear/scalar_a1.1", "--preset", "tiny", "--num-envs", "4",
        "--prefill-steps", "0", "--log-every", "40", "--eval-every", "-1",
        "--checkpoint-every", "40", "--no-progress"]
CHUNK = 40  # environment steps per chunk (log_every)
DEATH_TIMEOUT = 60  # a process must fail within this many seconds of its peer's death


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Process 1 of a 2-process run is killed with SIGKILL once the first checkpoint is
    complete; process 0 must then fail by itself. Both are restarted (experiments.launch,
    ``--num-devices 2``) to one chunk past the newest checkpoint, and a 1-process run over 4
    devices trains as far uninterrupted."""
    root = tmp_path_factory.mktemp("fast")
    two, one = str(root / "two"), str(root / "one")
    port = launch.free_port()
    first = FAST + ["--logdir", two, "--steps", "100000000", "--distributed",
                    "--heartbeat-timeout", "5"]
    procs = [_train(first, devices=2, extra_env=_joining(i, port)) for i in range(2)]
    try:
        checkpoints = os.path.join(two, "checkpoints")
        deadline = time.time() + TIMEOUT
        while not (os.path.isdir(checkpoints) and any(
                d.isdigit() for d in os.listdir(checkpoints))):
            ended = [i for i, p in enumerate(procs) if p.poll() is not None]
            assert not ended, f"process {ended[0]} ended before its first checkpoint: " + \
                procs[ended[0]].communicate()[0][-3000:]
            assert time.time() < deadline, f"no checkpoint within {TIMEOUT} s"
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGKILL)
        try:
            survivor, _ = procs[0].communicate(timeout=DEATH_TIMEOUT)
        except subprocess.TimeoutExpired:
            survivor = None
        death = {"returncode": procs[0].poll(), "output": survivor}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    kept = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
    steps = str(kept[-1] + CHUNK)
    single = _train(FAST + ["--logdir", one, "--steps", steps])
    resumed = _launch(FAST + ["--logdir", two, "--steps", steps, "--num-devices", "2"])
    single_out, _ = single.communicate(timeout=TIMEOUT)
    assert single.returncode == 0, single_out[-3000:]
    return {"two": two, "one": one, "kept": kept, "steps": int(steps), "death": death,
            "resumed": resumed}


def test_a_process_whose_peer_dies_fails_instead_of_waiting(killed_and_resumed):
    death = killed_and_resumed["death"]
    assert death["output"] is not None, f"still running {DEATH_TIMEOUT} s after its peer died"
    assert death["returncode"] != 0
    # jax's coordination service (missed heartbeats) or gloo (a closed connection) says so
    reasons = ("heartbeat", "unhealthy", "gloo", "connection")
    assert any(r in death["output"].lower() for r in reasons), death["output"][-2000:]


def test_a_killed_run_resumes_on_fewer_devices_and_equals_one_process(killed_and_resumed):
    """The killed run resumes from its newest checkpoint on 2 of its 4 global devices (one per
    process) and ends where 1 process over 4 devices does: the same metric lines (each once),
    written by process 0 alone."""
    run = killed_and_resumed
    out = run["resumed"]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"resumed from {os.path.join(run['two'], 'checkpoints')} at env_steps=" \
           f"{run['kept'][-1]}" in out.stdout
    assert "processes=2 devices=2 of 4" in out.stdout  # --num-devices counts global devices
    assert out.stdout.count("[train] done") == 1  # process 0 alone reports
    assert [r["env_steps"] for r in logger.read_metrics(run["two"])] == \
        list(range(CHUNK, run["steps"] + 1, CHUNK))
    _assert_same_metrics(run["two"], run["one"])
    # process 0 alone writes TensorBoard events: one file per start
    assert len(glob.glob(os.path.join(run["two"], "events.out.tfevents*"))) == 2


def test_a_checkpoint_of_two_processes_restores_on_one_process(killed_and_resumed):
    """Restored as an evaluation does (train.load_run, onto this process's one device), the
    2-process run's final state equals the 1-process run's."""
    run = killed_and_resumed
    _, _, two, record = train.load_run(run["two"])
    _, _, one, _ = train.load_run(run["one"])
    assert "--num-devices" in record["argv"]  # recorded, and ignored by the restore
    assert int(np.asarray(two.env_steps)) == run["steps"]
    assert runner.tree_allclose(two.agent, one.agent, rtol=1e-5, atol=1e-6)
    assert runner.tree_allclose(two.env, one.env, rtol=1e-5, atol=1e-6)
    assert runner.tree_allclose(two.buffer, one.buffer, rtol=1e-5, atol=1e-6)


def test_restoring_with_shapes_that_do_not_fit_says_what_to_pass(killed_and_resumed):
    logdir = killed_and_resumed["two"]
    with pytest.raises(ValueError, match=r"has num_envs=4 .* restore it with --num-envs 4$"):
        _restore(logdir, FAST + ["--num-envs", "8"])
    with pytest.raises(ValueError, match=r"only 1 cpu devices are visible; pass --num-devices 1"):
        env, agent, cfg, _ = train.build(FAST + ["--logdir", logdir, "--num-devices", "3"])
        runner.restore(env, agent, cfg)
    # Shapes that differ in a way config.json does not show (another agent configuration):
    # the first differing array is named before orbax reads any data.
    env, agent, cfg, _ = train.build(FAST + ["--logdir", logdir, "--num-devices", "1",
                                             "--horizon", "4"])
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"holds .* of shape"):
        runner.restore(env, agent, cfg)
    # 3 devices do not split its 4 environments (the mesh's size is all the check reads)
    with pytest.raises(ValueError, match=r"^--num-envs 4 does not split over 3 devices; .* or "
                                         r"--num-devices 2 \(or another divisor of 4\)$"):
        sharding.run_state_shardings(None, types.SimpleNamespace(devices=np.zeros(3)), 4)


def test_num_devices_counts_global_devices_split_evenly_over_processes():
    assert sharding.devices_per_process(0, processes=2, local=2) == 2
    assert sharding.devices_per_process(2, processes=2, local=2) == 1
    assert sharding.devices_per_process(8, processes=4, local=8) == 2
    for wrong in (1, 3, 6):
        with pytest.raises(ValueError, match=r"over the 2 processes .*pass one of 2, 4$"):
            sharding.devices_per_process(wrong, processes=2, local=2)


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
    # experiments.evaluate restores the 2-process checkpoint on this one process
    flags = ["--trajectories", "2", "--length", "12", "--horizon", "3"]
    measured = [evaluate.main(["--logdir", logdir, *flags]) for logdir in (two, one)]
    for name in ("reward", "value"):
        np.testing.assert_allclose(measured[0][name]["abs_error"], measured[1][name]["abs_error"],
                                   rtol=1e-4, atol=1e-5, err_msg=name)


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
