"""Throughput of an agent on an environment: ``python -m experiments.benchmark --agent A --env E``.

Measures, on whatever device JAX sees:
* compile time of one training chunk and its steady-state environment steps per second and
  agent updates per second (through the shared core loop, replay writes included);
* the scaling of environment steps per second with the number of parallel environments and
  with ``num_seeds`` (seeds vmapped in one program).
``--suite NAME`` runs a family-specific benchmark instead, ``experiments/bench_<NAME>.py``
(``planner``: PETS CEM planning vs the matmul ceiling; ``dreamer``; ``muzero``; ``craftax``:
the craftax environment with and without optimistic resets), with the
remaining flags passed to it (``python -m experiments.benchmark --suite planner --help``).
``--agent random`` measures the raw environment: a jitted ``lax.scan`` of batched steps with
uniformly random actions, no replay. Prints a table and writes one JSON object (``--json``).
Peak memory is the accelerator's ``peak_bytes_in_use`` when it reports one, else the process's
peak resident set size (CPU). Every suite rewrites its ``--json`` after each measured row
(``"complete": false`` until the last), so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import resource
import sys
from typing import Callable, Dict, List, Optional, Sequence

import jax

import envs
from agents import registry
from core.loop import make_loop
from experiments import cli, presets
from experiments.timing import time_jitted


def _device() -> Dict:
    """The first device's platform and kind, the device count, host name and jax version."""
    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "num_devices": jax.device_count(),
            "host": platform.node(), "jax": jax.__version__}


def _peak_memory() -> Dict:
    """Peak memory so far: the device's ``peak_bytes_in_use``, else the host's peak RSS."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return {"peak_memory_bytes": int(stats["peak_bytes_in_use"]),
                "peak_memory_source": "device peak_bytes_in_use"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_memory_source": "host peak RSS (CPU)"}


def write_json(path: Optional[str], result: Dict, complete: bool) -> None:
    """Writes ``result`` (with the peak memory so far and ``complete``) to ``path`` atomically."""
    result.update(_peak_memory())
    result["complete"] = complete
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)


def raw_env_throughput(env, num_envs: int, num_seeds: int, min_seconds: float) -> Dict:
    """Environment steps per second of a scan of random-action batched steps."""
    length = max(8, 4096 // num_envs)

    def run(carry):
        def body(c, _):
            state, key = c
            key, act_key, step_key = jax.random.split(key, 3)
            actions = jax.vmap(env.spec.sample_action)(jax.random.split(act_key, num_envs))
            state, ts = envs.batch_step(env, state, actions, step_key)
            return (state, key), ts.reward.sum()
        carry, rewards = jax.lax.scan(body, carry, None, length=length)
        return carry, rewards.sum()

    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    carry = jax.jit(jax.vmap(lambda k: (envs.batch_reset(env, k, num_envs),
                                        jax.random.fold_in(k, 1))))(keys)
    timing = time_jitted(jax.vmap(run), carry, min_seconds=min_seconds, threaded=True)
    return {"num_envs": num_envs, "num_seeds": num_seeds, "compile_s": timing.compile_s,
            "env_steps_per_s": length * num_envs * num_seeds / timing.mean}


@dataclasses.dataclass(frozen=True)
class LoopProgram:
    """One training chunk of the core loop, vmapped over seeds.

    ``train(state) -> (state, metrics)`` runs ``iterations`` loop iterations of every seed;
    ``init(keys)`` builds the seed-batched state; one call makes ``env_steps`` environment steps
    and ``updates`` agent updates, summed over the seeds."""

    train: Callable
    init: Callable
    keys: jax.Array  # [num_seeds, 2]
    num_envs: int
    num_seeds: int
    env_steps: int
    updates: int


def loop_program(agent_name: str, env, agent_cfg, num_envs: int, num_seeds: int,
                 iterations: int) -> LoopProgram:
    """The core loop's vmapped training chunk for one agent (nothing compiled yet)."""
    agent = registry.agent_module(agent_name).make(agent_cfg, env, num_envs)
    fns = make_loop(env, agent, num_envs=num_envs, iterations=iterations, eval_envs=1)
    sched = agent.schedule
    return LoopProgram(
        train=jax.vmap(fns.train), init=jax.vmap(fns.init),
        keys=jax.random.split(jax.random.PRNGKey(0), num_seeds), num_envs=num_envs,
        num_seeds=num_seeds,
        env_steps=iterations * sched.env_steps_per_iteration * num_envs * num_seeds,
        updates=iterations * sched.updates_per_iteration * num_seeds)


