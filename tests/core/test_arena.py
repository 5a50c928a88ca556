"""core.arena: matches on pgx/tic_tac_toe against the random and the true-model MCTS opponents."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from core import arena

NUM_GAMES = 32


@functools.lru_cache(maxsize=None)
def tic_tac_toe():
    return envs.make("pgx/tic_tac_toe")


def test_mcts_takes_the_winning_move_and_blocks():
    """Planning with the true game (sign of the two-player backup included): with two in a row
    the MCTS completes the row; facing the opponent's two in a row (and none of its own) it
    blocks. Squares are numbered row by row, 0..8."""
    env = tic_tac_toe()
    state = env.reset(jax.random.PRNGKey(0))

    def after(moves):
        s = state
        for m in moves:
            s, _ = env.step(s, jnp.int32(m), jax.random.PRNGKey(0))
        return s

    # X: 0, 1; O: 3, 4 -> X to move wins with 2. X: 0, 8; O: 3, 4 -> X to move must block 5.
    positions = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]),
                                       after([0, 3, 1, 4]), after([0, 3, 8, 4]))
    policy = jax.jit(jax.vmap(arena.mcts_opponent(env, 64), in_axes=(None, None, None, 0)))
    actions, _, _ = policy(positions, None, (), jax.random.split(jax.random.PRNGKey(0), 3))
    np.testing.assert_array_equal(actions, [[2, 5]] * 3)


@pytest.fixture(scope="module")
def matches():
    env = tic_tac_toe()
    rand = arena.random_opponent(env)
    mcts = arena.mcts_opponent(env, 16)

    @jax.jit
    def play(key):
        k1, k2 = jax.random.split(key)
        return (arena.play_match(env, mcts, rand, k1, num_games=NUM_GAMES),
                arena.play_match(env, rand, mcts, k2, num_games=NUM_GAMES))

    return [np.asarray(x) for x in play(jax.random.PRNGKey(0))]


@pytest.mark.slow
def test_outcomes_are_the_agents_in_both_seats(matches):
    """The 16-simulation MCTS beats the random player moving first (even games) or second (odd
    games) and mostly wins when it is the opponent; outcomes are +1 / 0 / -1."""
    mcts_first, mcts_second = matches
    for outcomes in matches:
        assert set(np.unique(outcomes)) <= {-1.0, 0.0, 1.0}
    for seat in (0, 1):
        assert (mcts_first[seat::2] > 0).mean() >= 0.5, mcts_first
        assert (mcts_first[seat::2] < 0).mean() <= 0.25, mcts_first
    np.testing.assert_array_less(mcts_second.mean(), -0.3)


def lowest_legal(env):
    """A deterministic player: the lowest-numbered legal square."""
    def policy(env_state, is_first, carry, key):
        masks = jax.vmap(env.legal_action_mask)(env_state)
        return jnp.argmax(masks, axis=-1).astype(jnp.int32), carry, ()
    return policy


def test_the_agent_moves_first_in_the_even_games():
    """The same deterministic player on both sides: in tic-tac-toe whoever moves first takes
    squares 0, 2, 4, 6 and wins on the 2-4-6 diagonal, so the agent wins exactly the games it
    opens (even index) and loses the others, whichever player id pgx lets open."""
    env = tic_tac_toe()
    player = lowest_legal(env)
    outcomes = jax.jit(lambda k: arena.play_match(env, player, player, k, num_games=8))(
        jax.random.PRNGKey(3))
    np.testing.assert_array_equal(outcomes, [1, -1] * 4)


def test_evaluate_reports_win_draw_and_loss_rates():
    env = tic_tac_toe()
    metrics = jax.jit(lambda k: arena.evaluate(env, arena.random_opponent(env),
                                               lambda n: (), k, num_games=8,
                                               mcts_simulations=0))(jax.random.PRNGKey(1))
    assert "eval_win_rate_mcts" not in metrics
    rates = [float(metrics[f"eval_{r}_rate_random"]) for r in ("win", "draw", "loss")]
    assert abs(sum(rates) - 1.0) < 1e-6
    assert -1.0 <= float(metrics["eval_return_mean"]) <= 1.0


def test_matches_need_two_players():
    with pytest.raises(ValueError, match="not a two-player game"):
        arena.random_opponent(envs.make("linear/scalar_a1.1"))
