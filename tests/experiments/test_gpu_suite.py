"""The accelerator suites: budget planning, file limits, and (slow) both subcommands end to end
on the CPU with a tiny budget."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from experiments import cli, gpu_suite


@pytest.mark.parametrize("name", sorted(gpu_suite.SUITES))
def test_phases_share_the_budget_less_the_reserve(name):
    suite = gpu_suite.SUITES[name]
    phases = gpu_suite.plan(540.0, suite.phases)
    assert list(phases) == [p for p, _ in suite.phases]
    reserve = max(gpu_suite.RESERVE_MIN_S, gpu_suite.RESERVE_FRACTION * 540.0)
    assert sum(phases.values()) == pytest.approx(540.0 - reserve)
    total = sum(f for _, f in suite.phases)
    for phase, fraction in suite.phases:
        assert phases[phase] == pytest.approx((540.0 - reserve) * fraction / total)
    # the suite's files and a log fit in what a device run returns, flat
    assert len(suite.files) + 1 <= gpu_suite.MAX_FILES
    assert all("/" not in f for f in suite.files) and suite.files[0].endswith(".json")


def test_phase_deadlines_are_cumulative(tmp_path):
    report = gpu_suite.Report(str(tmp_path), "x", ("x.json",), 100.0,
                              {"a": 20.0, "b": 30.0, "c": 40.0}, {})
    assert [report.deadline(p) for p in "abc"] == [20.0, 50.0, 90.0]
    assert 49.0 < report.left("b") <= 50.0
    report.write()
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["complete"] is False and data["peak_memory_bytes"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left
    with pytest.raises(ValueError, match="not among the suite's files"):
        report.path("other.png")
    with pytest.raises(ValueError, match="at most 7"):
        gpu_suite.Report(str(tmp_path), "x", tuple(f"{i}.json" for i in range(8)), 1.0, {}, {})


def test_too_small_a_budget_and_bad_flags_are_one_line_errors(tmp_path):
    with pytest.raises(cli.UsageError, match="leaves no time"):
        gpu_suite.plan(5.0, gpu_suite.SUITES["dreamer"].phases)
    out = str(tmp_path / "out")
    for argv, message in (
            ([], "name a suite"),
            (["nope", "--out", out], "invalid choice"),
            (["dreamer"], "--out"),
            (["dreamer", "--out", out, "--budget-s", "0"], "--budget-s must be > 0"),
            (["dreamer", "--out", out, "--budget-s", "4"], "leaves no time"),
            (["muzero", "--out", out, "--workdir", out + "/runs"], "outside --out"),
            (["dreamer", "--out", out, "--reference", str(tmp_path / "none.gz")],
             "no such file")):
        with pytest.raises(cli.UsageError, match=message):
            gpu_suite.main(argv)


def test_a_learning_run_is_planned_from_the_measured_rate():
    run = gpu_suite.plan_run(200.0, rate=100.0, compile_s=40.0, steps_per_iteration=16,
                             evals=10)
    assert run["log_every"] % 16 == 0 and run["log_every"] <= 10 * 100
    assert run["steps"] % run["log_every"] == 0 and run["eval_every"] % run["log_every"] == 0
    # 25% more steps than 160 s at 100 steps/s, so that the time limit ends the run
    assert 1.25 * 160 * 100 - run["log_every"] <= run["steps"] <= 1.25 * 160 * 100
    assert run["steps"] // run["eval_every"] >= 10
    assert run["max_seconds"] == pytest.approx(200.0 - 10.0 - 12.0)


def test_compiler_compiles_on_threads_and_the_timing_reads_the_program(tmp_path):
    from experiments.benchmark import LoopProgram

    def build():
        def train(state):
            return state + 1.0, jnp.sum(state)
        return LoopProgram(train=train, init=lambda keys: jnp.zeros((keys.shape[0], 256)),
                           keys=jax.random.split(jax.random.PRNGKey(0), 3), num_envs=2,
                           num_seeds=3, env_steps=6, updates=3)

    compiler = gpu_suite.Compiler(workers=2)
    futures = [compiler.submit(build) for _ in range(2)]
    program, init, train, lower_s, compile_s = futures[0].result(timeout=60)
    futures[1].result(timeout=60)
    assert compiler.busy == 0 and lower_s > 0 and compile_s > 0
    timing = gpu_suite.time_compiled(train, init(program.keys), min_seconds=0.01)
    assert timing.calls >= 1 and all(s > 0 for s in timing.seconds)
    memory = gpu_suite.program_memory(train)
    # the state (3 x 256 float32) is an argument; the output aliases the donated argument
    assert memory["argument_size_in_bytes"] >= 3 * 256 * 4
    assert memory["program_bytes"] > 0
    failing = compiler.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=60)
    assert compiler.busy == 0


def _run_suite(argv, budget_s):
    """The suite as a command (its watchdog ends the process it runs in)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "experiments.gpu_suite", *argv, "--budget-s",
                           str(budget_s)], cwd=root, capture_output=True, text=True,
                          timeout=budget_s + 120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _check_output(out, suite):
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= gpu_suite.MAX_FILES and all(p.is_file() for p in out.iterdir())
    assert set(files) <= set(gpu_suite.SUITES[suite].files)
    data = json.loads((out / f"{suite}.json").read_text())
    # on a CPU shared with other jobs the watchdog may end the run; what it wrote must hold
    assert data["stopped_by"] in (None, "budget") and "error" not in data
    assert data["complete"] is (data["stopped_by"] is None)
    if data["complete"]:
        assert set(data["phases"]) == {p for p, _ in gpu_suite.SUITES[suite].phases}
    assert data["device"]["platform"] == "cpu" and data["peak_memory_bytes"] > 0
    assert data["elapsed_s"] <= data["budget_s"]
    return data, files


