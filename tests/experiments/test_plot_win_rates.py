"""experiments.plot_win_rates: curves read back from metric lines, the plot, the errors."""

from __future__ import annotations

import json
import os

import pytest

from experiments import cli, plot_win_rates


def write_run(path, lines):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


def test_curves_and_plot(tmp_path):
    run = str(tmp_path / "run")
    write_run(run, [
        {"env_steps": 100, "phase": "prefill"},
        {"env_steps": 1000, "eval_win_rate_random": 0.5, "eval_win_rate_mcts": 0.25},
        {"env_steps": 2000, "eval_win_rate_random": 0.75, "eval_win_rate_random_per_seed":
         [0.5, 1.0], "eval_win_rate_mcts": 0.5, "eval_win_rate_mcts_per_seed": [0.25, 0.75]},
    ])
    curves = plot_win_rates.read_curves(run)
    assert curves["random"] == {"env_steps": [1000, 2000], "mean": [0.5, 0.75],
                                "per_seed": [None, [0.5, 1.0]]}
    assert curves["mcts"]["mean"] == [0.25, 0.5]
    out = str(tmp_path / "win.png")
    plot_win_rates.main(["--run", f"a={run}", "--out", out])
    assert os.path.getsize(out) > 0


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(cli.UsageError, match="no metrics.jsonl"):
        plot_win_rates.read_curves(str(tmp_path))
    write_run(str(tmp_path), [{"env_steps": 10, "eval_return_mean": 1.0}])
    with pytest.raises(cli.UsageError, match="no win rates"):
        plot_win_rates.read_curves(str(tmp_path))
    with pytest.raises(cli.UsageError, match="NAME=LOGDIR"):
        plot_win_rates.main(["--run", str(tmp_path), "--out", "x.png"])
