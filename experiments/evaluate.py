"""The compounding error of a trained run's learned model: ``python -m experiments.evaluate``.

    python -m experiments.evaluate --logdir RUN [--seed-index 0 --horizon H --trajectories 16 \
        --length 60 --json PATH --search-budgets N ...]

Restores the latest checkpoint of one seed of a run of ``python -m experiments.train``, plays
``--trajectories`` real greedy episodes of ``--length`` steps, and rolls the learned model open
loop on the real actions from every real state, printing its k-step errors for k = 1..H
(abs error and pooled relative error, :mod:`world_models.evaluation`). The run's agent, as
recorded in its ``config.json``, picks the measurement:

* ``muzero`` / ``gumbel_muzero`` (H defaults to 10): reward and value errors of the unrolled
  dynamics, the model's one-step action values against the real next states' and the greedy
  episodes' action frequencies (:mod:`agents.muzero.evaluation`); ``--policy-values-every N``
  adds the greedy policy's own action values by rollout at every N-th state of one episode;
  ``--search-budgets N [N ...]`` the mean return of ``--trajectories`` greedy episodes (to the
  time limit) with the search at each number of simulations (same keys for each), which tells
  whether the trained networks or the search's budget limit greedy play.
* ``stochastic_muzero`` (H defaults to 10): reward and value errors of the unrolled
  afterstate model, with the chance codes the encoder gives the real outcomes (``observed``)
  and with the chance head's most likely codes (``likely``), along the agent's greedy games
  (:mod:`agents.stochastic_muzero.evaluation`).
* ``dreamer`` (H defaults to 15): decoded observation and reward errors of the RSSM's prior
  from posterior states, the observation errors of persistence (``o_t`` taken for
  ``o_{t+k}``), for vector observations how well the posterior's reconstruction follows each
  observation element (correlations, summarised overall and by the groups a task names), and
  the critic's values and the reward head's predictions against the returns and rewards of
  the same episodes (:mod:`agents.dreamer.evaluation`);
  ``--sample-actions`` plays them with the actor's samples, as in training, instead of its
  mode.

A user mistake prints one ``error: ...`` line and exits with status 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Dict, Optional, Sequence, Tuple

from experiments import cli, watch
from experiments.cli import UsageError

# agent name (experiments.train --agent) -> the family whose evaluation measures its model
FAMILIES = {"muzero": "muzero", "gumbel_muzero": "muzero", "dreamer": "dreamer",
            "stochastic_muzero": "stochastic_muzero"}
DEFAULT_HORIZON = {"muzero": 10, "dreamer": 15, "stochastic_muzero": 10}


def evaluation_parser() -> argparse.ArgumentParser:
    """The command line: the run, the rollouts and the MuZero-only flags."""
    p = cli.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", required=True, help="log directory of python -m experiments.train")
    p.add_argument("--seed-index", type=int, default=0, help="which seed of the run")
    p.add_argument("--horizon", type=int, default=None,
                   help="largest k (default: 10 for MuZero and Stochastic MuZero runs, 15 for "
                        "Dreamer runs)")
    p.add_argument("--trajectories", type=int, default=16, help="real greedy episodes")
    p.add_argument("--length", type=int, default=60, help="steps per episode at most")
    p.add_argument("--json", default=None, help="write the whole result to this JSON file")
    p.add_argument("--policy-values-every", type=int, default=0,
                   help="MuZero: also roll out the greedy policy's action values at every N-th "
                        "state of one episode (0: off)")
    p.add_argument("--policy-length", type=int, default=0,
                   help="MuZero: episode length cut for --policy-values-every (default: the "
                        "environment's time limit)")
    p.add_argument("--search-budgets", type=int, nargs="+", default=None, metavar="N",
                   help="MuZero: also the mean return of --trajectories greedy episodes (to the "
                        "time limit) with the search at each of these numbers of simulations")
    p.add_argument("--sample-actions", action="store_true",
                   help="Dreamer: play with the actor's samples, as in training, instead of "
                        "its mode")
    p.add_argument(cli.DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of a usage error (or set {cli.DEBUG_ENV}=1)")
    return p


def check_args(args: argparse.Namespace, family: str) -> int:
    """The flags' ranges for ``family``; returns the horizon."""
    for name in ("trajectories", "length"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    horizon = DEFAULT_HORIZON[family] if args.horizon is None else args.horizon
    if not 1 <= horizon <= args.length:
        raise UsageError(f"--horizon must be in [1, --length={args.length}], got {horizon}")
    for name in ("policy_values_every", "policy_length"):
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value < 0:
            raise UsageError(f"{flag} must be >= 0, got {value}")
        if value and family != "muzero":
            raise UsageError(f"{flag} applies to MuZero runs only, and {args.logdir} is a "
                             f"{family} run")
    budgets = getattr(args, "search_budgets", None)
    if budgets is not None:
        if family != "muzero":
            raise UsageError(f"--search-budgets applies to MuZero runs only, and {args.logdir} "
                             f"is a {family} run")
        if min(budgets) < 1:
            raise UsageError(f"--search-budgets must be >= 1 simulation each, got {budgets}")
    if getattr(args, "sample_actions", False) and family != "dreamer":
        raise UsageError(f"--sample-actions applies to Dreamer runs only, and {args.logdir} is "
                         f"a {family} run")
    return horizon


def report_errors(result: Dict, names: Sequence[str], json_path: Optional[str]) -> None:
    """Prints each ``result[name]``'s k-step ``abs_error`` and ``pooled_relative_error`` (as
    :func:`world_models.evaluation.k_step_error` returns them) and writes ``result`` to
    ``json_path`` when given. A k that no trajectory reaches (episodes shorter than k) has no
    error: ``None`` in both, not NaN, so the file is strict JSON."""
    for name in names:
        print(name, "abs error by k:", _finite(_rounded_list(result[name]["abs_error"])))
        print(name, "pooled relative error by k:",
              _finite(_rounded_list(result[name]["pooled_relative_error"])))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(_finite(result), f, indent=2, allow_nan=False)


def _rounded_list(values) -> list:
    import numpy as np
    return np.round(np.asarray(values, dtype=float), 4).tolist()


def _finite(value):
    """``value`` with every NaN or infinite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _rounded(summary: Dict) -> Dict:
    return {k: round(v, 3) for k, v in summary.items()}


def evaluate_muzero(env, cfg, state, record: Dict, args, horizon: int) -> Tuple[Dict, Tuple]:
    """MuZero's and Gumbel MuZero's measurements; returns the result and its error names."""
    import jax

    from agents import registry
    from agents.muzero import evaluation

    model = registry.agent_module(record["agent"]).build_model(cfg, env)
    params = state.agent.params
    result = evaluation.evaluate(env, cfg, model, params, jax.random.PRNGKey(7),
                                 trajectories=args.trajectories, length=args.length,
                                 horizon=horizon)
    result["unroll_steps"] = cfg.unroll_steps
    print("one-step action values (model vs real next state), mean abs:",
          _rounded(result["action_values"]))
    print("greedy action frequencies:", [round(f, 3) for f in result["action_frequencies"]])
    if args.policy_values_every > 0:
        out = evaluation.policy_action_values(
            env, cfg, model, params, jax.random.PRNGKey(8),
            args.policy_length or env.spec.max_episode_steps, args.policy_values_every)
        result["policy_action_values"] = evaluation.policy_action_value_summary(out)
        print("greedy policy's action values by rollout vs the model's one-step ones:",
              _rounded(result["policy_action_values"]))
    if args.search_budgets:
        by_budget = evaluation.returns_by_budget(
            env, cfg, model, params, jax.random.PRNGKey(9), args.search_budgets,
            args.trajectories, env.spec.max_episode_steps)
        # string keys: what --json writes
        result["returns_by_search_budget"] = {str(n): r for n, r in by_budget.items()}
        print(f"greedy return by search budget (simulations: mean of {args.trajectories} "
              f"episodes; trained with {cfg.num_simulations}):",
              {n: round(r, 2) for n, r in by_budget.items()})
    return result, ("reward", "value")


def evaluate_stochastic_muzero(env, cfg, state, record: Dict, args, horizon: int
                               ) -> Tuple[Dict, Tuple]:
    """Stochastic MuZero's measurements; returns the result and its error names."""
    import jax
    import numpy as np

    from agents import stochastic_muzero
    from agents.stochastic_muzero import evaluation

    agent = stochastic_muzero.make(cfg, env, args.trajectories)
    out = evaluation.greedy_games(env, agent, state.agent, jax.random.PRNGKey(7),
                                  args.trajectories, args.length)
    model = stochastic_muzero.build_model(cfg, env)
    result = evaluation.model_k_step_errors(model, state.agent.params, out.observations(),
                                            out.action, out.reward, horizon, valid=out.valid,
                                            terminated=out.terminated)
    result["terminated_fraction"] = float(np.mean(np.asarray(out.ended)))
    return result, ("reward_observed", "value_observed", "reward_likely", "value_likely")


def evaluate_dreamer(env, cfg, state, record: Dict, args, horizon: int) -> Tuple[Dict, Tuple]:
    """The RSSM's measurements; returns the result and its error names."""
    import jax

    import numpy as np

    from agents.dreamer import evaluation
    from agents.dreamer.agent import Dreamer

    result = evaluation.evaluate(env, Dreamer(cfg, env), state.agent, jax.random.PRNGKey(7),
                                 trajectories=args.trajectories, length=args.length,
                                 horizon=horizon, sample=args.sample_actions)
    print("reconstruction (k=0) abs error:", round(result["reconstruction_abs_error"], 4))
    if "reconstruction_correlation" in result:
        summary = evaluation.correlation_summary(result["reconstruction_correlation"],
                                                 record["env"])
        evaluation.print_correlation_summary(summary, "reconstruction (k=0)")
        result["reconstruction_correlation_summary"] = summary
    print("obs persistence (o_t taken for o_t+k) pooled relative error by k:",
          np.round(result["persistence"]["pooled_relative_error"], 4).tolist())
    rounded = lambda d: {k: round(v, 4) if isinstance(v, float) else v  # noqa: E731
                         for k, v in d.items()}
    print("critic value vs discounted return earned (terminated episodes):",
          rounded(result["calibration"]["value"]))
    print("reward head vs real reward:", rounded(result["calibration"]["reward"]))
    return result, ("obs", "reward")


EVALUATIONS = {"muzero": evaluate_muzero, "dreamer": evaluate_dreamer,
               "stochastic_muzero": evaluate_stochastic_muzero}


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """The command line; returns the result that ``--json`` writes."""
    args = evaluation_parser().parse_args(argv)
    record = watch.read_record(args.logdir)
    cli.check_output_file(args.json, "--json")
    family = FAMILIES.get(record["agent"])
    if family is None:
        agent = record["agent"]
        if agent in ("pets", "mbpo"):
            why = ("whose ensemble it does not load; `python -m experiments.compounding --env "
                   f"{record['env']}` measures the PETS/MBPO ensemble's compounding error")
        elif agent == "sampled_muzero":
            why = "whose continuous-action model it does not measure yet"
        else:
            why = "which has no learned model to evaluate"
        raise UsageError(f"{args.logdir} is a run of agent {agent!r}, {why}; "
                         f"experiments.evaluate takes runs of {', '.join(sorted(FAMILIES))}")
    horizon = check_args(args, family)
    (seed_index,) = watch.seed_indices(record, args.seed_index)
    env, cfg, state, record = watch.load_seed(args.logdir, seed_index)
    import numpy as np
    result, names = EVALUATIONS[family](env, cfg, state, record, args, horizon)
    result.update(logdir=args.logdir, agent=record["agent"], seed_index=seed_index,
                  env_steps=int(np.asarray(state.env_steps)), trajectories=args.trajectories,
                  length=args.length)
    report_errors(result, names, args.json)
    return result


if __name__ == "__main__":
    cli.run(main)
