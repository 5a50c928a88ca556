"""Train an agent on an environment: ``python -m experiments.train --agent NAME --env ID``.

Common flags (``--steps``, ``--seed``, ``--num-seeds``, ``--logdir``, ``--preset``, ``--num-envs``,
...) configure the run; every other ``--field value`` overrides a field of the agent's config
(``python -m experiments.train --agent mpc --env linear/scalar_a1.1 --horizon 20``). Rerunning
with the same ``--logdir`` resumes from its last checkpoint, provided the run's configuration
is unchanged (``--fresh`` moves the old run aside and starts over). A mistake in the flags is
one ``error:`` line and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from typing import Any, Dict, List, Optional

from experiments import cli, presets

# Run fields that may change when a run is resumed (the rest define the run, see core.rundir).
BUDGET_FLAGS = ("steps", "log_every", "eval_every", "eval_episodes", "checkpoint_every",
                "max_seconds", "num_devices", "no_progress", "eval_opponent_simulations")


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m experiments.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other --FIELD VALUE overrides a field of the agent's config; "
               "`--agent NAME --help-agent` lists them.")
    p.add_argument("--agent", required=True, help="agent name (mpc, random, ...)")
    p.add_argument("--env", default=None, help="environment id, e.g. linear/scalar_a1.1 "
                                               "(required unless --help-agent)")
    p.add_argument("--env-option", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the environment's constructor (repeatable), e.g. "
                        "action_repeat=4 for dmc/* and gymnax/*, max_episode_steps=200; values are "
                        "Python literals, else strings")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this Python module first (repeatable), e.g. one that calls "
                        "envs.register for your own environment")
    p.add_argument("--preset", default=None,
                   help="agent preset (default: the one named after the task, else the one for "
                        "its kind of task, e.g. MinAtar, board games, images, else 'default'; "
                        "the README's 'Default preset')")
    p.add_argument("--steps", type=int, default=None,
                   help="environment steps per seed (default: the agent's for the task, "
                        "extended past the random prefill where it would end within it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-seeds", type=int, default=1, help="seeds trained in one program")
    p.add_argument("--num-envs", type=int, default=None, help="parallel environments per seed")
    p.add_argument("--logdir", default=None, help="output dir (default runs/<agent>_<env>_s<seed>)")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None, help="0: at the end only, -1: never")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="episodes per evaluation (two-player games: games per opponent)")
    p.add_argument("--eval-opponent-simulations", type=int, default=None,
                   help="two-player games: simulations per move of the true-model MCTS opponent "
                        "of the evaluation (0: the random opponent only; default 32)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="environment steps between checkpoints (0: at the end only; default: "
                        "the agent's, else about a tenth of --steps)")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="stop (final evaluation and checkpoint) before the training iteration "
                        "that would end past this many seconds of this call, as measured; rerun "
                        "with the same --logdir to go on (0: no limit)")
    p.add_argument("--num-devices", type=int, default=0,
                   help="data-parallel devices, counted over all processes (a multiple of "
                        "the process count; 0: as many as split --num-envs evenly)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run (jax.distributed; one process per host, see "
                        "docs/distributed.md); `python -m experiments.launch` starts one on this "
                        "machine")
    p.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                   help="with --distributed: process 0's address (default: "
                        "$JAX_COORDINATOR_ADDRESS, else detected on SLURM / Cloud TPU)")
    p.add_argument("--num-processes", type=int, default=None,
                   help="with --distributed: number of processes (default: $JAX_NUM_PROCESSES, "
                        "else detected)")
    p.add_argument("--process-id", type=int, default=None,
                   help="with --distributed: this process's index, 0 to --num-processes - 1 "
                        "(default: $JAX_PROCESS_ID, else detected)")
    p.add_argument("--heartbeat-timeout", type=int, default=100, metavar="SECONDS",
                   help="with --distributed: a process whose peer sent no heartbeat for this "
                        "long fails instead of waiting for it (jax's default: 100)")
    p.add_argument("--fresh", action="store_true",
                   help="move an existing run in --logdir aside to <logdir>.<time> and start over")
    p.add_argument("--dry-run", action="store_true",
                   help="build the configuration, environment and agent, print them, and exit")
    p.add_argument("--help-agent", action="store_true", help="list the agent's config fields")
    p.add_argument(cli.DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of a usage error (or set {cli.DEBUG_ENV}=1)")
    return p


def _check_positive(args) -> None:
    """The run flags' ranges, checked before anything is built."""
    for name in ("steps", "num_seeds", "num_envs", "log_every", "eval_episodes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise cli.UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name, low in (("eval_every", -1), ("checkpoint_every", 0), ("num_devices", 0),
                      ("eval_opponent_simulations", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise cli.UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if not args.max_seconds >= 0:
        raise cli.UsageError(f"--max-seconds must be >= 0 (0: no limit), got {args.max_seconds}")


def env_options(items: List[str]) -> Dict:
    """``["action_repeat=4", ...]`` -> ``{"action_repeat": 4, ...}`` (Python literals, else
    strings); raises ValueError naming a malformed item."""
    import ast
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--env-option expects KEY=VALUE (e.g. action_repeat=4), got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def import_modules(names: List[str]) -> None:
    """Imports each ``--import`` module (say, one that registers a user's environment)."""
    import importlib
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise cli.UsageError(f"--import {name}: {err}; the module must be importable from "
                                 f"the current directory or PYTHONPATH") from err


def make_env(env_id: str, options: Dict):
    """``envs.make(env_id, **options)`` with a ValueError that names a bad option."""
    import envs
    try:
        return envs.make(env_id, **options)
    except TypeError as err:
        if cli._raised_internally(err):
            raise
        raise ValueError(f"{env_id}: bad --env-option {sorted(options)}: {err}") from err


def _override(cfg, args: List[str], agent: str):
    """Applies ``--field value`` overrides to the frozen agent config with tyro (a bad field or
    value is a one-line :class:`experiments.cli.UsageError`)."""
    import tyro
    prog = f"python -m experiments.train --agent {agent} ... [agent overrides]"
    return cli.tyro_call(lambda: tyro.cli(type(cfg), default=cfg, args=args, prog=prog),
                         f"`python -m experiments.train --help` lists the run flags and "
                         f"`--agent {agent} --help-agent` the agent's options")


def default_checkpoint_every(steps: int, log_every: int) -> int:
    """About a tenth of the run, in whole logging intervals: what a run risks on a crash."""
    chunks = max(1, round(steps / 10 / max(1, log_every)))
    return chunks * log_every


def build(argv: Optional[List[str]] = None):
    """Parses the command line into ``(env, agent, run_config, record)``."""
    from agents import registry as agents
    from core.runner import RunConfig

    args, rest = _parser().parse_known_args(argv)
    module = agents.agent_module(args.agent)
    if args.help_agent:
        preset_name = args.preset or "default"
        if not args.preset and args.env:
            import_modules(args.imports)
            kind = make_env(args.env, env_options(args.env_option)).spec.obs_kind
            preset_name = presets.default_preset(args.agent, args.env, kind)
        _override(agents.preset(args.agent, preset_name), ["--help"], args.agent)
    if not args.env:
        raise cli.UsageError("--env is required (e.g. --env gymnax/CartPole-v1); "
                             "`python -c \"import envs; print(envs.registered_ids())\"` lists "
                             "the ids")
    _check_positive(args)
    import_modules(args.imports)
    env_opts = env_options(args.env_option)
    env = make_env(args.env, env_opts)  # fails early with the list of known ids
    preset_name = args.preset or presets.default_preset(args.agent, args.env,
                                                        env.spec.obs_kind)
    agent_cfg = _override(agents.preset(args.agent, preset_name), rest, args.agent)

    run_fields = presets.run_defaults(args.agent, args.env)
    for name in ("steps", "num_envs", "log_every", "eval_every", "eval_episodes",
                 "checkpoint_every", "eval_opponent_simulations"):
        if getattr(args, name) is not None:
            run_fields[name] = getattr(args, name)
    derived_checkpoints = not run_fields.get("checkpoint_every") and args.checkpoint_every is None
    if derived_checkpoints:  # periodic unless asked otherwise
        run_fields["checkpoint_every"] = default_checkpoint_every(run_fields["steps"],
                                                                  run_fields["log_every"])
    logdir = args.logdir or f"runs/{args.agent}_{args.env.replace('/', '_')}_s{args.seed}"
    run_cfg = RunConfig(seed=args.seed, num_seeds=args.num_seeds, logdir=logdir,
                        num_devices=args.num_devices, progress=not args.no_progress,
                        max_seconds=args.max_seconds,
                        **run_fields)
    agent = module.make(agent_cfg, env, run_cfg.num_envs)
    from core.runner import check_budget, prefill_env_steps
    if args.steps is None:  # a default budget is one of learning, after the random prefill
        prefill = prefill_env_steps(agent.schedule, run_cfg.num_envs)
        if run_cfg.steps <= prefill:
            steps = prefill + run_cfg.steps
            run_cfg = dataclasses.replace(run_cfg, steps=steps, checkpoint_every=(
                default_checkpoint_every(steps, run_cfg.log_every) if derived_checkpoints
                else run_cfg.checkpoint_every))
    check_budget(agent.schedule, run_cfg)  # before --fresh moves anything
    record = {"agent": args.agent, "env": args.env, "env_options": env_opts,
              "preset": preset_name,
              "run": dataclasses.asdict(run_cfg), "agent_config": dataclasses.asdict(agent_cfg),
              "argv": list(sys.argv if argv is None else argv),
              # what a run recorded before a field existed resumes when the field is at its
              # default (core.rundir.differences)
              "defaults": {"agent_config": field_defaults(agent_cfg, env.spec)}}
    return env, agent, run_cfg, record


def field_defaults(cfg, spec=None) -> Dict[str, Any]:
    """What each field of the dataclass ``cfg`` did before it existed, for the resume check:
    its default, or, where the default changed behaviour, the value that the class's
    ``VALUES_BEFORE_FIELDS`` names (a run recorded without the field resumes only at that
    value; an entry may be a function of the task's ``EnvSpec`` ``spec``, for a default that
    changed behaviour on some tasks only)."""
    before = getattr(type(cfg), "VALUES_BEFORE_FIELDS", {})
    out = {}
    for field in dataclasses.fields(cfg):
        if field.name in before:
            value = before[field.name]
            out[field.name] = value(spec) if callable(value) else value
        elif field.default is not dataclasses.MISSING:
            out[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
    return out


def load_run(logdir: str, seed_index: int = 0):
    """A finished (or checkpointed) run of ``logdir``, rebuilt from its ``config.json``.

    Returns ``(env, agent_config, state, record)``: ``state`` is the latest checkpoint's run
    state of seed ``seed_index`` (no seed axis) and ``agent_config`` the agent's config dataclass
    as it was trained. Used by the compounding-error evaluations of trained agents.
    """
    from agents import registry as agents
    from core import runner

    with open(os.path.join(logdir, "config.json")) as f:
        record = json.load(f)
    cli = [a for a in record["argv"] if a != "--no-progress"]
    if cli and not cli[0].startswith("-"):  # sys.argv[0], the program
        cli = cli[1:]
    cli = _without_num_devices(cli)  # restored onto this process's own devices
    env, agent, run_cfg, now = build(cli + ["--logdir", logdir, "--no-progress"])
    # The configuration as the run was trained: the recorded fields, and for fields its version
    # did not have yet the values they had before (VALUES_BEFORE_FIELDS). Where today's build of
    # the same command differs (such a field, or a preset whose settings changed since), the
    # differing fields are passed as flags.
    plain = lambda v: json.loads(json.dumps(v))  # noqa: E731  (tuples as lists)
    want = {k: record["agent_config"].get(k, now["defaults"]["agent_config"].get(k, v))
            for k, v in now["agent_config"].items()}
    changed = {k: v for k, v in want.items() if plain(v) != plain(now["agent_config"][k])}
    if changed:
        cli += [flag for name, value in changed.items() for flag in _flag(name, value)]
        env, agent, run_cfg, _ = build(cli + ["--logdir", logdir, "--no-progress"])
    state = runner.seed_slice(runner.restore(env, agent, run_cfg), seed_index)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in want.items()}
    agent_cfg = type(agents.preset(record["agent"]))(**fields)
    return env, agent_cfg, state, record


def _flag(name: str, value: Any) -> List[str]:
    """The command-line flag setting config field ``name`` to ``value``."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def _without_num_devices(argv: List[str]) -> List[str]:
    """``argv`` less ``--num-devices N``: the devices of the run that wrote a checkpoint (e.g.
    every process of a multi-process run) need not exist where it is restored."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--num-devices":
            skip = True
        elif not arg.startswith("--num-devices="):
            out.append(arg)
    return out


def describe(env, agent, run_cfg, record) -> str:
    """What ``--dry-run`` prints: the run, the environment's interface and the agent config."""
    import numpy as np
    spec = env.spec
    actions = (f"{spec.num_actions} discrete actions" if spec.discrete else
               f"continuous actions {tuple(spec.action_shape)} in "
               f"[{min(spec.action_low):g}, {max(spec.action_high):g}]")
    chosen = "" if "--preset" in record["argv"] else " (the default for this task)"
    lines = [f"agent: {record['agent']}, preset {record['preset']}{chosen}",
             f"environment: {record['env']} {record['env_options'] or ''}".rstrip(),
             f"  observation {tuple(spec.obs_shape)} {np.dtype(spec.obs_dtype).name}, "
             f"{actions}, time limit {spec.max_episode_steps}",
             f"schedule: {agent.schedule}",
             "run: " + json.dumps({k: v for k, v in record["run"].items()}, default=str),
             "agent config: " + json.dumps(record["agent_config"], default=str)]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict:
    """Trains as the command line says; returns the final metric line's summary.

    Exits with status 128 + the signal's number when SIGTERM / SIGINT stopped the run (after
    its checkpoint was written)."""
    args, _ = _parser().parse_known_args(argv)
    if args.distributed:
        _initialize_distributed(args)
    elif any(v is not None for v in (args.coordinator_address, args.num_processes,
                                      args.process_id)) or args.heartbeat_timeout != 100:
        raise cli.UsageError("--coordinator-address, --num-processes, --process-id and "
                             "--heartbeat-timeout need --distributed")
    from core import runner, rundir, sharding
    env, agent, run_cfg, record = build(argv)
    options = f" env_options={record['env_options']}" if record["env_options"] else ""
    import jax
    primary = sharding.is_primary()
    where = ""
    if args.distributed:  # the mesh's global devices, checked before anything compiles
        mesh = sharding.make_mesh(run_cfg.num_devices
                                  or sharding.default_num_devices(run_cfg.num_envs))
        where = (f" processes={jax.process_count()} devices={mesh.devices.size} of "
                 f"{jax.device_count()}")
    if primary:
        print(f"[train] agent={record['agent']} preset={record['preset']} env={record['env']}"
              f"{options} steps={run_cfg.steps} num_envs={run_cfg.num_envs} num_seeds="
              f"{run_cfg.num_seeds}{where} logdir={run_cfg.logdir}", flush=True)
    note = presets.hardware_note(record["agent"], record["preset"], jax.default_backend())
    if note and primary:
        print(f"[train] note: {note}", flush=True)
    if args.dry_run:
        print(describe(env, agent, run_cfg, record), flush=True)
        return {}
    from agents import registry as agents_registry
    named = {name: dataclasses.asdict(cfg)
             for name, cfg in agents_registry.agent_module(args.agent).PRESETS.items()}
    moved = sharding.primary_decides(
        lambda: rundir.check_logdir(run_cfg.logdir, record, fresh=args.fresh, presets=named),
        "fresh")
    if moved and primary:
        print(f"[train] --fresh: moved the old run to {moved}", flush=True)
    result = runner.train(env, agent, run_cfg, record)
    final = result.history[-1] if result.history else {}
    summary = {k: final[k] for k in ("env_steps", "episode_return_mean", "eval_return_mean",
                                     "wall_time") if k in final}
    if result.stopped_by in ("SIGTERM", "SIGINT"):
        raise SystemExit(128 + int(getattr(signal, result.stopped_by)))
    if primary:
        print(f"[train] done: {summary}; outputs in {run_cfg.logdir}", flush=True)
    return summary


def _initialize_distributed(args) -> None:
    """``--distributed``: joins the processes before anything touches a device."""
    from core import sharding
    for name, low in (("num_processes", 1), ("process_id", 0), ("heartbeat_timeout", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise cli.UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    try:
        sharding.initialize_distributed(args.coordinator_address, args.num_processes,
                                        args.process_id, args.heartbeat_timeout)
    except ValueError as err:  # jax found no cluster and was given no address
        raise cli.UsageError(f"--distributed: {str(err).rstrip('.')}; pass --coordinator-address, "
                             f"--num-processes and --process-id (or set "
                             f"{sharding.COORDINATOR_ENV}, {sharding.NUM_PROCESSES_ENV}, "
                             f"{sharding.PROCESS_ID_ENV}), or start the processes with "
                             f"`python -m experiments.launch`") from err


if __name__ == "__main__":
    cli.run(main)
