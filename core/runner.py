"""The host loop: iterate over compiled chunks; log, evaluate, checkpoint, resume.

A chunk (the iterations between two metric lines) runs as one call of the compiled loop, or as
several where one would take longer than :data:`CALL_SECONDS`, so that a signal or the
wall-clock budget is acted on within about that long.

All seeds of a run are one program: the loop functions of :mod:`core.loop` are vmapped over a
leading seed axis and jitted with the run state's shardings (:mod:`core.sharding`).

Several processes (``jax.distributed``) run this same loop over one global mesh, each stepping
the environments of its own devices. Every host-side decision is the same in all of them:
metrics are replicated outputs of the compiled chunk, a signal or the wall-clock budget stops
the run when any process sees it (:func:`core.sharding.agree_any`), and process 0 alone checks
and writes the log directory (config, metrics, TensorBoard, plots, progress); orbax writes each
process's shards of a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from core import checkpoint, logger, rundir, sharding
from core.config import at_least, require
from core.loop import EPISODE_METRIC_SUM, make_loop
from core.types import Agent, Schedule
from envs.api import Environment


class NonFiniteMetricError(RuntimeError):
    """A loss or metric became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What the host loop needs (agent settings live in the agent's own config).

    Attributes:
      steps: environment steps to train for (summed over the parallel environments).
      num_envs: parallel environments per seed.
      num_seeds: independent seeds trained in one program (vmapped).
      seed: base seed; seed ``i`` of the run uses ``split(PRNGKey(seed), num_seeds)[i]``.
      logdir: output directory (rerun with the same one to resume); None writes nothing.
      log_every: environment steps between metric lines (rounded to whole iterations; at most
        ``steps``). The loop runs in compiled chunks of ``min(log_every, eval_every,
        checkpoint_every)`` steps (of those > 0), rounded down to whole iterations, and logs a
        line after each, so a shorter ``eval_every`` or ``checkpoint_every`` also logs more
        often. Chunks start where the random prefill ends and are at most as long as the
        steps left after it, so the run ends less than one chunk past ``steps``.
      eval_every: environment steps between evaluations (0: only at the end; -1: never);
        each comes at the end of the first chunk at or past a multiple of it.
      eval_episodes: episodes per evaluation and seed (on a two-player game: games against
        each opponent, :mod:`core.arena`).
      eval_opponent_simulations: on a two-player game, simulations per move of the true-model
        MCTS opponent of the evaluation (0: only the random opponent).
      checkpoint_every: environment steps between checkpoints (0: only at the end).
      num_devices: devices of the data-parallel mesh (0: as many as divide ``num_envs``, up
        to all visible devices).
      progress: show progress (a bar in a terminal, else one plain line per chunk).
      max_seconds: wall-clock budget of one ``train`` call (0: none). Where the pace
        measured so far says the next iteration would end past it (or once it has passed: the
        first call, which compiles, runs one iteration), the run stops as if ``steps`` were
        reached: a final evaluation, metric line and checkpoint, so rerunning with the same
        logdir resumes from there (and first ends the chunk it stopped in).
    """

    steps: int = 10_000
    num_envs: int = 1
    num_seeds: int = 1
    seed: int = 0
    logdir: Optional[str] = None
    log_every: int = 1000
    eval_every: int = 0
    eval_episodes: int = 8
    eval_opponent_simulations: int = 32
    checkpoint_every: int = 0
    num_devices: int = 0
    progress: bool = True
    max_seconds: float = 0.0

    def __post_init__(self):
        require(self, [
            *at_least(self, ("steps", "num_envs", "num_seeds", "log_every", "eval_episodes"), 1),
            ("eval_every", self.eval_every >= -1, ">= -1 (0: at the end only, -1: never)"),
            *at_least(self, ("checkpoint_every", "num_devices", "eval_opponent_simulations"), 0),
            ("max_seconds", self.max_seconds >= 0, ">= 0 (0: no limit)"),
        ])


@dataclasses.dataclass
class RunResult:
    state: Any  # final run state, leaves [num_seeds, ...]
    history: List[Dict]  # the metric lines of this process (also in metrics.jsonl)
    env_steps: int
    stopped_by: Optional[str] = None  # "max_seconds", "SIGTERM", "SIGINT" or None (steps done)


def _say(line: str) -> None:
    """Prints ``line``; a closed stdout (e.g. ``| tee`` ended by the same Ctrl-C) is ignored."""
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        pass


class StopOnSignal:
    """SIGTERM / SIGINT ask the host loop to checkpoint when its running compiled call ends
    and stop;
    a second signal, sent at least :attr:`REPEAT_AFTER` seconds after the first, stops the
    process at once (exit status 128 + the signal's number, as a checkpointed stop).

    Python runs a signal handler only when the main thread is between bytecodes, and the main
    thread spends a chunk blocked in compiled code, so a watcher thread reads the signals from
    :func:`signal.set_wakeup_fd`, which the interpreter writes the moment one arrives: it
    acknowledges the first at once and acts on the second. One request delivered twice (GNU
    ``timeout`` signals the process and then its group) counts once. A checkpoint being
    written at a hard stop is not finalised and is not used on resume. Signals of other
    handlers that reach the wakeup file are passed on to the one set before."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    REPEAT_AFTER = 1.0

    def __init__(self, prefix: str = "[train]"):
        self.prefix = prefix  # of its messages
        self.signum: Optional[int] = None
        self.previous: Dict[int, Any] = {}
        self._write_fd: Optional[int] = None
        self._previous_fd = -1
        self._thread: Optional[threading.Thread] = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(write_fd, False)
            self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except (OSError, ValueError):
            os.close(read_fd)
            os.close(write_fd)
            raise
        self._write_fd = write_fd
        self._thread = threading.Thread(target=self._watch, args=(read_fd, self._previous_fd),
                                        daemon=True, name="stop-on-signal")
        self._thread.start()
        for signum in self.SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        if self._write_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            os.close(self._write_fd)  # the watcher reads end-of-file and returns
            self._write_fd = None
            self._thread.join(timeout=1.0)  # its last message before the run's own
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
        return False

    @property
    def name(self) -> Optional[str]:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum

    def _watch(self, read_fd: int, forward_fd: int) -> None:
        first = None
        try:
            while True:
                data = os.read(read_fd, 64)
                if not data:
                    return
                others = bytes(b for b in data if b not in self.SIGNALS)
                if others and forward_fd >= 0:
                    try:
                        os.write(forward_fd, others)
                    except OSError:
                        pass
                for signum in (b for b in data if b in self.SIGNALS):
                    name = signal.Signals(signum).name
                    if first is None:
                        first = time.monotonic()
                        _say(f"{self.prefix} {name}: saving a checkpoint when the running "
                             f"compiled call ends, then stopping (send it again to stop at once)")
                    elif time.monotonic() - first >= self.REPEAT_AFTER:
                        try:
                            _say(f"{self.prefix} {name} again: stopping at once")
                        finally:
                            os._exit(128 + signum)
        finally:
            os.close(read_fd)


def _summarise(metrics: Dict[str, np.ndarray]) -> Dict:
    """Per-seed chunk sums -> logged values (seed means, plus per-seed returns)."""
    out = {}
    episodes = metrics.pop("episodes")
    ret_sum = metrics.pop("episode_return_sum")
    len_sum = metrics.pop("episode_length_sum")
    own = {name[len(EPISODE_METRIC_SUM):]: metrics.pop(name)
           for name in [n for n in metrics if n.startswith(EPISODE_METRIC_SUM)]}
    out["episodes"] = int(episodes.sum())
    if episodes.min() > 0:
        per_seed = ret_sum / episodes
        out["episode_return_mean"] = float(per_seed.mean())
        out["episode_return_per_seed"] = [float(x) for x in per_seed]
        out["episode_length_mean"] = float((len_sum / episodes).mean())
        for name, total in own.items():  # e.g. craftax's achievement success rates
            out[f"{name}_mean"] = float((total / episodes).mean())
    for name, value in metrics.items():
        out[name] = float(np.mean(value))
    return out


# A resume replays the same updates (same state, same keys), and the optimiser settings are
# part of a run's identity (core.rundir), so the fix is a new run.
_NONFINITE_FIX = ("The last good checkpoint (env_steps={}) is kept, but resuming from it repeats "
                  "the same updates; check the inputs, or start again with a lower learning "
                  "rate under a new --logdir (or --fresh, which moves this run aside).")


def _check_skipped(metrics: Dict[str, np.ndarray], env_steps: int,
                   last_checkpoint: Optional[int]) -> None:
    """Stops when a seed skipped every update of a chunk (``skipped_updates``, the fraction of
    updates an agent dropped for non-finite gradients, is 1): that run no longer learns."""
    skipped = np.atleast_1d(metrics.get("skipped_updates", np.zeros(1)))
    if np.any(skipped >= 1.0):
        raise NonFiniteMetricError(
            f"every update of the last chunk had non-finite gradients (seeds "
            f"{np.flatnonzero(skipped >= 1.0).tolist()}) at env_steps={env_steps}; stopping. "
            f"{_NONFINITE_FIX.format(last_checkpoint)}")


CLIPPED_SUFFIX = "_target_clipped"
CLIPPED_WARNING = 0.01


def _warn_clipped(record: Dict, warned: set) -> None:
    """Warns once per metric ``NAME_target_clipped`` (the share of an agent's NAME targets
    beyond the categorical support that encodes them, e.g. MuZero's ``value`` and ``reward``)
    above 1%: the network cannot learn targets it clips, and nothing else would show it."""
    for name, value in record.items():
        if (name.endswith(CLIPPED_SUFFIX) and name not in warned and isinstance(value, float)
                and value > CLIPPED_WARNING):
            warned.add(name)
            what = name[:-len(CLIPPED_SUFFIX)]
            print(f"[train] warning: {value:.1%} of the {what} targets at env_steps="
                  f"{record['env_steps']} lie beyond the {what} support and are clipped to its "
                  f"ends; widen it (--{what}-support-max, in the transformed space) if this "
                  f"persists", flush=True)


def _check_finite(record: Dict, last_checkpoint: Optional[int]) -> None:
    for name, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteMetricError(
                f"metric '{name}' is {value} at env_steps={record['env_steps']}; stopping. "
                f"{_NONFINITE_FIX.format(last_checkpoint)}")


def train(env: Environment, agent: Agent, cfg: RunConfig, config_record: Optional[Dict] = None,
          state: Any = None) -> RunResult:
    """Trains ``agent`` on ``env`` for ``cfg.steps`` environment steps per seed.

    Resumes from ``<logdir>/checkpoints`` when present: from the newest checkpoint that
    restores (a damaged one is reported and set aside), after checking that ``config_record``
    describes the same run (:func:`core.rundir.check_logdir`). The log directory is held
    against other runs until this returns (:class:`core.rundir.WriterLock`): a second run on
    it is refused. ``state`` (optional) starts from a given seed-batched run state instead of
    a fresh one (a warm start: the random prefill runs again and the step count goes on from
    the given state's; to continue a run, resume it from its logdir). SIGTERM or SIGINT
    checkpoint when the running compiled call ends (:data:`CALL_SECONDS`) and return with
    ``stopped_by`` set.
    """
    check_budget(agent.schedule, cfg)
    lock = None
    if cfg.logdir:
        sharding.primary_decides(lambda: rundir.check_logdir(cfg.logdir, config_record),
                                 "check_logdir")
        if sharding.is_primary():  # process 0 alone writes the log directory
            lock = rundir.WriterLock(cfg.logdir)
    try:
        if cfg.logdir:
            sharding.primary_decides(lambda: lock.acquire() and None, "lock_logdir")
        return _train(env, agent, cfg, config_record, state)
    finally:
        if lock is not None:
            lock.release()


def _chunk_steps(schedule: Schedule, cfg: RunConfig) -> Tuple[int, int]:
    """``(environment steps per iteration, per chunk)`` of a run: a chunk ends at every metric
    line, evaluation and checkpoint the run asks for, so it is the shortest of log_every,
    eval_every and checkpoint_every (those set) long, rounded down to whole iterations (at
    least one). Chunks start where the random prefill ends, so a chunk is also at most the
    steps left after the prefill: a run ends less than one chunk past ``steps``."""
    per_iteration = cfg.num_envs * schedule.env_steps_per_iteration
    checkpoint_every = cfg.checkpoint_every if cfg.logdir else 0  # no logdir: no checkpoints
    period = min([cfg.log_every] + [p for p in (cfg.eval_every, checkpoint_every) if p > 0])
    learning = cfg.steps - prefill_env_steps(schedule, cfg.num_envs)
    return per_iteration, max(1, min(period, learning) // per_iteration) * per_iteration


# A chunk's iterations run as one compiled call, or as several where one would take longer
# than this: a signal or the wall-clock budget is acted on between calls.
CALL_SECONDS = 30.0


def _call_iterations(left: int, pace: Optional[float], calls: int, now: float,
                     deadline: float) -> int:
    """Iterations of the next compiled call: one for the first two calls of a process (the
    first compiles, the second measures ``pace``, seconds per iteration), then the rest of
    the chunk, split into calls of about :data:`CALL_SECONDS` and cut to what ``pace`` says
    fits before ``deadline``."""
    if pace is None:
        return 1 if calls < 2 else left
    count = min(left, max(1, int(CALL_SECONDS / max(pace, 1e-9))))
    if math.isfinite(deadline):
        count = min(count, max(1, int((deadline - now) / max(pace, 1e-9))))
    return count


def _merge_calls(pending: Optional[Tuple[Dict, int]], metrics: Dict[str, np.ndarray],
                 count: int) -> Tuple[Dict, int]:
    """The metrics of a chunk's calls so far: episode statistics (sums) added, update
    metrics (means over iterations) averaged with each call's iterations as weights."""
    if pending is None:
        return dict(metrics), count
    total, done = pending
    merged = {}
    for name, value in metrics.items():
        if name in _EPISODE_SUMS or name.startswith(EPISODE_METRIC_SUM):
            merged[name] = total[name] + value
        else:
            merged[name] = (total[name] * done + value * count) / (done + count)
    return merged, done + count


_EPISODE_SUMS = ("episodes", "episode_return_sum", "episode_length_sum")


def prefill_env_steps(schedule: Schedule, num_envs: int) -> int:
    """Environment steps per seed of the random prefill: whole steps of all ``num_envs``."""
    return math.ceil(schedule.prefill_steps / num_envs) * num_envs


def check_budget(schedule: Schedule, cfg: RunConfig) -> None:
    """Refuses a budget that ends within the random prefill (it would learn nothing) or that
    the 32-bit step counter cannot count to."""
    prefill = prefill_env_steps(schedule, cfg.num_envs)
    _, chunk = _chunk_steps(schedule, cfg)
    if cfg.steps + chunk + cfg.num_envs >= 2 ** 31:  # the last chunk may end past steps
        raise ValueError(f"--steps {cfg.steps} is too large: the environment-step counter is "
                         f"a 32-bit integer, so --steps plus one chunk (a run may end that far "
                         f"past it; {chunk} steps here) must stay below 2**31 = {2 ** 31}; "
                         f"train fewer steps, or pass a shorter --log-every")
    if cfg.steps <= prefill:
        raise ValueError(f"--steps {cfg.steps} ends before learning starts: the agent first "
                         f"collects {prefill} random environment steps per seed (its "
                         f"prefill); pass --steps above {prefill}, or shorten the prefill "
                         f"(--prefill-steps; the MuZero agents' also covers one training "
                         f"window per environment, so fewer --num-envs)")


def _train(env: Environment, agent: Agent, cfg: RunConfig, config_record: Optional[Dict],
           state: Any) -> RunResult:
    """:func:`train` once the log directory is checked and held."""
    schedule = agent.schedule
    steps_per_iteration, chunk = _chunk_steps(schedule, cfg)
    iterations = chunk // steps_per_iteration
    prefill_iterations = max(1, math.ceil(schedule.prefill_steps / cfg.num_envs))
    fns = make_loop(env, agent, num_envs=cfg.num_envs, iterations=iterations,
                    prefill_iterations=prefill_iterations, eval_envs=cfg.eval_episodes,
                    eval_opponent_simulations=cfg.eval_opponent_simulations)

    mesh = sharding.make_mesh(cfg.num_devices or sharding.default_num_devices(cfg.num_envs))
    host_keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    keys = sharding.replicated(host_keys, mesh)
    init_v = jax.vmap(fns.init)
    shapes = jax.eval_shape(init_v, keys)
    state_sharding = sharding.run_state_shardings(shapes, mesh, cfg.num_envs)
    replicated = NamedSharding(mesh, P())
    together = sharding.compiled_together  # with several processes: all compile, then run
    init_fn = together(jax.jit(init_v, out_shardings=state_sharding), "init")
    train_fn = together(jax.jit(jax.vmap(fns.train, in_axes=(0, None)),
                                out_shardings=(state_sharding, replicated), donate_argnums=0),
                        "train")
    prefill_fn = together(jax.jit(jax.vmap(fns.prefill),
                                  out_shardings=(state_sharding, replicated), donate_argnums=0),
                          "prefill")
    eval_fn = together(jax.jit(jax.vmap(fns.evaluate), out_shardings=replicated), "evaluate")

    primary = sharding.is_primary()
    ckpt = checkpoint.Checkpointer(cfg.logdir) if cfg.logdir else None
    meta = {"env_steps": 0, "wall_time": 0.0, "prefilled": False}
    # Resume or start: process 0's listing decides for every process (on a shared file system
    # another host's may lag behind).
    resume = ckpt is not None and sharding.primary_decides(
        lambda: ckpt.latest_step() is not None, "resume")
    if resume:
        try:
            state, meta, _ = ckpt.restore_newest(checkpoint.abstract_like(shapes, state_sharding))
        except BaseException:
            ckpt.close()
            raise
        if primary:
            print(f"[train] resumed from {ckpt.directory} at env_steps={meta['env_steps']}")
    elif state is None:
        state = init_fn(keys)
    else:
        state = jax.device_put(state, state_sharding)
    env_steps = int(meta["env_steps"])
    # iterations left in the chunk a stop cut short (0: the checkpoint is at a chunk's end)
    left = min(int(meta.get("chunk_left", 0)), iterations) or iterations

    log = None
    if cfg.logdir and primary:
        if config_record is not None:
            rundir.write_config(cfg.logdir, config_record, resumed=env_steps > 0)
        log = logger.MetricsLogger(cfg.logdir, resume_env_steps=env_steps if env_steps else None)
    progress = logger.Progress(cfg.steps, env_steps, enabled=cfg.progress and primary)
    start = time.time() - float(meta["wall_time"])
    deadline = time.time() + cfg.max_seconds if cfg.max_seconds else math.inf
    history: List[Dict] = []
    warned_clipped: set = set()  # the *_target_clipped metrics warned about
    last_ckpt = env_steps if env_steps else None
    next_eval = _next_multiple(env_steps, cfg.eval_every)
    # A signal stops a run without the evaluation that was due at that chunk; the checkpoint
    # records it and the resumed run makes it first, on the restored state with the same keys.
    owed = bool(meta.get("evaluation_due")) and cfg.eval_every >= 0 and bool(cfg.logdir)
    if owed:  # not if an earlier resume of this checkpoint made it already
        owed = sharding.primary_decides(lambda: not any(
            r.get("env_steps") == env_steps and "eval_return_mean" in r
            for r in logger.read_metrics(cfg.logdir)), "owed_evaluation")
    evaluation_due = False
    next_ckpt = _next_multiple(env_steps, cfg.checkpoint_every)

    def emit(record):
        record["wall_time"] = time.time() - start
        history.append(record)
        if log is not None:
            log.log(record)

    def evaluate_into(record):
        nonlocal next_eval
        eval_keys = sharding.replicated(jax.random.split(
            jax.random.fold_in(host_keys[0], env_steps),
            cfg.num_seeds), mesh)
        evaluation = jax.tree_util.tree_map(np.asarray, eval_fn(state, eval_keys))
        record.update({k: float(v.mean()) for k, v in evaluation.items()})
        record["eval_return_per_seed"] = evaluation["eval_return_mean"].tolist()
        for name in evaluation:  # two-player games: each seed's win rates
            if name.startswith("eval_win_rate_"):
                record[name + "_per_seed"] = evaluation[name].tolist()
        next_eval = _next_multiple(env_steps, cfg.eval_every)

    def save():
        nonlocal meta, last_ckpt, next_ckpt
        meta = {"env_steps": env_steps, "wall_time": time.time() - start, "prefilled": True,
                "evaluation_due": bool(evaluation_due),
                "chunk_left": 0 if left == iterations else left}
        ckpt.save(env_steps, state, meta)
        last_ckpt = env_steps
        next_ckpt = _next_multiple(env_steps, cfg.checkpoint_every)

    stopped_by = None
    stop = StopOnSignal()
    try:
        stop.__enter__()
        if not meta["prefilled"] and schedule.prefill_steps > 0:
            state, stats = prefill_fn(state)
            env_steps = int(np.asarray(state.env_steps)[0])
            emit({"env_steps": env_steps, "phase": "prefill",
                  **_summarise(jax.tree_util.tree_map(np.asarray, stats))})
        meta["prefilled"] = True
        if owed:
            record = {"env_steps": env_steps}
            evaluate_into(record)
            emit(record)
        # a run is finished at a chunk's end at or past its steps; one stopped within its
        # last chunk goes on to that chunk's end
        finished = env_steps >= cfg.steps and left == iterations
        done = finished
        signalled = False
        pending = None  # the merged metrics of this chunk's calls so far, and their count
        pace = None  # seconds per iteration, measured on calls after the one that compiled
        calls = 0
        while not done:
            if pending is None:  # within a chunk the check after each call decides
                signalled, _ = sharding.agree_any([stop.signum is not None, False])
                if signalled:
                    break
            count = sharding.agree_min(_call_iterations(left, pace, calls, time.time(),
                                                        deadline))
            began = time.time()
            state, metrics = train_fn(state, sharding.replicated(np.int32(count), mesh))
            env_steps = int(np.asarray(state.env_steps)[0])
            metrics = jax.tree_util.tree_map(np.asarray, metrics)
            if calls > 0:  # the first call's time includes compiling the program
                pace = (time.time() - began) / count
            calls += 1
            pending = _merge_calls(pending, metrics, count)
            left -= count
            finished = left == 0 and env_steps >= cfg.steps
            signalled, late = sharding.agree_any([  # late: the next iteration would end past it
                stop.signum is not None, time.time() + (pace or 0.0) > deadline])
            done = finished or late or signalled
            if not (left == 0 or done):
                continue
            metrics, pending = pending[0], None
            _check_skipped(metrics, env_steps, last_ckpt)
            record = {"env_steps": env_steps, **_summarise(metrics)}
            _check_finite(record, last_ckpt)
            if primary:
                _warn_clipped(record, warned_clipped)
            if done and not finished:
                stopped_by = (stop.name or "SIGTERM") if signalled else "max_seconds"
                record["stopped_by"] = stopped_by
                if not signalled and primary:
                    print(f"[train] max_seconds={cfg.max_seconds:g} reached at env_steps="
                          f"{env_steps} (of {cfg.steps}); rerun with the same logdir to go on",
                          flush=True)
            scheduled = cfg.eval_every > 0 and env_steps >= next_eval
            evaluate = not signalled and cfg.eval_every >= 0 and (done or scheduled)
            evaluation_due = bool(signalled) and cfg.eval_every >= 0 and (finished or scheduled)
            if evaluation_due and finished:
                record["stopped_by"] = stop.name or "SIGTERM"
            if evaluate:
                evaluate_into(record)
            emit(record)
            progress.update(env_steps, _progress_info(record, env_steps, start))
            if ckpt is not None and (done or (cfg.checkpoint_every and env_steps >= next_ckpt)):
                save()
            if left == 0:
                left = iterations
        if signalled and finished and evaluation_due:
            # the signal came during the last chunk: its checkpoint owes the final evaluation
            stopped_by = stop.name or "SIGTERM"
            if primary:
                rerun = ("; rerun the same command to make it" if ckpt is not None else "")
                print(f"[train] stopped by {stopped_by} at env_steps={env_steps}, the end of "
                      f"training, before its final evaluation{rerun}", flush=True)
        elif signalled and not finished:
            stopped_by = stop.name or "SIGTERM"
            if not history or history[-1].get("stopped_by") != stopped_by:
                emit({"env_steps": env_steps, "stopped_by": stopped_by})  # between chunks
            if ckpt is not None and last_ckpt != env_steps:  # the signal came before a chunk
                save()
            where = f"; checkpoint at env_steps={last_ckpt}" if ckpt is not None else ""
            if primary:
                print(f"[train] stopped by {stopped_by} at env_steps={env_steps}{where}; rerun "
                      f"the same command to resume", flush=True)
    finally:
        try:
            progress.close()
            if log is not None:
                log.close()
                logger.plot_returns(cfg.logdir)
            if ckpt is not None:
                ckpt.close()
        finally:  # last: a repeated signal during the above is still one stop request
            stop.__exit__(None, None, None)
    return RunResult(state=state, history=history, env_steps=env_steps, stopped_by=stopped_by)


def restore(env: Environment, agent: Agent, cfg: RunConfig, step: Optional[int] = None) -> Any:
    """The seed-batched run state saved in ``cfg.logdir`` (latest checkpoint unless ``step``).

    It restores on any process count and devices whose mesh splits ``cfg.num_envs`` (a run of
    several processes restores on one, e.g. for evaluation); ``cfg.num_envs`` and
    ``cfg.num_seeds`` must be the run's own (a ``ValueError`` names the ones in its
    ``config.json``).
    """
    if not cfg.logdir:
        raise ValueError("restore needs RunConfig.logdir")
    recorded = (rundir.read_config(cfg.logdir) or {}).get("run", {})
    for name in ("num_envs", "num_seeds"):
        if name in recorded and recorded[name] != getattr(cfg, name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"the run in {cfg.logdir} has {name}={recorded[name]} (its "
                             f"config.json) and this restore asks for {getattr(cfg, name)}; "
                             f"restore it with {flag} {recorded[name]}")
    fns = make_loop(env, agent, num_envs=cfg.num_envs, iterations=1,
                    eval_envs=cfg.eval_episodes,
                    eval_opponent_simulations=cfg.eval_opponent_simulations)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    shapes = jax.eval_shape(jax.vmap(fns.init), keys)
    mesh = sharding.make_mesh(cfg.num_devices or sharding.default_num_devices(cfg.num_envs))
    ckpt = checkpoint.Checkpointer(cfg.logdir)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint under {ckpt.directory}")
    try:
        abstract = checkpoint.abstract_like(
            shapes, sharding.run_state_shardings(shapes, mesh, cfg.num_envs))
        if step is None:
            state, _, _ = ckpt.restore_newest(abstract)
        else:
            state, _ = ckpt.restore(abstract, step)
    finally:
        ckpt.close()
    return state


def _next_multiple(steps: int, every: int) -> int:
    return (steps // every + 1) * every if every > 0 else 1 << 62


def _progress_info(record: Dict, env_steps: int, start: float) -> str:
    sps = env_steps / max(time.time() - start, 1e-9)
    parts = [f"{sps:,.0f} steps/s"]
    if "episode_return_mean" in record:
        parts.append(f"return {record['episode_return_mean']:.1f}")
    if "eval_return_mean" in record:
        parts.append(f"eval {record['eval_return_mean']:.1f}")
    return " | ".join(parts)


def seed_slice(state: Any, seed_index: int) -> Any:
    """The run state of one seed out of a seed-batched state."""
    return jax.tree_util.tree_map(lambda x: x[seed_index], state)


def tree_allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """True when every leaf of ``a`` and ``b`` agrees to the tolerance."""
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda x, y: np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                 rtol=rtol, atol=atol), a, b))
    return all(bool(x) for x in leaves)


__all__ = ["RunConfig", "RunResult", "NonFiniteMetricError", "train", "restore", "seed_slice",
           "tree_allclose"]
