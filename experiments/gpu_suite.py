"""Accelerator suites: ``python -m experiments.gpu_suite {dreamer,muzero,craftax} --out DIR``.

Each subcommand is one run planned for a fresh single-GPU machine and a wall-clock budget
(``--budget-s``, default 540 s from the start of the command, compilation included). It writes at
most eight files, JSON and PNG, flat in ``--out``:

* ``dreamer``: DreamerV3's throughput table on ``dmc/cartpole_swingup`` at the official
  DMC-proprio settings (16 environments, batch 16 x 64, train ratio 1024): sizes ``1m``,
  ``12m``, ``50m`` x 1, 4, 16 vmapped seeds x float32 / bfloat16 compute, with updates/s, env
  steps/s, lowering and compile time and the device memory of each compiled program; then the
  longest learning run the rest of the budget allows (preset ``cartpole_swingup``: ``1m``,
  train ratio 1024, 16 environments, 4 vmapped seeds, the official bfloat16 compute when the
  config has it), with its evaluation curve next to the published DreamerV3 curve at the same
  step counts (``--reference``, the ``[{task, method, seed, xs, ys}]`` file of
  ``shared/reference_scores``).
* ``muzero``: MuZero's loop, update and acting throughput on SpaceInvaders-MinAtar in the
  GPU-shaped configuration of ``docs/results/muzero.md`` (preset ``minatar``, 256 environments,
  batch 1,024, two updates per vectorised step), then MinAtar learning curves (SpaceInvaders,
  Breakout, Asterix; 3 vmapped seeds each, the same configuration) next to PPO's numbers on the
  H100 from that page.
* ``craftax``: Craftax-Classic-Symbolic throughput (random-action environment steps/s with one
  fresh world per environment and step and with optimistic resets; PPO's and DreamerV3's
  training env steps/s at a few environment counts, with compile times), then a PPO run
  (preset ``craftax``: 1,024 environments, 2 vmapped seeds) and a DreamerV3 run (``12m``,
  train ratio 64, 16 environments) toward 1M environment steps each, with curves of the
  training episodes' return, achievement success rates and Crafter score.

The budget is split into phases (fractions of it, less a reserve for the final files); a phase
ends at its cumulative deadline, so time one phase leaves goes to the next. Table rows that
would not fit in what is left are recorded as skipped; learning runs plan their steps from the
throughput measured before them and stop at their share (``RunConfig.max_seconds``). A watchdog
writes the files and ends the process at the budget whatever is still running. The JSON is
rewritten after every row and phase (``"complete": false`` until the end), so a run killed
from outside keeps what it measured. Dreamer's table compiles its programs on parallel threads
(``--compile-workers``; XLA compiles without Python's lock) and times them one at a time; the
sizes after the first are submitted only once the learning run has logged its first
training line.

``--tiny`` is the CPU mode of the tests: tiny presets, few seeds, a few hundred steps.
A new suite is a ``run(args, report)`` function and an entry in :data:`SUITES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from experiments import cli
from experiments.craftax_report import craftax_curve, plot_craftax
from experiments.sample_efficiency import compare_to_reference, load_reference

MAX_FILES = 8  # what a device run returns from its output folder: 8 files, flat
RESERVE_FRACTION, RESERVE_MIN_S = 0.04, 6.0  # kept back from the phases for the final files
WATCHDOG_MARGIN_S = 3.0  # the watchdog fires this long before the budget ends
DEFAULT_REFERENCE = os.path.join("..", "shared", "reference_scores",
                                 "dmc_proprio-dreamerv3.json.gz")


@dataclasses.dataclass(frozen=True)
class Suite:
    """One subcommand: its phases (name, fraction of the budget) in order, the files it writes
    into ``--out`` (fewer than :data:`MAX_FILES`, leaving room for a log), its own flags and
    ``run(args, report)``."""

    help: str
    phases: Tuple[Tuple[str, float], ...]
    files: Tuple[str, ...]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, "Report"], None]


def plan(budget_s: float, phases: Sequence[Tuple[str, float]]) -> Dict[str, float]:
    """Seconds per phase: the budget less the reserve, split in proportion to the fractions."""
    reserve = max(RESERVE_MIN_S, RESERVE_FRACTION * budget_s)
    usable = budget_s - reserve
    if usable <= 0:
        raise cli.UsageError(f"--budget-s {budget_s:g} leaves no time after the {reserve:g} s "
                             f"kept for writing the files; pass at least {2 * reserve:g}")
    total = sum(f for _, f in phases)
    return {name: usable * f / total for name, f in phases}


class Report:
    """The suite's JSON (rewritten atomically after every step) and its figures in ``out``."""

    def __init__(self, out: str, suite: str, files: Sequence[str], budget_s: float,
                 phases: Dict[str, float], data: Dict):
        if len(files) >= MAX_FILES:
            raise ValueError(f"suite {suite} plans {len(files)} files; at most {MAX_FILES - 1} "
                             f"leave room for a log")
        self.out, self.files, self.lock = out, tuple(files), threading.RLock()
        self.start = time.monotonic()
        self.budget_s, self.phases = budget_s, phases
        self.data = {"suite": suite, "budget_s": budget_s, "plan_s": phases, "phases": {},
                     "complete": False, "stopped_by": None, "files": list(files), **data}
        os.makedirs(out, exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def deadline(self, phase: str) -> float:
        """Seconds since the start at which ``phase`` ends (its cumulative share)."""
        total = 0.0
        for name, seconds in self.phases.items():
            total += seconds
            if name == phase:
                return total
        raise KeyError(phase)

    def left(self, phase: str) -> float:
        return self.deadline(phase) - self.elapsed()

    def path(self, name: str) -> str:
        if name not in self.files:
            raise ValueError(f"{name} is not among the suite's files {self.files}")
        return os.path.join(self.out, name)

    def write(self, complete: bool = False) -> None:
        from experiments.benchmark import _peak_memory
        with self.lock:
            self.data.update(_peak_memory(), complete=complete,
                             elapsed_s=round(self.elapsed(), 2))
            path = self.path(self.files[0])
            with open(path + ".tmp", "w") as f:
                json.dump(self.data, f, indent=1, default=_jsonable)
            os.replace(path + ".tmp", path)

    def phase_done(self, phase: str, **info) -> None:
        with self.lock:
            self.data["phases"][phase] = {"ended_at_s": round(self.elapsed(), 2),
                                          "deadline_s": round(self.deadline(phase), 2), **info}
        self.write()


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def start_watchdog(report: Report, finish: Callable[[Report], None]) -> None:
    """At the end of the budget: ``finish`` (figures from what was measured), the JSON with
    ``stopped_by: "budget"``, then the process ends whatever it is doing (a compile cannot be
    interrupted otherwise)."""

    def fire():
        time.sleep(max(0.0, report.budget_s - WATCHDOG_MARGIN_S - report.elapsed()))
        with report.lock:
            report.data["stopped_by"] = "budget"
            print(f"[gpu_suite] budget of {report.budget_s:g} s reached: writing what was "
                  f"measured and stopping", flush=True)
            try:
                finish(report)
            finally:
                report.write(complete=False)
                sys.stdout.flush()
                os._exit(0)

    threading.Thread(target=fire, daemon=True, name="gpu_suite-watchdog").start()


# ----------------------------------------------------------------------------- compiling

class Compiler:
    """Lowers programs one after another on a feeder thread (tracing holds Python's lock) and
    compiles them on ``workers`` threads (XLA compiles without it). ``submit(build)`` returns a
    future of ``(program, init, train, lower_s, compile_s)``: ``build()`` makes the
    :class:`experiments.benchmark.LoopProgram`, ``init`` and ``train`` are its compiled
    functions and the seconds are those of the training chunk."""

    def __init__(self, workers: int):
        self.lowering: "queue.Queue" = queue.Queue()
        self.compiling: "queue.Queue" = queue.Queue()
        self.busy = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._lower, daemon=True).start()
        for _ in range(max(1, workers)):
            threading.Thread(target=self._compile, daemon=True).start()

    def submit(self, build: Callable) -> Future:
        future: Future = Future()
        with self._lock:
            self.busy += 1
        self.lowering.put((build, future))
        return future

    def _fail(self, future: Future, err: BaseException) -> None:
        with self._lock:
            self.busy -= 1
        future.set_exception(err)

    def _lower(self):
        import jax
        while True:
            build, future = self.lowering.get()
            try:
                start = time.perf_counter()
                program = build()
                shapes = jax.eval_shape(program.init, program.keys)
                lowered = jax.jit(program.train, donate_argnums=0).lower(shapes)
                lower_s = time.perf_counter() - start
                init = jax.jit(program.init).lower(program.keys)
                self.compiling.put((program, init, lowered, lower_s, future))
            except BaseException as err:  # reported in the row
                self._fail(future, err)

    def _compile(self):
        while True:
            program, init, lowered, lower_s, future = self.compiling.get()
            try:
                start = time.perf_counter()
                compiled = lowered.compile()
                compile_s = time.perf_counter() - start
                init = init.compile()
                with self._lock:
                    self.busy -= 1
                future.set_result((program, init, compiled, lower_s, compile_s))
            except BaseException as err:
                self._fail(future, err)


