"""A MuZero run on pgx/tic_tac_toe scored against the solved game.

    python -m experiments.tic_tac_toe_exact --logdir RUN [--seed-index 0] [--fit-replay-steps N] \
        [--json PATH]

Tic-tac-toe is small enough to solve: its 4,520 non-terminal positions reachable from the
empty board (5,478 legal positions less the 958 where the game is over) each get their exact
minimax value, and every legal move its exact value for the mover. Win rates against a random
player or an MCTS move by 10-20 points between evaluations of 32 games; these measures of a
trained model over every position do not:

* ``search_optimal``: share of positions where the greedy search (the agent's evaluation
  move, with the run's number of simulations) picks a move of the best exact value;
  ``prior_optimal`` the same for the policy head's most likely legal move; ``losing_move``,
  among the positions that are not lost, the share where the search's move loses;
  ``random_optimal`` is what a uniformly random legal move scores (the
  share of optimal moves among the legal ones, averaged over the positions);
* ``win_kept``: among positions with a move that completes a line at once, the share where the
  search's move still wins (that move, or another that forces a win);
* ``reward_recall`` / ``reward_false_win``: over every (position, legal move), the share of
  line-completing moves whose predicted reward exceeds 1/2, and of the other moves whose
  predicted reward does; ``reward_recall_by_marks`` splits the recall by the number of marks on
  the board before the move (4 = the earliest possible win);
* ``value_mae``: mean absolute error of the value head against the exact values;
* the replay's coverage (the run's own replay buffer, the positions its self-play reached):
  ``replay_transitions`` and ``replay_line_completions`` stored (each counted as often as it
  was stored), ``replay_reward_recall`` / ``replay_reward_false_win`` the reward measures over
  those stored transitions (so weighted by how often each was played), and, over the solved
  game's line-completing (position, move) pairs, ``reward_recall_in_replay`` on the pairs the
  replay holds at least once (``distinct_line_completions_in_replay`` of them) and
  ``reward_recall_not_in_replay`` on the others: next to ``reward_recall``, how much of the
  model's error is a misfit of its own data and how much a failure to generalise off it (None
  where there is no such transition or pair).

``--fit-replay-steps N`` separates the data from the training: a fresh network of the run's
architecture is fitted for N Adam steps (batch 64, learning rate 1e-3) to the reward of the
transitions in the run's replay buffer alone (one-step predictions, no other loss) and its
``reward_recall`` is reported next to the run's.

A user mistake prints one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from experiments import cli, watch
from experiments.cli import UsageError

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
EMPTY, MOVER, OPPONENT = 0, 1, 2
Board = Tuple[int, ...]  # 9 cells, row-major, from the player to move's view
AGENTS = ("muzero", "gumbel_muzero")


def has_line(board: Board, who: int) -> bool:
    return any(all(board[i] == who for i in line) for line in LINES)


def swap_sides(board: Board) -> Board:
    """The board from the other player's view."""
    return tuple({EMPTY: EMPTY, MOVER: OPPONENT, OPPONENT: MOVER}[x] for x in board)


def play(board: Board, move: int) -> Board:
    return board[:move] + (MOVER,) + board[move + 1:]


def move_value(board: Board, move: int) -> int:
    """The exact value of ``move`` for the player to move: +1 win, 0 draw, -1 loss."""
    after = play(board, move)
    if has_line(after, MOVER):
        return 1
    if EMPTY not in after:
        return 0
    return -value(swap_sides(after))


@functools.lru_cache(maxsize=None)
def value(board: Board) -> int:
    """The exact (minimax) value of a non-terminal position for the player to move."""
    return max(move_value(board, m) for m in range(9) if board[m] == EMPTY)


def positions() -> List[Board]:
    """Every non-terminal position reachable from the empty board, the player to move's view."""
    seen, stack = set(), [(EMPTY,) * 9]
    while stack:
        board = stack.pop()
        if board in seen:
            continue
        seen.add(board)
        for m in range(9):
            if board[m] == EMPTY:
                after = play(board, m)
                if not has_line(after, MOVER) and EMPTY in after:
                    stack.append(swap_sides(after))
    return sorted(seen)