def _finite(row, keys):
    return all(isinstance(row[k], float) and math.isfinite(row[k]) and row[k] > 0 for k in keys)


def _wait_for(predicate, seconds=10.0):
    import time
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_the_gate_opens_on_a_new_training_line_only(tmp_path):
    import time
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"env_steps": 500}\n')  # a resumed run's old line does not count
    calls = []
    gate = gpu_suite._Gate(str(tmp_path), lambda: calls.append("submitted"), time.monotonic)
    with log.open("a") as f:
        f.write('{"env_steps": 1024, "phase": "prefill"}\n')  # before the training compile
    time.sleep(1.2)
    assert calls == [] and gate.at is None
    with log.open("a") as f:
        f.write('{"env_steps": 1040, "episodes": 0}\n')
    assert _wait_for(lambda: calls)
    assert gate.close() == gate.at and calls == ["submitted"]  # called once
    never = gpu_suite._Gate(str(tmp_path / "none"), lambda: calls.append("at close"),
                            lambda: 7.0)
    assert never.close() == 7.0 and calls == ["submitted", "at close"]

    def broken():
        raise RuntimeError("cannot submit")
    failing = gpu_suite._Gate(str(tmp_path / "none"), broken, lambda: 1.0)
    with pytest.raises(RuntimeError, match="cannot submit"):
        failing.close()


def test_the_dreamer_suite_compiles_other_sizes_after_the_learning_runs_compile(
        tmp_path, monkeypatch):
    """The order of the Dreamer suite's work with the compiler and the learning run faked: the
    first size's rows at the start, the others only once the run logs a training line."""
    from concurrent.futures import Future
    submitted = []

    class FakeCompiler:
        busy = 0

        def __init__(self, workers):
            pass

        def submit(self, build):
            submitted.append(build)
            future = Future()
            future.set_exception(RuntimeError("not compiled in this test"))
            return future

    def fake_learning_run(agent, env_id, run, seeds, out, extra):
        import time
        log = os.path.join(out, agent, "metrics.jsonl")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        assert len(submitted) == 1  # the first size's one row
        with open(log, "a") as f:
            f.write('{"env_steps": 400, "phase": "prefill"}\n')
        time.sleep(1.2)
        assert len(submitted) == 1
        with open(log, "a") as f:
            f.write('{"env_steps": 416}\n')
        assert _wait_for(lambda: len(submitted) == 2)
        return None

    monkeypatch.setattr(gpu_suite, "Compiler", FakeCompiler)
    monkeypatch.setattr(gpu_suite, "learning_run", fake_learning_run)
    monkeypatch.setattr(gpu_suite, "start_watchdog", lambda report, finish: None)
    data = gpu_suite.main(["dreamer", "--tiny", "--sizes", "tiny,1m", "--seeds", "1",
                           "--dtypes", "float32", "--budget-s", "400", "--out",
                           str(tmp_path / "out"), "--workdir", str(tmp_path / "runs")])
    rows = data["throughput"]["rows"]
    assert [(r["size"], r["status"]) for r in rows] == [("tiny", "failed"), ("1m", "failed")]
    assert 0 < data["throughput"]["other_sizes_submitted_at_s"] < 60
    assert data["learning"]["status"] == "done" and data["complete"]


