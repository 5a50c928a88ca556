"""DreamerV3 through the training loop (``experiments.train`` -> ``core.runner.train``) on the
``tiny`` preset: vector and image observations, discrete and continuous actions, each run
resumed from its checkpoint; and a learning test on a task whose reward depends on more than
the current action."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from core import logger, rundir
from envs.api import EnvSpec, Environment
from experiments import train

DOT = "test/dreamer_dot_image"


def dot_image(size: int = 8) -> Environment:
    """A uint8 ``[size, size, 1]`` image of a dot the continuous action moves along a row;
    reward ``-|x - centre| / centre`` (0 at the centre)."""
    centre = (size - 1) / 2

    def observe(x):
        col = jnp.clip(jnp.round(x), 0, size - 1).astype(jnp.int32)
        img = jnp.zeros((size, size, 1), jnp.uint8)
        return img.at[size // 2, col, 0].set(255)

    def reset(key):
        x = jax.random.uniform(key, (), minval=0.0, maxval=size - 1.0)
        return x, observe(x)

    def step(x, action, key):
        del key
        x = jnp.clip(x + 2.0 * action[0], 0.0, size - 1.0)
        return x, observe(x), -jnp.abs(x - centre) / centre, jnp.zeros((), bool)

    spec = EnvSpec(env_id=DOT, obs_shape=(size, size, 1), obs_dtype=np.uint8, discrete=False,
                   action_shape=(1,), action_low=(-1.0,), action_high=(1.0,),
                   max_episode_steps=16)
    return Environment(spec=spec, adapter_reset=reset, adapter_step=step)


CASES = {  # name: (env id, what it covers), extra flags
    "vector_discrete": ("gymnax/CartPole-v1", []),
    "image_discrete": ("gymnax/Breakout-MinAtar", []),  # float 0/1 planes, obs_range (0, 1)
    "vector_continuous": ("linear/scalar_a0.5", []),
    "image_continuous": (DOT, []),  # uint8 frames, obs_range (0, 255)
    # replay stores posteriors, the update rewrites them and starts windows from them
    "vector_discrete_replay_context": ("gymnax/CartPole-v1", ["--replay-context"]),
}


def _argv(env_id, logdir, steps, extra=()):
    return ["--agent", "dreamer", "--preset", "tiny", "--env", env_id, "--steps", str(steps),
            "--num-envs", "2", "--log-every", "32", "--checkpoint-every", "32",
            "--eval-every", "-1", "--no-progress", "--logdir", logdir, "--prefill-steps", "32",
            "--train-ratio", "32", *extra]


def _run_and_resume(env_id, logdir, extra=()):
    first = train.main(_argv(env_id, logdir, 64, extra))
    second = train.main(_argv(env_id, logdir, 96, extra))
    return first, second, logger.read_metrics(logdir), rundir.read_config(logdir)


def _check(first, second, lines, record):
    assert first["env_steps"] == 64 and second["env_steps"] == 96
    assert len(record["resumes"]) == 1
    assert [r["env_steps"] for r in lines] == [32, 64, 96]
    last = lines[-1]
    for name in ("wm_loss", "recon_loss", "reward_loss", "cont_loss", "actor_loss",
                 "critic_loss"):
        assert math.isfinite(last[name]), (name, last)
    assert last["recon_loss"] > 0 and last["skipped_updates"] == 0


@pytest.fixture(scope="module", autouse=True)
def _dot_env():
    envs.register(DOT, dot_image, overwrite=True)


@pytest.mark.slow  # two compilations of the whole loop per case: 1-2 min each on 2 cores
@pytest.mark.parametrize("case", sorted(CASES))
def test_through_the_loop_with_resume(case, tmp_path):
    env_id, extra = CASES[case]
    first, second, lines, record = _run_and_resume(env_id, str(tmp_path / "run"), extra)
    _check(first, second, lines, record)
    if extra:  # replay context: windows start from stored states once updates wrote them
        assert record["agent_config"]["replay_context"] is True
        assert 0 < lines[-1]["context_fraction"] <= 1, lines[-1]


CORRIDOR = "test/dreamer_corridor"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--replay-context"]], ids=["reset", "replay_context"])
def test_learns_a_corridor_where_the_greedy_action_is_a_bait(tmp_path, extra):
    """Only a policy that looks ahead scores: in each cell one action moves on (reward 0, and
    1 at the end), the other takes a bait of 0.1 and ends the episode; greedy in the
    immediate reward scores 0.1. The imagined returns (reward, continue and value heads,
    lambda-returns over several steps) must carry the goal's reward back to the first cells."""
    from tests.envs_for_tests import corridor
    envs.register(CORRIDOR, lambda: corridor(4, 0.1, random_start=True), overwrite=True)
    summary = train.main([
        "--agent", "dreamer", "--preset", "tiny", "--env", CORRIDOR, "--steps", "3000",
        "--num-envs", "4", "--log-every", "1000", "--eval-every", "0", "--eval-episodes", "16",
        "--checkpoint-every", "0", "--no-progress", "--logdir", str(tmp_path / "run"),
        "--horizon", "8", "--train-ratio", "32", "--prefill-steps", "256", *extra])
    assert summary["eval_return_mean"] > 0.8, summary
