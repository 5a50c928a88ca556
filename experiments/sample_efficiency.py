"""Sample efficiency: model-based agents against model-free learners on the same task.

``python -m experiments.sample_efficiency --env brax/inverted_pendulum --threshold 900
--seeds 3 --budget pets=5000 --budget mbpo=5000 --budget brax_sac=100000
--budget brax_ppo=2000000 --out runs/sample_efficiency/inverted_pendulum``

Each method is trained for its budget of environment steps with ``--seeds`` seeds and its
greedy evaluation return is recorded against environment steps:

* model-based ``pets``, ``mbpo`` (continuous actions), ``muzero``, ``gumbel_muzero``,
  ``sampled_muzero``, ``stochastic_muzero``, ``dreamer``: ``experiments.train.build`` +
  ``core.runner.train`` (the task's preset, all seeds vmapped in one program, logs under
  ``<out>/<method>``); the curve is read back from ``metrics.jsonl``
  (``eval_return_per_seed``);
* model-free ``brax_ppo``, ``brax_sac`` (brax/* and dmc/*):
  :func:`experiments.baselines.run_baseline`, one run per seed;
* model-free ``sac`` (continuous actions, any family): our SAC agent (``agents.sac``), trained
  and read back as the model-based methods are;
* a method trained by ``experiments.train`` (model-based, or ``sac``) given ``--extra
  "METHOD=--env-option action_repeat=R"`` acts every R control steps: it runs for
  ``budget / R`` agent steps and its curve is reported in control steps (agent steps x R),
  the unit of every other method and of the budgets;
* model-free ``ppo`` (discrete actions, gymnax/*): :func:`experiments.ppo.train`, all seeds in
  one program, logs under ``<out>/ppo``.

``python -m experiments.sample_efficiency --env gymnax/Breakout-MinAtar --methods ppo,muzero
--seeds 1 --seeds-for ppo=3 --threshold 5 --budget muzero=100000 --budget ppo=100000
--extra "muzero=--preset minatar" --out runs/sample_efficiency/breakout`` is the MinAtar
comparison (PPO's ``minatar`` preset collects 8,192 steps per iteration, so at 100k steps it
makes 12 iterations; ``python -m experiments.ppo`` with a larger ``--steps`` shows where it
goes next).

The report (``<out>/report.json``, plot ``<out>/returns.png``) gives, per method,

* ``steps_to_threshold``: per seed, the first evaluated env-step count whose return is
  ``>= threshold`` (None if never within the budget), their mean over the seeds that reached it,
  the number that did, and ``median_steps_to_threshold``, the median over all seeds with a seed
  that never reached it counted as infinitely slow (None when half of the seeds or more did
  not: the median is then unknown);
* ``return_at``: per budget ``b`` of ``--report-at``, the mean over seeds of the last
  evaluation at ``<= b`` steps;
* ``ratios``: for each model-free method ``f`` and model-based ``m``, mean steps to threshold of
  ``f`` / of ``m`` (the headline "10-100x fewer steps" claim); when ``f`` never reached the
  threshold the ratio is a lower bound from its budget (``"lower_bound": true``); and
  ``median_ratio``, the same with the medians (None when either median is unknown).

``--from-logs METHOD=DIR[,DIR...]`` takes a method's curves from runs already made (the
``metrics.jsonl`` of ``experiments.train`` or ``experiments.ppo`` logdirs; several dirs give
their seeds together) instead of training it, e.g. runs made concurrently on one GPU, or cut short
by a time limit or ``--max-seconds``: ``python -m experiments.sample_efficiency --env
gymnax/Breakout-MinAtar --from-logs muzero=runs/a,runs/b --from-logs ppo=runs/c/ppo --threshold
3 --out runs/compare_breakout``. A name ``METHOD:TAG`` (``--from-logs muzero:eps0.3=runs/d``)
tells apart runs of one method made with different options: the curves, report and plot carry
the whole name (``--methods``, ``--budget`` and ``--extra`` take it too), and the ratios class
it by ``METHOD`` (their keys carry the whole name).

``--reference FILE`` (on a ``dmc/`` task) draws a published curve of the task next to ours, e.g.
the DreamerV3 paper's ``dmc_proprio-dreamerv3.json.gz`` (a bare name not found in the working
directory is looked up in ``../shared/reference_scores`` beside the checkout; mean and
min-max over its seeds, ``--reference-method`` picks another method of the file), and the
report's ``reference`` gives, per method, our seed-mean return and the published mean at our
evaluations and at the published step counts we reached.

Finished methods are reused from an existing ``<out>/report.json`` when their budget and number
of seeds match (so an interrupted comparison resumes); ``--fresh`` reruns everything.
``--quick`` is a smoke mode (tiny presets, a few hundred steps, 1 seed) used by the tests.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence
from experiments import cli

MODEL_BASED = ("pets", "mbpo", "muzero", "gumbel_muzero", "sampled_muzero", "stochastic_muzero",
               "dreamer")
MODEL_FREE = ("brax_ppo", "brax_sac", "ppo", "sac")
METHODS = MODEL_BASED + MODEL_FREE
# Agents of experiments.train: trained through the shared loop (run_model_based).
LOOP_AGENTS = MODEL_BASED + ("sac",)


def base_method(name: str) -> str:
    """The method of a name ``METHOD`` or ``METHOD:TAG`` (runs of one method with other
    options, from ``--from-logs``)."""
    return name.partition(":")[0]


def steps_to_threshold(xs: Sequence[int], ys: Sequence[float], threshold: float
                       ) -> Optional[int]:
    """First ``x`` whose ``y >= threshold`` (curves are in increasing ``x``), else None."""
    for x, y in zip(xs, ys):
        if y is not None and math.isfinite(y) and y >= threshold:
            return int(x)
    return None


def return_at(xs: Sequence[int], ys: Sequence[float], budget: int) -> Optional[float]:
    """The last evaluated return at ``<= budget`` steps (None if none)."""
    values = [y for x, y in zip(xs, ys) if x <= budget]
    return float(values[-1]) if values else None


def summarise(curves: List[Dict], threshold: float, report_at: Sequence[int],
              budget: int) -> Dict:
    """Statistics of one method's per-seed ``curves`` (``{"env_steps", "eval_return"}``)."""
    reached = [steps_to_threshold(c["env_steps"], c["eval_return"], threshold) for c in curves]
    hits = [r for r in reached if r is not None]
    at = {}
    for b in report_at:
        values = [return_at(c["env_steps"], c["eval_return"], b) for c in curves]
        values = [v for v in values if v is not None]
        at[str(b)] = float(sum(values) / len(values)) if values else None
    finals = [c["eval_return"][-1] for c in curves if c["eval_return"]]
    return {"steps_to_threshold": reached,
            "mean_steps_to_threshold": float(sum(hits) / len(hits)) if hits else None,
            "median_steps_to_threshold": median_steps(reached),
            "seeds_reaching_threshold": len(hits), "num_seeds": len(curves),
            "return_at": at, "final_return_mean": float(sum(finals) / len(finals))
            if finals else None, "budget": int(budget)}


