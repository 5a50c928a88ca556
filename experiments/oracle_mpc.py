"""CEM planning with the TRUE simulator as the model: is the planner or the model failing?

PETS couples a learned model with a sampling planner. When PETS does badly, this script
separates the two: it runs the same CEM (:mod:`agents.mpc.cem`, with a PETS preset's planner
settings and any overrides) on one episode of a stateful environment, but every candidate plan is
scored by stepping a copy of the real environment state (``env.adapter_step``), i.e. a perfect
model. If the planner fails here, no model can make PETS succeed at these settings.

    python -m experiments.oracle_mpc --env brax/inverted_pendulum --preset inverted_pendulum \
        --steps 1000 --seeds 0,1,2 [--horizon 15 --noise-beta 0 --no-keep-elites \
        --no-return-best --obs-cost 0.1,0,0,0]

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
from core import rollout
from experiments import cli


def make_planner(env: envs.Environment, planner: cem.CEMConfig,
                 obs_cost: Optional[jax.Array]):
    """``(inner, plan, key) -> (action, next plan)`` for one environment: CEM whose candidate
    plans are scored by rolling out copies of the simulator state ``inner``."""
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

    def plan_action(inner, plan, key):
        objective = lambda plans, k: jax.vmap(imagined_return, in_axes=(None, 0, None))(
            inner, plans, k)
        best, _ = cem.optimize(objective, plan, key, planner, low, high)
        return best[0], cem.shift(best, low, high)

    return plan_action


def make_episode(env: envs.Environment, planner: cem.CEMConfig, steps: int,
                 obs_cost: Optional[jax.Array] = None):
    """Jitted ``seed -> core.rollout.Rollout`` of one environment (``N = 1``) for ``steps``
    planning steps from ``env.reset(PRNGKey(seed))``; the simulator keeps stepping after a
    termination (``valid`` and ``lengths`` cut the episode there)."""
    plan_action = make_planner(env, planner, obs_cost)
    low = jnp.asarray(env.spec.action_low, jnp.float32)
    high = jnp.asarray(env.spec.action_high, jnp.float32)

    def policy(env_state, is_first, plans, key):
        keys = jax.random.split(key, plans.shape[0])
        action, plans = jax.vmap(plan_action)(env_state.inner, plans, keys)
        return action, plans, ()

    @jax.jit
    def episode(seed):
        start = jax.vmap(env.reset)(jax.random.PRNGKey(seed)[None])
        plans = cem.initial_mean(planner, low, high)[None]
        return rollout.play(env, policy, jax.random.PRNGKey(10_000 + seed), num_envs=1,
                            length=steps, carry=plans, start=start)

    return episode


def run_episode(env: envs.Environment, planner: cem.CEMConfig, seed: int, steps: int,
                obs_cost: Optional[jax.Array] = None, episode=None) -> Dict:
    """One episode of at most ``steps`` steps; returns its length, return and trajectory.

    ``episode`` (optional) is :func:`make_episode`'s function for the same arguments, to reuse
    its compilation across seeds.
    """
    episode = episode or make_episode(env, planner, steps, obs_cost)
    out = episode(seed)
    length = int(out.lengths[0])
    observations = np.asarray(out.observations()[0, :length + 1])
    return {"seed": seed, "length": length, "return": float(out.returns[0]),
            "max_abs_obs0": float(np.max(np.abs(observations[:, 0]))),
            "observations": observations.tolist()}


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    p = cli.ArgumentParser(prog="python -m experiments.oracle_mpc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="brax/inverted_pendulum")
    p.add_argument("--preset", default="inverted_pendulum", help="PETS preset for the planner")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", default="0", help="comma-separated reset seeds")
    p.add_argument("--horizon", type=int)
    p.add_argument("--population", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--noise-beta", type=float)
    p.add_argument("--keep-elites", action=argparse.BooleanOptionalAction)
    p.add_argument("--return-best", action=argparse.BooleanOptionalAction)
    p.add_argument("--obs-cost", default="", help="comma-separated weights, one per obs dim")
    p.add_argument("--out", default="", help="JSON file for the results and trajectories")
    args = p.parse_args(argv)
    cli.check_output_file(args.out, "--out")

    if args.preset not in pets.PRESETS:
        raise ValueError(f"unknown PETS preset {args.preset!r}; known: {sorted(pets.PRESETS)}")
    planner = pets.PRESETS[args.preset].cem()
    overrides = {"horizon": args.horizon, "population": args.population,
                 "iterations": args.iterations, "noise_beta": args.noise_beta}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.population is not None:
        overrides["elites"] = max(1, args.population // 10)
    for name in ("keep_elites", "return_best"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
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
    episode = make_episode(env, planner, args.steps, obs_cost)
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        start = time.time()
        result = run_episode(env, planner, seed, args.steps, obs_cost, episode)
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
    cli.run(main)