def time_compiled(compiled, state, min_seconds: float, max_calls: int = 1000):
    """Times a compiled training chunk as :func:`experiments.timing.time_jitted` does with
    ``threaded=True`` (one warm-up call, then calls until ``min_seconds``); returns its
    :class:`experiments.timing.Timing` with ``compile_s`` 0."""
    import jax
    from experiments.timing import Timing

    state = jax.block_until_ready(compiled(state))[0]
    seconds: List[float] = []
    begin = time.perf_counter()
    while not seconds or (time.perf_counter() - begin < min_seconds
                          and len(seconds) < max_calls):
        t = time.perf_counter()
        state = jax.block_until_ready(compiled(state))[0]
        seconds.append(time.perf_counter() - t)
    return Timing(compile_s=0.0, seconds=tuple(seconds))


def program_memory(compiled) -> Dict:
    """Device bytes of one compiled program: arguments + outputs + temporaries - aliased."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    names = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
             "alias_size_in_bytes")
    out = {n: int(getattr(stats, n, 0) or 0) for n in names}
    out["program_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                            + out["temp_size_in_bytes"] - out["alias_size_in_bytes"])
    return out


# ----------------------------------------------------------------------------- learning runs

def plan_run(seconds: float, rate: float, compile_s: float, *, steps_per_iteration: int,
             evals: int, chunk_s: float = 10.0, max_steps: Optional[int] = None) -> Dict:
    """Steps, logging and evaluation intervals (environment steps per seed) of a learning run
    given ``seconds``, a per-seed ``rate`` (env steps/s) and the expected compile seconds.

    Steps are planned 25% above what the rate allows, so that the time limit, not the step
    count, ends the run; a chunk (one metric line) lasts about ``chunk_s``. The time limit
    (``max_seconds``, counted by the runner from its initial state) keeps a chunk's time and
    part of the compile estimate in reserve for building the run and its last evaluation.
    ``max_steps`` caps the steps (the CPU mode: a run that ends when its few steps are
    done)."""
    train_s = max(seconds - compile_s, 0.1 * seconds)
    unit = max(1, steps_per_iteration)
    log_every = max(unit, int(min(chunk_s, train_s / 20) * rate) // unit * unit)
    steps = int(1.25 * train_s * rate)
    if max_steps:
        steps, log_every = min(steps, max_steps), min(log_every, max(unit, max_steps // 4))
    steps = max(log_every, steps // log_every * log_every)
    eval_every = max(log_every, steps // max(1, evals) // log_every * log_every)
    return {"steps": steps, "log_every": log_every, "eval_every": eval_every,
            "rate_per_seed": rate, "compile_estimate_s": compile_s,
            "max_seconds": max(0.3 * seconds, seconds - chunk_s - 0.3 * compile_s)}


def learning_run(agent: str, env_id: str, run: Dict, seeds: int, out: str,
                 extra: Sequence[str]) -> List[Dict]:
    """Trains through :func:`experiments.sample_efficiency.run_model_based` (``core.runner``,
    seeds vmapped, logs in ``<out>/<agent>``); per-seed curves ``{env_steps, eval_return}``."""
    from experiments import sample_efficiency

    flags = ["--log-every", str(run["log_every"]), "--checkpoint-every", "0",
             "--max-seconds", f"{run['max_seconds']:.1f}", *extra]
    return sample_efficiency.run_model_based(
        agent, env_id, steps=run["steps"], seeds=seeds, out=out,
        eval_every=run["eval_every"], quick=False, extra=flags)


def training_curve(logdir: str) -> Dict:
    """Seed-mean training-episode returns of ``<logdir>/metrics.jsonl`` against env steps."""
    from core.logger import read_metrics
    points = [(r["env_steps"], r["episode_return_mean"]) for r in read_metrics(logdir)
              if r.get("episode_return_mean") is not None]
    return {"env_steps": [int(x) for x, _ in points], "return": [float(y) for _, y in points]}


def curves_so_far(logdir: str) -> Optional[List[Dict]]:
    from experiments import sample_efficiency
    try:
        return sample_efficiency.curves_from_log(logdir)
    except (FileNotFoundError, ValueError):
        return None


# ----------------------------------------------------------------------------- dreamer

DREAMER_OFFICIAL = dict(env="dmc/cartpole_swingup", num_envs=16, train_ratio=1024.0,
                        learn_preset="cartpole_swingup", max_steps=None)
# The CPU mode runs on a gymnax task: XLA's CPU compiler takes minutes over MJX physics.
DREAMER_TINY = dict(env="gymnax/Pendulum-v1", num_envs=2, train_ratio=None, learn_preset="tiny",
                    max_steps=400)


def dreamer_dtypes() -> Tuple[str, ...]:
    """The compute dtypes ``DreamerConfig`` offers (float32 only without ``compute_dtype``)."""
    from agents.dreamer.config import DreamerConfig
    names = {f.name for f in dataclasses.fields(DreamerConfig)}
    return ("float32", "bfloat16") if "compute_dtype" in names else ("float32",)


def dreamer_config(size: str, dtype: str, train_ratio: Optional[float]):
    from agents.dreamer.config import PRESETS
    fields = {} if train_ratio is None else {"train_ratio": train_ratio}
    if dtype != "float32":
        fields["compute_dtype"] = dtype
    return dataclasses.replace(PRESETS[size], **fields)


def _dreamer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=None,
                   help="task of the table and the learning run (default dmc/cartpole_swingup; "
                        "tiny: gymnax/Pendulum-v1); the reference curve is that of a dmc/ task")
    p.add_argument("--sizes", default=None, help="table sizes (default 1m,12m,50m; tiny: tiny)")
    p.add_argument("--seeds", default=None, help="table seed counts (default 1,4,16; tiny: 1,2)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="table compute dtypes")
    p.add_argument("--learn-seeds", type=int, default=None,
                   help="vmapped seeds of the learning run (default 4; tiny: 2)")
    p.add_argument("--learn-dtype", default=None, choices=("float32", "bfloat16"),
                   help="compute dtype of the learning run (default: the official bfloat16 "
                        "where the config has it; tiny: float32, which XLA's CPU compiler "
                        "handles faster)")
    p.add_argument("--reference", default=None,
                   help=f"published curves (default {DEFAULT_REFERENCE} beside the repository, "
                        f"else .gpu_suite/reference_scores/ inside it)")


def _rows(sizes, dtypes, seeds) -> List[Tuple[str, str, int]]:
    """Table rows in the order they are compiled and timed: the first size first."""
    return [(s, d, n) for s in sizes for d in dtypes for n in seeds]


def run_dreamer(args, report: Report) -> None:
    import envs
    from agents.dreamer.config import PRESETS
    from experiments import benchmark

    setting = dict(DREAMER_TINY if args.tiny else DREAMER_OFFICIAL)
    setting["env"] = args.env or setting["env"]
    sizes = _split(args.sizes or ("tiny" if args.tiny else "1m,12m,50m"), str)
    seeds = _split(args.seeds or ("1,2" if args.tiny else "1,4,16"), int)
    learn_seeds = args.learn_seeds or (2 if args.tiny else 4)
    available = dreamer_dtypes()
    dtypes = _split(args.dtypes, str)
    unknown = sorted(set(dtypes) - {"float32", "bfloat16"})
    if unknown:
        raise cli.UsageError(f"--dtypes: unknown {unknown}; choose from float32, bfloat16")
    unknown = sorted(set(sizes) - set(PRESETS))
    if unknown:
        raise cli.UsageError(f"--sizes: unknown presets {unknown}; known: {', '.join(PRESETS)}")
    learn_dtype = args.learn_dtype or ("bfloat16" if "bfloat16" in available and not args.tiny
                                       else "float32")
    if learn_dtype not in available:
        raise cli.UsageError(f"--learn-dtype {learn_dtype}: this DreamerConfig has no "
                             f"compute_dtype; pass --learn-dtype float32")
    env = envs.make(setting["env"])
    min_seconds = 0.2 if args.tiny else 1.0
    table = {"env": setting["env"], "num_envs": setting["num_envs"],
             "train_ratio": setting["train_ratio"] or PRESETS[sizes[0]].train_ratio,
             "iterations_per_chunk": 1,
             "min_seconds": min_seconds, "compile_workers": args.compile_workers, "rows": []}
    report.data["throughput"] = table
    for size, dtype, n in _rows(sizes, dtypes, seeds):
        row = {"size": size, "compute_dtype": dtype, "num_seeds": n, "status": "pending"}
        if dtype not in available:
            row["status"] = "compute_dtype not available"
        table["rows"].append(row)
    compiler, futures = Compiler(args.compile_workers), {}

    def submit(indices):
        with report.lock:  # the watchdog may be writing the rows
            for i in indices:
                row = table["rows"][i]
                if row["status"] == "pending":
                    cfg = dreamer_config(row["size"], row["compute_dtype"],
                                         setting["train_ratio"])
                    row["batch"] = [cfg.batch_size, cfg.seq_len]
                    futures[i] = compiler.submit(lambda cfg=cfg, n=row["num_seeds"]: (
                        benchmark.loop_program("dreamer", env, cfg, setting["num_envs"], n, 1)))

    first = [i for i, r in enumerate(table["rows"]) if r["size"] == sizes[0]]
    others = [i for i in range(len(table["rows"])) if i not in first]
    submit(first)
    report.write()
    _time_rows(table["rows"], first, futures, report, "table_first_size", compiler,
               min_seconds)
    report.phase_done("table_first_size")
    # The other sizes are lowered and compiled once the learning run has compiled its
    # training program (its first training line in metrics.jsonl), so that they do not
    # compete with it for the CPU.
    gate = _Gate(os.path.join(args.workdir, "dreamer"), lambda: submit(others), report.elapsed)
    try:
        _dreamer_learning(args, report, setting, learn_seeds, learn_dtype,
                          [table["rows"][i] for i in first])
    finally:
        table["other_sizes_submitted_at_s"] = gate.close()
    rest = sorted(futures)  # the other sizes, after rows of the first one compiled late
    _time_rows(table["rows"], rest, futures, report, "table_other_sizes", compiler,
               min_seconds)
    report.phase_done("table_other_sizes")
    _finish_dreamer(report)


class _Gate:
    """Calls ``action`` once, on a thread, as soon as ``<logdir>/metrics.jsonl`` has a
    training line (one without the ``"phase"`` key that the prefill's line has) past the
    environment steps it held at the start, or at :meth:`close` if none came. ``close()``
    waits for that call, re-raises its error, and returns ``clock()`` at its time."""

    def __init__(self, logdir: str, action: Callable[[], None], clock: Callable[[], float]):
        self._path = os.path.join(logdir, "metrics.jsonl")
        self._action, self._clock, self._stop = action, clock, threading.Event()
        self._start_steps = self._training_steps()  # a resumed run's lines do not count
        self.at: Optional[float] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _training_steps(self) -> float:
        steps = -1.0
        try:
            with open(self._path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line being written
                        continue
                    if "phase" not in record:
                        steps = max(steps, float(record.get("env_steps", 0)))
        except FileNotFoundError:
            pass
        return steps

    def _wait(self):
        while not self._stop.wait(0.5):
            if self._training_steps() > self._start_steps:
                break
        self.at = round(self._clock(), 2)
        try:
            self._action()
        except BaseException as err:  # re-raised by close()
            self._error = err

    def close(self) -> Optional[float]:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.at


def _time_rows(rows: List[Dict], indices: Sequence[int], futures: Dict[int, Future],
               report: Report, phase: str, compiler: Compiler, min_seconds: float):
    """Times the rows ``indices`` once compiled, while they fit before the phase's deadline;
    a row still compiling, or compiled too late to be timed, waits for a later phase."""
    from experiments import benchmark

    for i in indices:
        row, future = rows[i], futures.pop(i, None)
        if future is None:
            continue
        left = report.left(phase)
        try:
            program, init, compiled, lower_s, compile_s = future.result(timeout=max(0.0, left))
        except TimeoutError:
            futures[i] = future
            continue
        except Exception as err:  # one row's failure (out of memory, say) is recorded
            row.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
            report.write()
            continue
        if report.left(phase) < 3 * min_seconds + 2.0:
            futures[i] = future
            continue
        concurrent = compiler.busy
        try:
            state = init(program.keys)
            timing = time_compiled(compiled, state, min_seconds)
            del state
        except Exception as err:
            row.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
            report.write()
            continue
        row.update(benchmark.throughput_row(program, compile_s, timing.mean, timing.seconds))
        row.update(status="measured", lower_s=lower_s, median_seconds_per_chunk=timing.median,
                   calls=timing.calls, compiles_running_while_timed=concurrent,
                   memory=program_memory(compiled))
        print(f"[gpu_suite] dreamer {row['size']} {row['compute_dtype']} seeds="
              f"{row['num_seeds']}: {row['updates_per_s']:.1f} updates/s, "
              f"{row['env_steps_per_s']:.1f} env steps/s, lower {lower_s:.1f} s, compile "
              f"{compile_s:.1f} s", flush=True)
        report.write()
    for i in indices:
        if rows[i]["status"] in ("pending", "waiting") and i in futures:
            rows[i]["status"] = "waiting"


def _dreamer_learning(args, report: Report, setting, learn_seeds: int, dtype: str, rows):
    from agents.dreamer import schedule_for
    from agents.dreamer.config import PRESETS

    cfg = PRESETS[setting["learn_preset"]]
    measured = [r for r in rows if r["status"] == "measured"]
    match = ([r for r in measured if r["num_seeds"] == learn_seeds
              and r["compute_dtype"] == dtype] or measured)
    rate = (match[0]["env_steps_per_s"] / match[0]["num_seeds"] if match else
            (50.0 if args.tiny else 100.0))
    compile_s = 1.5 * (match[0]["lower_s"] + match[0]["compile_s"]) if match else 60.0
    seconds = report.left("learning")
    sched = schedule_for(cfg, setting["num_envs"])
    run = plan_run(seconds, rate, compile_s, evals=4 if args.tiny else 12,
                   steps_per_iteration=setting["num_envs"] * sched.env_steps_per_iteration,
                   max_steps=setting["max_steps"])
    logdir = os.path.join(args.workdir, "dreamer")  # learning_run's log directory
    info = {"env": setting["env"], "preset": setting["learn_preset"], "num_seeds": learn_seeds,
            "num_envs": setting["num_envs"], "compute_dtype": dtype, "train_ratio":
            cfg.train_ratio, "plan": run, "seconds": seconds, "logdir": logdir}
    report.data["learning"] = info
    report.write()
    if seconds < 0.5 * compile_s:
        info["status"] = "skipped: no time left for the learning run"
        report.phase_done("learning")
        return
    extra = ["--preset", setting["learn_preset"], "--num-envs", str(setting["num_envs"]),
             "--eval-episodes", "2" if args.tiny else "8"]
    if dtype != "float32":
        extra += ["--compute-dtype", dtype]
    start = time.monotonic()
    curves = learning_run("dreamer", setting["env"], run, learn_seeds, args.workdir, extra)
    info.update(status="done", wall_s=time.monotonic() - start)
    _dreamer_curves(report, curves)
    report.phase_done("learning")


def _dreamer_curves(report: Report, curves: Optional[List[Dict]]) -> None:
    info = report.data.get("learning", {})
    if not curves:
        return
    info["curves"] = [{"env_steps": c["env_steps"], "eval_return": c["eval_return"]}
                      for c in curves]
    info["training_curve"] = training_curve(info["logdir"])
    path = report.data.get("reference_path")
    family, _, name = info["env"].partition("/")
    if not path:
        info["reference"] = {"error": "no reference file (--reference)"}
    elif family != "dmc":
        info["reference"] = {"error": f"no published DMC curve for {info['env']}"}
    else:
        info["reference"] = compare_to_reference(curves, load_reference(path, f"dmc_{name}"))


def _finish_dreamer(report: Report) -> None:
    """Figures from whatever was measured; also what the watchdog calls."""
    for row in report.data.get("throughput", {}).get("rows", []):
        if row["status"] in ("pending", "waiting"):
            row["status"] = "skipped: not compiled and timed within the budget"
    learning = report.data.get("learning")
    if learning and "curves" not in learning and learning.get("logdir"):
        _dreamer_curves(report, curves_so_far(learning["logdir"]))
    _plot_dreamer_table(report)
    _plot_learning(report)


def _plot_dreamer_table(report: Report) -> None:
    rows = [r for r in report.data.get("throughput", {}).get("rows", [])
            if r["status"] == "measured"]
    if not rows:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    groups = list(dict.fromkeys((r["size"], r["num_seeds"]) for r in rows))
    for k, dtype in enumerate(dict.fromkeys(r["compute_dtype"] for r in rows)):
        values = {(r["size"], r["num_seeds"]): r["updates_per_s"] for r in rows
                  if r["compute_dtype"] == dtype}
        ax.bar([i + 0.4 * k for i in range(len(groups))], [values.get(g, 0) for g in groups],
               width=0.4, label=dtype)
    ax.set_xticks([i + 0.2 for i in range(len(groups))],
                  [f"{s}\n{n} seeds" for s, n in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("updates/s (all seeds)")
    device = report.data.get("device", {}).get("device_kind", "?")
    ax.set_title(f"DreamerV3 on {report.data['throughput']['env']}, train ratio "
                 f"{report.data['throughput']['train_ratio']} [{device}]")
    ax.legend()
    _save(fig, report.path("dreamer_throughput.png"))


def _plot_learning(report: Report) -> None:
    learning = report.data.get("learning") or {}
    if not learning.get("curves"):
        return
    import numpy as np
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in learning["curves"]:
        ax.plot(c["env_steps"], c["eval_return"], color="C0", alpha=0.3, lw=1)
    comparison = learning.get("reference") or {}
    length = min(len(c["env_steps"]) for c in learning["curves"])
    last = learning["curves"][0]["env_steps"][length - 1]
    ax.plot(learning["curves"][0]["env_steps"][:length],
            np.mean([c["eval_return"][:length] for c in learning["curves"]], axis=0),
            color="C0", marker="o", label=f"ours ({len(learning['curves'])} seeds)")
    if comparison.get("xs"):
        xs = np.asarray(comparison["xs"])
        keep = xs <= max(2 * last, xs[0] * 2)
        ax.plot(xs[keep], np.asarray(comparison["mean"])[keep], color="C1", marker=".",
                label=f"DreamerV3 published ({comparison['seeds']} seeds)")
        ax.fill_between(xs[keep], np.asarray(comparison["min"])[keep],
                        np.asarray(comparison["max"])[keep], color="C1", alpha=0.2)
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{learning['env']}, preset {learning['preset']}, {learning['compute_dtype']}")
    ax.legend()
    _save(fig, report.path("dreamer_learning.png"))


# ----------------------------------------------------------------------------- muzero

MINATAR_GAMES = ("SpaceInvaders", "Breakout", "Asterix")
# PPO (experiments.ppo, preset minatar, 3 seeds) on an H100, docs/results/muzero.md: greedy
# evaluation return (mean of 3 seeds) at env steps, the threshold of the comparison and the
# steps each PPO seed needed to reach it. Asterix's last reading is at 1.89M steps.
PPO_H100 = {
    "SpaceInvaders": {"env_steps": [57_000, 229_000, 459_000, 975_000, 2_000_000],
                      "eval_return": [6.3, 22.7, 47.7, 109.3, 86.7], "threshold": 20.0,
                      "steps_to_threshold": [229_000, 172_000, 172_000]},
    "Breakout": {"env_steps": [57_000, 229_000, 459_000, 975_000, 2_000_000],
                 "eval_return": [4.0, 7.1, 7.3, 7.2, 7.2], "threshold": 6.0,
                 "steps_to_threshold": [172_000, 172_000, 229_000]},
    "Asterix": {"env_steps": [57_000, 229_000, 459_000, 975_000, 1_890_000],
                "eval_return": [0.5, 1.2, 2.0, 3.3, 4.6], "threshold": 2.0,
                "steps_to_threshold": [401_000, 401_000, 516_000]},
}
MUZERO_GPU = dict(preset="minatar", num_envs=256, batch_size=1024, updates_per_iteration=2,
                  acting=((8, 256), (8, 1024), (50, 1024), (8, 16)), update_batches=(1024, 256),
                  loop_seeds=(1, 3), learn_seeds=3, eval_episodes=10, evals=8, max_steps=None)
MUZERO_TINY = dict(preset="tiny", num_envs=4, batch_size=16, updates_per_iteration=1,
                   acting=((4, 4),), update_batches=(16,), loop_seeds=(1, 2), learn_seeds=2,
                   eval_episodes=2, evals=2, max_steps=400)


def _muzero_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--games", default=",".join(MINATAR_GAMES),
                   help="MinAtar games of the learning runs, in order")
    p.add_argument("--learn-seeds", type=int, default=None,
                   help="vmapped seeds per game (default 3; tiny: 2)")


def run_muzero(args, report: Report) -> None:
    import envs
    from agents import registry
    from experiments import bench_muzero, benchmark

    setting = dict(MUZERO_TINY if args.tiny else MUZERO_GPU)
    games = _split(args.games, str)
    unknown = sorted(set(games) - set(MINATAR_GAMES))
    if unknown:
        raise cli.UsageError(f"--games: unknown {unknown}; choose from {list(MINATAR_GAMES)}")
    cfg = dataclasses.replace(registry.preset("muzero", setting["preset"]),
                              batch_size=setting["batch_size"],
                              updates_per_iteration=setting["updates_per_iteration"])
    env_id = "gymnax/SpaceInvaders-MinAtar"
    env = envs.make(env_id)
    n, min_s = setting["num_envs"], 0.2 if args.tiny else 0.5
    jobs = [("loop", dict(num_seeds=s), lambda s=s: benchmark.agent_throughput(
        "muzero", env, cfg, n, s, 4, min_s)) for s in setting["loop_seeds"]]
    jobs += [("acting", dict(num_simulations=s, num_envs=e), lambda s=s, e=e:
              bench_muzero.acting_throughput("muzero", env, dataclasses.replace(
                  cfg, num_simulations=s), e, min_s)) for s, e in setting["acting"]]
    jobs += [("update", dict(batch_size=b), lambda b=b: bench_muzero.update_throughput(
        "muzero", env, dataclasses.replace(cfg, batch_size=b), n, min_s))
        for b in setting["update_batches"]]
    table = {"env": env_id, "preset": setting["preset"], "num_envs": n,
             "batch_size": cfg.batch_size, "updates_per_iteration": cfg.updates_per_iteration,
             "num_simulations": cfg.num_simulations, "min_seconds": min_s, "rows": []}
    report.data["throughput"] = table
    last_cost: Dict[str, float] = {}
    for kind, spec, measure in jobs:
        row = {"kind": kind, **spec}
        table["rows"].append(row)
        estimate = last_cost.get(kind, max(last_cost.values(), default=0.0))
        if report.left("throughput") < estimate:
            row["status"] = "skipped: no time left in the phase"
            continue
        start = time.monotonic()
        try:
            row.update(measure(), status="measured")
        except Exception as err:  # one row's failure is recorded, the suite goes on
            row.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
        last_cost[kind] = time.monotonic() - start
        row["wall_s"] = last_cost[kind]
        print(f"[gpu_suite] muzero {kind} {spec}: {_brief(row)}", flush=True)
        report.write()
    report.phase_done("throughput")

    loops = [r for r in table["rows"] if r["kind"] == "loop" and r["status"] == "measured"]
    seeds = args.learn_seeds or setting["learn_seeds"]
    match = [r for r in loops if r["num_seeds"] == seeds] or loops
    rate = match[0]["env_steps_per_s"] / match[0]["num_seeds"] if match else 200.0
    compile_s = 1.5 * match[0]["compile_s"] if match else 30.0
    report.data["learning"] = {"preset": setting["preset"], "num_envs": n, "num_seeds": seeds,
                               "batch_size": cfg.batch_size, "updates_per_iteration":
                               cfg.updates_per_iteration, "games": {}, "ppo_h100": PPO_H100}
    for i, game in enumerate(games):
        seconds = report.left("learning") / (len(games) - i)
        _muzero_game(args, report, game, seconds, rate, compile_s, setting, seeds)
    report.phase_done("learning")
    _finish_muzero(report)


def _muzero_game(args, report, game, seconds, rate, compile_s, setting, seeds) -> None:
    games = report.data["learning"]["games"]
    env_id = f"gymnax/{game}-MinAtar"
    run = plan_run(seconds, rate, compile_s, evals=setting["evals"],
                   steps_per_iteration=setting["num_envs"], max_steps=setting["max_steps"])
    logdir = os.path.join(args.workdir, game, "muzero")  # learning_run's log directory
    games[game] = info = {"env": env_id, "plan": run, "seconds": seconds, "logdir": logdir}
    report.write()
    if seconds < 0.5 * compile_s:
        info["status"] = "skipped: no time left for this game"
        return
    extra = ["--preset", setting["preset"], "--num-envs", str(setting["num_envs"]),
             "--eval-episodes", str(setting["eval_episodes"]),
             "--batch-size", str(setting["batch_size"]),
             "--updates-per-iteration", str(setting["updates_per_iteration"])]
    start = time.monotonic()
    curves = learning_run("muzero", env_id, run, seeds, os.path.dirname(logdir), extra)
    info.update(status="done", wall_s=time.monotonic() - start)
    _muzero_curves(info, game, curves)
    report.write()


def _muzero_curves(info: Dict, game: str, curves: Optional[List[Dict]]) -> None:
    if not curves:
        return
    from experiments.sample_efficiency import summarise
    ppo = PPO_H100[game]
    info["curves"] = [{"env_steps": c["env_steps"], "eval_return": c["eval_return"]}
                      for c in curves]
    info["training_curve"] = training_curve(info["logdir"])
    last = max(c["env_steps"][-1] for c in curves)
    info["summary"] = summarise(curves, ppo["threshold"],
                                [x for x in ppo["env_steps"] if x <= last], last)


def _finish_muzero(report: Report) -> None:
    learning = report.data.get("learning") or {}
    for game, info in learning.get("games", {}).items():
        if "curves" not in info:
            _muzero_curves(info, game, curves_so_far(info["logdir"]))
    _plot_minatar(report)


def _plot_minatar(report: Report) -> None:
    games = {g: i for g, i in (report.data.get("learning") or {}).get("games", {}).items()
             if i.get("curves")}
    if not games:
        return
    import numpy as np
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(games), figsize=(5 * len(games), 4), squeeze=False)
    for ax, (game, info) in zip(axes[0], games.items()):
        length = min(len(c["env_steps"]) for c in info["curves"])
        xs = info["curves"][0]["env_steps"][:length]
        ys = np.asarray([c["eval_return"][:length] for c in info["curves"]], float)
        ax.plot(xs, ys.mean(0), marker="o", label=f"MuZero ({len(ys)} seeds)")
        ax.fill_between(xs, ys.min(0), ys.max(0), alpha=0.2)
        ppo = PPO_H100[game]
        ax.plot(ppo["env_steps"], ppo["eval_return"], marker="s", color="C1",
                label="PPO, H100 (docs/results/muzero.md)")
        ax.axhline(ppo["threshold"], color="k", ls="--", lw=1, label="threshold")
        ax.set_xscale("log")
        ax.set_title(f"{game}-MinAtar")
        ax.set_xlabel("environment steps (per seed)")
        ax.set_ylabel("evaluation return")
        ax.legend(fontsize=7)
    _save(fig, report.path("muzero_minatar.png"))


def _brief(row: Dict) -> str:
    keys = ("env_steps_per_s", "updates_per_s", "searches_per_s", "compile_s")
    parts = [f"{k} {row[k]:,.1f}" for k in keys if isinstance(row.get(k), float)]
    return ", ".join(parts) or row.get("status", "")


# ----------------------------------------------------------------------------- craftax

CRAFTAX_ENV = "craftax/Craftax-Classic-Symbolic-v1"
# env_rows: (environments, reset_ratio); ppo_rows / dreamer_rows: environments per seed.
CRAFTAX_GPU = dict(env_rows=((1024, 1), (1024, 16)), ppo_rows=(256, 1024), dreamer_rows=(16, 64),
                   ppo_preset="craftax", ppo_envs=1024, ppo_seeds=2, dreamer_preset="12m",
                   train_ratio=64.0, dreamer_envs=16, dreamer_seeds=1, target_steps=1_000_000,
                   min_seconds=1.0)
CRAFTAX_TINY = dict(env_rows=((4, 2),), ppo_rows=(2,), dreamer_rows=(2,), ppo_preset="tiny",
                    ppo_envs=2, ppo_seeds=2, dreamer_preset="tiny", train_ratio=None,
                    dreamer_envs=2, dreamer_seeds=2, target_steps=256, min_seconds=0.2)


def _craftax_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-steps", type=int, default=None,
                   help="environment steps per seed the learning runs aim at (default 1M; "
                        "tiny: 256); the budget may end them earlier")


def ppo_throughput(env, cfg, min_seconds: float) -> Dict:
    """Training env steps/s (collection and update) of one PPO iteration, one seed."""
    import jax
    from experiments import ppo
    from experiments.timing import time_jitted

    agent = ppo.PPO(cfg, env, 1)
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    timing = time_jitted(lambda s: agent.iteration(s, None), state, min_seconds=min_seconds,
                         threaded=True)
    return {"num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
            "compile_s": timing.compile_s, "env_steps_per_s": cfg.batch_steps / timing.mean,
            "seconds_per_iteration": timing.mean}


def run_craftax(args, report: Report) -> None:
    import envs
    from agents import registry
    from experiments import bench_craftax, benchmark, ppo

    setting = dict(CRAFTAX_TINY if args.tiny else CRAFTAX_GPU)
    target = args.target_steps or setting["target_steps"]
    if target < 1:
        raise cli.UsageError(f"--target-steps must be >= 1, got {target}")
    env = envs.make(CRAFTAX_ENV)
    min_s = setting["min_seconds"]
    dreamer_cfg = registry.preset("dreamer", setting["dreamer_preset"])
    if setting["train_ratio"]:
        dreamer_cfg = dataclasses.replace(dreamer_cfg, train_ratio=setting["train_ratio"])
    ppo_cfg = ppo.PRESETS[setting["ppo_preset"]]
    table = {"env": CRAFTAX_ENV, "min_seconds": min_s, "ppo_preset": setting["ppo_preset"],
             "dreamer_preset": setting["dreamer_preset"],
             "dreamer_train_ratio": dreamer_cfg.train_ratio, "rows": []}
    report.data["throughput"] = table
    # Dreamer's programs compile on the compiler's threads while the others run here.
    compiler, futures = Compiler(args.compile_workers), {}
    jobs = []
    for n in setting["dreamer_rows"]:
        table["rows"].append({"kind": "dreamer", "num_envs": n, "status": "pending"})
        futures[len(table["rows"]) - 1] = compiler.submit(
            lambda n=n: benchmark.loop_program("dreamer", env, dreamer_cfg, n, 1, 1))
    for n, ratio in setting["env_rows"]:
        jobs.append(({"kind": "env", "num_envs": n, "reset_ratio": ratio}, lambda n=n, r=ratio:
                     bench_craftax.env_rows(CRAFTAX_ENV.split("/")[1], [n], [r], min_s)[0]))
    for n in setting["ppo_rows"]:
        jobs.append(({"kind": "ppo", "num_envs": n}, lambda n=n: ppo_throughput(
            env, dataclasses.replace(ppo_cfg, num_envs=n), min_s)))
    for spec, measure in jobs:
        row = {**spec, "status": "pending"}
        table["rows"].append(row)
        if report.left("throughput") < 5.0:
            row["status"] = "skipped: no time left in the phase"
            continue
        start = time.monotonic()
        try:
            row.update(measure(), status="measured")
        except Exception as err:  # one row's failure is recorded, the suite goes on
            row.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
        row["wall_s"] = time.monotonic() - start
        print(f"[gpu_suite] craftax {spec}: {_brief(row)}", flush=True)
        report.write()
    _time_craftax_dreamer(table["rows"], futures, report, min_s)
    report.phase_done("throughput")

    report.data["learning"] = {"target_steps": target}
    _craftax_ppo(args, report, setting, ppo_cfg, target)
    report.phase_done("ppo")
    _craftax_dreamer(args, report, setting, dreamer_cfg, target)
    report.phase_done("dreamer")
    _finish_craftax(report)


def _time_craftax_dreamer(rows: List[Dict], futures: Dict[int, Future], report: Report,
                          min_seconds: float) -> None:
    from experiments import benchmark
    for i, future in futures.items():
        try:
            program, init, compiled, lower_s, compile_s = future.result(
                timeout=max(0.0, report.left("throughput")))
            timing = time_compiled(compiled, init(program.keys), min_seconds)
        except TimeoutError:
            rows[i]["status"] = "skipped: not compiled within the phase"
            continue
        except Exception as err:
            rows[i].update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
            continue
        rows[i].update(benchmark.throughput_row(program, compile_s, timing.mean, timing.seconds),
                       status="measured", lower_s=lower_s)
        print(f"[gpu_suite] craftax dreamer envs={rows[i]['num_envs']}: {_brief(rows[i])}",
              flush=True)
        report.write()


def _measured_rate(report: Report, kind: str, num_envs: int) -> Optional[Dict]:
    rows = [r for r in report.data["throughput"]["rows"]
            if r["kind"] == kind and r["status"] == "measured"]
    same = [r for r in rows if r["num_envs"] == num_envs]
    return (same or rows or [None])[0]


def _craftax_ppo(args, report: Report, setting: Dict, cfg, target: int) -> None:
    from experiments import ppo

    seconds, seeds = report.left("ppo"), setting["ppo_seeds"]
    cfg = dataclasses.replace(cfg, num_envs=setting["ppo_envs"])
    row = _measured_rate(report, "ppo", cfg.num_envs)
    # seeds share the machine: the rate per seed of a one-seed row, divided by the seeds
    rate = (row["env_steps_per_s"] * cfg.num_envs / row["num_envs"] / seeds if row
            else 20.0 * seeds)
    compile_s = 1.5 * row["compile_s"] if row else 60.0
    plan = plan_run(seconds, rate, compile_s, steps_per_iteration=cfg.batch_steps, evals=10,
                    max_steps=target)
    steps = max(cfg.batch_steps, min(target, plan["steps"]))
    logdir = os.path.join(args.workdir, "ppo")
    info = {"method": "ppo", "preset": setting["ppo_preset"], "num_envs": cfg.num_envs,
            "num_seeds": seeds, "steps": steps, "plan": plan, "seconds": seconds,
            "logdir": logdir, "observation": "symbolic (1,345 entries)"}
    report.data["learning"]["ppo"] = info
    report.write()
    if seconds < 0.5 * compile_s:
        info["status"] = "skipped: no time left for the PPO run"
        return
    start = time.monotonic()
    ppo.train(CRAFTAX_ENV, steps=steps, seeds=seeds, eval_every=plan["log_every"],
              eval_episodes=0, out=logdir, preset=setting["ppo_preset"],
              max_seconds=plan["max_seconds"], num_envs=cfg.num_envs, fresh=True)
    info.update(status="done", wall_s=time.monotonic() - start)
    info["curve"] = craftax_curve(os.path.join(logdir, "metrics.jsonl"))
    report.write()


def _craftax_dreamer(args, report: Report, setting: Dict, cfg, target: int) -> None:
    from agents.dreamer import schedule_for
    from core import runner
    from experiments import train

    seconds, seeds, n = report.left("dreamer"), setting["dreamer_seeds"], setting["dreamer_envs"]
    row = _measured_rate(report, "dreamer", n)
    rate = row["env_steps_per_s"] * n / row["num_envs"] / seeds if row else 10.0
    compile_s = 1.5 * (row["lower_s"] + row["compile_s"]) if row else 60.0
    sched = schedule_for(cfg, n)
    plan = plan_run(seconds, rate, compile_s, evals=10, max_steps=target,
                    steps_per_iteration=n * sched.env_steps_per_iteration)
    logdir = os.path.join(args.workdir, "dreamer")
    info = {"method": "dreamer", "preset": setting["dreamer_preset"], "num_envs": n,
            "num_seeds": seeds, "train_ratio": cfg.train_ratio, "plan": plan,
            "seconds": seconds, "logdir": logdir, "observation": "symbolic (1,345 entries)"}
    report.data["learning"]["dreamer"] = info
    report.write()
    if seconds < 0.5 * compile_s:
        info["status"] = "skipped: no time left for the Dreamer run"
        return
    argv = ["--agent", "dreamer", "--env", CRAFTAX_ENV, "--preset", setting["dreamer_preset"],
            "--steps", str(plan["steps"]), "--num-seeds", str(seeds), "--num-envs", str(n),
            "--logdir", logdir, "--log-every", str(plan["log_every"]), "--eval-every", "-1",
            "--checkpoint-every", "0", "--max-seconds", f"{plan['max_seconds']:.1f}",
            "--no-progress"]
    if setting["train_ratio"]:
        argv += ["--train-ratio", str(setting["train_ratio"])]
    start = time.monotonic()
    env, agent, run_cfg, record = train.build(argv)
    runner.train(env, agent, run_cfg, record)
    info.update(status="done", wall_s=time.monotonic() - start)
    info["curve"] = craftax_curve(os.path.join(logdir, "metrics.jsonl"))
    report.write()


def _finish_craftax(report: Report) -> None:
    """Curves from whatever the runs logged, and the figures; also what the watchdog calls."""
    for info in (report.data.get("learning") or {}).values():
        if isinstance(info, dict) and "curve" not in info and info.get("logdir"):
            info["curve"] = craftax_curve(os.path.join(info["logdir"], "metrics.jsonl"))
    _plot_craftax(report)


def _plot_craftax(report: Report) -> None:
    runs = {f"{method} ({info['num_seeds']} seeds)": info["curve"]
            for method, info in (report.data.get("learning") or {}).items()
            if isinstance(info, dict) and (info.get("curve") or {}).get("env_steps")}
    if runs:
        device = report.data.get("device", {}).get("device_kind", "?")
        plot_craftax(runs, report.path("craftax_learning.png"), f"{CRAFTAX_ENV} [{device}]")


# ----------------------------------------------------------------------------- command line

SUITES: Dict[str, Suite] = {
    "dreamer": Suite(
        help="DreamerV3 throughput table and a DMC-proprio learning run",
        phases=(("table_first_size", 0.22), ("learning", 0.48), ("table_other_sizes", 0.30)),
        files=("dreamer.json", "dreamer_throughput.png", "dreamer_learning.png"),
        add_arguments=_dreamer_args, run=run_dreamer),
    "muzero": Suite(
        help="MuZero throughput table and MinAtar learning curves",
        phases=(("throughput", 0.25), ("learning", 0.75)),
        files=("muzero.json", "muzero_minatar.png"),
        add_arguments=_muzero_args, run=run_muzero),
    "craftax": Suite(
        help="Craftax-Classic-Symbolic throughput, and PPO and DreamerV3 learning curves",
        phases=(("throughput", 0.30), ("ppo", 0.25), ("dreamer", 0.45)),
        files=("craftax.json", "craftax_learning.png"),
        add_arguments=_craftax_args, run=run_craftax),
}
_FINISH = {"dreamer": _finish_dreamer, "muzero": _finish_muzero, "craftax": _finish_craftax}


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m experiments.gpu_suite", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="suite", metavar="SUITE", parser_class=cli.ArgumentParser)
    for name, suite in SUITES.items():
        q = sub.add_parser(name, help=suite.help, description=suite.help)
        q.add_argument("--out", required=True, help="output folder (at most 8 files, flat)")
        q.add_argument("--budget-s", type=float, default=540.0,
                       help="wall-clock seconds for the whole run, compilation included")
        q.add_argument("--tiny", action="store_true", help="CPU test mode: tiny presets")
        q.add_argument("--workdir", default=None,
                       help="where learning runs keep their logs and checkpoints (default: a "
                            "temporary folder; not --out, which keeps only the suite's files)")
        q.add_argument("--compile-workers", type=int, default=None,
                       help="threads compiling table programs (default: CPU cores - 2, at "
                            "most 6)")
        suite.add_arguments(q)
    return p


def _split(text: str, kind) -> List:
    try:
        items = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise cli.UsageError(f"expected a comma-separated list, got {text!r}") from None
    if not items:
        raise cli.UsageError(f"expected a non-empty comma-separated list, got {text!r}")
    return items


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    _pyplot().close(fig)


def find_reference(given: Optional[str]) -> Optional[str]:
    """``--reference``, else the shared reference scores beside the repository, else the copy
    that ``scripts/gpu_suite.sh prepare`` puts in ``.gpu_suite/reference_scores``."""
    if given:
        if not os.path.exists(given):
            raise cli.UsageError(f"--reference {given}: no such file; pass the "
                                 f"dmc_proprio-dreamerv3.json.gz of shared/reference_scores")
        return given
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in (os.path.join(root, DEFAULT_REFERENCE),
                 os.path.join(root, ".gpu_suite", "reference_scores",
                              os.path.basename(DEFAULT_REFERENCE))):
        if os.path.exists(path):
            return path
    return None


def main(argv: Optional[List[str]] = None) -> Dict:
    args = _parser().parse_args(argv)
    if args.suite is None:
        raise cli.UsageError(f"name a suite: {', '.join(SUITES)} (python -m "
                             f"experiments.gpu_suite SUITE --out DIR)")
    if not args.budget_s > 0:
        raise cli.UsageError(f"--budget-s must be > 0, got {args.budget_s}")
    suite = SUITES[args.suite]
    phases = plan(args.budget_s, suite.phases)
    cores = os.cpu_count() or 2
    args.compile_workers = args.compile_workers or max(1, min(6, cores - 2))
    if args.compile_workers < 1:
        raise cli.UsageError(f"--compile-workers must be >= 1, got {args.compile_workers}")
    reference = find_reference(getattr(args, "reference", None))
    args.workdir = args.workdir or tempfile.mkdtemp(prefix=f"gpu_suite_{args.suite}_")
    if os.path.abspath(args.workdir).startswith(os.path.abspath(args.out) + os.sep) or \
            os.path.abspath(args.workdir) == os.path.abspath(args.out):
        raise cli.UsageError("--workdir must lie outside --out (the learning runs write more "
                             "files than the output folder may hold)")
    report = Report(args.out, args.suite, suite.files, args.budget_s, phases,
                    {"argv": list(sys.argv if argv is None else argv), "tiny": args.tiny,
                     "reference_path": reference if args.suite == "dreamer" else None})
    start_watchdog(report, _FINISH[args.suite])
    from experiments.benchmark import _device
    report.data["device"] = _device()
    import jax
    # a persistent compilation cache (the tests set one) makes compile times cache reads
    report.data["compilation_cache_dir"] = jax.config.jax_compilation_cache_dir
    report.data["setup_s"] = round(report.elapsed(), 2)
    report.write()
    print(f"[gpu_suite] {args.suite} on {report.data['device']['device_kind']}: budget "
          f"{args.budget_s:g} s, phases {json.dumps({k: round(v) for k, v in phases.items()})}, "
          f"output {args.out}", flush=True)
    try:
        suite.run(args, report)
    except BaseException as err:
        with report.lock:
            report.data["error"] = f"{type(err).__name__}: {err}"[:2000]
            try:
                _FINISH[args.suite](report)
            finally:
                report.write()
        raise
    with report.lock:
        report.write(complete=report.data["stopped_by"] is None)
    print(f"[gpu_suite] done in {report.elapsed():.0f} s: {', '.join(suite.files)} in "
          f"{args.out}", flush=True)
    return report.data


if __name__ == "__main__":
    cli.run(main)