def median_steps(reached: Sequence[Optional[int]]) -> Optional[float]:
    """Median of per-seed steps to threshold, a seed that never reached it (None) counting as
    infinitely slow; None when the median falls on such a seed (or there are no seeds)."""
    ordered = sorted(math.inf if r is None else float(r) for r in reached)
    if not ordered:
        return None
    mid = len(ordered) // 2
    value = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return None if math.isinf(value) else value


def ratios(summary: Dict[str, Dict]) -> Dict[str, Dict]:
    """``steps(model-free) / steps(model-based)`` for every pair present (see module doc)."""
    out = {}
    names = list(summary)
    for free in [n for n in names if base_method(n) in MODEL_FREE]:
        for based in [n for n in names if base_method(n) in MODEL_BASED]:
            mb = summary[based]["mean_steps_to_threshold"]
            mf = summary[free]["mean_steps_to_threshold"]
            key = f"{free}/{based}"
            if mb is None:
                out[key] = {"ratio": None, "note": f"{based} did not reach the threshold"}
            elif mf is None:
                out[key] = {"ratio": summary[free]["budget"] / mb, "lower_bound": True,
                            "note": f"{free} did not reach the threshold within its budget"}
            else:
                out[key] = {"ratio": mf / mb, "lower_bound": False}
            med_b = summary[based].get("median_steps_to_threshold")
            med_f = summary[free].get("median_steps_to_threshold")
            out[key]["median_ratio"] = med_f / med_b if med_b and med_f else None
    return out


