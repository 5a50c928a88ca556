"""PETS planning speed against the machine's matrix-multiply ceiling, measured in one run.

``python -m experiments.benchmark --suite planner [--preset halfcheetah] [--num-envs 1]``

* Time per planned action: one jitted ``Agent.act`` of the PETS agent (CEM over action sequences,
  trajectory sampling through the probabilistic ensemble) on ``--env`` (default
  ``brax/halfcheetah``) with a randomly initialised ensemble (planning cost does not depend on
  the weights' values).
* Achieved FLOP/s of the planner: the ensemble MLP's multiply-adds, ``2 * sum_l(n_in n_out)``
  per member prediction, times ``iterations * population * particles * horizon`` predictions
  per action (element-wise work, sorting and sampling are not counted: the ratio is a lower
  bound on how well the planner uses the machine).
* Ceilings: the FLOP/s of a square float32 ``n x n`` matrix product (largest over ``n`` in
  512/1024/2048) and of the planner's own layer shape (``K`` batched products
  ``[pop * P / K, 200] @ [200, 200]``), timed the same way in the same process.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp

import envs
from agents import pets
from agents import registry
from experiments.benchmark import _device, write_json
from experiments.timing import time_jitted
from experiments import cli


def matmul_flops(shape_mkn, batch: int = 1, min_seconds: float = 1.0) -> float:
    """FLOP/s of ``batch`` float32 products ``[m, k] @ [k, n]``."""
    m, k, n = shape_mkn
    a = jax.random.normal(jax.random.PRNGKey(0), (batch, m, k), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (batch, k, n), jnp.float32)
    timing = time_jitted(lambda x, y: jnp.einsum("bmk,bkn->bmn", x, y), a, b,
                         min_seconds=min_seconds)
    return 2.0 * batch * m * k * n / timing.best


def forward_flops(cfg: pets.PETSConfig, obs_size: int, action_size: int) -> int:
    """Multiply-add FLOPs of one member prediction (inputs -> mean, log-variance, termination)."""
    out = 2 * (obs_size + 1) + int(cfg.predict_termination)
    widths = [obs_size + action_size, *cfg.hidden_sizes, out]
    return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


def planner_speed(cfg: pets.PETSConfig, env, num_envs: int, min_seconds: float) -> Dict:
    agent = pets.make(cfg, env, num_envs)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jnp.zeros((num_envs,) + env.spec.obs_shape, jnp.float32)
    first = jnp.zeros((num_envs,), bool)
    carry = agent.initial_carry(num_envs)
    timing = time_jitted(lambda s, o, f, c, k: agent.act(s, o, f, c, k, True)[0], state, obs,
                         first, carry, jax.random.PRNGKey(1), min_seconds=min_seconds)
    compile_s, seconds = timing.compile_s, timing.best
    particles = 1 if cfg.propagation == "mean" else cfg.num_particles
    predictions = cfg.cem_iterations * cfg.population * particles * cfg.horizon * num_envs
    flops = predictions * forward_flops(cfg, env.spec.obs_shape[0], env.spec.action_shape[0])
    return {"num_envs": num_envs, "compile_s": compile_s, "seconds_per_call": seconds,
            "seconds_per_action": seconds / num_envs, "model_predictions_per_call": predictions,
            "flops_per_call": flops, "planner_flops_per_s": flops / seconds}


def main(argv: Optional[List[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.benchmark --suite planner",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="brax/halfcheetah")
    p.add_argument("--preset", default="halfcheetah", help="PETS preset (planner + network)")
    p.add_argument("--propagation", default=None, help="override: ts1, tsinf or mean")
    p.add_argument("--num-envs", default="1", help="comma list of environments planned at once")
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--matmul-sizes", default="512,1024,2048", help="square matmul ceilings")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cli.check_output_file(args.json, "--json")

    cfg = registry.preset("pets", args.preset)
    if args.propagation:
        cfg = dataclasses.replace(cfg, propagation=args.propagation)
    env = envs.make(args.env)
    result: Dict = {"suite": "planner", "env": args.env, "preset": args.preset,
                    "device": _device(), "config": dataclasses.asdict(cfg)}
    per_member = cfg.population * cfg.num_particles // cfg.ensemble_elites
    width = cfg.hidden_sizes[0]
    ceilings = {f"square_{n}": matmul_flops((n, n, n), min_seconds=args.min_seconds)
                for n in [int(x) for x in args.matmul_sizes.split(",") if x]}
    result["matmul_flops_per_s"] = max(ceilings.values())
    result["matmul_square"] = ceilings
    result["matmul_layer_shape"] = matmul_flops((per_member, width, width), cfg.ensemble_elites,
                                                args.min_seconds)
    result["runs"] = []
    for n in [int(x) for x in args.num_envs.split(",") if x]:
        row = planner_speed(cfg, env, n, args.min_seconds)
        row["fraction_of_matmul_ceiling"] = row["planner_flops_per_s"] / result[
            "matmul_flops_per_s"]
        result["runs"].append(row)
        print(f"PETS planner [{args.preset}, {cfg.propagation}] on {args.env}, {n} env(s): "
              f"{row['seconds_per_action'] * 1e3:,.1f} ms per action, "
              f"{row['planner_flops_per_s'] / 1e9:,.1f} GFLOP/s = "
              f"{row['fraction_of_matmul_ceiling']:.0%} of the matmul ceiling "
              f"{result['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s (layer-shaped matmul "
              f"{result['matmul_layer_shape'] / 1e9:,.1f} GFLOP/s); compile "
              f"{row['compile_s']:.1f} s", flush=True)
        write_json(args.json, result, complete=False)
    write_json(args.json, result, complete=True)
    return result
