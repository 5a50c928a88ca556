"""DreamerV3 throughput: ``python -m experiments.benchmark --suite dreamer [flags]``.

Measures, for a preset at a ``batch_size x seq_len`` replay batch (16 x 64 for the sizes):

* the core loop's steady state (one seed): updates/s, env steps/s, compile time, peak memory;
* how updates/s scale with ``num_seeds`` (vmapped seeds in one program);
* a profile of one update: the jitted world-model loss + gradient, the imagination (no
  gradient) and the actor + critic gradient timed separately, next to the whole update.

CPU defaults are short (``1m``, train ratio 1024, seeds 1,2,4); ``--sizes 1m,12m,50m`` and
``--seeds 1,2,4,8`` give the full table on an accelerator.
"""

from __future__ import annotations

import argparse
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


def profile_update(cfg, env, min_seconds: float) -> Dict:
    """Seconds per call of the pieces of one update on a zero-filled batch."""
    dreamer = Dreamer(cfg, env)
    state = dreamer.init(jax.random.PRNGKey(0))
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
    key = jax.random.PRNGKey(1)
    out = {}
    out["world_model_compile_s"], out["world_model_s"] = _time(
        lambda s, k: dreamer.world_model_grad(s.wm_params, batch, k)[0], state, key,
        min_seconds=min_seconds)
    _, starts, _ = jax.jit(lambda s, k: dreamer.world_model_grad(s.wm_params, batch, k))(
        state, key)

    sg = jax.lax.stop_gradient

    def imagine(s, k):
        return ac.imagine(dreamer.model, sg(s.wm_params), dreamer.actor, sg(s.actor_params),
                          starts, k, cfg.horizon, False)

    out["imagination_compile_s"], out["imagination_s"] = _time(
        imagine, state, key, min_seconds=min_seconds)
    traj = jax.jit(imagine)(state, key)

    def actor_critic_grad(s):
        def loss(actor_params, critic_params):
            a, c, *_ = ac.actor_critic_loss(
                actor_params, critic_params, s.slow_critic_params, traj, s.ret_state,
                actor=dreamer.actor, critic=dreamer.critic, cfg=cfg, backprop=False)
            return a + c
        return jax.grad(loss, argnums=(0, 1))(s.actor_params, s.critic_params)

    out["actor_critic_compile_s"], out["actor_critic_s"] = _time(
        actor_critic_grad, state, min_seconds=min_seconds)
    out["update_compile_s"], out["update_s"] = _time(
        lambda s, k: dreamer.update(s, batch, k)[0], state, key, min_seconds=min_seconds)
    out["param_count"] = dreamer.param_count()
    return out


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
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    env = envs.make(args.env)
    result: Dict = {"suite": "dreamer", "env": args.env, "device": _device(),
                    "train_ratio": args.train_ratio, "num_envs": args.num_envs, "sizes": {}}
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for i, size in enumerate(s for s in args.sizes.split(",") if s):
        cfg = PRESETS[size].__class__(**{**PRESETS[size].__dict__,
                                         "train_ratio": args.train_ratio})
        sched = schedule_for(cfg, args.num_envs)
        row: Dict = {"batch": [cfg.batch_size, cfg.seq_len],
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