def action_repeat(extra: Sequence[str]) -> int:
    """The ``action_repeat`` of ``--env-option action_repeat=R`` in a method's extra flags
    (1 when absent)."""
    from experiments import train

    items = [a.split("=", 1)[1] for a in extra if a.startswith("--env-option=")]
    items += [b for a, b in zip(extra, extra[1:]) if a == "--env-option"]
    repeat = int(train.env_options(items).get("action_repeat", 1))
    if repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {repeat}")
    return repeat


def run_model_based(method: str, env_id: str, *, steps: int, seeds: int, out: str,
                    eval_every: int, quick: bool, extra: Sequence[str],
                    fresh: bool = False) -> List[Dict]:
    """Trains ``method`` through the shared loop; per-seed curves from its metrics.jsonl.

    An interrupted run of the method in ``<out>/<method>`` resumes from its checkpoint; with
    ``fresh`` it is moved aside (``core.rundir.check_logdir``) and trained anew."""
    from core import rundir, runner
    from experiments import train

    logdir = os.path.join(out, method)
    repeat = action_repeat(extra)
    agent_eval_every = max(1, eval_every // repeat)
    argv = ["--agent", method, "--env", env_id, "--steps", str(math.ceil(steps / repeat)),
            "--num-seeds", str(seeds), "--logdir", logdir,
            "--eval-every", str(agent_eval_every), "--no-progress"]
    if quick:
        argv += ["--preset", "tiny", "--log-every", str(agent_eval_every)]
    env, agent, run_cfg, record = train.build(argv + list(extra))
    moved = rundir.check_logdir(logdir, record, fresh=fresh)
    if moved:
        print(f"[sample_efficiency] --fresh: moved {logdir} to {moved}", flush=True)
    start = time.time()
    runner.train(env, agent, run_cfg, record)
    wall = time.time() - start
    curves = curves_from_log(logdir, repeat)
    for c in curves:
        c["wall_time"] = wall
    return curves


def curves_from_log(logdir: str, repeat: int = 1) -> List[Dict]:
    """Per-seed curves of the evaluations in ``<logdir>/metrics.jsonl``.

    Both ``experiments.train`` and ``experiments.ppo`` write that file (``env_steps``,
    ``eval_return_per_seed``, ``wall_time``), also while they run, so a run stopped early
    (a time limit, ``--max-seconds``) still gives its curve up to its last evaluation.
    ``repeat``: the action repeat (agent steps x repeat = control steps).
    """
    path = os.path.join(logdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics.jsonl in {logdir}: pass the directory a training "
                                f"run (experiments.train or experiments.ppo) wrote")
    curves: List[Dict] = []
    wall = 0.0
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            wall = max(wall, float(rec.get("wall_time", 0.0)))
            for i, value in enumerate(rec.get("eval_return_per_seed", [])):
                if i == len(curves):
                    curves.append({"env_steps": [], "eval_return": [], "seed": i})
                curves[i]["env_steps"].append(int(rec["env_steps"]) * repeat)
                curves[i]["eval_return"].append(float(value))
    if not curves:
        raise ValueError(f"{path} holds no evaluation (eval_return_per_seed)")
    for c in curves:
        c.update(wall_time=wall, logdir=logdir, action_repeat=repeat)
    return curves


# The published curves beside the checkout (``../shared/reference_scores``), where a bare
# file name given to --reference is looked up when it is not in the working directory.
REFERENCE_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                              "..", "..", "shared", "reference_scores"))


def reference_path(name: str) -> Optional[str]:
    """``name`` if it is a file, else the file of that name in :data:`REFERENCE_DIR`, else
    None."""
    if os.path.isfile(name):
        return name
    beside = os.path.join(REFERENCE_DIR, name)
    return beside if os.path.isfile(beside) else None


