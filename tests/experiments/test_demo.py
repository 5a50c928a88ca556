"""experiments.demo: its training command is valid, and its report reads a metrics.jsonl."""

from __future__ import annotations

import json
import os

from experiments import demo, train

# Three seeds: seed 0 reaches 475 at the second evaluation, seed 1 at the last, seed 2 never.
RECORDS = [
    {"env_steps": 288, "wall_time": 5.0, "phase": "prefill"},
    {"env_steps": 1288, "wall_time": 30.0, "eval_return_per_seed": [120.0, 40.0, 30.0]},
    {"env_steps": 2288, "wall_time": 50.0, "eval_return_per_seed": [500.0, 200.0, 90.0]},
    {"env_steps": 2800, "wall_time": 60.0, "episode_return_mean": 150.0},
    {"env_steps": 3288, "wall_time": 70.0, "eval_return_per_seed": [480.0, 475.0, 474.9]},
]


def test_training_argv_is_the_preset_run():
    argv = demo.train_argv("unused_logdir")
    _, agent, run_cfg, record = train.build(argv)  # builds, does not train
    assert record["agent"] == "muzero" and record["env"] == "gymnax/CartPole-v1"
    assert record["preset"] == "cartpole_v1"
    assert (run_cfg.num_seeds, run_cfg.steps, run_cfg.logdir) == (3, demo.STEPS, "unused_logdir")
    assert 0 < run_cfg.eval_every <= 1000


def test_report_table_and_curve(tmp_path):
    logdir = tmp_path / "muzero_cartpole"
    logdir.mkdir()
    with open(logdir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    assert demo.first_reached(RECORDS) == [(2288, 50.0), (3288, 70.0), None]
    table = demo.main(["--logdir", str(logdir), "--report-only"])
    rows = table.splitlines()
    assert len(rows) == 4
    assert rows[1].split() == ["0", "2,288", "50", "500.0", "480.0"]
    assert rows[2].split() == ["1", "3,288", "70", "475.0", "475.0"]
    assert rows[3].split() == ["2", "not", "reached", "-", "474.9", "474.9"]
    png = str(logdir) + "_curve.png"
    assert os.path.getsize(png) > 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
