"""experiments.evaluate: the k-step errors of tiny trained MuZero, Stochastic MuZero and Dreamer
runs, and the usage errors."""

import argparse
import json
import os

import pytest

from experiments import cli, evaluate, train


def _train(tmp_path_factory, agent, *flags):
    logdir = str(tmp_path_factory.mktemp(agent) / "run")
    train.main(["--agent", agent, "--env", "gymnax/CartPole-v1", "--num-envs", "2",
                "--no-progress", "--eval-every", "-1", "--logdir", logdir, *flags])
    return logdir


@pytest.fixture(scope="module")
def muzero_run(tmp_path_factory):
    return _train(tmp_path_factory, "muzero", "--preset", "tiny", "--steps", "48",
                  "--log-every", "48")


def _usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(evaluate.main, argv)
    assert exit_.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


@pytest.mark.slow
def test_muzero_run_errors_action_values_and_json(muzero_run, tmp_path, capsys, monkeypatch):
    from agents.muzero import evaluation

    rollouts = []  # (simulations, length) of every greedy rollout the evaluation plays
    play = evaluation.greedy_rollout

    def recording_rollout(env, cfg, model, params, key, num, length, probe=None):
        rollouts.append((cfg.num_simulations, length))
        return play(env, cfg, model, params, key, num, length, probe)

    monkeypatch.setattr(evaluation, "greedy_rollout", recording_rollout)
    path = str(tmp_path / "errors.json")
    result = evaluate.main(["--logdir", muzero_run, "--horizon", "3", "--trajectories", "2",
                            "--length", "8", "--json", path, "--search-budgets", "1", "4"])
    for name in ("reward", "value"):
        assert result[name]["horizons"] == [1, 2, 3]
        assert result[name]["num_starts"] == 2 * (8 - 3 + 1)
    assert result["action_values"]["steps"] >= 2
    assert len(result["action_frequencies"]) == 2  # CartPole
    assert abs(sum(result["action_frequencies"]) - 1.0) < 1e-6
    assert result["agent"] == "muzero" and result["env_steps"] >= 48
    assert 0.0 <= result["terminated_fraction"] <= 1.0
    # greedy episodes to CartPole's time limit (not --length) with 1 and 4 simulations
    assert sorted(result["returns_by_search_budget"]) == ["1", "4"]
    assert rollouts[-2:] == [(1, 500), (4, 500)]
    assert all(length == 8 for _, length in rollouts[:-2])
    printed = capsys.readouterr().out
    assert "greedy return by search budget" in printed
    assert "reward abs error by k:" in printed and "value pooled relative error by k:" in printed
    assert "one-step action values" in printed and "greedy action frequencies" in printed
    with open(path) as f:
        assert json.load(f)["reward"] == result["reward"]


@pytest.fixture(scope="module")
def muzero_record(tmp_path_factory):
    """A log directory holding only a tiny MuZero run's config.json (what the checks read)."""
    from core import rundir
    from experiments import train
    logdir = str(tmp_path_factory.mktemp("record") / "muzero")
    _, _, _, record = train.build(["--agent", "muzero", "--env", "gymnax/CartPole-v1",
                                   "--preset", "tiny", "--logdir", logdir])
    rundir.write_config(logdir, record, resumed=False)
    os.makedirs(os.path.join(logdir, "checkpoints", "48"))  # the checks only look for one
    return logdir


