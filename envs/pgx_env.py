"""Board games and 2048 from pgx as ``pgx/<name>``.

pgx (``pgx.make(name)``) steps one game state: ``env.init(key)`` and
``env.step(state, action, key)``, with the player to move in ``state.current_player``, the
legal actions of the next move in ``state.legal_action_mask``, the reward of every player in
``state.rewards`` and no automatic reset. The adapter keeps pgx's ``State`` as its state and
reports, through :class:`envs.api.Environment`:

* the observation ``state.observation`` (boolean planes ``[H, W, C]`` as seen by the player to
  move) as float32 ``"image"`` observations in ``(0, 1)``;
* the legal-action mask (``legal_action_mask_fn``) and, for the two-player games, the player to
  move (``current_player_fn``) and where each move acts on the board (``action_layout``: a
  cell, or connect four's column), and a reflection of the board as its symmetry
  (``--mirror-augmentation``: the left-right mirror, othello's transpose);
* the reward of the player who moved, ``state.rewards[mover]``: in the board games +1 for the
  move that wins, -1 for a move that loses (an illegal move loses at once, pgx's rule), 0
  otherwise; in 2048 the sum of the tiles merged by the move. Two-player games are zero-sum
  (``rewards`` sum to 0), so ``episode_return`` is player 0's outcome (+1, -1 or 0).

pgx picks which player moves first at random on ``init`` (``current_player`` is a player id,
not a colour), so player 0 plays first in about half of the games.

Time limits. pgx never sets ``state.truncated`` in 2.6.0: every game ends by termination.
``go_9x9`` follows AlphaGo and ends after ``9 * 9 * 2 = 162`` plies, scoring the board; that is
a rule of the game, hence a termination with its outcome. The board games' time limit is a
bound no game exceeds (tic-tac-toe 9 plies, connect four 42, othello 121: 60 placements with
at most one pass before each and a final double pass, go_9x9 162), so it never truncates a
game. 2048 has no end but a full, stuck board; its time limit (10,000 moves by default) truncates
as any time limit does.
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax.numpy as jnp
import numpy as np

from envs.api import EnvSpec, Environment, Symmetry

# name -> where a move acts on the board (EnvSpec.action_layout): a cell (othello's and go's
# last action is the pass), or a column.
ACTION_LAYOUT = {"tic_tac_toe": "cells", "connect_four": "columns", "othello": "cells",
                 "go_9x9": "cells"}
# name -> moves after which every game has ended (a termination), or 2048's default time limit.
GAME_LENGTH = {"tic_tac_toe": 9, "connect_four": 42, "othello": 121, "go_9x9": 162}
DEFAULT_2048_LIMIT = 10_000
NAMES = tuple(GAME_LENGTH) + ("2048",)


def board_symmetry(name: str, obs_shape: Tuple[int, ...],
                   num_actions: int) -> Optional[Symmetry]:
    """A reflection of a board game's board under which its rules and its start are the same:
    the left-right mirror (columns reversed; a cell's or a column's move moved with them, a
    pass kept), or for othello, whose start is not left-right symmetric, the transpose (rows
    and columns swapped). None for 2048, which declares none."""
    layout = ACTION_LAYOUT.get(name)
    if layout is None:
        return None
    height, width = obs_shape[:2]
    if name == "othello":
        permutation = tuple((a % width) * width + a // width if a < height * width else a
                            for a in range(num_actions))
        return Symmetry(obs=lambda o: jnp.swapaxes(o, -3, -2), action_permutation=permutation)
    if layout == "columns":
        permutation = tuple(width - 1 - a for a in range(num_actions))
    else:
        permutation = tuple((a // width) * width + width - 1 - a % width
                            if a < height * width else a for a in range(num_actions))
    return Symmetry(obs=lambda o: o[..., ::-1, :], action_permutation=permutation)


def make(name: str, *, max_episode_steps: Optional[int] = None) -> Environment:
    """Builds ``pgx/<name>``.

    Args:
      name: a game from :data:`NAMES`, e.g. ``"connect_four"``.
      max_episode_steps: time limit in moves (plies); defaults to a bound no game reaches for
        the board games (:data:`GAME_LENGTH`), 10,000 for 2048. A shorter limit truncates games.
    """
    if name not in NAMES:
        raise ValueError(f"Unknown pgx environment {name!r}; known: {', '.join(NAMES)}")
    import jax
    import pgx  # lazy: listing ids must not pay for importing pgx

    game = pgx.make(name)
    num_players = int(game.num_players)
    abstract = jax.eval_shape(game.init, jax.random.PRNGKey(0))  # traced, not compiled
    obs_shape = tuple(abstract.observation.shape)
    num_actions = int(abstract.legal_action_mask.shape[0])
    default_limit = GAME_LENGTH.get(name, DEFAULT_2048_LIMIT)
    limit = int(default_limit if max_episode_steps is None else max_episode_steps)
    if limit < 1:
        raise ValueError(f"pgx/{name}: max_episode_steps must be >= 1, got {limit}")

    def reset(key):
        state = game.init(key)
        return state, jnp.asarray(state.observation, jnp.float32)

    def step(state, action, key):
        mover = state.current_player
        next_state = game.step(state, jnp.asarray(action, jnp.int32), key)
        return (next_state, jnp.asarray(next_state.observation, jnp.float32),
                next_state.rewards[mover].astype(jnp.float32), next_state.terminated)

    spec = EnvSpec(env_id=f"pgx/{name}", obs_shape=obs_shape, obs_dtype=np.float32,
                   obs_kind="image", obs_range=(0.0, 1.0), discrete=True,
                   num_actions=num_actions, action_shape=(), max_episode_steps=limit,
                   num_players=num_players, has_action_mask=True,
                   action_layout=ACTION_LAYOUT.get(name))
    return Environment(
        spec=spec, adapter_reset=reset, adapter_step=step,
        legal_action_mask_fn=lambda state: state.legal_action_mask,
        current_player_fn=(lambda state: state.current_player) if num_players == 2 else None,
        symmetry=board_symmetry(name, obs_shape, num_actions))