def load_reference(path: str, task: str, method: str = "dreamerv3") -> Dict:
    """Mean, min and max over seeds of the published curve of ``task`` in ``path`` (a gzipped
    JSON list of runs with ``task, method, seed, xs, ys``).

    Seeds evaluated at different steps are interpolated onto the first seed's steps inside the
    range every seed covers; where all seeds share their steps nothing is interpolated.
    """
    import numpy as np
    try:
        with gzip.open(path, "rt") as f:
            everything = [(r["task"], r["method"], r) for r in json.load(f)]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a published-curves file (a gzipped JSON list of runs "
                         f"with task, method, seed, xs, ys): {type(err).__name__}: {err}"
                         ) from None
    runs = [r for t, m, r in everything if t == task and m == method]
    if not runs:
        methods = sorted({m for t, m, _ in everything if t == task})
        raise ValueError(f"{path} has no {method} curve for {task} (methods with {task}: "
                         f"{methods or 'none'})")
    lo = max(float(r["xs"][0]) for r in runs)
    hi = min(float(r["xs"][-1]) for r in runs)
    xs = np.asarray([x for x in runs[0]["xs"] if lo <= x <= hi], float)
    ys = np.asarray([np.interp(xs, np.asarray(r["xs"], float), np.asarray(r["ys"], float))
                     for r in runs])
    return {"task": task, "method": method, "seeds": len(runs), "path": path,
            "xs": xs.tolist(), "mean": ys.mean(0).tolist(), "min": ys.min(0).tolist(),
            "max": ys.max(0).tolist()}


def compare_to_reference(curves: List[Dict], reference: Dict) -> Dict:
    """Our seed-mean evaluation return and the reference mean at the same step counts: at each
    of our evaluations (the reference interpolated, None outside its range) and at each
    reference step we reached (our last evaluation at or before it)."""
    import numpy as np

    length = min(len(c["env_steps"]) for c in curves)
    xs = curves[0]["env_steps"][:length]
    ours = [float(np.mean([c["eval_return"][i] for c in curves])) for i in range(length)]
    rx, rm = reference["xs"], reference["mean"]
    at_ours = [{"env_steps": x, "ours": y, "reference": float(np.interp(x, rx, rm))
                if rx[0] <= x <= rx[-1] else None} for x, y in zip(xs, ours)]
    at_ref = []
    for x, y in zip(rx, rm):
        if xs and x <= xs[-1]:
            values = [v for v in (return_at(c["env_steps"], c["eval_return"], x)
                                  for c in curves) if v is not None]
            at_ref.append({"env_steps": x, "reference": y,
                           "ours": float(np.mean(values)) if values else None})
    return {**reference, "at_our_evaluations": at_ours, "at_reference_steps": at_ref}


