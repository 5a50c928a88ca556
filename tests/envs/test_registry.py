"""Tests of the id registry and of the action-shape errors (no physics compiled here)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from envs import registry
from envs.api import batch_reset, batch_step


def test_every_family_lists_ids():
    ids = registry.registered_ids()
    for env_id in ("linear/scalar_a0.5", "gymnax/CartPole-v1", "gymnax/Breakout-MinAtar",
                   "brax/inverted_pendulum", "dmc/cartpole_swingup"):
        assert env_id in ids
    assert all(i.startswith("brax/") for i in registry.registered_ids("brax"))
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("env_id", ["nope", "atari/Pong", "gymnax/", "linear/scalar_a9"])
def test_unknown_id_lists_known_ids(env_id):
    with pytest.raises(ValueError, match="Unknown environment id") as err:
        registry.make(env_id)
    message = str(err.value)
    assert repr(env_id) in message
    family = env_id.partition("/")[0]
    listed_family = "gymnax" if family == "gymnax" else "linear"
    expected = {"gymnax": "gymnax/CartPole-v1", "linear": "linear/scalar_a0.5"}[listed_family]
    assert expected in message


def test_make_passes_keyword_arguments():
    env = registry.make("gymnax/CartPole-v1", max_episode_steps=17)
    assert env.spec.env_id == "gymnax/CartPole-v1" and env.spec.max_episode_steps == 17
    env = registry.make("linear/scalar_a1.05", max_episode_steps=3)
    assert env.spec.max_episode_steps == 3 and env.spec.action_shape == (1,)


@pytest.mark.parametrize("env_id", ["gymnax/CartPole-v1", "linear/scalar_a1.05"])
@pytest.mark.parametrize("limit", [0, -3, "x", 2.5])
def test_a_time_limit_below_one_step_is_refused(env_id, limit):
    with pytest.raises(ValueError, match=r"max_episode_steps must be (a whole number )?>= 1.*"
                                         f"got {limit!r}"):
        registry.make(env_id, max_episode_steps=limit)


def test_wrong_action_shape_names_expected_shape():
    env = registry.make("linear/random_4x2")
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"expected shape \(2,\)"):
        env.step(state, jnp.zeros(3), jax.random.PRNGKey(1))
    batch = batch_reset(env, jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match=r"expected \(4, 2\)"):
        batch_step(env, batch, jnp.zeros((4,)), jax.random.PRNGKey(1))


def test_discrete_action_must_be_scalar():
    env = registry.make("gymnax/CartPole-v1")
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"expected shape \(\)"):
        env.step(state, jnp.zeros((1,), jnp.int32), jax.random.PRNGKey(1))
