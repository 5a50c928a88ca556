"""Legal-action masks reach the agents: the loop's acting, prefill and replay, greedy evaluation
(:func:`core.rollout.agent_policy`), the random agent and MuZero's search.

The reference for legality is the board itself, not the adapter's mask: in pgx's tic-tac-toe
observation (``[3, 3, 2]``, the mover's marks and the opponent's) a move is legal exactly when
its square holds neither mark, and a legal move never costs its mover -1 (only an illegal one
does: pgx ends the game with a loss).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import envs
from agents import gumbel_muzero, muzero
from agents import random as random_agent
from agents.muzero import acting
from core import replay, rollout
from core.loop import make_loop
from core.types import Agent, Schedule

NUM_ENVS = 8


def empty_squares(obs) -> np.ndarray:
    """``[..., 9]`` bool: the squares of tic-tac-toe boards ``obs [..., 3, 3, 2]`` with no mark."""
    obs = np.asarray(obs)
    return obs.reshape(obs.shape[:-3] + (9, 2)).sum(-1) == 0


def assert_legal(obs, action, reward) -> None:
    legal = np.take_along_axis(empty_squares(obs), np.asarray(action)[..., None], -1)[..., 0]
    assert legal.all(), f"{(~legal).sum()} illegal moves of {legal.size}"
    assert (np.asarray(reward) > -1.0).all()


def last_legal_agent(num_envs: int) -> Agent:
    """Plays the highest-numbered legal action; ``legal_action_mask`` has no default, so a call
    without the mask fails."""
    def act(state, obs, is_first, carry, key, explore, *, legal_action_mask):
        num_actions = legal_action_mask.shape[-1]
        return (jnp.argmax(jnp.where(legal_action_mask, jnp.arange(num_actions), -1), -1),
                carry, {})

    return Agent(init=lambda key: jnp.zeros(()), initial_carry=lambda n: jnp.zeros((n,)),
                 act=act, update=lambda s, b, k: (s, b, {}),
                 buffer=replay.make_buffer(num_envs=num_envs, capacity=32 * num_envs,
                                           batch_size=1),
                 schedule=Schedule(updates_per_iteration=0))


def run_and_check_replay(env, agent, *, iterations: int, prefill_iterations: int):
    """Prefill and train; every stored move is on an empty square, the stored mask is the empty
    squares, no game is lost by an illegal move. Returns ``(loop functions, run state)``."""
    fns = make_loop(env, agent, num_envs=NUM_ENVS, iterations=iterations,
                    prefill_iterations=prefill_iterations)

    @jax.jit
    def prefill_and_train(state):
        state, prefill_stats = fns.prefill(state)
        state, stats = fns.train(state)
        return state, prefill_stats["episodes"] + stats["episodes"]

    state, episodes = prefill_and_train(fns.init(jax.random.PRNGKey(0)))
    assert episodes > 0
    stored, valid = replay.all_steps(state.buffer)
    valid = np.asarray(valid, bool)
    steps = prefill_iterations + iterations * agent.schedule.env_steps_per_iteration
    assert valid.sum() == min(steps, valid.size // NUM_ENVS) * NUM_ENVS
    obs, action, reward = (np.asarray(x)[valid] for x in (stored.obs, stored.action,
                                                          stored.reward))
    np.testing.assert_array_equal(np.asarray(stored.legal_action_mask)[valid],
                                  empty_squares(obs))
    assert_legal(obs, action, reward)
    return fns, state


def test_loop_acts_prefills_and_stores_with_the_mask():
    """Random prefill, acting and replay see the mask; so does the greedy evaluation (traced:
    the last-legal agent cannot act without the mask)."""
    env = envs.make("pgx/tic_tac_toe")
    fns, state = run_and_check_replay(env, last_legal_agent(NUM_ENVS), iterations=12,
                                      prefill_iterations=6)
    jax.eval_shape(fns.evaluate, state, jax.random.PRNGKey(1))


def test_random_agent_samples_legal_actions():
    env = envs.make("pgx/tic_tac_toe")
    agent = random_agent.make(random_agent.RandomConfig(), env, 64)
    mask = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, (64, 9)).at[:, 4].set(True)
    action, _, _ = agent.act(None, jnp.zeros((64, 3, 3, 2)), None, None,
                             jax.random.PRNGKey(1), True, legal_action_mask=mask)
    assert np.take_along_axis(np.asarray(mask), np.asarray(action)[:, None], 1).all()
    assert len(np.unique(np.asarray(action))) > 1


def test_tasks_without_masks_call_act_as_before():
    """On a task without masks neither the loop nor the evaluation passes the keyword (an
    ``act`` without it still traces) and replay stores no mask."""
    env = envs.make("gymnax/CartPole-v1")

    def act(state, obs, is_first, carry, key, explore):
        return jnp.zeros(obs.shape[:1], jnp.int32), carry, {}

    agent = dataclasses.replace(last_legal_agent(2), act=act)
    fns = make_loop(env, agent, num_envs=2, iterations=2, prefill_iterations=1, eval_envs=2)
    state = jax.eval_shape(fns.init, jax.random.PRNGKey(0))  # traced, not run
    assert state.buffer.experience.legal_action_mask is None
    after, _ = jax.eval_shape(fns.train, state)
    assert after.buffer.experience.legal_action_mask is None
    jax.eval_shape(fns.evaluate, state, jax.random.PRNGKey(1))


def adversarial_model(num_actions: int, batch: int):
    """A root and model whose prior and rewards all point to action 0, which the test makes
    illegal: an unmasked search always takes it."""
    logits = jnp.zeros((batch, num_actions)).at[:, 0].set(5.0)
    root = mctx.RootFnOutput(prior_logits=logits, value=jnp.zeros((batch,)),
                             embedding=jnp.zeros((batch, 1)))

    def recurrent_fn(params, key, action, embedding):
        out = mctx.RecurrentFnOutput(reward=(action == 0).astype(jnp.float32),
                                     discount=jnp.full((batch,), 0.9), prior_logits=logits,
                                     value=jnp.zeros((batch,)))
        return out, embedding

    return root, recurrent_fn


@pytest.mark.parametrize("unmasked", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["masked", "unmasked"])
def test_search_never_picks_a_masked_root_action(unmasked):
    """MuZero's greedy search and Gumbel MuZero's exploring one: with the mask every action is
    legal and the search policy puts no mass on illegal ones; without it (slow: it only shows
    that the model is adversarial) the search mostly takes the illegal action 0. The slow test
    below runs both searches both ways on a real game."""
    batch, num_actions = 16, 6
    root, recurrent_fn = adversarial_model(num_actions, batch)
    mask = jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (batch, num_actions))
    mask = mask.at[:, 0].set(False).at[:, 5].set(True)
    configs = {search: dataclasses.replace(muzero.PRESETS["tiny"], search=search,
                                           num_simulations=8)
               for search in ("muzero", "gumbel")}

    runs = {"muzero greedy": ("muzero", False), "gumbel explore": ("gumbel", True)}
    if unmasked:
        runs = {name + " unmasked": run for name, run in runs.items()}

    @jax.jit
    def searches(key):
        return {name: acting.search_from_root(configs[search], root, recurrent_fn, (), key,
                                              explore=explore,
                                              legal_action_mask=None if unmasked else mask)
                for name, (search, explore) in runs.items()}

    for name, out in searches(jax.random.PRNGKey(1)).items():
        if unmasked:
            assert (np.asarray(out.action) == 0).mean() > 0.5, name
            continue
        legal = np.take_along_axis(np.asarray(mask), np.asarray(out.action)[:, None], 1)
        assert legal.all(), name
        assert (np.asarray(out.policy)[~np.asarray(mask)] < 1e-6).all(), name


@pytest.mark.slow
@pytest.mark.parametrize("presets", [muzero.PRESETS, gumbel_muzero.PRESETS],
                         ids=["muzero", "gumbel"])
def test_muzero_plays_only_legal_moves_through_the_loop(presets):
    """MuZero and Gumbel MuZero (tiny) on pgx/tic_tac_toe: prefill, acting with updates and
    the greedy evaluation never play an illegal move; replay stores the masks; an all-True
    mask leaves the greedy action unchanged."""
    env = envs.make("pgx/tic_tac_toe")
    agent = muzero.make(presets["tiny"], env, NUM_ENVS)
    fns, state = run_and_check_replay(env, agent, iterations=4,
                                      prefill_iterations=agent.schedule.prefill_steps // NUM_ENVS)
    metrics = jax.jit(fns.evaluate)(state, jax.random.PRNGKey(1))
    assert -1.0 <= metrics["eval_return_min"] <= metrics["eval_return_max"] <= 1.0

    out = jax.jit(lambda key: rollout.play(
        env, rollout.agent_policy(env, agent.act, state.agent), key, num_envs=NUM_ENVS,
        length=9, carry=agent.initial_carry(NUM_ENVS), auto_reset=True))(jax.random.PRNGKey(2))
    assert_legal(out.obs, out.action, out.reward)
    policy = np.asarray(out.extras["search_policy"])
    assert (policy[~empty_squares(out.obs)] < 1e-6).all()

    obs = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(3), NUM_ENVS)).obs
    args = (state.agent, obs, jnp.ones((NUM_ENVS,), bool), agent.initial_carry(NUM_ENVS),
            jax.random.PRNGKey(4), False)
    act = jax.jit(agent.act, static_argnums=5)
    plain, _, plain_extras = act(*args)
    masked, _, masked_extras = act(*args, legal_action_mask=jnp.ones((NUM_ENVS, 9), bool))
    np.testing.assert_array_equal(plain, masked)
    np.testing.assert_allclose(plain_extras["search_policy"], masked_extras["search_policy"],
                               atol=1e-6)
