"""The solved tic-tac-toe of experiments.tic_tac_toe_exact, and its scores of a MuZero run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from experiments import tic_tac_toe_exact as exact
from experiments.cli import UsageError

E, M, X = exact.EMPTY, exact.MOVER, exact.OPPONENT  # X: the opponent


def test_the_solved_game():
    boards = exact.positions()
    # 5,478 legal positions, 958 of them with the game over
    assert len(boards) == 4_520 and len(set(boards)) == 4_520
    empty = (E,) * 9
    assert exact.value(empty) == 0  # a draw with best play
    assert all(exact.move_value(empty, m) == 0 for m in range(9))  # every opening draws
    # the mover has 0 and 1 and the opponent 3 and 4: 2 wins at once, anything else but 5
    # loses at once, and 5 blocks but leaves 2 open to be blocked in turn
    board = (M, M, E, X, X, E, E, E, E)
    assert exact.value(board) == 1 and exact.move_value(board, 2) == 1
    assert exact.move_value(board, 6) == -1
    # must block: the opponent has 0 and 1, the mover 4 and 8; blocking at 2 also makes two
    # threats (2-4-6 and 2-5-8), so it wins; any other move loses
    block = (X, X, E, E, M, E, E, E, M)
    assert {m: exact.move_value(block, m) for m in (2, 3, 5)} == {2: 1, 3: -1, 5: -1}
    obs = exact.observation(board)
    assert obs.shape == (3, 3, 2) and obs[0, 0, 0] == 1 and obs[1, 0, 1] == 1
    assert obs.sum() == 4


class _Oracle:
    """A stand-in model whose reward is the exact line completion and whose value is exact."""

    class _Support:
        @staticmethod
        def decode(x):
            return x

    value_support = reward_support = _Support()

    def represent(self, params, obs):
        return np.asarray(obs)

    def predict(self, params, s):
        table = params
        index = [table.index[exact_board(o)] for o in s]
        return (np.where(table.legal[index], np.nan_to_num(table.move_values[index], nan=-9), -9),
                table.value[index])

    def dynamics(self, params, s, action):
        table = params
        index = [table.index[exact_board(o)] for o in s]
        return table.wins_now[index, np.asarray(action)].astype(np.float32), None


def exact_board(obs):
    cells = np.asarray(obs).reshape(9, 2)
    return tuple(int(M if c[0] else (X if c[1] else E)) for c in cells)


def test_scores_of_a_perfect_and_of_a_wrong_model():
    table = exact.Table()
    table.index = {b: i for i, b in enumerate(table.boards)}
    best = np.nanargmax(table.move_values, axis=1)
    perfect = exact.score_model(_Oracle(), table, lambda obs, legal: best, table)
    assert perfect["search_optimal"] == perfect["prior_optimal"] == 1.0
    assert perfect["losing_move"] == 0.0 and perfect["win_kept"] == 1.0
    assert perfect["reward_recall"] == 1.0 and perfect["reward_false_win"] == 0.0
    assert perfect["value_mae"] == 0.0 and perfect["positions"] == 4_520
    assert 0.5 < perfect["random_optimal"] < 0.6
    # the first legal move everywhere (the counts are exact: 2,651 optimal of 4,520)
    first = np.argmax(table.legal, axis=1)
    naive = exact.score_model(_Oracle(), table, lambda obs, legal: first, table)
    assert naive["search_optimal"] == pytest.approx(2_651 / 4_520)
    assert 0.1 < naive["losing_move"] < 0.5 and naive["win_kept"] < 0.6


def test_reward_scores_on_replay_transitions():
    """The replay measures: stored transitions count as often as they were stored, pairs of
    the solved game once, split by whether the replay holds them."""
    table = exact.Table()
    table.index = {b: i for i, b in enumerate(table.boards)}
    rows, moves = np.nonzero(table.wins_now)  # every line-completing (position, move) pair
    known, other = slice(0, 40), slice(40, 100)  # 40 pairs stored 5 times, 60 once
    obs = np.concatenate([np.repeat(table.obs[rows[known]], 5, axis=0),
                          table.obs[rows[other]], table.obs[:7]])
    actions = np.concatenate([np.repeat(moves[known], 5), moves[other],
                              np.argmax(table.legal[:7] & ~table.wins_now[:7], axis=1)])
    rewards = np.concatenate([np.ones(200 + 60), np.zeros(7)]).astype(np.float32)
    assert [exact.board_of(o) for o in table.obs[:50]] == table.boards[:50]

    perfect = exact.replay_reward_scores(_Oracle(), table, obs, actions, rewards, table,
                                         chunk=64)
    assert perfect == {"replay_transitions": 267, "replay_line_completions": 260,
                       "replay_reward_recall": 1.0, "replay_reward_false_win": 0.0,
                       "distinct_line_completions_in_replay": 100,
                       "reward_recall_in_replay": 1.0, "reward_recall_not_in_replay": 1.0}

    class _Memoriser(_Oracle):
        """Knows the wins of the first 40 pairs only."""

        def dynamics(self, params, s, action):
            index = [params.index[exact_board(o)] for o in s]
            pairs = set(zip(rows[known].tolist(), moves[known].tolist()))
            return np.array([float((i, int(a)) in pairs)
                             for i, a in zip(index, np.asarray(action))]), None

    memo = exact.replay_reward_scores(_Memoriser(), table, obs, actions, rewards, table)
    assert memo["replay_reward_recall"] == pytest.approx(200 / 260)  # weighted by count
    assert memo["reward_recall_in_replay"] == pytest.approx(40 / 100)  # each pair once
    assert memo["reward_recall_not_in_replay"] == 0.0
    assert memo["replay_reward_false_win"] == 0.0

    class _AlwaysWins(_Oracle):
        def dynamics(self, params, s, action):
            return np.ones(len(s), np.float32), None

    eager = exact.replay_reward_scores(_AlwaysWins(), table, obs, actions, rewards, table)
    assert eager["replay_reward_recall"] == eager["replay_reward_false_win"] == 1.0
    empty = exact.replay_reward_scores(_Oracle(), table, obs[:0], actions[:0], rewards[:0],
                                       table)
    assert empty["replay_transitions"] == 0 and empty["replay_reward_recall"] is None
    assert empty["reward_recall_in_replay"] is None
    assert empty["reward_recall_not_in_replay"] == 1.0


def test_refuses_runs_of_other_tasks(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "1").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(
        {"agent": "muzero", "env": "gymnax/CartPole-v1", "argv": [], "agent_config": {},
         "run": {"num_seeds": 1}}))
    with pytest.raises(UsageError, match="takes runs of muzero or gumbel_muzero on "
                                         "pgx/tic_tac_toe"):
        exact.main(["--logdir", str(run)])


@pytest.mark.slow
def test_scores_a_run_recorded_before_board_planes(tmp_path):
    """End to end on a tiny run whose record predates ``action_encoding`` (its network has
    one-hot planes only): the run is rebuilt as it was, restored, scored, and a fresh network
    is fitted to its replay."""
    from core import rundir
    from experiments import train

    logdir = str(tmp_path / "run")
    argv = ["--agent", "muzero", "--env", "pgx/tic_tac_toe", "--preset", "tiny", "--num-envs",
            "4", "--steps", "96", "--log-every", "48", "--eval-every", "-1", "--no-progress",
            "--logdir", logdir]
    train.main(argv + ["--action-encoding", "broadcast"])
    record = rundir.read_config(logdir)
    del record["agent_config"]["action_encoding"]  # as the version before the field wrote it
    record["argv"] = argv
    with open(os.path.join(logdir, rundir.CONFIG_FILE), "w") as f:
        json.dump(record, f)
    out = str(tmp_path / "exact.json")
    result = exact.main(["--logdir", logdir, "--fit-replay-steps", "3", "--json", out])
    assert json.load(open(out)) == json.loads(json.dumps(result))
    assert result["positions"] == 4_520 and result["env_steps"] >= 96
    for name in ("search_optimal", "prior_optimal", "losing_move", "win_kept",
                 "reward_recall", "reward_false_win", "random_optimal",
                 "replay_reward_false_win"):
        assert 0.0 <= result[name] <= 1.0, name
    fit = result["fit_replay"]
    assert fit["steps"] == 3 and fit["transitions"] >= 96 and 0 <= fit["reward_recall"] <= 1
    assert result["replay_transitions"] == fit["transitions"]
    assert result["replay_line_completions"] == fit["line_completions"]
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UsageError, match="cannot make directory"):
        exact.main(["--logdir", logdir, "--json", str(tmp_path / "a_file" / "x.json")])
    with pytest.raises(UsageError, match="is a directory"):
        exact.main(["--logdir", logdir, "--json", str(tmp_path)])
