"""The ``default`` MuZero preset fits every discrete gymnax task with vector observations.

A task without a preset of its own (``experiments.presets.default_preset``) trains with
``PRESETS["default"]``: its reward and value supports must represent the task's rewards and
returns, or the two-hot targets are clipped and the search plans on wrong values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import gumbel_muzero, muzero
from envs import registry
from envs.api import batch_reset, batch_step
from world_models.muzero import Support

NUM_ENVS, NUM_STEPS = 16, 256


def _default_tasks():
    """Discrete-action gymnax tasks with vector observations (not MinAtar's images)."""
    out = []
    for env_id in registry.registered_ids("gymnax"):
        spec = registry.make(env_id).spec
        if spec.discrete and spec.obs_kind == "vector":
            out.append(env_id)
    return out


TASKS = _default_tasks()


def test_the_default_tasks_are_the_classic_discrete_ones():
    assert {"gymnax/CartPole-v1", "gymnax/Acrobot-v1", "gymnax/MountainCar-v0",
            "gymnax/Catch-bsuite"} <= set(TASKS)


def _random_rewards(env_id: str) -> np.ndarray:
    """Rewards of uniformly random actions, ``NUM_ENVS x NUM_STEPS`` steps (auto-reset)."""
    env = registry.make(env_id)
    n = env.spec.num_actions

    @jax.jit
    def run(key):
        reset_key, key = jax.random.split(key)
        state = batch_reset(env, reset_key, NUM_ENVS)

        def body(state, key):
            action_key, step_key = jax.random.split(key)
            action = jax.random.randint(action_key, (NUM_ENVS,), 0, n)
            state, ts = batch_step(env, state, action, step_key)
            return state, ts.reward

        return jax.lax.scan(body, state, jax.random.split(key, NUM_STEPS))[1]

    return np.asarray(run(jax.random.PRNGKey(0)))


def _round_trip(support: Support, x: np.ndarray) -> np.ndarray:
    """``decode(log(encode(x)))``: ``x`` itself when the support covers it, else clipped."""
    return np.asarray(support.decode(jnp.log(support.encode(jnp.asarray(x)) + 1e-30)))


@pytest.mark.parametrize("env_id", TASKS)
def test_default_supports_cover_rewards_and_returns(env_id):
    cfg = muzero.PRESETS["default"]
    rewards = _random_rewards(env_id)
    assert np.abs(rewards).max() > 0, "the random rollout saw no reward; lengthen it"
    reward_support = Support(cfg.reward_support_size, cfg.reward_support_max,
                             "signed_hyperbolic")
    values = np.unique(rewards)
    np.testing.assert_allclose(_round_trip(reward_support, values), values, atol=1e-3)

    # The largest discounted return of an episode with rewards of these magnitudes.
    horizon = registry.make(env_id).spec.max_episode_steps
    bound = np.abs(rewards).max() * (1 - cfg.discount ** horizon) / (1 - cfg.discount)
    value_support = Support(cfg.value_support_size, cfg.value_support_max, "signed_hyperbolic")
    extremes = np.array([-bound, bound], np.float32)
    np.testing.assert_allclose(_round_trip(value_support, extremes), extremes, rtol=1e-3)


@pytest.mark.parametrize("module", [muzero, gumbel_muzero], ids=["muzero", "gumbel_muzero"])
@pytest.mark.parametrize("env_id", [
    "gymnax/CartPole-v1", "gymnax/Acrobot-v1", "gymnax/MountainCar-v0",
    "gymnax/Catch-bsuite",  # a (10, 5) grid: the MLP flattens it
])
def test_default_preset_builds(module, env_id):
    env = registry.make(env_id)
    agent = module.make(module.PRESETS["default"], env, 2)
    state = agent.init(jax.random.PRNGKey(0))
    assert jax.tree_util.tree_leaves(state.params)


def test_gumbel_default_differs_from_muzero_only_in_search_and_policy_weight():
    """Gumbel MuZero's ``default`` is MuZero's with its own search and a lighter policy loss
    (agents/gumbel_muzero); nothing else drifts apart."""
    import dataclasses
    mz, gb = muzero.PRESETS["default"], gumbel_muzero.PRESETS["default"]
    differ = {f.name for f in dataclasses.fields(mz) if getattr(mz, f.name) != getattr(gb, f.name)}
    assert differ == {"search", "policy_loss_weight"}
    assert (mz.policy_loss_weight, gb.policy_loss_weight) == (1.0, 0.25)
