"""Win-rate curves of two-player runs: ``python -m experiments.plot_win_rates --run NAME=LOGDIR
[--run ...] --out FILE.png``.

Reads the evaluations of each run's ``metrics.jsonl`` (``eval_win_rate_<opponent>_per_seed``,
logged by :mod:`core.runner` on two-player games, or the mean ``eval_win_rate_<opponent>`` where
a line has no per-seed values) and draws one panel per opponent (the random player, the
true-model MCTS of :mod:`core.arena`): each seed's win rate against environment steps, thin,
and their mean, thick, one colour per run.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional, Sequence

from experiments import cli

OPPONENTS = ("random", "mcts")


def read_curves(logdir: str) -> Dict[str, Dict[str, List]]:
    """``{opponent: {"env_steps": [...], "mean": [...], "per_seed": [[...] or None, ...]}}``
    from a run's metric lines (``per_seed[i]`` lists every seed's win rate at ``env_steps[i]``,
    None where the line has the mean only)."""
    path = os.path.join(logdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise cli.UsageError(f"{logdir} has no metrics.jsonl; pass the logdir of a "
                             f"two-player training run")
    curves = {name: {"env_steps": [], "mean": [], "per_seed": []} for name in OPPONENTS}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            for name in OPPONENTS:
                key = f"eval_win_rate_{name}"
                if key not in record:
                    continue
                values = record.get(key + "_per_seed")
                curves[name]["env_steps"].append(int(record["env_steps"]))
                curves[name]["mean"].append(float(record[key]))
                curves[name]["per_seed"].append(None if values is None
                                                else [float(v) for v in values])
    if not any(c["env_steps"] for c in curves.values()):
        raise cli.UsageError(f"{path} has no win rates (eval_win_rate_*): is it a run on a "
                             f"two-player game with evaluations?")
    return curves


def plot(runs: Dict[str, Dict[str, Dict[str, List]]], path: str, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OPPONENTS), figsize=(5 * len(OPPONENTS), 3.6), sharey=True)
    for ax, name in zip(axes, OPPONENTS):
        for i, (label, curves) in enumerate(runs.items()):
            xs, per_seed = curves[name]["env_steps"], curves[name]["per_seed"]
            if not xs:
                continue
            colour = f"C{i}"
            seeds = max((len(v) for v in per_seed if v is not None), default=0)
            for s in range(seeds):
                ax.plot(xs, [v[s] if v is not None and s < len(v) else float("nan")
                             for v in per_seed], color=colour, alpha=0.35, linewidth=0.8,
                        marker=".", markersize=3)
            ax.plot(xs, curves[name]["mean"], color=colour, linewidth=2, marker="o",
                    markersize=3, label=label)
        ax.set_title(f"against the {'random player' if name == 'random' else 'true-model MCTS'}")
        ax.set_xlabel("environment steps (per seed)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("win rate")
    axes[0].legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.plot_win_rates", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_run_flag(p, "draw")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    cli.check_output_file(args.out, "--out")
    runs = {name: read_curves(logdir) for name, logdir in cli.named_runs(args.run).items()}
    plot(runs, args.out, args.title)
    print(f"wrote {args.out}")
    return runs


if __name__ == "__main__":
    cli.run(main)
