"""Tests of the pgx adapter against pgx's own step, and of the mask and player API.

The reference is pgx itself: ``pgx.make(name).step`` wrapped in pgx's own auto-reset
(``pgx.experimental.auto_reset``, which splits the step key into ``(step, reset)`` keys as
:class:`envs.api.Environment` does), stepped with the same actions and keys. Episode returns are
recounted from pgx's per-player ``rewards`` (player 0's entry), independently of the wrapper's
zero-sum bookkeeping.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import pgx_env
from envs.api import EnvSpec, Environment, action_footprints, batch_reset, batch_step
from tests.envs.test_linear import check_timestep_types

NUM_ENVS = 8


def test_ids_and_errors():
    ids = envs.registered_ids("pgx")
    for name in ("tic_tac_toe", "connect_four", "othello", "go_9x9", "2048"):
        assert f"pgx/{name}" in ids
    with pytest.raises(ValueError, match="connect_four"):
        envs.make("pgx/chess")
    with pytest.raises(ValueError, match="max_episode_steps"):
        pgx_env.make("tic_tac_toe", max_episode_steps=0)


@pytest.mark.parametrize("name", pgx_env.NAMES)
def test_spec_and_state_tree(name):
    """Traced (not compiled): the spec, TimeStep shapes, and a state tree kept by a step."""
    env = pgx_env.make(name)
    spec = env.spec
    assert spec.env_id == f"pgx/{name}" and spec.discrete and spec.has_action_mask
    assert spec.obs_kind == "image" and spec.obs_range == (0.0, 1.0)
    assert spec.num_players == (1 if name == "2048" else 2)
    expected = {"tic_tac_toe": ((3, 3, 2), 9), "connect_four": ((6, 7, 2), 7),
                "othello": ((8, 8, 2), 65), "go_9x9": ((9, 9, 17), 82), "2048": ((4, 4, 31), 4)}
    assert (spec.obs_shape, spec.num_actions) == expected[name]

    def reset_and_step(key):
        state = batch_reset(env, key, NUM_ENVS)
        mask = jax.vmap(env.legal_action_mask)(state)
        actions = jax.vmap(spec.sample_action)(jax.random.split(key, NUM_ENVS), mask)
        return state, mask, batch_step(env, state, actions, key)

    state, mask, (new_state, timestep) = jax.eval_shape(reset_and_step, jax.random.PRNGKey(0))
    check_timestep_types(spec, timestep, NUM_ENVS)
    assert mask.shape == timestep.legal_action_mask.shape == (NUM_ENVS, spec.num_actions)
    assert mask.dtype == timestep.legal_action_mask.dtype == jnp.bool_
    assert timestep.current_player.shape == (NUM_ENVS,)
    assert timestep.current_player.dtype == jnp.int32
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(new_state)
    leaves = zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new_state))
    for before, after in leaves:
        assert (before.shape, before.dtype) == (after.shape, after.dtype)


@functools.lru_cache(maxsize=None)
def compare_with_pgx(name: str, num_steps: int, illegal_rate: float):
    """Runs the wrapper and pgx side by side (jit, vmap over NUM_ENVS) on the same actions and
    keys: mostly random legal actions, a fraction ``illegal_rate`` uniform over all actions."""
    import pgx
    from pgx.experimental import auto_reset

    env = pgx_env.make(name)
    game = pgx.make(name)
    ref_step = auto_reset(game.step, game.init)

    @jax.jit
    def run(key):
        reset_key, key = jax.random.split(key)
        keys = jax.random.split(reset_key, NUM_ENVS)
        state, ref = jax.vmap(env.reset)(keys), jax.vmap(game.init)(keys)

        def body(carry, step_key):
            state, ref = carry
            legal_key, any_key, coin_key, env_key = jax.random.split(step_key, 4)
            mask = jax.vmap(env.legal_action_mask)(state)
            legal = jax.vmap(env.spec.sample_action)(jax.random.split(legal_key, NUM_ENVS), mask)
            anything = jax.vmap(env.spec.sample_action)(jax.random.split(any_key, NUM_ENVS))
            coin = jax.random.uniform(coin_key, (NUM_ENVS,)) < illegal_rate
            action = jnp.where(coin, anything, legal)
            keys = jax.random.split(env_key, NUM_ENVS)
            state, ts = jax.vmap(env.step)(state, action, keys)
            new_ref = jax.vmap(ref_step)(ref, action, keys)
            out = dict(ts=ts, action=action, mask=mask, ref_obs=new_ref.observation,
                       ref_mask=new_ref.legal_action_mask, ref_player=new_ref.current_player,
                       ref_mover=ref.current_player, ref_rewards=new_ref.rewards,
                       ref_terminated=new_ref.terminated, ref_truncated=new_ref.truncated)
            return (state, new_ref), out

        _, out = jax.lax.scan(body, (state, ref), jax.random.split(key, num_steps))
        return out

    return jax.tree_util.tree_map(np.asarray, run(jax.random.PRNGKey(0)))


def check_against_pgx(out, num_players: int):
    ts = out["ts"]
    np.testing.assert_array_equal(ts.obs, out["ref_obs"].astype(np.float32))
    np.testing.assert_array_equal(ts.legal_action_mask, out["ref_mask"])
    np.testing.assert_array_equal(ts.terminated, out["ref_terminated"])
    assert not out["ref_truncated"].any() and not ts.truncated.any()
    mover_reward = np.take_along_axis(out["ref_rewards"], out["ref_mover"][..., None], -1)[..., 0]
    np.testing.assert_array_equal(ts.reward, mover_reward)
    if num_players == 2:
        np.testing.assert_array_equal(ts.current_player, out["ref_player"])
        np.testing.assert_array_equal(out["ref_rewards"].sum(-1), 0.0)  # zero-sum
    else:
        assert not ts.current_player.any()
    # Episode statistics recounted from pgx: player 0's rewards, plies per episode.
    num_steps, num_envs = ts.reward.shape
    ret, count = np.zeros(num_envs), np.zeros(num_envs, np.int64)
    for t in range(num_steps):
        ret += out["ref_rewards"][t][:, 0]
        count += 1
        done = ts.terminated[t]
        np.testing.assert_allclose(ts.episode_return[t], np.where(done, ret, 0.0), rtol=1e-6)
        np.testing.assert_array_equal(ts.episode_length[t], np.where(done, count, 0))
        np.testing.assert_array_equal(ts.obs[t][~done], ts.next_obs[t][~done])
        ret[done], count[done] = 0.0, 0


@pytest.mark.parametrize("name,num_steps", [("tic_tac_toe", 14), ("connect_four", 30)])
def test_board_games_match_pgx(name, num_steps):
    out = compare_with_pgx(name, num_steps, 0.15)
    check_against_pgx(out, num_players=2)
    ts = out["ts"]
    assert ts.terminated.sum() >= NUM_ENVS // 2  # episodes end and reset
    illegal = ~np.take_along_axis(out["mask"], out["action"][..., None], -1)[..., 0]
    # An illegal move ends the game at once with -1 for the mover (pgx's rule); in tic-tac-toe
    # a random square is often taken, in connect four only a full column is illegal.
    assert illegal.any() or name == "connect_four"
    np.testing.assert_array_equal(ts.reward[illegal], -1.0)
    assert ts.terminated[illegal].all()
    # After an end the agent sees a fresh game: every move legal (the pgx boards start empty).
    assert ts.legal_action_mask[ts.terminated].all() and not ts.obs[ts.terminated].any()
    assert ts.next_obs[ts.terminated].any(axis=tuple(range(1, ts.obs.ndim - 1))).all()


@pytest.mark.slow
def test_2048_matches_pgx_with_chance():
    """The same keys reach pgx's tile spawns: the random successors agree."""
    out = compare_with_pgx("2048", 10, 0.0)
    check_against_pgx(out, num_players=1)
    ts = out["ts"]
    assert (ts.reward > 0).any()  # tiles merged
    assert not ts.legal_action_mask.all()  # some moves are blocked
    # One plane per square: a tile's exponent, or plane 0 when empty.
    np.testing.assert_array_equal(ts.obs.sum(axis=(2, 3, 4)), 16.0)