def test_usage_errors(muzero_record, tmp_path_factory, capsys):
    muzero_run = muzero_record
    assert "--horizon must be in [1, --length=4]" in _usage_error(
        ["--logdir", muzero_run, "--horizon", "5", "--length", "4"], capsys)
    assert "--seed-index 3 is out of range" in _usage_error(
        ["--logdir", muzero_run, "--seed-index", "3"], capsys)
    assert "no directory" in _usage_error(["--logdir", str(muzero_run) + "_missing"], capsys)
    assert "--policy-values-every must be >= 0" in _usage_error(
        ["--logdir", muzero_run, "--policy-values-every", "-1"], capsys)
    assert "--search-budgets must be >= 1 simulation each" in _usage_error(
        ["--logdir", muzero_run, "--search-budgets", "16", "0"], capsys)
    assert "--sample-actions applies to Dreamer runs only" in _usage_error(
        ["--logdir", muzero_run, "--sample-actions"], capsys)
    args = argparse.Namespace(logdir="RUN", horizon=None, length=60, trajectories=16,
                              policy_values_every=10, policy_length=0)
    with pytest.raises(cli.UsageError, match="applies to MuZero runs only"):
        evaluate.check_args(args, "dreamer")
    with pytest.raises(cli.UsageError, match="--search-budgets applies to MuZero runs only"):
        evaluate.check_args(argparse.Namespace(**{**vars(args), "policy_values_every": 0,
                                                  "search_budgets": [16]}), "dreamer")
    assert evaluate.check_args(argparse.Namespace(**{**vars(args), "policy_values_every": 0}),
                               "dreamer") == 15
    random_run = _train(tmp_path_factory, "random", "--steps", "8", "--log-every", "8")
    err = _usage_error(["--logdir", random_run], capsys)
    assert "agent 'random'" in err and "dreamer, gumbel_muzero, muzero, stochastic_muzero" in err
    # An agent with a model this tool does not load is told where its model is measured.
    mbpo_run = tmp_path_factory.mktemp("mbpo_record")
    os.makedirs(mbpo_run / "checkpoints" / "100")
    with open(mbpo_run / "config.json", "w") as f:
        json.dump({"agent": "mbpo", "env": "dmc/cartpole_swingup", "argv": [], "run": {},
                   "agent_config": {}}, f)
    err = _usage_error(["--logdir", str(mbpo_run)], capsys)
    assert ("experiments.compounding --env dmc/cartpole_swingup` measures the PETS/MBPO "
            "ensemble" in err and "has no learned model" not in err), err


@pytest.mark.slow
def test_dreamer_run_errors(tmp_path_factory, capsys):
    logdir = _train(tmp_path_factory, "dreamer", "--preset", "tiny", "--steps", "80",
                    "--log-every", "80")
    result = evaluate.main(["--logdir", logdir, "--horizon", "2", "--trajectories", "2",
                            "--length", "6"])
    for name in ("obs", "reward"):
        assert result[name]["horizons"] == [1, 2]
        assert result[name]["num_starts"] == 2 * (6 - 2 + 1)
    assert result["agent"] == "dreamer" and result["reconstruction_abs_error"] >= 0.0
    printed = capsys.readouterr().out
    assert "reconstruction (k=0)" in printed and "obs abs error by k:" in printed
    assert "critic value vs discounted return earned" in printed
    assert "obs persistence" in printed and len(result["persistence"]["abs_error"]) == 2
    assert "reward head vs real reward" in printed
    sampled = evaluate.main(["--logdir", logdir, "--horizon", "2", "--trajectories", "2",
                             "--length", "6", "--sample-actions"])
    for res in (result, sampled):
        calibration = res["calibration"]
        # CartPole pays 1 per step: every valid step is an event
        assert calibration["reward"]["real_mean"] == calibration["reward"]["real_at_events"] == 1.0
        assert calibration["value"]["num_steps"] <= 2 * 6


@pytest.mark.slow
def test_stochastic_muzero_run_errors(tmp_path_factory, capsys):
    logdir = _train(tmp_path_factory, "stochastic_muzero", "--preset", "tiny", "--steps", "48",
                    "--log-every", "48")
    result = evaluate.main(["--logdir", logdir, "--horizon", "3", "--trajectories", "2",
                            "--length", "8"])
    for codes in ("observed", "likely"):
        for name in ("reward", "value"):
            assert result[f"{name}_{codes}"]["horizons"] == [1, 2, 3]
            assert result[f"{name}_{codes}"]["num_starts"] == 2 * (8 - 3 + 1)
    assert result["agent"] == "stochastic_muzero" and result["env_steps"] >= 48
    assert 0.0 <= result["terminated_fraction"] <= 1.0
    assert "value_likely pooled relative error by k:" in capsys.readouterr().out


def test_report_errors_prints_both_curves_and_writes_json(tmp_path, capsys):
    result = {"obs": {"abs_error": [0.5, 0.25], "pooled_relative_error": [0.1, 0.2]}}
    path = str(tmp_path / "errors.json")
    evaluate.report_errors(result, ("obs",), path)
    out = capsys.readouterr().out
    assert "obs abs error by k: [0.5, 0.25]" in out
    assert "obs pooled relative error by k: [0.1, 0.2]" in out
    with open(path) as f:
        assert json.load(f) == result
    # a k no trajectory reaches has no error: None, printed and in strict JSON
    result = {"obs": {"abs_error": [0.5, float("nan")],
                      "pooled_relative_error": [0.1, float("nan")]},
              "nested": {"values": [1.0, float("inf")]}}
    evaluate.report_errors(result, ("obs",), path)
    assert "obs pooled relative error by k: [0.1, None]" in capsys.readouterr().out
    with open(path) as f:
        strict = json.load(f, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert strict["obs"]["abs_error"] == [0.5, None] and strict["nested"]["values"] == [1.0, None]
