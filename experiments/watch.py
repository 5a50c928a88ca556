"""Watch a trained agent: ``python -m experiments.watch --logdir RUN``.

Plays greedy episodes (the agent's ``act`` with ``explore=False``, as the loop's evaluation
does) with the latest checkpoint of each seed of a run, in one compiled ``lax.scan`` that
records what the drawer needs per step (:mod:`envs.render`), draws the frames on the host and
writes one GIF (or MP4) per seed, the episodes one after another, to ``--out`` (default
``RUN/videos``). A user mistake prints one ``error: ...`` line and exits with status 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional

import numpy as np

from envs import render
from experiments import cli
from experiments.cli import UsageError

_RECORD_KEYS = ("agent", "env", "argv", "run", "agent_config")


def _positive(kind):
    """An argparse ``type`` that parses ``kind`` and accepts only values > 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m experiments.watch", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", required=True, help="log directory of python -m experiments.train")
    p.add_argument("--seed-index", type=int, default=None,
                   help="one seed of the run (default: all)")
    p.add_argument("--episodes", type=_positive(int), default=1, help="episodes per seed")
    p.add_argument("--max-steps", type=_positive(int), default=None,
                   help="steps per episode at most (default: the environment's time limit)")
    p.add_argument("--out", default=None, help="output directory (default: LOGDIR/videos)")
    p.add_argument("--format", choices=("gif", "mp4"), default="gif",
                   help="gif (pillow) or mp4 (needs ffmpeg on PATH)")
    p.add_argument("--fps", type=_positive(float), default=30.0,
                   help="frames per second (GIF frame times are whole 10 ms; at most 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes' randomness")
    p.add_argument(cli.DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of a usage error (or set {cli.DEBUG_ENV}=1)")
    return p


def read_record(logdir: str) -> Dict:
    """The ``config.json`` of ``logdir``; UsageError unless it is a run with a checkpoint."""
    if not os.path.isdir(logdir):
        raise UsageError(f"no directory {logdir}; pass the --logdir of a run of "
                         "python -m experiments.train")
    path = os.path.join(logdir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"no config.json in {logdir}: not a log directory of "
                         "python -m experiments.train")
    try:
        with open(path) as f:
            record = json.load(f)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err})") from err
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}: not written by experiments.train")
    checkpoints = os.path.join(logdir, "checkpoints")
    steps = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
    if not any(s.isdigit() for s in steps):
        raise UsageError(f"no checkpoint in {checkpoints}: the run saves one every "
                         "--checkpoint-every steps and at its end")
    return record


def seed_indices(record: Dict, seed_index: Optional[int]) -> List[int]:
    """The seeds to watch: ``[seed_index]`` (checked against the run's seeds) or all."""
    num_seeds = int(record["run"]["num_seeds"])
    if seed_index is None:
        return list(range(num_seeds))
    if not 0 <= seed_index < num_seeds:
        raise UsageError(f"--seed-index {seed_index} is out of range: the run has {num_seeds} "
                         f"seed(s), 0 to {num_seeds - 1}")
    return [seed_index]


def load_seed(logdir: str, seed_index: int):
    """``experiments.train.load_run`` with the failures of rebuilding a run as UsageError."""
    from experiments import train

    try:
        return train.load_run(logdir, seed_index)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as err:
        if cli._raised_internally(err):
            raise
        raise UsageError(f"cannot rebuild the run in {logdir}: {err}") from err


def play_episodes(env, agent, view, agent_state, key, *, num_episodes: int, max_steps: int):
    """Greedy episodes of ``agent`` in ``num_episodes`` copies of ``env``, run in parallel.

    :func:`core.rollout.play` on the adapter (no auto-reset), so the final state of each
    episode is kept; an episode ends when terminated or after ``max_steps`` steps, and its
    frames then stay on its last state. Returns ``(views, returns, lengths)``: ``view(inner,
    obs)`` of every environment before the first and after every step (leaves
    ``[max_steps + 1, N, ...]``), returns ``[N]`` and lengths ``[N]``; frames
    ``0 .. lengths[n]`` show episode ``n``.
    """
    import jax
    import jax.numpy as jnp

    from core import rollout

    n = num_episodes
    see = lambda env_state: jax.vmap(view)(env_state.inner, env_state.obs)  # noqa: E731
    out = rollout.play(env, rollout.agent_policy(env, agent.act, agent_state), key, num_envs=n,
                       length=max_steps, carry=agent.initial_carry(n),
                       probe=lambda env_state, keys: see(env_state), record=False)
    last = jnp.minimum(jnp.arange(max_steps + 1), out.lengths[:, None])  # [N, T + 1]

    def frozen(before, after):  # [N, T, ...] and [N, ...] -> [T + 1, N, ...]
        views = jnp.concatenate([before, after[:, None]], axis=1)
        index = last.reshape(last.shape + (1,) * (views.ndim - 2))
        return jnp.swapaxes(jnp.take_along_axis(views, index, axis=1), 0, 1)

    views = jax.tree_util.tree_map(frozen, out.probes, see(out.final))
    return views, out.returns, out.lengths


