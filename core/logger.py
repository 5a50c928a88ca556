"""Run outputs: ``config.json``, ``metrics.jsonl``, TensorBoard events, plots, progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Dict, Iterable, List, Optional

import numpy as np

METRICS_FILE = "metrics.jsonl"


def _jsonable(value):
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def write_config(logdir: str, config: Dict) -> None:
    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True, default=str)


def read_metrics(logdir: str) -> List[Dict]:
    """All lines of ``metrics.jsonl`` (an empty list if there is none)."""
    path = os.path.join(logdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLogger:
    """Appends metric dicts to ``metrics.jsonl`` and TensorBoard; truncates on resume.

    Args:
      resume_env_steps: when resuming from a checkpoint taken at this many environment steps,
        lines logged after it (by the interrupted run) are dropped so the file has no repeats.
    """

    def __init__(self, logdir: str, resume_env_steps: Optional[int] = None,
                 tensorboard: bool = True):
        os.makedirs(logdir, exist_ok=True)
        self.path = os.path.join(logdir, METRICS_FILE)
        if resume_env_steps is None:
            open(self.path, "w").close()
        else:
            kept = [r for r in read_metrics(logdir) if r.get("env_steps", 0) <= resume_env_steps]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        self.writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            # tensorboardX purges events at steps >= purge_step; the line at the checkpoint's
            # own step is kept, as in metrics.jsonl.
            self.writer = SummaryWriter(
                logdir, purge_step=None if resume_env_steps is None else resume_env_steps + 1)

    def log(self, record: Dict) -> None:
        record = {k: _jsonable(v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = int(record["env_steps"])
            for name, value in record.items():
                if name != "env_steps" and isinstance(value, (int, float)):
                    self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_returns(logdir: str, keys: Iterable[str] = ("episode_return_mean", "eval_return_mean"),
                 filename: str = "returns.png") -> Optional[str]:
    """Plots the given metrics of ``metrics.jsonl`` against environment steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(logdir)
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for key in keys:
        points = [(r["env_steps"], r[key]) for r in records if r.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=key)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(os.path.basename(os.path.abspath(logdir)))
    ax.legend()
    ax.grid(alpha=0.3)
    path = os.path.join(logdir, filename)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class Progress:
    """A rich progress bar with steps per second and the recent return (plain lines if no TTY)."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeRemainingColumn)
            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, env_steps: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=env_steps, info=info)
        elif self.enabled:
            print(f"[train] env_steps={env_steps} {info}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