@pytest.mark.slow
def test_dreamer_suite_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    # one table row: tracing and compiling the tiny loop takes over a minute of CPU time
    _run_suite(["dreamer", "--tiny", "--seeds", "1", "--dtypes", "float32", "--out", str(out),
                "--workdir", str(tmp_path / "runs")], budget_s=1500)
    data, files = _check_output(out, "dreamer")
    rows = data["throughput"]["rows"]
    assert [(r["size"], r["compute_dtype"], r["num_seeds"]) for r in rows] == [
        ("tiny", "float32", 1)]
    measured = [r for r in rows if r["status"] == "measured"]
    assert measured, rows
    for row in measured:
        assert _finite(row, ("updates_per_s", "env_steps_per_s", "compile_s", "lower_s"))
        assert row["memory"]["program_bytes"] > 0
    learning = data["learning"]
    assert len(learning["curves"]) == 2
    assert all(len(c["eval_return"]) >= 1 for c in learning["curves"])
    assert all(math.isfinite(y) for c in learning["curves"] for y in c["eval_return"])
    assert learning["env"] == "gymnax/Pendulum-v1" and "no published DMC curve" in \
        learning["reference"]["error"]
    assert "dreamer_learning.png" in files and "dreamer_throughput.png" in files


@pytest.mark.slow
def test_muzero_suite_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    _run_suite(["muzero", "--tiny", "--games", "Breakout,Asterix", "--out", str(out),
                "--workdir", str(tmp_path / "runs")], budget_s=1500)
    data, files = _check_output(out, "muzero")
    measured = [r for r in data["throughput"]["rows"] if r["status"] == "measured"]
    assert {r["kind"] for r in measured} >= {"loop"}
    for row in measured:
        keys = {"loop": ("env_steps_per_s", "updates_per_s", "compile_s"),
                "update": ("updates_per_s", "compile_s"),
                "acting": ("searches_per_s", "compile_s")}[row["kind"]]
        assert _finite(row, keys)
    games = data["learning"]["games"]
    assert list(games) == ["Breakout", "Asterix"]
    done = [g for g in games.values() if g.get("curves")]
    assert done and all(len(g["curves"]) == 2 for g in done)
    assert all(math.isfinite(y) for g in done for c in g["curves"] for y in c["eval_return"])
    assert "muzero_minatar.png" in files


def test_the_device_command_fits_the_device_tool():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "scripts", "gpu_suite.sh")
    for suite in gpu_suite.SUITES:
        command = subprocess.run(["bash", script, "command", suite], capture_output=True,
                                 text=True, check=True).stdout.strip()
        assert len(command) < 2000 and "\n" not in command
        assert "--no-index --no-deps" in command and ".gpu_suite/wheels/*.whl" in command
        assert f"-m experiments.gpu_suite {suite} --out $OUT" in command
    bad = subprocess.run(["bash", script, "command", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown suite 'nope'" in bad.stderr


def test_the_carried_wheels_bring_what_they_require():
    """Every requirement of the wheels the device runs carry is carried, in the GPU image, or
    deliberately left out (a suite that imports a missing one fails only on the GPU machine)."""
    from experiments import wheel_deps
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "scripts", "gpu_suite.sh")
    done = subprocess.run(["bash", script, "deps"], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert wheel_deps.missing_requirements(["tyro==1.0.17"], ["docstring-parser", "rich",
                                                             "shtab", "typing-extensions"]) \
        == {"tyro": ["typeguard"]}
    assert wheel_deps.missing_requirements(["no-such-dist==1.0"], []) == {
        "no-such-dist": ["<not installed here: cannot read its requirements>"]}


@pytest.mark.slow
def test_craftax_suite_on_the_cpu(tmp_path):
    """Every phase on the CPU in the tiny mode. Each program compiles craftax's step and world
    generation (minutes on a 2-core CPU), so the watchdog may stop the run before its last
    phase; what was measured must hold."""
    out = tmp_path / "out"
    _run_suite(["craftax", "--tiny", "--out", str(out), "--workdir", str(tmp_path / "runs")],
               budget_s=2400)
    data, files = _check_output(out, "craftax")
    rows = data["throughput"]["rows"]
    assert {r["kind"] for r in rows} == {"env", "ppo", "dreamer"}
    measured = [r for r in rows if r["status"] == "measured"]
    assert measured, rows
    for row in measured:
        assert _finite(row, ("env_steps_per_s", "compile_s"))
    learning = data.get("learning") or {}
    curves = [info["curve"] for info in learning.values()
              if isinstance(info, dict) and info.get("curve", {}).get("env_steps")]
    for curve in curves:
        assert all(math.isfinite(y) for y in curve["return"] + curve["score"])
        assert len(curve["achievements"]) == 22
    if data["complete"]:
        assert learning["ppo"]["status"] == "done" and learning["dreamer"]["status"] == "done"
        assert len(curves) == 2 and "craftax_learning.png" in files