def observation(board: Board) -> np.ndarray:
    """pgx's observation ``[3, 3, 2]``: plane 0 the mover's marks, plane 1 the opponent's."""
    obs = np.zeros((3, 3, 2), np.float32)
    for i, x in enumerate(board):
        if x != EMPTY:
            obs[i // 3, i % 3, x - 1] = 1.0
    return obs


class Table:
    """The solved game as arrays over the positions ``P`` (and moves)."""

    def __init__(self):
        self.boards = positions()
        self.obs = np.stack([observation(b) for b in self.boards])  # [P, 3, 3, 2]
        self.legal = np.array([[x == EMPTY for x in b] for b in self.boards])  # [P, 9]
        self.value = np.array([value(b) for b in self.boards], np.float32)  # [P]
        self.move_values = np.array([[move_value(b, m) if b[m] == EMPTY else np.nan
                                      for m in range(9)] for b in self.boards])  # [P, 9]
        self.wins_now = np.array([[b[m] == EMPTY and has_line(play(b, m), MOVER)
                                   for m in range(9)] for b in self.boards])  # [P, 9]
        self.marks = np.array([sum(x != EMPTY for x in b) for b in self.boards])  # [P]


def _reward_scores(predicted: np.ndarray, table: Table) -> Dict:
    """Recall and false-win rate of rewards ``predicted [P, 9]`` over the legal moves."""
    wins, legal = table.wins_now, table.legal
    hit = predicted > 0.5
    marks = np.broadcast_to(table.marks[:, None], wins.shape)
    return {"reward_recall": float(hit[wins].mean()),
            "reward_false_win": float(hit[legal & ~wins].mean()),
            "reward_recall_by_marks": {int(m): float(hit[wins & (marks == m)].mean())
                                       for m in np.unique(marks[wins])}}


def board_of(obs: np.ndarray) -> Board:
    """The inverse of :func:`observation`."""
    cells = np.asarray(obs).reshape(9, 2)
    return tuple(MOVER if c[0] else (OPPONENT if c[1] else EMPTY) for c in cells)


def table_rewards(model, params, table: Table) -> np.ndarray:
    """The model's predicted reward ``[P, 9]`` of every move in every position."""
    import jax.numpy as jnp

    s = model.represent(params, jnp.asarray(table.obs))
    return np.stack([np.asarray(model.reward_support.decode(
        model.dynamics(params, s, jnp.full((len(table.boards),), m, jnp.int32))[0]))
        for m in range(9)], axis=1)


def score_model(model, params, search, table: Table) -> Dict:
    """The module doc's measures of a MuZero model; ``search(obs, legal) -> actions [P]``."""
    import jax.numpy as jnp

    obs, legal = jnp.asarray(table.obs), jnp.asarray(table.legal)
    s = model.represent(params, obs)
    policy_logits, value_logits = model.predict(params, s)
    predicted_value = np.asarray(model.value_support.decode(value_logits))
    rewards = table_rewards(model, params, table)  # [P, 9]
    rows = np.arange(len(table.boards))
    best = np.nanmax(table.move_values, axis=1)
    chosen = np.asarray(search(obs, legal))
    prior = np.asarray(jnp.argmax(jnp.where(legal, policy_logits, -jnp.inf), axis=-1))
    can_win = table.wins_now.any(axis=1)
    optimal = table.move_values == best[:, None]
    return {"positions": len(table.boards),
            "random_optimal": float((optimal.sum(1) / table.legal.sum(1)).mean()),
            "search_optimal": float((table.move_values[rows, chosen] == best).mean()),
            "prior_optimal": float((table.move_values[rows, prior] == best).mean()),
            "losing_move": float((table.move_values[rows, chosen] == -1)[best > -1].mean()),
            "win_kept": float((table.move_values[rows, chosen] == 1)[can_win].mean()),
            "value_mae": float(np.abs(predicted_value - table.value).mean()),
            **_reward_scores(rewards, table)}


def replay_transitions(state) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(obs [N, 3, 3, 2], actions [N], rewards [N])`` of every transition in a run's replay."""
    from core import replay

    data, mask = replay.all_steps(state.buffer)
    stored = np.asarray(mask) > 0
    return (np.asarray(data.obs)[stored], np.asarray(data.action)[stored],
            np.asarray(data.reward)[stored])


def replay_reward_scores(model, params, obs: np.ndarray, actions: np.ndarray,
                         rewards: np.ndarray, table: Table, chunk: int = 4096) -> Dict:
    """The replay measures of the module doc for replay transitions ``obs [N, 3, 3, 2]``,
    ``actions [N]``, ``rewards [N]`` (a stored reward of 1 is a line completion)."""
    import jax.numpy as jnp

    def share(hit, where):
        return float(hit[where].mean()) if where.any() else None

    wins = rewards == 1
    predicted = np.concatenate([np.asarray(model.reward_support.decode(model.dynamics(
        params, model.represent(params, jnp.asarray(obs[i:i + chunk])),
        jnp.asarray(actions[i:i + chunk]))[0])) for i in range(0, len(rewards), chunk)]
        + [np.zeros(0, np.float32)])
    index = {board: i for i, board in enumerate(table.boards)}
    seen = np.zeros(table.wins_now.shape, bool)
    for o, a in zip(obs, actions):
        row = index.get(board_of(o))
        if row is not None:
            seen[row, int(a)] = True
    table_hit = table_rewards(model, params, table) > 0.5
    return {"replay_transitions": int(len(rewards)), "replay_line_completions": int(wins.sum()),
            "replay_reward_recall": share(predicted > 0.5, wins),
            "replay_reward_false_win": share(predicted > 0.5, ~wins),
            "distinct_line_completions_in_replay": int((seen & table.wins_now).sum()),
            "reward_recall_in_replay": share(table_hit, seen & table.wins_now),
            "reward_recall_not_in_replay": share(table_hit, ~seen & table.wins_now)}


def fit_replay_rewards(model, state, steps: int, table: Table, seed: int = 0) -> Dict:
    """A fresh network fitted to the rewards of the replay's transitions (module doc)."""
    import jax
    import optax

    obs, actions, rewards = replay_transitions(state)
    params = model.init(jax.random.PRNGKey(seed), (3, 3, 2))
    opt = optax.adam(1e-3)

    def loss(p, o, a, r):
        logits, _ = model.dynamics(p, model.represent(p, o), a)
        return model.reward_support.cross_entropy(logits, r).mean()

    @jax.jit
    def step(p, opt_state, o, a, r):
        grads = jax.grad(loss)(p, o, a, r)
        updates, opt_state = opt.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    opt_state = opt.init(params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(rewards), 64)
        params, opt_state = step(params, opt_state, obs[idx], actions[idx], rewards[idx])
    predicted = table_rewards(model, params, table)
    return {"steps": steps, "transitions": int(len(rewards)),
            "line_completions": int((rewards == 1).sum()), **_reward_scores(predicted, table)}


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m experiments.tic_tac_toe_exact", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", required=True,
                   help="log directory of a muzero or gumbel_muzero run on pgx/tic_tac_toe")
    p.add_argument("--seed-index", type=int, default=0, help="which seed of the run")
    p.add_argument("--fit-replay-steps", type=int, default=0,
                   help="also fit a fresh network's rewards to the run's replay for N steps")
    p.add_argument("--json", default=None, help="write the result to this JSON file")
    p.add_argument(cli.DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of a usage error (or set {cli.DEBUG_ENV}=1)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parser().parse_args(argv)
    record = watch.read_record(args.logdir)
    if record["agent"] not in AGENTS or record.get("env") != "pgx/tic_tac_toe":
        raise UsageError(f"{args.logdir} is a run of {record['agent']!r} on "
                         f"{record.get('env')!r}; experiments.tic_tac_toe_exact takes runs of "
                         f"{' or '.join(AGENTS)} on pgx/tic_tac_toe")
    if args.fit_replay_steps < 0:
        raise UsageError(f"--fit-replay-steps must be >= 0, got {args.fit_replay_steps}")
    cli.check_output_file(args.json, "--json")
    (seed_index,) = watch.seed_indices(record, args.seed_index)
    env, cfg, state, record = watch.load_seed(args.logdir, seed_index)

    import jax

    from agents.muzero import acting
    from agents.muzero.agent import build_model, search_discount
    from world_models.muzero import make_model_fns

    model = build_model(cfg, env)
    params = state.agent.params
    root_fn, recurrent_fn = make_model_fns(model, search_discount(cfg, env.spec.num_players))
    search = jax.jit(lambda obs, legal: acting.search(
        cfg, root_fn, recurrent_fn, params, obs, jax.random.PRNGKey(0), explore=False,
        legal_action_mask=legal).action)
    table = Table()
    result = {"logdir": args.logdir, "agent": record["agent"], "seed_index": seed_index,
              "env_steps": int(np.asarray(state.env_steps)),
              **score_model(model, params, search, table),
              **replay_reward_scores(model, params, *replay_transitions(state), table)}
    if args.fit_replay_steps:
        result["fit_replay"] = fit_replay_rewards(model, state, args.fit_replay_steps, table)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    cli.run(main)
