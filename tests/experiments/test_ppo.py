"""The discrete-action PPO baseline: GAE against a hand-worked example, input checks, and a
short CartPole run that must learn."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import ppo


def test_gae_hand_worked():
    # one env, 3 steps: a step, a truncation (bootstraps from V(next_obs)=5 but cuts the
    # trace), then a termination (bootstraps with 0).
    gamma, lam = 0.9, 0.5
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    values = jnp.array([[0.5], [1.0], [2.0]])
    next_values = jnp.array([[1.0], [5.0], [7.0]])
    terminated = jnp.array([[0.0], [0.0], [1.0]])
    done = jnp.array([[0.0], [1.0], [1.0]])
    adv = ppo.gae(rewards, values, next_values, terminated, done, gamma, lam)
    d2 = 3.0 - 2.0
    d1 = 2.0 + 0.9 * 5.0 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = [d0 + gamma * lam * d1, d1, d2]
    np.testing.assert_allclose(np.asarray(adv)[:, 0], expected, rtol=1e-6)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="minibatches"):
        ppo.PPOConfig(num_envs=3, num_steps=5, minibatches=2)
    with pytest.raises(ValueError, match="continuous"):
        ppo.train("gymnax/Pendulum-v1", steps=100, preset="tiny")
    for kwargs, message in [(dict(seeds=0), r"seeds \(--seeds\) must be >= 1, got 0"),
                            (dict(steps=0), r"steps \(--steps\) must be >= 1"),
                            (dict(eval_every=-1), r"--eval-every\) must be >= 0"),
                            (dict(max_seconds=-1.0), r"--max-seconds\) must be >= 0")]:
        with pytest.raises(ValueError, match=message):
            ppo.train("gymnax/CartPole-v1", **{"steps": 100, "preset": "tiny", **kwargs})


@pytest.mark.slow
def test_ppo_learns_cartpole(tmp_path):
    # untrained greedy policies score 9-42; after 40,960 steps 396-458 (4 seeds checked)
    curves = ppo.train("gymnax/CartPole-v1", steps=40_960, seeds=2, eval_every=40_960,
                       out=str(tmp_path), num_envs=4, num_steps=128)
    for c in curves:
        assert c["env_steps"] == [0, 40_960]
        assert c["eval_return"][0] < 100
        assert c["eval_return"][-1] > 250, c["eval_return"]
    assert (tmp_path / "metrics.jsonl").exists()


def test_budget_is_not_exceeded_and_last_chunk_is_shorter():
    # tiny preset: 2 envs x 16 steps = 32 steps per iteration; 170 steps -> 5 iterations,
    # evaluations every 2 iterations and at the end. (Seeds, iterations and evaluation as in
    # the resume test below: the same compiled programs.)
    curves = ppo.train("gymnax/CartPole-v1", steps=170, seeds=2, eval_every=64,
                       eval_episodes=2, preset="tiny")
    assert curves[0]["env_steps"] == [0, 64, 128, 160]


def test_training_episodes_log_the_environments_own_metrics(tmp_path):
    """eval_episodes=0: no evaluation; every chunk logs the training episodes' mean return and
    the means of the environment's per-episode metrics (craftax's achievements) as
    ``<name>_mean``; max_seconds=0 stops after the first chunk."""
    import json

    import envs
    from tests.envs.test_craftax import numbered_env

    envs.register("test/ppo_numbered", lambda: numbered_env(2, limit=3), overwrite=True)
    curves = ppo.train("test/ppo_numbered", steps=96, seeds=2, eval_every=32, eval_episodes=0,
                       preset="tiny", out=str(tmp_path))
    assert all(c["eval_return"] == [] for c in curves)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().split("\n")
               if line]
    assert [r["env_steps"] for r in records] == [0, 32, 64, 96]
    for r in records[1:]:
        assert "eval_return_mean" not in r and r["episodes"] > 0
        # every episode ends by action 1 or at the 3-step limit: 1 <= t <= 3, return = t
        assert 1.0 <= r["t_mean"] <= 3.0 and r["episode_return_mean"] == pytest.approx(
            r["t_mean"])
        per_seed = r["episode_return_per_seed"]  # each seed's mean, the pooled one between
        assert len(per_seed) == 2 and min(per_seed) <= r["episode_return_mean"] + 1e-6
        assert max(per_seed) >= r["episode_return_mean"] - 1e-6
    # The same configuration on a re-registered id runs the new environment (1-step episodes),
    # not the programs compiled for the old one.
    envs.register("test/ppo_numbered", lambda: numbered_env(2, limit=1), overwrite=True)
    curves = ppo.train("test/ppo_numbered", steps=96, eval_every=32, eval_episodes=0,
                       preset="tiny", out=str(tmp_path / "short"), max_seconds=0.0)
    records = [json.loads(line) for line in
               (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[1]["t_mean"] == 1.0
    with pytest.raises(ValueError, match="eval_episodes must be >= 0"):
        ppo.train("test/ppo_numbered", steps=96, eval_episodes=-1, preset="tiny")


def _lines(out):
    import json
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def _without_time(curves):
    return [{k: v for k, v in c.items() if k != "wall_time"} for c in curves]


def test_a_rerun_resumes_where_the_run_stopped_and_matches_an_uninterrupted_run(
        tmp_path, capsys):
    """--max-seconds stops after the first chunk with a checkpoint; the same call again
    resumes and ends with the metric lines and curves of a run never stopped. A finished run
    rerun returns its curves and adds nothing; another configuration is refused, --fresh (and
    a folder without a checkpoint) moves the old run aside."""
    from experiments import cli

    kwargs = dict(steps=160, seeds=2, eval_every=32, eval_episodes=2, preset="tiny")
    whole = ppo.train("gymnax/CartPole-v1", out=str(tmp_path / "whole"), **kwargs)
    stopped = tmp_path / "stopped"
    ppo.train("gymnax/CartPole-v1", out=str(stopped), max_seconds=0.0, **kwargs)
    assert [r["env_steps"] for r in _lines(stopped)] == [0, 32]
    first_lines = (stopped / "metrics.jsonl").read_text()  # wall_time included
    capsys.readouterr()
    resumed = ppo.train("gymnax/CartPole-v1", out=str(stopped), **kwargs)
    assert "resumed from" in capsys.readouterr().out  # not started over
    assert (stopped / "metrics.jsonl").read_text().startswith(first_lines)
    assert _lines(stopped) == _lines(tmp_path / "whole")
    assert [r["env_steps"] for r in _lines(stopped)] == [0, 32, 64, 96, 128, 160]
    assert _without_time(resumed) == _without_time(whole)
    finished = (stopped / "metrics.jsonl").read_text()
    again = ppo.train("gymnax/CartPole-v1", out=str(stopped), **kwargs)  # finished: no work
    assert _without_time(again) == _without_time(whole)
    assert (stopped / "metrics.jsonl").read_text() == finished

    with pytest.raises(cli.UsageError, match=r"another configuration \(seeds: 2 -> 1\).*--fresh"):
        ppo.train("gymnax/CartPole-v1", out=str(stopped), **{**kwargs, "seeds": 1})
    ppo.train("gymnax/CartPole-v1", out=str(stopped), fresh=True, max_seconds=0.0, **kwargs)
    assert [r["env_steps"] for r in _lines(stopped)] == [0, 32]
    old_runs = [p for p in tmp_path.iterdir() if p.name.startswith("stopped.")]
    assert len(old_runs) == 1 and len(_lines(old_runs[0])) == 6  # moved aside, not deleted

    (tmp_path / "other").mkdir()  # a folder that is not a PPO run is never moved
    (tmp_path / "other" / "notes.txt").write_text("")
    with pytest.raises(cli.UsageError, match="not a PPO run's"):
        ppo.train("gymnax/CartPole-v1", out=str(tmp_path / "other"), **kwargs)
    assert (tmp_path / "other" / "notes.txt").exists()

    (tmp_path / "legacy").mkdir()  # a run of a version without checkpoints
    (tmp_path / "legacy" / "metrics.jsonl").write_text('{"env_steps": 0}\n')
    ppo.train("gymnax/CartPole-v1", out=str(tmp_path / "legacy"), max_seconds=0.0, **kwargs)
    assert [r["env_steps"] for r in _lines(tmp_path / "legacy")] == [0, 32]
    assert any(p.name.startswith("legacy.") for p in tmp_path.iterdir())


def test_max_seconds_bounds_each_call_so_the_same_command_goes_on(tmp_path, monkeypatch):
    """--max-seconds counts the seconds of one call: a rerun of the same command after such a
    stop trains chunks of its own, however long the earlier calls took. The clock advances one
    second per metric line."""
    clock = [1000.0]
    monkeypatch.setattr(ppo.time, "time", lambda: clock[0])
    logged_steps = []
    log = ppo._RunDir.log

    def log_and_tick(self, line):
        clock[0] += 1.0
        logged_steps.append(line["env_steps"])
        return log(self, line)

    monkeypatch.setattr(ppo._RunDir, "log", log_and_tick)
    kwargs = dict(steps=160, seeds=2, eval_every=32, eval_episodes=2, preset="tiny",
                  max_seconds=1.5)  # the programs of the resume test
    ppo.train("gymnax/CartPole-v1", out=str(tmp_path), **kwargs)
    assert logged_steps == [0, 32]  # 2 s into the call after its first chunk
    ppo.train("gymnax/CartPole-v1", out=str(tmp_path), **kwargs)
    assert logged_steps == [0, 32, 64, 96]  # 4 s of logged wall_time, 2 s of this call
