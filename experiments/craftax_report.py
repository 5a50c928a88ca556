"""Craftax curves of runs already made: ``python -m experiments.craftax_report --run
NAME=LOGDIR [--run ...] [--every STEPS] [--out FILE.png] [--json FILE]``.

Reads each run's ``metrics.jsonl`` (:mod:`core.runner`'s, i.e. ``experiments.train``, or
``experiments.ppo``'s) and prints, per run, one row per metric line that saw finished training
episodes: environment steps per seed, wall-clock seconds, episodes ended (all seeds), their mean
return (and each seed's), and the Crafter score (Hafner, 2021) of the achievement success rates
of those episodes; then the success rate of every achievement at each run's last line. The
success rates are those of the training episodes that ended in the line's chunk (normally
``--log-every`` steps), averaged over seeds (``experiments.train``: the mean of each seed's;
``experiments.ppo``: pooled); the Crafter paper pools every training episode of the 1M-step
budget instead.
``--out`` draws return, score and the last line's achievements (the figure of
``experiments.gpu_suite craftax``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from experiments import cli


def crafter_score(rates: Dict[str, float]) -> float:
    """The Crafter score (Hafner, 2021) in percent: the geometric mean of the achievement
    success rates (in percent) with 1 added inside and taken away after,
    ``exp(mean(log(1 + 100 rate))) - 1``."""
    if not rates:
        raise ValueError("crafter_score needs at least one achievement success rate")
    return math.exp(sum(math.log1p(100.0 * r) for r in rates.values()) / len(rates)) - 1.0


def craftax_curve(path: str) -> Dict:
    """Training-episode curve of a ``metrics.jsonl`` (``core.runner``'s or ``experiments.ppo``'s):
    ``env_steps`` (per seed), ``return``, ``score`` (Crafter score, %) and ``achievements``
    (name -> success rate) at every metric line that saw finished episodes, with the line's
    ``wall_time``, ``episodes`` and ``return_per_seed`` (None where the line has none)."""
    out: Dict = {"env_steps": [], "return": [], "score": [], "achievements": {},
                 "wall_time": [], "episodes": [], "return_per_seed": []}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    for r in records:
        rates = {k[len("achievement_"):-len("_mean")]: float(v) for k, v in r.items()
                 if k.startswith("achievement_") and k.endswith("_mean")}
        if r.get("episode_return_mean") is None or not rates:
            continue
        out["env_steps"].append(int(r["env_steps"]))
        out["return"].append(float(r["episode_return_mean"]))
        out["score"].append(crafter_score(rates))
        for name, rate in rates.items():
            out["achievements"].setdefault(name, []).append(rate)
        out["wall_time"].append(None if r.get("wall_time") is None else float(r["wall_time"]))
        out["episodes"].append(None if r.get("episodes") is None else int(r["episodes"]))
        per_seed = r.get("episode_return_per_seed")
        out["return_per_seed"].append(None if per_seed is None
                                      else [float(v) for v in per_seed])
    return out


def plot_craftax(runs: Dict[str, Dict], path: str, title: str) -> None:
    """Return and Crafter score against environment steps, and the success rates of the last
    line, one colour per run (``runs``: label -> :func:`craftax_curve`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {k: c for k, c in runs.items() if c.get("env_steps")}
    if not runs:
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for k, (label, c) in enumerate(runs.items()):
        axes[0].plot(c["env_steps"], c["return"], marker=".", color=f"C{k}", label=label)
        axes[1].plot(c["env_steps"], c["score"], marker=".", color=f"C{k}", label=label)
        names = sorted(c["achievements"])
        width = 0.8 / len(runs)
        axes[2].bar([i + k * width for i in range(len(names))],
                    [100.0 * c["achievements"][n][-1] for n in names], width=width,
                    color=f"C{k}", label=f"{label} at {c['env_steps'][-1]:,} steps")
        axes[2].set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    for ax, name in zip(axes[:2], ("training episode return", "Crafter score (%)")):
        ax.set_xlabel("environment steps (per seed)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    axes[2].set_ylabel("success rate (%)")
    axes[2].set_title("achievements, last metric line")
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)


def read_run(logdir: str) -> Dict:
    """:func:`craftax_curve` of ``LOGDIR/metrics.jsonl`` (or of ``LOGDIR`` itself when it is
    the file), with an error that names the problem when there is nothing to read."""
    path = logdir if logdir.endswith(".jsonl") else os.path.join(logdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise cli.UsageError(f"{path} does not exist; pass the logdir of a run made by "
                             f"experiments.train or experiments.ppo")
    curve = craftax_curve(path)
    if not curve["env_steps"]:
        raise cli.UsageError(f"{path} has no line with training episodes and achievement_* "
                             f"success rates: is it a craftax run that has ended episodes?")
    return curve


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def shown_lines(env_steps: Sequence[int], every: int) -> List[int]:
    """Indices of the lines to print: with ``every`` > 0, the first line, the first line at or
    past each multiple of ``every`` environment steps, and the last line; else all of them."""
    if every <= 0:
        return list(range(len(env_steps)))
    keep, mark = [], 0
    for i, steps in enumerate(env_steps):
        if steps >= mark:
            keep.append(i)
            mark = (steps // every + 1) * every
    if env_steps and (not keep or keep[-1] != len(env_steps) - 1):
        keep.append(len(env_steps) - 1)
    return keep


def table(name: str, curve: Dict, every: int = 0) -> List[str]:
    """Markdown rows of one run, one per metric line (see :func:`shown_lines`)."""
    rows = [f"### {name}", "",
            "| env steps per seed | wall s | episodes | mean return | per seed "
            "| Crafter score (%) |",
            "| ---: | ---: | ---: | ---: | --- | ---: |"]
    for i in shown_lines(curve["env_steps"], every):
        steps = curve["env_steps"][i]
        per_seed = curve["return_per_seed"][i]
        seeds = "-" if per_seed is None else ", ".join(f"{v:.2f}" for v in per_seed)
        rows.append(f"| {steps:,} | {_fmt(curve['wall_time'][i], ',.0f')} | "
                    f"{_fmt(curve['episodes'][i], ',d')} | {curve['return'][i]:.2f} | {seeds} | "
                    f"{curve['score'][i]:.2f} |")
    return rows


def achievement_table(runs: Dict[str, Dict]) -> List[str]:
    """Markdown rows: each achievement's success rate (%) at every run's last line, sorted by
    the first run's rate."""
    names = sorted({n for c in runs.values() for n in c["achievements"]})
    first = next(iter(runs.values()))
    names.sort(key=lambda n: -(first["achievements"].get(n) or [0.0])[-1])
    header = " | ".join(f"{k} ({c['env_steps'][-1]:,} steps)" for k, c in runs.items())
    rows = ["### Success rates (%) at the last line", "", f"| achievement | {header} |",
            "| --- |" + " ---: |" * len(runs)]
    for n in names:
        cells = " | ".join(_fmt(100.0 * c["achievements"][n][-1] if n in c["achievements"]
                                else None, ".0f") for c in runs.values())
        rows.append(f"| {n} | {cells} |")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.craftax_report", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_run_flag(p, "report")
    p.add_argument("--out", default=None, help="the PNG to write (optional)")
    p.add_argument("--json", default=None, help="write the curves to this JSON file")
    p.add_argument("--every", type=int, default=0, metavar="STEPS",
                   help="print the first line, the first past each multiple of STEPS "
                        "environment steps and the last (default 0: every line)")
    p.add_argument("--title", default="craftax/Craftax-Classic-Symbolic-v1")
    args = p.parse_args(argv)
    if args.every < 0:
        raise cli.UsageError(f"--every must be >= 0, got {args.every}")
    runs = {name: read_run(logdir) for name, logdir in cli.named_runs(args.run).items()}
    cli.check_output_file(args.out, "--out")
    cli.check_output_file(args.json, "--json")
    for name, curve in runs.items():
        print("\n".join(table(name, curve, args.every)) + "\n")
    print("\n".join(achievement_table(runs)))
    if args.out:
        plot_craftax(runs, args.out, args.title)
        print(f"\nwrote {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f)
        print(f"wrote {args.json}")
    return runs


if __name__ == "__main__":
    cli.run(main)
