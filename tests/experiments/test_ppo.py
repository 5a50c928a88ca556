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
    # tiny preset: 2 envs x 16 steps = 32 steps per iteration; 100 steps -> 3 iterations,
    # evaluations every 2 iterations and at the end.
    curves = ppo.train("gymnax/CartPole-v1", steps=100, eval_every=64, preset="tiny")
    assert curves[0]["env_steps"] == [0, 64, 96]


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
    curves = ppo.train("test/ppo_numbered", steps=96, eval_every=32, eval_episodes=0,
                       preset="tiny", out=str(tmp_path / "short"), max_seconds=0.0)
    assert len((tmp_path / "short" / "metrics.jsonl").read_text().split("\n")) == 3
    with pytest.raises(ValueError, match="eval_episodes must be >= 0"):
        ppo.train("test/ppo_numbered", steps=96, eval_episodes=-1, preset="tiny")
