"""Compounding error of the PETS/MBPO probabilistic ensemble on a real task.

``python -m experiments.compounding --env dmc/cartpole_swingup``

1. Collect ``--train-trajectories`` random-action trajectories of ``--length`` steps and fit the
   ensemble of the PETS preset ``--preset`` on them (all of them, bootstrapped members, holdout
   split and early stopping as in training).
2. On ``--test-trajectories`` held-out real trajectories, roll the model open loop from every
   start and report the k-step error (``world_models.evaluation.k_step_error``) for k = 1..H of

   * ``mean``: the deterministic mean prediction averaged over the elites;
   * ``ts1``: sampled propagation, a random elite and Gaussian noise at every step;
   * ``tsinf``: sampled propagation with one elite for the whole rollout (averaged over the
     elites, one pass per elite);
   * ``no_change``: the reference that predicts ``s_{t+k} = s_t`` (a model must beat it).

Prints a table and writes ``--json`` / ``--plot``. The pooled relative error is
``mean ||ŝ_{t+k} - s_{t+k}|| / mean ||s_{t+k}||`` over all starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

import envs
from agents import registry
from world_models import ensemble, ensemble_fit, evaluation
from experiments import cli

REPORT_KS = (1, 2, 5, 10, 20, 30, 50)


def _flatten_transitions(states, actions):
    obs = states[:, :-1].reshape((-1,) + states.shape[2:])
    next_obs = states[:, 1:].reshape((-1,) + states.shape[2:])
    return obs, actions.reshape((-1,) + actions.shape[2:]), next_obs


def fit_ensemble(preset: str, states, actions, key):
    """An ensemble of the PETS ``preset`` fitted on the transitions of real trajectories."""
    cfg = registry.preset("pets", preset).ensemble()
    cfg = dataclasses.replace(cfg, predict_reward=False, predict_termination=False)
    obs, act, next_obs = _flatten_transitions(states, actions)
    model = ensemble.init(key, obs.shape[-1], act.shape[-1], cfg)
    fit = jax.jit(ensemble_fit.fit)
    return fit(model, obs, act, next_obs, jnp.zeros(obs.shape[0]), jnp.ones(obs.shape[0]),
               jax.random.fold_in(key, 1))


_FIELDS = ("relative_error", "pooled_relative_error", "abs_error", "target_norm")


@functools.partial(jax.jit, static_argnums=(3,))
def _curves(model, states, actions, horizon: int, key):
    kse = functools.partial(evaluation.k_step_error, states=states, actions=actions,
                            horizon=horizon)
    ts1_key, tsinf_key = jax.random.split(key)
    pick = lambda c: {name: c[name] for name in _FIELDS}
    out = {"mean": pick(kse(functools.partial(ensemble.mean_next_obs, model))),
           "ts1": pick(kse(functools.partial(ensemble.sample_next_obs, model), key=ts1_key)),
           "no_change": pick(kse(lambda s, a: s))}

    def one_elite(member, k):
        step = lambda s, a, kk: ensemble.sample_next(model, s, a, kk, member=member)[0]
        return pick(kse(step, key=k))

    keys = jax.random.split(tsinf_key, model.elites.shape[0])
    per_elite = jax.vmap(one_elite)(model.elites, keys)
    out["tsinf"] = jax.tree.map(lambda x: x.mean(axis=0), per_elite)
    return out


def curves(model, states, actions, horizon: int, key) -> Dict[str, Dict]:
    """k-step error curves (lists over k = 1..H) of the mean, TS-1 and TS-inf propagations."""
    out = _curves(model, states, actions, horizon, key)
    return {prop: {"horizons": list(range(1, horizon + 1)),
                   **{name: np.asarray(v).tolist() for name, v in c.items()}}
            for prop, c in out.items()}


def main(argv: Optional[List[str]] = None) -> Dict:
    p = cli.ArgumentParser(prog="python -m experiments.compounding", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="dmc/cartpole_swingup")
    p.add_argument("--preset", default="paper", help="PETS preset whose ensemble is fitted")
    p.add_argument("--train-trajectories", type=int, default=16)
    p.add_argument("--test-trajectories", type=int, default=8)
    p.add_argument("--length", type=int, default=250, help="steps per trajectory")
    p.add_argument("--horizon", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    cli.check_output_file(args.json, "--json")
    cli.check_output_file(args.plot, "--plot")

    start = time.perf_counter()
    env = envs.make(args.env)
    data_key, fit_key, eval_key = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    # One collection (one compile); the first trajectories train, the rest are held out.
    states, actions = evaluation.collect_trajectories(
        env, data_key, args.train_trajectories + args.test_trajectories, args.length)
    n = args.train_trajectories
    model, metrics = fit_ensemble(args.preset, states[:n], actions[:n], fit_key)
    states, actions = states[n:], actions[n:]
    result = {"env": args.env, "preset": args.preset, "device": jax.devices()[0].device_kind,
              "train_transitions": args.train_trajectories * args.length,
              "fit": {k: np.asarray(v).tolist() for k, v in metrics.items()
                      if np.size(v) <= 64},  # leaves out the per-row holdout mask
              "curves": curves(model, states, actions, args.horizon, eval_key)}
    result["wall_s"] = time.perf_counter() - start
    ks = [k for k in REPORT_KS if k <= args.horizon]
    print(f"Ensemble ({args.preset} preset) on {args.env}, fitted on "
          f"{result['train_transitions']} random-action steps; pooled relative k-step error:")
    print("  k         " + "".join(f"{k:>9d}" for k in ks))
    for prop, c in result["curves"].items():
        print(f"  {prop:<10}" + "".join(f"{c['pooled_relative_error'][k - 1]:>9.1%}" for k in ks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        _plot(result, args.plot)
    return result


def _plot(result: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for prop, c in result["curves"].items():
        ax.plot(c["horizons"], c["pooled_relative_error"], label=prop)
    ax.set_xlabel("k (open-loop model steps)")
    ax.set_ylabel("pooled relative error")
    ax.set_title(f"Ensemble k-step error, {result['env']}")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main)