def episode_frames(drawer: render.Drawer, views: Any, lengths: np.ndarray) -> np.ndarray:
    """The frames ``[F, H, W, 3]`` of all episodes, one after another."""
    import jax

    return np.concatenate([
        drawer.draw(jax.tree_util.tree_map(lambda v: v[: int(length) + 1, i], views))
        for i, length in enumerate(lengths)])


def write_video(path: str, frames: np.ndarray, fps: float, fmt: str) -> None:
    """Writes ``frames [F, H, W, 3]`` uint8 as a looping GIF (pillow) or an H.264 MP4 (ffmpeg)."""
    if fmt == "gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        duration = max(20, int(round(1000.0 / fps / 10.0)) * 10)
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
        return
    height, width = frames.shape[1:3]
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
           "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", "-c:v", "libx264", path]
    result = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(),
                            capture_output=True)
    if result.returncode != 0:
        last = (result.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise UsageError(f"ffmpeg could not write {path} ({last}); try --format gif")


def watch(args: argparse.Namespace) -> Dict[int, Dict]:
    """Plays, draws and writes the videos of ``args``; returns ``{seed: {path, returns,
    lengths}}``."""
    record = read_record(args.logdir)
    seeds = seed_indices(record, args.seed_index)
    if args.format == "mp4" and shutil.which("ffmpeg") is None:
        raise UsageError("--format mp4 needs ffmpeg on PATH, which is missing; use --format gif")
    try:
        drawer = render.make_drawer(record["env"], record.get("env_options"))
    except (render.NoDrawerError, render.DrawError) as err:
        raise UsageError(str(err)) from err
    out = args.out or os.path.join(args.logdir, "videos")
    os.makedirs(out, exist_ok=True)
    results, play = {}, None
    try:
        for i in seeds:
            env, agent_cfg, state, _ = load_seed(args.logdir, i)
            play = play or _player(record, env, agent_cfg, drawer, args)
            results[i] = _watch_seed(play, drawer, state.agent, i, args, out)
    finally:
        drawer.close()
    return results


def _player(record: Dict, env, agent_cfg, drawer: render.Drawer, args):
    """``play_episodes`` of the run's agent, jitted once for all its seeds."""
    import jax

    from agents import registry

    agent = registry.agent_module(record["agent"]).make(agent_cfg, env,
                                                        int(record["run"]["num_envs"]))
    limit = env.spec.max_episode_steps
    steps = min(args.max_steps, limit) if args.max_steps else limit
    return jax.jit(functools.partial(play_episodes, env, agent, drawer.view,
                                     num_episodes=args.episodes, max_steps=steps))


def _watch_seed(play, drawer: render.Drawer, agent_state, seed_index: int, args,
                out: str) -> Dict:
    """Plays, draws and writes the episodes of one seed."""
    import jax

    key = jax.random.fold_in(jax.random.PRNGKey(args.seed), seed_index)
    views, returns, lengths = jax.device_get(play(agent_state, key))
    frames = episode_frames(drawer, views, lengths)
    path = os.path.join(out, f"seed{seed_index}.{args.format}")
    write_video(path, frames, args.fps, args.format)
    returns = [round(float(r), 3) for r in returns]
    lengths = [int(n) for n in lengths]
    print(f"[watch] seed {seed_index}: episode return(s) {returns} over {lengths} steps "
          f"-> {path}", flush=True)
    return {"path": path, "returns": returns, "lengths": lengths}


def main(argv: Optional[List[str]] = None) -> Dict[int, Dict]:
    """The command line; returns :func:`watch`'s ``{seed: {path, returns, lengths}}``."""
    return cli.run(lambda args: watch(_parser().parse_args(args)), argv)


if __name__ == "__main__":
    main()
