"""The sample-efficiency report: hand-computed statistics, and a quick real run whose numbers
must match the training logs."""

import gzip
import json
import os

import pytest

from experiments import baselines, cli, sample_efficiency as se


def test_median_steps_counts_missing_seeds_as_slowest():
    assert se.median_steps([300, None, 100]) == 300.0
    assert se.median_steps([300, 100, 200, 400]) == 250.0
    assert se.median_steps([None, None, 100]) is None
    assert se.median_steps([]) is None


def test_steps_to_threshold_and_return_at_by_hand():
    xs, ys = [0, 100, 200, 300], [10.0, 950.0, 880.0, 990.0]
    assert se.steps_to_threshold(xs, ys, 900.0) == 100
    assert se.steps_to_threshold(xs, ys, 1000.0) is None
    assert se.return_at(xs, ys, 250) == 880.0  # the last evaluation at <= 250 steps
    assert se.return_at(xs, ys, -1) is None


def test_summary_and_ratios_by_hand():
    curves_mb = [{"env_steps": [0, 500, 1000], "eval_return": [0.0, 950.0, 1000.0]},
                 {"env_steps": [0, 500, 1000], "eval_return": [0.0, 100.0, 920.0]}]
    curves_ppo = [{"env_steps": [0, 20_000, 40_000], "eval_return": [0.0, 500.0, 1000.0]}]
    curves_sac = [{"env_steps": [0, 5_000], "eval_return": [0.0, 10.0]}]
    summary = {"mbpo": se.summarise(curves_mb, 900.0, [500], 1000),
               "brax_ppo": se.summarise(curves_ppo, 900.0, [500], 40_000),
               "brax_sac": se.summarise(curves_sac, 900.0, [500], 5_000)}
    mb = summary["mbpo"]
    assert mb["steps_to_threshold"] == [500, 1000] and mb["mean_steps_to_threshold"] == 750.0
    assert mb["return_at"]["500"] == pytest.approx((950.0 + 100.0) / 2)
    assert mb["final_return_mean"] == pytest.approx(960.0)
    ratios = se.ratios(summary)
    # medians: mbpo's two seeds 750, ppo's one 40,000
    assert mb["median_steps_to_threshold"] == 750.0
    assert ratios["brax_ppo/mbpo"] == {"ratio": 40_000 / 750.0, "lower_bound": False,
                                       "median_ratio": 40_000 / 750.0}
    # SAC never reached 900 within 5000 steps: the ratio is a lower bound from its budget.
    assert ratios["brax_sac/mbpo"]["ratio"] == pytest.approx(5_000 / 750.0)
    assert ratios["brax_sac/mbpo"]["lower_bound"] is True
    assert ratios["brax_sac/mbpo"]["median_ratio"] is None  # SAC's median is unknown


def test_baseline_settings_and_validation():
    ppo_dmc = baselines.settings("ppo", "dmc/cartpole_swingup", num_envs=64)
    assert ppo_dmc["discounting"] == 0.995 and ppo_dmc["num_envs"] == 64
    assert baselines.settings("sac", "brax/inverted_pendulum")["grad_updates_per_step"] == 8
    with pytest.raises(ValueError, match="method"):
        baselines.settings("a2c", "brax/inverted_pendulum")
    with pytest.raises(ValueError, match="brax"):
        baselines.brax_environment("gymnax/Pendulum-v1")
    with pytest.raises(ValueError, match="unknown brax environment 'nope'; known: .*'reacher'"):
        baselines.brax_environment("brax/nope")
    with pytest.raises(ValueError, match=r"steps \(--steps\) must be >= 1, got 0"):
        baselines.run_baseline("ppo", "brax/inverted_pendulum", steps=0)
    with pytest.raises(ValueError, match="methods"):
        se.main(["--methods", "a2c", "--quick"])