def plot(results: Dict[str, List[Dict]], threshold: float, env_id: str, path: str,
         reference: Optional[Dict] = None) -> None:
    """Mean eval return vs env steps (log x) per method, min-max band over seeds; a published
    ``reference`` curve (:func:`load_reference`) is drawn dashed up to our last evaluation (not
    at all when it starts after it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, curves in results.items():
        length = min(len(c["env_steps"]) for c in curves)
        if length == 0:
            continue
        xs = np.asarray(curves[0]["env_steps"][:length], float)
        ys = np.asarray([c["eval_return"][:length] for c in curves], float)
        xs = np.maximum(xs, 1.0)
        line, = ax.plot(xs, ys.mean(0), marker="o", ms=3, label=f"{method} ({len(curves)} seeds)")
        ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
    longest = max((c["env_steps"][-1] for cs in results.values() for c in cs
                   if c["env_steps"]), default=0)
    keep = [] if reference is None else [i for i, x in enumerate(reference["xs"])
                                         if x <= longest]
    if keep:
        rx = np.asarray(reference["xs"], float)[keep]
        line, = ax.plot(rx, np.asarray(reference["mean"])[keep], ls="--", marker="s", ms=3,
                        label=f"{reference['method']} published ({reference['seeds']} seeds)")
        ax.fill_between(rx, np.asarray(reference["min"])[keep],
                        np.asarray(reference["max"])[keep], color=line.get_color(), alpha=0.1)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xscale("log")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{env_id}: return vs environment steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parse_budgets(items: Sequence[str]) -> Dict[str, int]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if base_method(name) not in METHODS or not value:
            raise ValueError(f"--budget takes METHOD[:TAG]=STEPS with METHOD in {METHODS}, got "
                             f"{item!r}")
        out[name] = int(float(value))
    return out


_DEFAULT_BUDGETS = {"pets": 5_000, "mbpo": 5_000, "muzero": 100_000, "gumbel_muzero": 100_000,
                    "sampled_muzero": 100_000, "stochastic_muzero": 100_000, "dreamer": 100_000,
                    "brax_sac": 100_000, "brax_ppo": 2_000_000,
                    "ppo": 1_000_000, "sac": 100_000}
_QUICK_BUDGETS = {"pets": 300, "mbpo": 300, "muzero": 300, "gumbel_muzero": 300,
                  "sampled_muzero": 300, "stochastic_muzero": 300,
                  "dreamer": 300, "brax_sac": 2_000, "brax_ppo": 20_000, "ppo": 2_000,
                  "sac": 300}


def main(argv: Optional[List[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.sample_efficiency",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="brax/inverted_pendulum")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {METHODS} or METHOD:TAG names of "
                        f"--from-logs (default: those of --from-logs, else "
                        f"pets,mbpo,brax_ppo,brax_sac)")
    p.add_argument("--threshold", type=float, default=900.0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", action="append", default=[], help="METHOD=STEPS (repeatable)")
    p.add_argument("--seeds-for", action="append", default=[],
                   help="METHOD=N: seeds of one method (default --seeds)")
    p.add_argument("--evals", type=int, default=10, help="evaluations per run")
    p.add_argument("--report-at", default="", help="comma-separated budgets for return_at")
    p.add_argument("--extra", action="append", default=[],
                   help="METHOD[:TAG]=ARGS: extra train.py flags for a model-based method or sac, "
                        "e.g. 'mbpo=--updates_per_step 20'")
    p.add_argument("--from-logs", action="append", default=[],
                   help="METHOD[:TAG]=DIR[,DIR...]: take the method's curves from the "
                        "metrics.jsonl of runs already made (experiments.train / "
                        "experiments.ppo logdirs; several dirs: their seeds together) instead "
                        "of training; its budget is the runs' last evaluated step unless "
                        "--budget names one; a TAG tells apart runs of one method with other "
                        "options (muzero:eps0.3=DIR)")
    p.add_argument("--reference", default=None,
                   help="a published-curves file (dmc_proprio-dreamerv3.json.gz of the "
                        "DreamerV3 scores: task, method, seed, xs, ys per run) to draw and "
                        "compare with on a dmc/ task; a bare name not in the working "
                        "directory is looked up in ../shared/reference_scores beside the "
                        "checkout")
    p.add_argument("--reference-method", default="dreamerv3",
                   help="the method of --reference to draw")
    p.add_argument("--out", default="runs/sample_efficiency")
    p.add_argument("--quick", action="store_true", help="tiny budgets and presets, 1 seed")
    p.add_argument("--fresh", action="store_true",
                   help="do not reuse curves in report.json, and move the earlier runs of the "
                        "model-based methods and sac under --out aside (<dir>.<time>) instead "
                        "of resuming them")
    args = p.parse_args(argv)
    import envs
    imports = any("--import" in item for item in args.extra)  # may register --env
    if not imports and args.env not in envs.registered_ids(args.env.partition("/")[0]):
        envs.make(args.env)  # an unknown id: its error lists the known ones, before any work
    args.reference_curve = None
    if args.reference:
        family, _, name = args.env.partition("/")
        if family != "dmc":
            raise cli.UsageError(f"--reference holds published DMC curves; {args.env} is not a "
                                 f"dmc/ task")
        path = reference_path(args.reference)
        if path is None:
            raise cli.UsageError(f"--reference {args.reference}: no such file, nor in "
                                 f"{REFERENCE_DIR}; give the file's path")
        args.reference_curve = load_reference(path, f"dmc_{name}",
                                              args.reference_method)

    default_methods = ",".join(i.partition("=")[0] for i in args.from_logs) or \
        "pets,mbpo,brax_ppo,brax_sac"
    methods = [m for m in (args.methods or default_methods).split(",") if m]
    logged = {i.partition("=")[0] for i in args.from_logs}
    unknown = sorted(m for m in methods if m not in METHODS and m not in logged)
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {METHODS} (a METHOD:TAG names a "
                         f"--from-logs run)")
    budgets = dict(_QUICK_BUDGETS if args.quick else _DEFAULT_BUDGETS)
    budgets.update(_parse_budgets(args.budget))
    seeds = {m: 1 if args.quick else args.seeds for m in METHODS}
    seeds.update(_parse_budgets(args.seeds_for))
    extra = {m: [] for m in METHODS}
    for item in args.extra:
        name, _, flags = item.partition("=")
        extra[name] = flags.split()
    from_logs = {}
    for item in args.from_logs:
        name, _, logdir = item.partition("=")
        method, colon, tag = name.partition(":")
        if method not in METHODS or not logdir or (colon and not tag):
            raise ValueError(f"--from-logs takes METHOD[:TAG]=DIR with METHOD in {METHODS}, "
                             f"got {item!r}")
        if name in from_logs:
            raise ValueError(f"--from-logs names {name!r} twice; give each run its own TAG "
                             f"({method}:TAG=DIR) or list the dirs of one method together "
                             f"({name}=DIR1,DIR2)")
        from_logs[name] = []
        for one in logdir.split(","):  # separate runs' seeds, one curve list
            _check_logged_env(one, args.env)
            from_logs[name] += curves_from_log(one, action_repeat(extra.get(name,
                                                                            extra[method])))
        for i, curve in enumerate(from_logs[name]):
            curve["seed"] = i
        if name not in methods:
            methods.append(name)
        if name not in _parse_budgets(args.budget):
            budgets[name] = max(c["env_steps"][-1] for c in from_logs[name])
        seeds[name] = len(from_logs[name])
    report_at = ([int(float(x)) for x in args.report_at.split(",") if x]
                 or sorted({budgets[m] for m in methods}))
    os.makedirs(args.out, exist_ok=True)

    results: Dict[str, List[Dict]] = {}
    previous = {} if args.fresh else _previous(args.out, args.env, budgets, seeds)
    for method in methods:
        if method in from_logs:
            dirs = list(dict.fromkeys(c["logdir"] for c in from_logs[method]))
            print(f"[sample_efficiency] {method}: curves from the metrics.jsonl of {dirs}")
            results[method] = from_logs[method]
            continue
        if method in previous:
            print(f"[sample_efficiency] {method}: reusing the curves in {args.out}/report.json")
            results[method] = previous[method]
            continue
        print(f"[sample_efficiency] {method} on {args.env}: {budgets[method]} steps x "
              f"{seeds[method]} seeds", flush=True)
        if method in LOOP_AGENTS:
            eval_every = max(1, budgets[method] // args.evals)
            results[method] = run_model_based(
                method, args.env, steps=budgets[method], seeds=seeds[method], out=args.out,
                eval_every=eval_every, quick=args.quick, extra=extra[method], fresh=args.fresh)
        elif method == "ppo":
            from experiments import ppo
            results[method] = ppo.train(
                args.env, steps=budgets[method], seeds=seeds[method],
                eval_every=max(1, budgets[method] // args.evals),
                out=os.path.join(args.out, "ppo"), preset="tiny" if args.quick else None,
                fresh=args.fresh)
        else:
            from experiments import baselines
            results[method] = [baselines.run_baseline(
                method.split("_", 1)[1], args.env, steps=budgets[method], seed=s,
                num_evals=args.evals + 1) for s in range(seeds[method])]
        _write(args, methods, budgets, seeds, report_at, results)
    return _write(args, methods, budgets, seeds, report_at, results, final=True)


def _check_logged_env(logdir: str, env_id: str) -> None:
    """Raises when ``<logdir>/config.json`` names another environment than ``--env``."""
    path = os.path.join(logdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            logged = json.load(f).get("env")
        if logged is not None and logged != env_id:
            raise ValueError(f"{logdir} is a run on {logged}, not on --env {env_id}")


def _previous(out: str, env_id: str, budgets: Dict[str, int], seeds: Dict[str, int]) -> Dict:
    """Curves of ``<out>/report.json`` whose env, budget and number of seeds match."""
    path = os.path.join(out, "report.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    if old.get("env") != env_id:
        return {}
    return {m: curves for m, curves in old.get("curves", {}).items()
            if old.get("budgets", {}).get(m) == budgets.get(m) and len(curves) == seeds.get(m)}


def _write(args, methods, budgets, seeds, report_at, results, final=False) -> Dict:
    """Writes report.json (and the plot when ``final``); called after every method."""
    summary = {m: summarise(c, args.threshold, report_at, budgets[m]) for m, c in results.items()}
    report = {"env": args.env, "threshold": args.threshold, "quick": args.quick,
              "seeds": {m: seeds[m] for m in methods},
              "methods": methods, "budgets": {m: budgets[m] for m in methods},
              "report_at": report_at, "summary": summary, "ratios": ratios(summary),
              "curves": results, "complete": final}
    if args.reference_curve is not None:
        report["reference"] = {m: compare_to_reference(c, args.reference_curve)
                               for m, c in results.items()}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    if final:
        plot(results, args.threshold, args.env, os.path.join(args.out, "returns.png"),
             args.reference_curve)
        print(json.dumps({"summary": summary, "ratios": report["ratios"]}, indent=1))
    return report


if __name__ == "__main__":
    cli.run(main)