@functools.lru_cache(maxsize=None)
def jitted_tic_tac_toe():
    env = pgx_env.make("tic_tac_toe")
    return env, jax.jit(env.reset), jax.jit(env.step)


def first_player_keys():
    """Reset keys whose games player 0 opens and player 1 opens."""
    env, reset, _ = jitted_tic_tac_toe()
    by_player = {}
    for seed in range(20):
        key = jax.random.PRNGKey(seed)
        by_player.setdefault(int(env.current_player(reset(key))), key)
    assert set(by_player) == {0, 1}  # pgx draws the first player at random
    return by_player


def play(actions, reset_key):
    env, reset, step = jitted_tic_tac_toe()
    state = reset(reset_key)
    players, timesteps = [], []
    for i, action in enumerate(actions):
        players.append(int(env.current_player(state)))
        state, ts = step(state, jnp.int32(action), jax.random.PRNGKey(100 + i))
        timesteps.append(jax.tree_util.tree_map(np.asarray, ts))
    return players, timesteps


@pytest.mark.parametrize("opener", [0, 1])
def test_tic_tac_toe_rewards_from_the_movers_view(opener):
    """The opener takes the top row (0, 1, 2) while the other plays 3, 4: +1 to the mover on the
    fifth ply; episode_return is player 0's outcome."""
    players, ts = play([0, 3, 1, 4, 2], first_player_keys()[opener])
    assert players == [opener, 1 - opener] * 2 + [opener]
    assert [t.reward.item() for t in ts] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert [t.terminated.item() for t in ts] == [False] * 4 + [True]
    assert [t.current_player.item() for t in ts[:4]] == players[1:]
    assert ts[-1].episode_return == (1.0 if opener == 0 else -1.0)
    assert ts[-1].episode_length == 5
    np.testing.assert_array_equal(ts[1].legal_action_mask, [0, 1, 1, 0, 1, 1, 1, 1, 1])
    # The observation is the mover's view: plane 0 its own marks, plane 1 the opponent's.
    np.testing.assert_array_equal(ts[1].obs[..., 0].ravel(), [1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(ts[1].obs[..., 1].ravel(), [0, 0, 0, 1, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("opener", [0, 1])
def test_illegal_move_loses_for_the_mover(opener):
    """The second player plays on the opener's square: -1 to that mover, game over."""
    _, ts = play([4, 4], first_player_keys()[opener])
    assert ts[1].reward == -1.0 and ts[1].terminated
    assert ts[1].episode_return == (1.0 if opener == 0 else -1.0)  # player 0's outcome



def test_a_time_limit_truncates_and_resets_the_board():
    """A 3-ply limit cuts an undecided game: truncated, not terminated, player 0's return 0;
    the next board is empty, every action legal, and its mover pgx's draw."""
    env = pgx_env.make("tic_tac_toe", max_episode_steps=3)
    step = jax.jit(env.step)
    state = jax.jit(env.reset)(first_player_keys()[0])
    for i, action in enumerate([0, 4, 8]):
        state, ts = step(state, jnp.int32(action), jax.random.PRNGKey(200 + i))
    assert bool(ts.truncated) and not bool(ts.terminated) and bool(ts.done)
    assert float(ts.episode_return) == 0.0 and int(ts.episode_length) == 3
    assert not np.asarray(ts.obs).any() and np.asarray(ts.legal_action_mask).all()
    assert int(ts.current_player) == int(env.current_player(state))
    assert np.asarray(ts.next_obs).sum() == 3  # the final board of the cut game

def test_existing_families_allow_every_action():
    """Families without masks: every action legal, player 0 throughout, unchanged steps."""
    env = envs.make("gymnax/CartPole-v1")
    assert not env.spec.has_action_mask and env.spec.num_players == 1
    state = env.reset(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(env.legal_action_mask(state), [True, True])
    assert env.current_player(state) == 0
    state, ts = jax.jit(env.step)(state, jnp.int32(1), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(ts.legal_action_mask, [True, True])
    assert ts.current_player == 0 and ts.episode_metrics == {}
    continuous = envs.make("linear/scalar_a0.5")
    assert continuous.legal_action_mask(continuous.reset(jax.random.PRNGKey(0))).shape == (0,)


def test_sample_action_respects_the_mask():
    spec = EnvSpec(env_id="t/masked", obs_shape=(1,), discrete=True, num_actions=5,
                   has_action_mask=True)
    mask = jnp.array([False, True, False, True, False])
    actions = jax.vmap(lambda k: spec.sample_action(k, mask))(
        jax.random.split(jax.random.PRNGKey(0), 200))
    assert set(np.unique(np.asarray(actions)).tolist()) == {1, 3}


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="num_players must be 1 or 2"):
        EnvSpec(env_id="t/x", obs_shape=(1,), discrete=True, num_actions=2, num_players=3)
    with pytest.raises(ValueError, match="discrete actions"):
        EnvSpec(env_id="t/x", obs_shape=(1,), action_shape=(1,), action_low=(-1.0,),
                action_high=(1.0,), has_action_mask=True)
    spec = EnvSpec(env_id="t/x", obs_shape=(1,), discrete=True, num_actions=2, num_players=2,
                   has_action_mask=True)
    step = lambda s, a, k: (s, s, 0.0, False)  # noqa: E731
    with pytest.raises(ValueError, match="legal_action_mask_fn is missing"):
        Environment(spec=spec, adapter_reset=lambda k: (0, 0), adapter_step=step,
                    current_player_fn=lambda s: 0)
    with pytest.raises(ValueError, match="current_player_fn"):
        Environment(spec=spec, adapter_reset=lambda k: (0, 0), adapter_step=step,
                    legal_action_mask_fn=lambda s: jnp.ones(2, bool))


@functools.lru_cache(maxsize=None)
def _board_game(name):
    """``pgx_env.make(name)`` with its reset, mask, sampler and step jitted once per module."""
    env = pgx_env.make(name)
    return env, {fn: jax.jit(getattr(env, fn)) for fn in
                 ("adapter_reset", "legal_action_mask_fn", "adapter_step")} | {
                     "sample_action": jax.jit(env.spec.sample_action)}


def _random_game(name, key, num_moves):
    """Up to ``num_moves`` random legal moves from pgx's start (the adapter's step, no reset):
    per move ``(obs, action, legal mask, next_obs, reward, terminated)``."""
    _, fns = _board_game(name)
    inner, obs = fns["adapter_reset"](key)
    out = []
    for k in jax.random.split(jax.random.fold_in(key, 1), num_moves):
        mask = fns["legal_action_mask_fn"](inner)
        action = fns["sample_action"](k, mask)
        inner, nxt, reward, terminated = fns["adapter_step"](inner, action, k)
        out.append((obs, action, mask, nxt, float(reward), bool(terminated)))
        obs = nxt
        if terminated:
            break
    return out


@pytest.mark.parametrize("name", ["tic_tac_toe", "connect_four", "othello", "go_9x9"])
def test_action_layout_marks_where_a_move_is_placed(name):
    """A move's new stone lands inside its footprint (its cell, or connect four's column)."""
    env, _ = _board_game(name)
    spec = env.spec
    height, width = spec.obs_shape[:2]
    footprints = action_footprints(spec.action_layout, spec.num_actions, height, width)
    assert footprints.shape == (spec.num_actions, height, width)
    # each move's footprint is one cell, or one whole column, and no two moves share one
    board_moves = footprints.reshape(spec.num_actions, -1).sum(-1) > 0
    size = 1 if spec.action_layout == "cells" else height
    assert set(footprints.reshape(spec.num_actions, -1).sum(-1)[board_moves]) == {size}
    assert (footprints[board_moves].sum(0) == 1).all()
    if spec.action_layout == "columns":
        assert (footprints.any(1) == np.eye(spec.num_actions, width, dtype=bool)).all()
    placed = 0
    for seed in range(3):
        for obs, action, _, nxt, _, terminated in _random_game(
                name, jax.random.PRNGKey(seed), 12):
            # the two players' current stones: planes 0 and 1 in every pgx board game here
            before = np.asarray(obs)[..., :2].sum(-1) > 0
            after = np.asarray(nxt)[..., :2].sum(-1) > 0
            new = after & ~before
            if terminated or not new.any():  # a pass, or the move that ends the game
                continue
            placed += 1
            assert (footprints[int(action)][new] == 1).all(), (name, int(action))
            if spec.action_layout == "cells":
                assert new.sum() == 1
    assert placed >= 10


@pytest.mark.parametrize("name", ["tic_tac_toe", "connect_four", "othello", "go_9x9"])
def test_mirrored_game_is_the_mirror_image(name):
    """The board's reflection (``env.symmetry``: left-right, othello's transpose) is exact:
    from the same start, which it leaves unchanged, the reflected moves give the reflected
    observations, legal masks, rewards and ends."""
    env, fns = _board_game(name)
    sym = env.symmetry
    assert sorted(sym.action_permutation) == list(range(env.spec.num_actions))
    key = jax.random.PRNGKey(3)
    game = _random_game(name, key, 16)
    inner, obs = fns["adapter_reset"](key)
    for ref_obs, action, ref_mask, ref_next, ref_reward, ref_terminated in game:
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(sym.obs(ref_obs)))
        np.testing.assert_array_equal(np.asarray(fns["legal_action_mask_fn"](inner)),
                                      np.asarray(sym.action_values(ref_mask)))
        inner, obs, reward, terminated = fns["adapter_step"](inner, sym.action(action),
                                                             jax.random.PRNGKey(0))
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(sym.obs(ref_next)))
        assert (float(reward), bool(terminated)) == (ref_reward, ref_terminated)
    assert len(game) >= 5
    assert pgx_env.make("2048").symmetry is None


def test_action_layouts_are_checked():
    with pytest.raises(ValueError, match="action_layout must be one of"):
        EnvSpec(env_id="t/x", obs_shape=(3, 3, 2), obs_range=(0.0, 1.0), discrete=True,
                num_actions=9, action_layout="diagonals")
    with pytest.raises(ValueError, match="an action per cell"):
        EnvSpec(env_id="t/x", obs_shape=(3, 3, 2), obs_range=(0.0, 1.0), discrete=True,
                num_actions=8, action_layout="cells")
    with pytest.raises(ValueError, match="num_actions == the grid's width 7"):
        EnvSpec(env_id="t/x", obs_shape=(6, 7, 2), obs_range=(0.0, 1.0), discrete=True,
                num_actions=6, action_layout="columns")
    with pytest.raises(ValueError, match="image observations"):
        EnvSpec(env_id="t/x", obs_shape=(9,), discrete=True, num_actions=9,
                action_layout="cells")
    planes = action_footprints("cells", 10, 3, 3)  # 9 cells and a pass
    assert planes[:9].reshape(9, 9).tolist() == np.eye(9).tolist() and not planes[9].any()


def test_rollout_returns_are_player_zeros():
    """core.rollout.play (the loop's greedy evaluation) sums player 0's rewards: the opener wins
    the top row, so the return is +1 where player 0 opened and -1 where player 1 did."""
    from core import rollout

    env = pgx_env.make("tic_tac_toe")
    moves = jnp.array([0, 3, 1, 4, 2], jnp.int32)

    def policy(env_state, is_first, ply, key):
        return jnp.broadcast_to(moves[ply], ply.shape), ply + 1, {}

    out = rollout.play(env, policy, jax.random.PRNGKey(3), num_envs=NUM_ENVS, length=5,
                       carry=jnp.zeros((NUM_ENVS,), jnp.int32), record=False,
                       probe=lambda state, keys: jax.vmap(env.current_player)(state))
    opener = np.asarray(out.probes[:, 0])
    assert 0 < opener.sum() < NUM_ENVS  # both players open somewhere
    np.testing.assert_array_equal(out.returns, np.where(opener == 0, 1.0, -1.0))
    np.testing.assert_array_equal(out.lengths, 5)


@pytest.mark.slow
def test_random_agent_trains_on_tic_tac_toe(tmp_path):
    """End to end through the command line: the random agent (legal moves only) plays
    400 steps of pgx/tic_tac_toe; episode and evaluation returns are player 0's outcomes."""
    import json

    from experiments import train

    logdir = tmp_path / "ttt"
    train.main(["--agent", "random", "--env", "pgx/tic_tac_toe", "--steps", "400",
                "--num-envs", "4", "--log-every", "200", "--eval-every", "200",
                "--eval-episodes", "4", "--logdir", str(logdir), "--no-progress"])
    rows = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == 400
    for row in rows:
        # Uniform legal moves: no game ends before the fifth ply (a win needs three marks);
        # each is a loss, win or draw for player 0.
        assert row["episodes"] > 0 and 5.0 <= row["episode_length_mean"] <= 9.0
        assert -1.0 <= row["episode_return_mean"] <= 1.0
        assert -1.0 <= row["eval_return_min"] <= row["eval_return_max"] <= 1.0
