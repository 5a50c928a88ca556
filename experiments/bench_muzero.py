"""MuZero throughput: ``python -m experiments.benchmark --suite muzero [--env ID] [--json PATH]``.

Measures, for the agent's preset on one environment:

* acting: searches per second and environment steps per second of a compiled scan of
  (search on every environment, batched environment step), for ``--simulations`` (16, 50) and
  ``--batches`` environments (default 1,16,256 on CPU; pass up to 1024 on an accelerator);
* training: updates per second of the compiled update (sampling, reanalyse, loss, Adam,
  priorities) on a prefilled buffer, at the preset's batch size and at each of
  ``--update-batch-sizes`` (on a GPU the update is latency-bound: larger batches are nearly
  free, which sizes a GPU preset);
* scaling with ``num_seeds``: env steps and updates per second of the whole training loop
  (``core.loop``) vmapped over 1, 2, 4 seeds;
* compile time of each measured program and the peak memory.

Writes one JSON object (``--json``) and returns it.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Dict, List, Optional

import jax

import envs
from agents import registry
from agents.muzero import acting
from core.loop import make_loop
from experiments import presets
from experiments.benchmark import _device, agent_throughput, write_json
from experiments.timing import time_jitted
from world_models.muzero import make_model_fns
from experiments import cli


def acting_throughput(agent_name: str, env, cfg, num_envs: int, min_seconds: float,
                      length: int = 8) -> Dict:
    """Searches/s and env steps/s of ``length`` search-then-step iterations on ``num_envs``."""
    module = registry.agent_module(agent_name)
    model = module.build_model(cfg, env)
    root_fn, recurrent_fn = make_model_fns(model, cfg.discount)
    params = model.init(jax.random.PRNGKey(0), env.spec.obs_shape)

    def run(carry):
        def body(c, _):
            env_state, key = c
            key, search_key, step_key = jax.random.split(key, 3)
            out = acting.search(cfg, root_fn, recurrent_fn, params, env_state.obs, search_key,
                                explore=True)
            env_state, ts = envs.batch_step(env, env_state, out.action, step_key)
            return (env_state, key), ts.reward.sum()
        carry, rewards = jax.lax.scan(body, carry, None, length=length)
        return carry, rewards.sum()

    key = jax.random.PRNGKey(1)
    carry = (jax.jit(lambda k: envs.batch_reset(env, k, num_envs))(key), key)
    timing = time_jitted(run, carry, min_seconds=min_seconds, threaded=True)
    compile_s, per_call = timing.compile_s, timing.mean
    rate = length * num_envs / per_call
    return {"num_simulations": cfg.num_simulations, "num_envs": num_envs,
            "compile_s": compile_s, "searches_per_s": rate, "env_steps_per_s": rate}


def update_throughput(agent_name: str, env, cfg, num_envs: int, min_seconds: float,
                      updates: int = 4) -> Dict:
    """Updates/s of the compiled update on a buffer prefilled with random play."""
    agent = registry.agent_module(agent_name).make(cfg, env, num_envs)
    prefill = max(1, agent.schedule.prefill_steps // num_envs)
    fns = make_loop(env, agent, num_envs=num_envs, iterations=1, prefill_iterations=prefill)
    state = jax.jit(fns.prefill)(jax.jit(fns.init)(jax.random.PRNGKey(0)))[0]

    def run(carry):
        def body(c, key):
            agent_state, buffer_state = c
            agent_state, buffer_state, metrics = agent.update(agent_state, buffer_state, key)
            return (agent_state, buffer_state), metrics["loss"]
        (a, b), losses = jax.lax.scan(body, carry[:2],
                                      jax.random.split(carry[2], updates))
        return (a, b, jax.random.fold_in(carry[2], 1)), losses.mean()

    timing = time_jitted(run, (state.agent, state.buffer, state.key),
                         min_seconds=min_seconds, threaded=True)
    compile_s, per_call = timing.compile_s, timing.mean
    return {"batch_size": cfg.batch_size, "reanalyse_fraction": cfg.reanalyse_fraction,
            "num_simulations": cfg.num_simulations, "compile_s": compile_s,
            "updates_per_s": updates / per_call}


def main(argv: Optional[List[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.benchmark --suite muzero",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="muzero", choices=["muzero", "gumbel_muzero"])
    p.add_argument("--env", default="gymnax/CartPole-v1")
    p.add_argument("--preset", default=None)
    p.add_argument("--simulations", default="16,50")
    p.add_argument("--batches", default="1,16,256", help="env batches for acting (<= 1024)")
    p.add_argument("--num-envs", type=int, default=None, help="envs per seed for training")
    p.add_argument("--batch-size", type=int, default=None,
                   help="override the preset's training batch size (all training rows)")
    p.add_argument("--updates-per-iteration", type=int, default=None,
                   help="override the preset's updates per loop iteration (seed scaling rows)")
    p.add_argument("--update-batch-sizes", default="",
                   help="more batch sizes for the training rows, e.g. 256,1024")
    p.add_argument("--scaling-seeds", default="1,2,4")
    p.add_argument("--iterations", type=int, default=4, help="loop iterations per chunk")
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cli.check_output_file(args.json, "--json")

    env = envs.make(args.env)
    cfg = registry.preset(args.agent, args.preset or presets.default_preset(args.agent, args.env,
                                                                          env.spec.obs_kind))
    overrides = {k: v for k, v in (("batch_size", args.batch_size),
                                   ("updates_per_iteration", args.updates_per_iteration))
                 if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)  # validated by the config's __post_init__
    num_envs = args.num_envs or presets.run_defaults(args.agent, args.env)["num_envs"]
    result: Dict = {"suite": "muzero", "agent": args.agent, "env": args.env,
                    "device": _device(), "config": dataclasses.asdict(cfg), "acting": []}
    for sims in [int(x) for x in args.simulations.split(",") if x]:
        sim_cfg = dataclasses.replace(cfg, num_simulations=sims)
        for batch in [int(x) for x in args.batches.split(",") if x]:
            row = acting_throughput(args.agent, env, sim_cfg, batch, args.min_seconds)
            result["acting"].append(row)
            print(f"  acting sims={sims:>3} envs={batch:>5}: {row['searches_per_s']:>12,.0f} "
                  f"searches/s  compile {row['compile_s']:.1f} s", flush=True)
            write_json(args.json, result, complete=False)
    result["training"] = update_throughput(args.agent, env, cfg, num_envs, args.min_seconds)
    result["training_by_batch"] = [result["training"]]
    for batch in [int(x) for x in args.update_batch_sizes.split(",") if x]:
        if batch != cfg.batch_size:
            result["training_by_batch"].append(update_throughput(
                args.agent, env, dataclasses.replace(cfg, batch_size=batch), num_envs,
                args.min_seconds))
    for row in result["training_by_batch"]:
        print(f"  training (batch {row['batch_size']}): {row['updates_per_s']:,.1f} updates/s "
              f"(compile {row['compile_s']:.1f} s)", flush=True)
    write_json(args.json, result, complete=False)
    result["seed_scaling"] = []
    for seeds in [int(x) for x in args.scaling_seeds.split(",") if x]:
        row = agent_throughput(args.agent, env, cfg, num_envs, seeds, args.iterations,
                               args.min_seconds)
        result["seed_scaling"].append(row)
        print(f"  loop seeds={seeds}: {row['env_steps_per_s']:,.0f} env steps/s, "
              f"{row['updates_per_s']:,.1f} updates/s, compile {row['compile_s']:.1f} s",
              flush=True)
        write_json(args.json, result, complete=False)
    write_json(args.json, result, complete=True)
    print(f"  peak memory {result['peak_memory_bytes'] / 2**20:,.0f} MiB "
          f"({result['peak_memory_source']})", flush=True)
    return result