def throughput_row(program: LoopProgram, compile_s: float, seconds_per_chunk: float,
                   chunk_seconds: Sequence[float] = ()) -> Dict:
    """The benchmark row of a timed :class:`LoopProgram`; ``chunk_seconds`` (each timed chunk's
    seconds) adds ``updates_per_s_readings``, one reading per chunk."""
    row = {"num_envs": program.num_envs, "num_seeds": program.num_seeds,
           "compile_s": compile_s, "env_steps_per_s": program.env_steps / seconds_per_chunk,
           "updates_per_s": program.updates / seconds_per_chunk,
           "seconds_per_chunk": seconds_per_chunk}
    if chunk_seconds:
        row["updates_per_s_readings"] = [program.updates / s for s in chunk_seconds]
    return row


def agent_throughput(agent_name: str, env, agent_cfg, num_envs: int, num_seeds: int,
                     iterations: int, min_seconds: float) -> Dict:
    """Steady-state training throughput of the core loop for one agent."""
    program = loop_program(agent_name, env, agent_cfg, num_envs, num_seeds, iterations)
    state = jax.jit(program.init)(program.keys)
    timing = time_jitted(program.train, state, min_seconds=min_seconds, threaded=True)
    return throughput_row(program, timing.compile_s, timing.mean, timing.seconds)


def main(argv: Optional[List[str]] = None) -> Dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--suite" in argv:
        i = argv.index("--suite")
        if i + 1 >= len(argv):
            raise cli.UsageError("--suite needs a name: planner, dreamer, muzero or craftax")
        name, rest = argv[i + 1], argv[:i] + argv[i + 2:]
        try:
            suite = importlib.import_module(f"experiments.bench_{name}")
        except ModuleNotFoundError as e:
            if e.name != f"experiments.bench_{name}":
                raise
            raise cli.UsageError(f"unknown benchmark suite {name!r}; known: planner, dreamer, "
                             f"muzero, craftax") from None
        return suite.main(rest)
    p = cli.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--preset", default=None)
    p.add_argument("--num-envs", type=int, default=None, help="for the headline numbers")
    p.add_argument("--iterations", type=int, default=4, help="iterations per timed chunk")
    p.add_argument("--scaling-envs", default="1,16,256,4096")
    p.add_argument("--scaling-seeds", default="1,2,4")
    p.add_argument("--min-seconds", type=float, default=1.0, help="timing per measurement")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    cli.check_output_file(args.json, "--json")

    env = envs.make(args.env)
    agent_cfg = registry.preset(args.agent, args.preset or
                                presets.default_preset(args.agent, args.env,
                                                       env.spec.obs_kind))
    num_envs = args.num_envs or presets.run_defaults(args.agent, args.env)["num_envs"]
    env_list = [int(x) for x in args.scaling_envs.split(",") if x]
    seed_list = [int(x) for x in args.scaling_seeds.split(",") if x]
    result: Dict = {"agent": args.agent, "env": args.env, "device": _device(),
                    "num_envs": num_envs}

    headline = agent_throughput(args.agent, env, agent_cfg, num_envs, 1, args.iterations,
                                args.min_seconds)
    result.update({"env_steps_per_s": headline["env_steps_per_s"],
                   "updates_per_s": headline["updates_per_s"],
                   "compile_s": headline["compile_s"]})
    scaling = []
    for n in env_list:
        scaling.append(raw_env_throughput(env, n, 1, args.min_seconds) if args.agent == "random"
                       else agent_throughput(args.agent, env, agent_cfg, n, 1, args.iterations,
                                             args.min_seconds))
        _print_row(scaling[-1])
        write_json(args.json, {**result, "scaling": scaling}, complete=False)
    for s in seed_list:
        if s == 1:
            continue
        scaling.append(raw_env_throughput(env, num_envs, s, args.min_seconds)
                       if args.agent == "random" else
                       agent_throughput(args.agent, env, agent_cfg, num_envs, s, args.iterations,
                                        args.min_seconds))
        _print_row(scaling[-1])
        write_json(args.json, {**result, "scaling": scaling}, complete=False)
    result["scaling"] = scaling
    write_json(args.json, result, complete=True)
    print(f"{args.agent} on {args.env} [{result['device']['device_kind']}]: "
          f"{result['env_steps_per_s']:,.0f} env steps/s, {result['updates_per_s']:,.1f} "
          f"updates/s, compile {result['compile_s']:.1f} s, peak memory "
          f"{result['peak_memory_bytes'] / 2**20:,.0f} MiB ({result['peak_memory_source']})")
    return result


def _print_row(row: Dict) -> None:
    print(f"  num_envs={row['num_envs']:>5} num_seeds={row['num_seeds']:>2}  "
          f"{row['env_steps_per_s']:>14,.0f} env steps/s  compile {row['compile_s']:6.2f} s",
          flush=True)


if __name__ == "__main__":
    cli.run(main)
