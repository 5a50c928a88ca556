"""DreamerV3 throughput: ``python -m experiments.benchmark --suite dreamer [flags]``.

Measures, for a preset at a ``batch_size x seq_len`` replay batch (16 x 64 for the sizes):

* the core loop's steady state (one seed): updates/s, env steps/s, compile time, peak memory;
* how updates/s scale with ``num_seeds`` (vmapped seeds in one program);
* a profile of one update (:func:`profile_update`): the world-model loss + gradient, the
  imagination (no gradient) and the rest (actor, critic, replay value loss, optimiser steps),
  timed as the training loop runs them.

CPU defaults are short (``1m``, train ratio 1024, seeds 1,2,4); ``--sizes 1m,12m,50m`` and
``--seeds 1,2,4,8`` give the full table on an accelerator.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp

import envs
from agents.dreamer import actor_critic as ac
from agents.dreamer.agent import Dreamer, schedule_for
from agents.dreamer.config import PRESETS
from core.types import Transition
from experiments.benchmark import _device, agent_throughput, write_json
from experiments.timing import time_jitted
from experiments import cli


def _time(fn, *args, min_seconds: float):
    """``(compile_s, mean seconds per call)`` of ``jax.jit(fn)(*args)``."""
    timing = time_jitted(fn, *args, min_seconds=min_seconds)
    return timing.compile_s, timing.mean


def profile_update(cfg, env, min_seconds: float, calls: int = 16) -> Dict:
    """Seconds per update of three programs, each a prefix of the next, on a zero-filled batch.

    Each program runs as the training loop runs an update: the agent state of one seed with a
    leading seed axis under ``vmap``, ``calls`` calls chained in a ``lax.scan`` (each with its
    own key; the first two programs move the world model's parameters by a negligible amount
    per call, as training does, so that XLA cannot hoist work out of the loop). The same
    computation jitted on its own, without the seed axis, compiles to a different and slower
    program. The programs: the world-model loss and gradient; that plus
    imagination from its posterior states (no gradient); the whole update (adds the
    actor-critic and replay value losses, their gradients and the optimiser steps). Their
    differences are the parts: ``world_model_s``, ``imagination_s``, ``actor_critic_s`` (the
    rest of the update), summing to ``update_s``.
    """
    dreamer = Dreamer(cfg, env)
    state = jax.tree_util.tree_map(lambda x: x[None], dreamer.init(jax.random.PRNGKey(0)))
    spec, b, t = env.spec, cfg.batch_size, cfg.seq_len
    obs = jnp.zeros((b, t) + tuple(spec.obs_shape), spec.obs_dtype)
    flag = jnp.zeros((b, t), bool)
    extras = {}  # what replay stores with a step: entries of replay context (not valid) or none
    if cfg.replay_context:
        extras = jax.tree_util.tree_map(lambda x: jnp.zeros((b, t) + x.shape, x.dtype),
                                        dreamer.context_entry(dreamer.model.initial()))
    batch = Transition(obs=obs, action=jnp.zeros((b, t) + tuple(spec.action_shape),
                                                 spec.action_dtype),
                       reward=jnp.zeros((b, t)), next_obs=obs, terminated=flag, truncated=flag,
                       is_first=flag, extras=extras)
    sg = jax.lax.stop_gradient
    total = lambda tree: sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(tree))  # noqa: E731

    def world_model(s, k):
        grad, starts, _ = dreamer.world_model_grad(s.wm_params, batch, k)
        out = total(grad)
        # parameters that change from call to call, as in training: nothing is loop-invariant
        wm = jax.tree_util.tree_map(lambda p: p + 1e-30 * out, s.wm_params)
        return s.replace(wm_params=wm), (out, starts)

    def imagination(s, k):
        s, (out, starts) = world_model(s, k)
        traj = ac.imagine(dreamer.model, sg(s.wm_params), dreamer.actor, sg(s.actor_params),
                          starts, jax.random.fold_in(k, 1), cfg.horizon, dreamer.backprop)
        return s, (out + total(traj), starts)

    def update(s, k):
        return dreamer.update(s, batch, k)[0], (jnp.zeros(()), None)

    def program(step):
        def run(s, key):
            def one(s):
                s, (out, _) = jax.lax.scan(step, s, jax.random.split(key, calls))
                return s, out
            return jax.vmap(one)(s)
        return run

    key = jax.random.PRNGKey(1)
    out, per_update = {}, {}
    for name, step in (("world_model", world_model), ("imagination", imagination),
                       ("update", update)):
        compile_s, seconds = _time(program(step), state, key, min_seconds=min_seconds)
        out[f"{name}_program_compile_s"] = compile_s
        per_update[name] = seconds / calls
    out["world_model_s"] = per_update["world_model"]
    out["imagination_s"] = per_update["imagination"] - per_update["world_model"]
    out["actor_critic_s"] = per_update["update"] - per_update["imagination"]
    out["update_s"] = per_update["update"]
    out["updates_per_call"] = calls
    out["param_count"] = dreamer.param_count()
    return out


def preset(size: str, train_ratio: float, compute_dtype: Optional[str] = None):
    """The preset ``size`` at ``train_ratio``, in ``compute_dtype`` where given."""
    overrides = {"train_ratio": train_ratio}
    if compute_dtype:
        overrides["compute_dtype"] = compute_dtype
    return dataclasses.replace(PRESETS[size], **overrides)


def main(argv: Optional[List[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.benchmark --suite dreamer",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="gymnax/CartPole-v1",
                   help="environment (DMC proprio on an accelerator: dmc/cartpole_swingup)")
    p.add_argument("--sizes", default="1m", help="comma list of presets, e.g. 1m,12m,50m")
    p.add_argument("--train-ratio", type=float, default=1024.0)
    p.add_argument("--num-envs", type=int, default=1)
    p.add_argument("--seeds", default="1,2,4", help="num_seeds scaling (first preset)")
    p.add_argument("--iterations", type=int, default=2, help="iterations per timed chunk")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--compute-dtype", default=None, choices=("float32", "bfloat16"),
                   help="the presets' compute dtype (DreamerConfig.compute_dtype) if given")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cli.check_output_file(args.json, "--json")

    env = envs.make(args.env)
    result: Dict = {"suite": "dreamer", "env": args.env, "device": _device(),
                    "train_ratio": args.train_ratio, "num_envs": args.num_envs, "sizes": {}}
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for i, size in enumerate(s for s in args.sizes.split(",") if s):
        cfg = preset(size, args.train_ratio, args.compute_dtype)
        sched = schedule_for(cfg, args.num_envs)
        row: Dict = {"batch": [cfg.batch_size, cfg.seq_len], "compute_dtype": cfg.compute_dtype,
                     "updates_per_iteration": sched.updates_per_iteration,
                     "env_steps_per_iteration": sched.env_steps_per_iteration}
        if not args.no_profile:
            row["profile"] = profile_update(cfg, env, args.min_seconds)
            print(f"[{size}] profile: {json.dumps(row['profile'])}", flush=True)
        runs = []
        for n in (seeds if i == 0 else [1]):
            r = agent_throughput("dreamer", env, cfg, args.num_envs, n, args.iterations,
                                 args.min_seconds)
            runs.append(r)
            readings = ", ".join(f"{u:.3f}" for u in r.get("updates_per_s_readings", ()))
            print(f"[{size}] num_seeds={n}: {r['updates_per_s']:.2f} updates/s, "
                  f"{r['env_steps_per_s']:.1f} env steps/s, compile {r['compile_s']:.1f} s "
                  f"(per chunk: {readings})", flush=True)
        row["scaling"] = runs
        row.update({k: runs[0][k] for k in ("updates_per_s", "env_steps_per_s", "compile_s")})
        result["sizes"][size] = row
        write_json(args.json, result, complete=False)
    write_json(args.json, result, complete=True)
    print(f"peak memory {result['peak_memory_bytes'] / 2**20:,.0f} MiB "
          f"({result['peak_memory_source']})")
    return result
