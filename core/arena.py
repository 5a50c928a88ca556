"""Matches on two-player games: an agent against fixed opponents, for evaluation.

Self-play makes an agent's own return meaningless on a two-player zero-sum game (it plays both
sides), so an agent is scored by playing against opponents that do not learn:

* :func:`random_opponent`: a uniformly random legal move;
* :func:`mcts_opponent`: Monte-Carlo tree search (``mctx.muzero_policy``) that plans with the
  game's true step function, a uniform prior over the legal moves (illegal moves masked at
  every node) and, as the value of each new leaf, the outcome of one random playout from it
  (the classic MCTS of game-playing programs before learned evaluations).

:func:`play_match` plays ``num_games`` games at once, the agent moving first in the games of
even index and second in the others (pgx draws which player id moves first), and scores each
from the agent's side: +1 win, 0 draw, -1 loss. Games run to their end with no automatic
reset (pgx's board games always end within their time limit). Everything is jittable and
vmappable, so the training loop evaluates inside its compiled program
(:func:`core.loop.make_loop`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import mctx

from core import rollout
from envs.api import EnvState, Environment, batch_reset

Array = jax.Array

MASKED_LOGIT = -1e9  # prior logit of an illegal move (probability 0 after a softmax)


def _check_two_player(env: Environment) -> None:
    if env.spec.num_players != 2:
        raise ValueError(f"{env.spec.env_id} is not a two-player game (num_players="
                         f"{env.spec.num_players}); matches need EnvSpec.num_players == 2.")


def random_opponent(env: Environment) -> rollout.Policy:
    """A :data:`core.rollout.Policy` playing a uniformly random legal move."""
    _check_two_player(env)

    def policy(env_state: EnvState, is_first, carry, key):
        del is_first
        masks = jax.vmap(env.legal_action_mask)(env_state)
        keys = jax.random.split(key, masks.shape[0])
        return jax.vmap(env.spec.sample_action)(keys, masks), carry, ()

    return policy


def playout_value(env: Environment, inner: Any, key: Array) -> Array:
    """One game state (no batch axis) -> the outcome of one uniformly random playout from it,
    for the player to move there (+1 win, -1 loss, 0 draw in pgx's games; a finished game
    gives 0, as pgx's step leaves it unchanged with zero rewards). The playout runs
    ``max_episode_steps`` plies at most (a bound no pgx game reaches)."""
    player = env._player(inner)

    def ply(carry, k):
        state, done, value = carry
        move_key, step_key = jax.random.split(k)
        mover = env._player(state)
        action = env.spec.sample_action(move_key, env._mask(state))
        state, _, reward, terminated = env.adapter_step(state, action, step_key)
        gain = jnp.where(mover == player, reward, -reward)
        value = value + jnp.where(done, 0.0, gain)
        return (state, done | terminated, value), None

    keys = jax.random.split(key, env.spec.max_episode_steps)
    init = (inner, jnp.zeros((), bool), jnp.zeros((), jnp.float32))
    (_, _, value), _ = jax.lax.scan(ply, init, keys)
    return value


class _Node(NamedTuple):
    inner: Any  # game states, leaves [B, ...]
    done: Array  # [B] bool: the game ended on the path to this node


def mcts_opponent(env: Environment, num_simulations: int) -> rollout.Policy:
    """A :data:`core.rollout.Policy`: the true-model MCTS of the module doc with
    ``num_simulations`` simulations per move, playing the most visited move."""
    _check_two_player(env)
    if num_simulations < 1:
        raise ValueError(f"mcts_opponent needs num_simulations >= 1, got {num_simulations}")

    def prior(inner):
        return jnp.where(jax.vmap(env._mask)(inner), 0.0, MASKED_LOGIT)

    def recurrent_fn(params, key, action, node: _Node):
        del params
        step_key, playout_key = jax.random.split(key)
        num = action.shape[0]
        mover = jax.vmap(env._player)(node.inner)
        inner, _, reward, terminated = jax.vmap(env.adapter_step)(
            node.inner, action, jax.random.split(step_key, num))
        done = node.done | terminated
        same_player = jax.vmap(env._player)(inner) == mover
        values = jax.vmap(lambda s, k: playout_value(env, s, k))(
            inner, jax.random.split(playout_key, num))
        out = mctx.RecurrentFnOutput(
            reward=jnp.where(node.done, 0.0, reward).astype(jnp.float32),
            discount=jnp.where(done, 0.0, jnp.where(same_player, 1.0, -1.0)),
            prior_logits=prior(inner), value=jnp.where(done, 0.0, values))
        return out, _Node(inner, done)

    def policy(env_state: EnvState, is_first, carry, key):
        del is_first
        root_key, search_key = jax.random.split(key)
        inner = env_state.inner
        num = env_state.obs.shape[0]
        values = jax.vmap(lambda s, k: playout_value(env, s, k))(
            inner, jax.random.split(root_key, num))
        root = mctx.RootFnOutput(prior_logits=prior(inner), value=values,
                                 embedding=_Node(inner, jnp.zeros((num,), bool)))
        out = mctx.muzero_policy((), search_key, root, recurrent_fn, num_simulations,
                                 invalid_actions=~jax.vmap(env._mask)(inner),
                                 dirichlet_fraction=0.0, temperature=0.0)
        return out.action.astype(jnp.int32), carry, ()

    return policy


def play_match(env: Environment, agent: rollout.Policy, opponent: rollout.Policy, key: Array,
               *, num_games: int, agent_carry: Any = ()) -> Array:
    """``num_games`` games of ``agent`` against ``opponent`` -> ``[num_games]`` outcomes from
    the agent's side (+1 win, 0 draw, -1 loss). The agent moves first in the games of even
    index ``g`` and second in the others.

    Both policies are called on every ply of every game (one batch), and the move of the
    player to move is kept; ``agent_carry`` is the agent's initial carry (leaves
    ``[num_games, ...]``), the opponent's carry is unused."""
    _check_two_player(env)
    reset_key, play_key = jax.random.split(key)
    start = batch_reset(env, reset_key, num_games)
    first = jax.vmap(env.current_player)(start)
    seat = jnp.where(jnp.arange(num_games) % 2 == 0, first, 1 - first)  # the agent's player id

    def policy(env_state, is_first, carry, k):
        agent_key, opponent_key = jax.random.split(k)
        mine, carry, _ = agent(env_state, is_first, carry, agent_key)
        theirs, _, _ = opponent(env_state, is_first, (), opponent_key)
        mover = jax.vmap(env.current_player)(env_state)
        return jnp.where(mover == seat, mine, theirs), carry, ()

    out = rollout.play(env, policy, play_key, num_envs=num_games,
                       length=env.spec.max_episode_steps, carry=agent_carry, start=start,
                       record=False)
    return jnp.where(seat == 0, out.returns, -out.returns)  # returns are player 0's


