"""experiments.craftax_report: the Crafter score, curves read back from metric lines, the
tables, the plot and the errors."""

import json
import math

import pytest

from experiments import cli, craftax_report

LINES = [{"env_steps": 0, "phase": "prefill"},  # no episode statistics: left out
         {"env_steps": 64, "wall_time": 10.0, "episodes": 4, "episode_return_mean": 1.5,
          "episode_return_per_seed": [1.0, 2.0], "achievement_collect_wood_mean": 0.5,
          "achievement_wake_up_mean": 0.0, "loss": 3.0},
         {"env_steps": 128, "episode_return_mean": 2.5,  # ppo's lines: no per-seed returns
          "achievement_collect_wood_mean": 1.0, "achievement_wake_up_mean": 0.5}]


def _write(folder, lines=LINES):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(folder)


def test_crafter_score():
    # all rates 0 -> 0; all 1 -> 100; the geometric mean of (1 + percent) less 1
    assert craftax_report.crafter_score({"a": 0.0, "b": 0.0}) == pytest.approx(0.0)
    assert craftax_report.crafter_score({"a": 1.0, "b": 1.0}) == pytest.approx(100.0)
    assert craftax_report.crafter_score({"a": 0.0, "b": 0.5}) == pytest.approx(
        math.sqrt(51.0) - 1)
    with pytest.raises(ValueError, match="at least one"):
        craftax_report.crafter_score({})


def test_craftax_curve(tmp_path):
    run = _write(tmp_path / "run")
    curve = craftax_report.craftax_curve(f"{run}/metrics.jsonl")
    assert curve["env_steps"] == [64, 128] and curve["return"] == [1.5, 2.5]
    assert curve["achievements"] == {"collect_wood": [0.5, 1.0], "wake_up": [0.0, 0.5]}
    assert curve["score"] == pytest.approx([math.sqrt(51.0) - 1, math.sqrt(101.0 * 51.0) - 1])
    assert curve["wall_time"] == [10.0, None] and curve["episodes"] == [4, None]
    assert curve["return_per_seed"] == [[1.0, 2.0], None]
    assert craftax_report.craftax_curve(str(tmp_path / "none.jsonl"))["env_steps"] == []


def test_report_tables_plot_and_json(tmp_path, capsys):
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b", [dict(LINES[1], achievement_collect_wood_mean=0.25)])
    out, js = str(tmp_path / "fig.png"), str(tmp_path / "curves.json")
    runs = craftax_report.main(["--run", f"dreamer={a}", "--run", f"ppo={b}", "--out", out,
                                "--json", js])
    text = capsys.readouterr().out
    assert "| 64 | 10 | 4 | 1.50 | 1.00, 2.00 | 6.14 |" in text
    assert "| 128 | - | - | 2.50 | - | 70.77 |" in text
    # the last line of each run: collect_wood 100% for dreamer (at 128 steps), 25% for ppo
    assert "| collect_wood | 100 | 25 |" in text and "| wake_up | 50 | 0 |" in text
    assert (tmp_path / "fig.png").stat().st_size > 0
    assert json.load(open(js))["ppo"]["env_steps"] == [64] == runs["ppo"]["env_steps"]


def test_shown_lines():
    steps = [16, 32, 48, 64, 80, 96, 100]
    assert craftax_report.shown_lines(steps, 0) == list(range(7))
    # the first; 48 >= 40; 80 >= 80; the last
    assert craftax_report.shown_lines(steps, 40) == [0, 2, 4, 6]
    assert craftax_report.shown_lines(steps, 50) == [0, 3, 6]  # 64 >= 50, then 100 >= 100
    assert craftax_report.shown_lines(steps, 1000) == [0, 6]
    assert craftax_report.shown_lines([], 10) == []


def test_report_errors(tmp_path):
    empty = _write(tmp_path / "empty", [LINES[0]])
    with pytest.raises(cli.UsageError, match="does not exist"):
        craftax_report.main(["--run", f"a={tmp_path / 'nowhere'}"])
    with pytest.raises(cli.UsageError, match="no line with training episodes"):
        craftax_report.main(["--run", f"a={empty}"])
    with pytest.raises(cli.UsageError, match="NAME=LOGDIR"):
        craftax_report.main(["--run", str(tmp_path)])
    run = _write(tmp_path / "run")
    with pytest.raises(cli.UsageError, match="--every must be >= 0"):
        craftax_report.main(["--run", f"a={run}", "--every", "-1"])
    with pytest.raises(cli.UsageError, match="twice"):
        craftax_report.main(["--run", f"a={run}", "--run", f"a={run}"])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(cli.UsageError, match="cannot make directory"):
        craftax_report.main(["--run", f"a={run}", "--out", str(tmp_path / "a_file" / "f.png")])