@pytest.mark.slow
def test_quick_report_comes_from_real_runs(tmp_path):
    out = str(tmp_path / "se")
    report = se.main(["--env", "linear/scalar_a0.5", "--methods", "mbpo", "--quick",
                      "--threshold", "-20", "--budget", "mbpo=300", "--evals", "2",
                      "--out", out])
    with open(os.path.join(out, "report.json")) as f:
        saved = json.load(f)
    assert saved["complete"] and saved["methods"] == ["mbpo"] and saved["seeds"] == {"mbpo": 1}
    assert os.path.getsize(os.path.join(out, "returns.png")) > 0
    curve = report["curves"]["mbpo"][0]
    # The curve is exactly the evaluations logged by the training run.
    logged = []
    with open(os.path.join(out, "mbpo", "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "eval_return_per_seed" in rec:
                logged.append((rec["env_steps"], rec["eval_return_per_seed"][0]))
    assert logged and [tuple(p) for p in zip(curve["env_steps"], curve["eval_return"])] == logged
    assert curve["env_steps"][-1] >= 300
    summary = saved["summary"]["mbpo"]
    assert summary["num_seeds"] == 1 and summary["budget"] == 300
    reached = summary["steps_to_threshold"][0]
    assert reached == se.steps_to_threshold(curve["env_steps"], curve["eval_return"], -20.0)
    assert set(summary["return_at"]) == {"300"}


def test_quick_ppo_report_for_discrete_tasks(tmp_path):
    out = str(tmp_path / "se")
    report = se.main(["--env", "gymnax/CartPole-v1", "--methods", "ppo", "--quick",
                      "--threshold", "400", "--budget", "ppo=64", "--evals", "2", "--out", out])
    curve = report["curves"]["ppo"][0]
    assert curve["env_steps"] == [0, 32, 64]
    logged = []
    with open(os.path.join(out, "ppo", "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            logged.append((rec["env_steps"], rec["eval_return_per_seed"][0]))
    assert [tuple(p) for p in zip(curve["env_steps"], curve["eval_return"])] == logged
    assert report["summary"]["ppo"]["budget"] == 64


def test_quick_sac_report_through_the_training_loop(tmp_path):
    out = str(tmp_path / "se")
    report = se.main(["--env", "linear/scalar_a0.5", "--methods", "sac", "--quick",
                      "--threshold", "-20", "--evals", "2", "--out", out])
    curve = report["curves"]["sac"][0]
    logged = [(r["env_steps"], r["eval_return_per_seed"][0])
              for r in map(json.loads, open(os.path.join(out, "sac", "metrics.jsonl")))
              if "eval_return_per_seed" in r]
    assert logged and [tuple(p) for p in zip(curve["env_steps"], curve["eval_return"])] == logged
    assert report["summary"]["sac"]["budget"] == 300 and report["ratios"] == {}


def test_action_repeat_is_read_from_the_extra_flags():
    assert se.action_repeat([]) == 1
    assert se.action_repeat(["--preset", "x", "--env-option", "action_repeat=4"]) == 4
    assert se.action_repeat(["--env-option=action_repeat=2", "--env-option", "impl='jax'"]) == 2
    with pytest.raises(ValueError, match="KEY=VALUE"):
        se.action_repeat(["--env-option", "4"])


def test_from_logs_reports_runs_already_made(tmp_path):
    # Two runs made elsewhere (e.g. concurrently on one GPU), one cut short by a time limit.
    logs = {"muzero": tmp_path / "mz", "ppo": tmp_path / "ppo"}
    rows = {"muzero": [(0, [1.0, 2.0]), (500, [3.0, 9.0])],  # stopped at 500 steps
            "ppo": [(0, [0.0, 1.0]), (400, [2.0, 4.0]), (800, [6.0, 8.0])]}
    for method, logdir in logs.items():
        logdir.mkdir()
        (logdir / "config.json").write_text(json.dumps({"env": "gymnax/Breakout-MinAtar"}))
        with open(logdir / "metrics.jsonl", "w") as f:
            f.write(json.dumps({"env_steps": 10, "loss": 1.0, "wall_time": 1.0}) + "\n")
            for steps, per_seed in rows[method]:
                f.write(json.dumps({"env_steps": steps, "eval_return_per_seed": per_seed,
                                    "wall_time": steps / 100}) + "\n")
    out = str(tmp_path / "se")
    report = se.main(["--env", "gymnax/Breakout-MinAtar", "--threshold", "5",
                      "--from-logs", f"muzero={logs['muzero']}", "--from-logs",
                      f"ppo={logs['ppo']}", "--report-at", "500", "--out", out])
    assert report["methods"] == ["muzero", "ppo"]
    assert report["budgets"] == {"muzero": 500, "ppo": 800}
    assert report["curves"]["muzero"][1]["eval_return"] == [2.0, 9.0]
    summary = report["summary"]
    assert summary["muzero"]["steps_to_threshold"] == [None, 500]
    assert summary["ppo"]["steps_to_threshold"] == [800, 800]
    assert summary["ppo"]["return_at"]["500"] == 3.0  # the 400-step evaluation
    assert report["ratios"]["ppo/muzero"]["ratio"] == 800 / 500
    assert os.path.getsize(os.path.join(out, "returns.png")) > 0
    # Seeds of separate runs (comma-separated dirs) form one method's curves.
    both = se.main(["--env", "gymnax/Breakout-MinAtar", "--from-logs",
                    f"ppo={logs['ppo']},{logs['muzero']}", "--threshold", "5", "--out", out])
    assert [c["eval_return"][-1] for c in both["curves"]["ppo"]] == [6.0, 8.0, 3.0, 9.0]
    assert both["seeds"] == {"ppo": 4} and both["budgets"] == {"ppo": 800}
    with pytest.raises(ValueError, match="is a run on gymnax/Breakout-MinAtar"):
        se.main(["--env", "gymnax/Asterix-MinAtar", "--from-logs", f"ppo={logs['ppo']}",
                 "--out", out])
    # Two runs of one method with other options, told apart by a tag; ratios pair by method.
    tagged = se.main(["--env", "gymnax/Breakout-MinAtar", "--threshold", "5",
                      "--from-logs", f"muzero={logs['muzero']}",
                      "--from-logs", f"muzero:other={logs['ppo']}",
                      "--from-logs", f"ppo={logs['ppo']}", "--budget", "muzero:other=700",
                      "--out", out])
    assert tagged["methods"] == ["muzero", "muzero:other", "ppo"]
    assert tagged["budgets"]["muzero:other"] == 700
    assert tagged["summary"]["muzero:other"]["steps_to_threshold"] == [800, 800]
    assert tagged["ratios"]["ppo/muzero:other"]["ratio"] == 1.0
    assert tagged["ratios"]["ppo/muzero"]["ratio"] == 800 / 500
    for bad, message in ((f"muzero:={logs['muzero']}", r"METHOD\[:TAG\]=DIR"),
                         (f"alphago:x={logs['muzero']}", r"METHOD\[:TAG\]=DIR")):
        with pytest.raises(ValueError, match=message):
            se.main(["--env", "gymnax/Breakout-MinAtar", "--from-logs", bad, "--out", out])
    with pytest.raises(ValueError, match="names 'muzero' twice"):
        se.main(["--env", "gymnax/Breakout-MinAtar", "--from-logs", f"muzero={logs['muzero']}",
                 "--from-logs", f"muzero={logs['ppo']}", "--out", out])
    with pytest.raises(ValueError, match="unknown methods"):  # a tag only names logged runs
        se.main(["--env", "gymnax/Breakout-MinAtar", "--methods", "muzero:x", "--out", out])
    # Our SAC agent's runs are a model-free method (the ratios' numerator).
    sac = se.main(["--env", "gymnax/Breakout-MinAtar", "--threshold", "5",
                   "--from-logs", f"muzero={logs['muzero']}", "--from-logs", f"sac={logs['ppo']}",
                   "--out", out])
    assert sac["ratios"]["sac/muzero"]["ratio"] == 800 / 500 and len(sac["ratios"]) == 1


def _reference_file(path):
    runs = [{"task": "dmc_cartpole_swingup", "method": "dreamerv3", "seed": s,
             "xs": [10_000.0, 20_000.0, 30_000.0], "ys": [100.0 + 20 * s, 200.0, 300.0 - 20 * s]}
            for s in (0, 1)]
    runs.append({**runs[0], "task": "dmc_walker_walk", "ys": [0.0, 0.0, 0.0]})
    with gzip.open(path, "wt") as f:
        json.dump(runs, f)
    return str(path)


def test_the_curve_is_compared_to_the_reference_at_the_same_steps(tmp_path):
    path = _reference_file(tmp_path / "ref.json.gz")
    ref = se.load_reference(path, "dmc_cartpole_swingup")
    assert ref["seeds"] == 2 and ref["mean"] == [110.0, 200.0, 290.0]
    assert ref["min"] == [100.0, 200.0, 280.0] and ref["max"] == [120.0, 200.0, 300.0]
    curves = [{"env_steps": [5_000, 15_000, 25_000], "eval_return": [10.0, 50.0, 90.0]},
              {"env_steps": [5_000, 15_000, 25_000], "eval_return": [30.0, 70.0, 110.0]}]
    out = se.compare_to_reference(curves, ref)
    assert [p["ours"] for p in out["at_our_evaluations"]] == [20.0, 60.0, 100.0]
    assert [p["reference"] for p in out["at_our_evaluations"]] == [None, 155.0, 245.0]
    # at the reference's 10k and 20k (30k was not reached): our last evaluation before them
    assert [(p["env_steps"], p["ours"], p["reference"]) for p in out["at_reference_steps"]] == [
        (10_000.0, 20.0, 110.0), (20_000.0, 60.0, 200.0)]
    with pytest.raises(ValueError, match="no dreamerv3 curve for dmc_nope"):
        se.load_reference(path, "dmc_nope")
    with pytest.raises(ValueError, match=r"no ddpg curve .*\(methods with dmc_cartpole_swingup: "
                                         r"\['dreamerv3'\]"):
        se.load_reference(path, "dmc_cartpole_swingup", "ddpg")
    # a reference step before our first evaluation has no value of ours (not NaN)
    late = [{"env_steps": [15_000], "eval_return": [50.0]}]
    assert [p["ours"] for p in se.compare_to_reference(late, ref)["at_reference_steps"]] == [None]


def test_seeds_evaluated_at_different_steps_are_interpolated(tmp_path):
    path = tmp_path / "ref.json.gz"
    runs = [{"task": "dmc_x", "method": "ddpg", "seed": 0, "xs": [0.0, 10.0, 20.0, 30.0],
             "ys": [0.0, 10.0, 20.0, 30.0]},
            {"task": "dmc_x", "method": "ddpg", "seed": 1, "xs": [5.0, 25.0],
             "ys": [0.0, 40.0]}]
    with gzip.open(path, "wt") as f:
        json.dump(runs, f)
    ref = se.load_reference(str(path), "dmc_x", "ddpg")
    # the range both seeds cover is [5, 25]; seed 0's steps inside it; seed 1 at 10 and 20: 10, 30
    assert ref["xs"] == [10.0, 20.0]
    assert ref["mean"] == [10.0, 25.0] and ref["min"] == [10.0, 20.0]
    assert ref["max"] == [10.0, 30.0]
    (tmp_path / "plain.json.gz").write_text("not gzip")
    with pytest.raises(ValueError, match="is not a published-curves file"):
        se.load_reference(str(tmp_path / "plain.json.gz"), "dmc_x")


def test_from_logs_with_the_published_reference(tmp_path):
    logdir = tmp_path / "dreamer"
    logdir.mkdir()
    (logdir / "config.json").write_text(json.dumps({"env": "dmc/cartpole_swingup"}))
    with open(logdir / "metrics.jsonl", "w") as f:
        for steps, per_seed in [(5_000, [10.0, 30.0]), (15_000, [50.0, 70.0])]:
            f.write(json.dumps({"env_steps": steps, "eval_return_per_seed": per_seed,
                                "wall_time": 1.0}) + "\n")
    ref = _reference_file(tmp_path / "ref.json.gz")
    out = str(tmp_path / "se")
    report = se.main(["--env", "dmc/cartpole_swingup", "--threshold", "100", "--from-logs",
                      f"dreamer={logdir}", "--reference", ref, "--out", out])
    compared = report["reference"]["dreamer"]
    assert compared["task"] == "dmc_cartpole_swingup" and compared["seeds"] == 2
    assert [(p["env_steps"], p["ours"], p["reference"]) for p in compared["at_reference_steps"]
            ] == [(10_000.0, 20.0, 110.0)]
    assert os.path.getsize(os.path.join(out, "returns.png")) > 0
    with pytest.raises(cli.UsageError, match="not a dmc/ task"):
        se.main(["--env", "gymnax/Breakout-MinAtar", "--from-logs", f"dreamer={logdir}",
                 "--reference", ref, "--out", out])
    with pytest.raises(cli.UsageError, match="no such file"):
        se.main(["--env", "dmc/cartpole_swingup", "--from-logs", f"dreamer={logdir}",
                 "--reference", str(tmp_path / "missing.json.gz"), "--out", out])
    with pytest.raises(cli.UsageError, match="no such file"):
        se.main(["--env", "dmc/cartpole_swingup", "--from-logs", f"dreamer={logdir}",
                 "--reference", str(tmp_path), "--out", out])


def test_a_bare_reference_name_is_looked_up_beside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(se, "REFERENCE_DIR", str(tmp_path))
    _reference_file(tmp_path / "ref.json.gz")
    monkeypatch.chdir(tmp_path / "..")
    assert se.reference_path("ref.json.gz") == os.path.join(str(tmp_path), "ref.json.gz")
    assert se.reference_path("missing.json.gz") is None
    assert se.reference_path(str(tmp_path / "ref.json.gz")) == str(tmp_path / "ref.json.gz")
