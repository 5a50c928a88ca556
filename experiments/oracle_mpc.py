"""CEM planning with the TRUE simulator as the model: is the planner or the model failing?

PETS couples a learned model with a sampling planner. When PETS does badly, this script
separates the two: it runs the same CEM (:mod:`agents.mpc.cem`, with a PETS preset's planner
settings and any overrides) on one episode of a stateful environment, but every candidate plan is
scored by stepping a copy of the real environment state (``env.adapter_step``), i.e. a perfect
model. If the planner fails here, no model can make PETS succeed at these settings.

    python -m experiments.oracle_mpc --env brax/inverted_pendulum --preset inverted_pendulum \
        --steps 1000 --seeds 0,1,2 [--horizon 30 --noise-beta 2 --keep-elites --return-best \
        --obs-cost 0.1,0,0,0]

The imagined return is the environment's own reward, weighted by survival (a terminated copy
earns nothing afterwards), minus the optional planning-only ``obs_cost`` (as in PETS). Printed:
per seed the steps survived (episode length), the return and the largest ``|obs[0]|``; the
per-step trajectory goes to ``--out`` as JSON when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

import envs
from agents import pets
from agents.mpc import cem


def make_actor(env: envs.Environment, planner: cem.CEMConfig, obs_cost: Optional[jax.Array]):
    """Jitted ``(inner, plan, key) -> (action, next plan, next inner, obs, reward, terminated)``.

    Plans are scored by rolling out copies of the simulator state ``inner``.
    """
    low = jnp.asarray(env.spec.action_low, jnp.float32)
    high = jnp.asarray(env.spec.action_high, jnp.float32)

    def imagined_return(inner, plan, key):
        def step(carry, inp):
            state, alive = carry
            action, step_key = inp
            state, obs, reward, terminated = env.adapter_step(state, action, step_key)
            if obs_cost is not None:
                reward = reward - jnp.sum(obs_cost * obs ** 2)
            return (state, alive * (1.0 - terminated.astype(jnp.float32))), alive * reward

        keys = jax.random.split(key, plan.shape[0])
        _, rewards = jax.lax.scan(step, (inner, jnp.ones(())), (plan, keys))
        return rewards.sum()

    @jax.jit
    def act(inner, plan, key):
        plan_key, step_key = jax.random.split(key)
        objective = lambda plans, k: jax.vmap(imagined_return, in_axes=(None, 0, None))(
            inner, plans, k)
        best, _ = cem.optimize(objective, plan, plan_key, planner, low, high)
        action = best[0]
        inner, obs, reward, terminated = env.adapter_step(inner, action, step_key)
        return action, cem.shift(best, low, high), inner, obs, reward, terminated

    return act


def run_episode(env: envs.Environment, planner: cem.CEMConfig, seed: int, steps: int,
                obs_cost: Optional[jax.Array] = None, act=None) -> Dict:
    """One episode of at most ``steps`` steps; returns its length, return and trajectory.

    ``act`` (optional) is :func:`make_actor`'s function for the same arguments, to reuse its
    compilation across episodes.
    """
    act = act or make_actor(env, planner, obs_cost)
    low = jnp.asarray(env.spec.action_low, jnp.float32)
    high = jnp.asarray(env.spec.action_high, jnp.float32)
    inner, obs = env.adapter_reset(jax.random.PRNGKey(seed))
    plan = cem.initial_mean(planner, low, high)
    key = jax.random.PRNGKey(10_000 + seed)
    observations: List[List[float]] = [np.asarray(obs).tolist()]
    total, length = 0.0, 0
    for _ in range(steps):
        key, step_key = jax.random.split(key)
        _, plan, inner, obs, reward, terminated = act(inner, plan, step_key)
        total += float(reward)
        length += 1
        observations.append(np.asarray(obs).tolist())
        if bool(terminated):
            break
    return {"seed": seed, "length": length, "return": total,
            "max_abs_obs0": float(np.max(np.abs(np.asarray(observations)[:, 0]))),
            "observations": observations}


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    p = argparse.ArgumentParser(prog="python -m experiments.oracle_mpc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="brax/inverted_pendulum")
    p.add_argument("--preset", default="inverted_pendulum", help="PETS preset for the planner")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", default="0", help="comma-separated reset seeds")
    p.add_argument("--horizon", type=int)
    p.add_argument("--population", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--noise-beta", type=float)
    p.add_argument("--keep-elites", action="store_true")
    p.add_argument("--return-best", action="store_true")
    p.add_argument("--obs-cost", default="", help="comma-separated weights, one per obs dim")
    p.add_argument("--out", default="", help="JSON file for the results and trajectories")
    args = p.parse_args(argv)

    if args.preset not in pets.PRESETS:
        raise ValueError(f"unknown PETS preset {args.preset!r}; known: {sorted(pets.PRESETS)}")
    planner = pets.PRESETS[args.preset].cem()
    overrides = {"horizon": args.horizon, "population": args.population,
                 "iterations": args.iterations, "noise_beta": args.noise_beta}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.population is not None:
        overrides["elites"] = max(1, args.population // 10)
    if args.keep_elites:
        overrides["keep_elites"] = True
    if args.return_best:
        overrides["return_best"] = True
    planner = dataclasses.replace(planner, **overrides)
    env = envs.make(args.env)
    cem.check_spec(env.spec, "oracle_mpc")
    obs_cost = None
    if args.obs_cost:
        weights = [float(w) for w in args.obs_cost.split(",")]
        if len(weights) != env.spec.obs_shape[0]:
            raise ValueError(f"--obs-cost needs {env.spec.obs_shape[0]} weights (one per "
                             f"observation dimension of {args.env}), got {len(weights)}")
        obs_cost = jnp.asarray(weights, jnp.float32)
    print(f"[oracle_mpc] {args.env} planner={planner} obs_cost={args.obs_cost or None}")
    results = []
    act = make_actor(env, planner, obs_cost)
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        start = time.time()
        result = run_episode(env, planner, seed, args.steps, obs_cost, act)
        result["wall_time"] = time.time() - start
        results.append(result)
        print(f"[oracle_mpc] seed {seed}: length {result['length']}, return "
              f"{result['return']:.1f}, max |obs[0]| {result['max_abs_obs0']:.3f}, "
              f"{result['wall_time']:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": args.env, "planner": dataclasses.asdict(planner),
                       "obs_cost": args.obs_cost, "results": results}, f)
    return results


if __name__ == "__main__":
    main()