def match_metrics(outcomes: Array, name: str) -> Dict[str, Array]:
    """``win_rate_<name>``, ``draw_rate_<name>`` and ``loss_rate_<name>`` of ``outcomes``."""
    return {f"win_rate_{name}": jnp.mean(outcomes > 0),
            f"draw_rate_{name}": jnp.mean(outcomes == 0),
            f"loss_rate_{name}": jnp.mean(outcomes < 0)}


def evaluate(env: Environment, agent: rollout.Policy, initial_carry: Callable[[int], Any],
             key: Array, *, num_games: int, mcts_simulations: int) -> Dict[str, Array]:
    """The agent against the random opponent and (``mcts_simulations > 0``) the true-model
    MCTS, ``num_games`` games each: ``eval_win_rate_random`` ... ``eval_loss_rate_mcts``, and
    ``eval_return_*``, the statistics of the outcomes against the random opponent."""
    random_key, mcts_key = jax.random.split(key)
    outcomes = play_match(env, agent, random_opponent(env), random_key, num_games=num_games,
                          agent_carry=initial_carry(num_games))
    metrics = {"eval_return_mean": outcomes.mean(), "eval_return_std": outcomes.std(),
               "eval_return_min": outcomes.min(), "eval_return_max": outcomes.max()}
    metrics.update({f"eval_{k}": v for k, v in match_metrics(outcomes, "random").items()})
    if mcts_simulations > 0:
        outcomes = play_match(env, agent, mcts_opponent(env, mcts_simulations), mcts_key,
                              num_games=num_games, agent_carry=initial_carry(num_games))
        metrics.update({f"eval_{k}": v for k, v in match_metrics(outcomes, "mcts").items()})
    return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
