"""The linear-model lesson, every number computed by the library: ``python -m experiments.lesson``.

1. Five-sample fit. Five transitions of ``s' = 0.5 s + 1.0 a`` (exact, no noise):

       s  = [2, 1, 1, 0.5, 0],  a = [-1, -1, 0.5, 0, 1],  s' = [0, -0.5, 1, 0.25, 1]

   give ``XᵀX = [[Σs², Σsa], [Σsa, Σa²]] = [[6.25, -2.5], [-2.5, 3.25]]`` (det 14.0625) and
   ``XᵀY = [Σss', Σas'] = [0.625, 2.0]``, so ``[Â, B̂] = (XᵀX)⁻¹XᵀY = [0.5, 1.0]``.
2. Compounding error. On the free response ``s_k = A^k s_0`` a model with ``Â`` predicts
   ``Â^k s_0``, so the k-step relative error is ``|1 - (Â/A)^k|``: 21% at k=5 and 37% at k=10 for
   A=1.1, Â=1.05, and 59% at k=10 for A=1.05, Â=1.1. Measured with ``k_step_error`` on noise-free
   trajectories, next to that closed form.
3. Empirical. The model is fitted on noisy random-action data from the registry's linear systems
   and scored on held-out real trajectories. Even the true model has a k-step error there (the
   real states carry noise that an open-loop mean prediction cannot foresee): that floor is
   reported too, and the fitted models sit on it. Noisy tables use the pooled relative error
   (mean error / mean state norm): the mean of per-start ratios is dominated by the few starts
   whose real state passes near zero, where noise / |s| is huge. The biased model Â=1.05 scored
   on real noisy free responses of A=1.1 shows the 21%/37% again, but only approximately: the
   real ``s_{t+k} = 1.1^k s_t + Σ_j 1.1^(k-1-j) w_j`` carries the noise ``w``, which adds to the
   error and weighs most where ``|s_t|`` is small.

``--json`` prints one JSON object (keys ``fit``, ``compounding``, ``empirical``); ``--plot PATH``
writes a plot of relative error against horizon.
"""

from __future__ import annotations

import functools
import json
from typing import Optional, Sequence

import jax
import numpy as np

import envs
import envs.linear
from world_models import evaluation, linear
from experiments import cli

FIVE_STATES = [2.0, 1.0, 1.0, 0.5, 0.0]
FIVE_ACTIONS = [-1.0, -1.0, 0.5, 0.0, 1.0]
COMPOUNDING_PAIRS = (("scalar_a1.1", 1.05), ("scalar_a1.05", 1.1))  # (true system, model A)
EMPIRICAL_SYSTEMS = ("scalar_a1.1", "scalar_a1.05", "scalar_a0.5", "random_4x2")
# One trajectory shape for every scored data set, so the scalar scorers share one compilation.
NUM_TRAIN, NUM_TEST, LENGTH = 16, 16, 50

_fit = jax.jit(linear.fit, static_argnames=("fit_bias",))
_design = jax.jit(linear.design_matrices, static_argnames=("fit_bias",))


@functools.partial(jax.jit, static_argnames=("horizon",))
def _linear_k_step(model, states, actions, horizon):
    return evaluation.k_step_error(functools.partial(linear.predict, model), states, actions,
                                   horizon)


def _score(model, states, actions, horizon, prefix=""):
    result = jax.device_get(_linear_k_step(model, states, actions, horizon))
    return {prefix + k: _floats(result[k]) for k in ("relative_error", "pooled_relative_error")}


def _floats(x):
    return np.asarray(x, np.float64).round(6).tolist()


def _flatten(states, actions):
    """Trajectories ``[N, T+1, n]``, ``[N, T, m]`` -> transitions ``[N·T, n]``, ``[N·T, m]``, ..."""
    n, m = states.shape[-1], actions.shape[-1]
    return (states[:, :-1].reshape(-1, n), actions.reshape(-1, m), states[:, 1:].reshape(-1, n))


def five_sample_fit() -> dict:
    """Fits the five exact samples; returns XᵀX, det, XᵀY and the fitted Â, B̂."""
    states = np.asarray(FIVE_STATES, np.float32)[:, None]
    actions = np.asarray(FIVE_ACTIONS, np.float32)[:, None]
    next_states = 0.5 * states + 1.0 * actions
    xtx, xty = jax.device_get(_design(states, actions, next_states))
    model = linear.check_fit(jax.device_get(_fit(states, actions, next_states)))
    return {"states": FIVE_STATES, "actions": FIVE_ACTIONS,
            "next_states": _floats(next_states[:, 0]), "XtX": _floats(xtx),
            "det": round(float(np.linalg.det(np.asarray(xtx, np.float64))), 9),
            "XtY": _floats(xty[:, 0]), "A_hat": float(model.A[0, 0]),
            "B_hat": float(model.B[0, 0])}


def compounding(horizon: int = 10) -> list:
    """k-step relative error of a wrong-A model on noise-free free responses, k = 1..horizon."""
    rows = []
    zero_actions = np.zeros((NUM_TEST, LENGTH, 1), np.float32)
    for name, model_a in COMPOUNDING_PAIRS:
        sys = envs.linear.system(name, noise_std=0.0)
        states = np.stack([envs.linear.rollout_states(sys, [s0], zero_actions[0])
                           for s0 in np.linspace(-2.0, 2.0, NUM_TEST)]).astype(np.float32)
        errors = _score(linear.from_matrices(model_a, 1.0), states, zero_actions, horizon)
        true_a = float(sys.A[0, 0])
        for k, err in zip(range(1, horizon + 1), errors["relative_error"]):
            rows.append({"true_A": true_a, "model_A": model_a, "horizon": k,
                         "relative_error": err,
                         "closed_form": abs(1.0 - (model_a / true_a) ** k)})
    return rows


def _fit_and_score(name, key, horizon):
    env = envs.make(f"linear/{name}")
    sys = envs.linear.system(name)
    states, actions = jax.device_get(
        evaluation.collect_trajectories(env, key, NUM_TRAIN + NUM_TEST, LENGTH))
    model = linear.check_fit(
        jax.device_get(_fit(*_flatten(states[:NUM_TRAIN], actions[:NUM_TRAIN]))))
    test = (states[NUM_TRAIN:], actions[NUM_TRAIN:], horizon)
    return {"env_id": env.spec.env_id, "true_A": _floats(sys.A), "true_B": _floats(sys.B),
            "A_hat": _floats(model.A), "B_hat": _floats(model.B), "noise_std": sys.noise_std,
            "max_abs_error_A": float(np.max(np.abs(model.A - sys.A))),
            "max_abs_error_B": float(np.max(np.abs(model.B - sys.B))),
            "noise_std_hat": float(np.sqrt(np.mean(np.diagonal(model.noise_cov)))),
            "num_transitions": NUM_TRAIN * LENGTH, **_score(model, *test),
            **_score(linear.from_matrices(sys.A, sys.B), *test, prefix="true_model_")}


def _biased(key, horizon):
    env = envs.make("linear/scalar_a1.1")
    states, actions = evaluation.collect_trajectories(
        env, key, NUM_TEST, LENGTH, policy=evaluation.zero_policy(env))
    ks = np.arange(1, horizon + 1)
    return {"env_id": env.spec.env_id, "true_A": 1.1, "model_A": 1.05,
            **_score(linear.from_matrices(1.05, 1.0), states, actions, horizon),
            **_score(linear.from_matrices(1.1, 1.0), states, actions, horizon, "true_model_"),
            "closed_form": _floats(1.0 - (1.05 / 1.1) ** ks)}


def empirical(key, horizon: int = 10) -> dict:
    """Fitted models on noisy data and the biased model on real noisy free responses."""
    keys = jax.random.split(key, len(EMPIRICAL_SYSTEMS) + 1)
    return {"horizons": list(range(1, horizon + 1)),
            "systems": [_fit_and_score(name, k, horizon)
                        for name, k in zip(EMPIRICAL_SYSTEMS, keys[1:])],
            "biased": _biased(keys[0], horizon)}


def _text(results) -> str:
    fit, emp = results["fit"], results["empirical"]
    lines = ["1. Five-sample fit of s' = 0.5 s + 1.0 a",
             f"   s = {fit['states']}, a = {fit['actions']}, s' = {fit['next_states']}",
             f"   XtX = {fit['XtX']}  det = {fit['det']:.4f}  XtY = {fit['XtY']}",
             f"   A_hat = {fit['A_hat']:.4f}  B_hat = {fit['B_hat']:.4f}",
             "\n2. Compounding error |s_hat_k - s_k| / |s_k| on noise-free free responses",
             "   (measured with k_step_error | closed form |1 - (model A / true A)^k|)"]
    pairs = [(r["true_A"], r["model_A"]) for r in results["compounding"] if r["horizon"] == 1]
    lines.append("   k  " + "".join(f"  true {a:.2f} / model {b:.2f}  " for a, b in pairs))
    for k in sorted({r["horizon"] for r in results["compounding"]}):
        cells = [r for r in results["compounding"] if r["horizon"] == k]
        lines.append(f"  {k:2d}  " + "".join(
            f"  {r['relative_error']:8.2%} | {r['closed_form']:7.2%}    " for r in cells))
    lines.append("\n3. Empirical: fitted on noisy random-action data, scored on held-out data")
    for sys in emp["systems"]:
        if np.size(sys["A_hat"]) == 1:
            fitted = f"A_hat = {sys['A_hat'][0][0]:.3f}, B_hat = {sys['B_hat'][0][0]:.3f}"
        else:
            fitted = (f"max|A_hat - A| = {sys['max_abs_error_A']:.3f}, "
                      f"max|B_hat - B| = {sys['max_abs_error_B']:.3f}")
        lines.append(f"   {sys['env_id']:20s} {fitted}, noise std {sys['noise_std_hat']:.3f} "
                     f"(true {sys['noise_std']})")
    lines.append("   pooled relative error (fitted model | true model = noise floor):")
    lines.append("   k  " + "".join(f"{s['env_id'][7:]:>15s}" for s in emp["systems"]))
    for i, k in enumerate(emp["horizons"]):
        cells = [(s["pooled_relative_error"][i], s["true_model_pooled_relative_error"][i])
                 for s in emp["systems"]]
        lines.append(f"  {k:2d}  " + "".join(f"  {a:6.1%}|{b:6.1%}" for a, b in cells))
    b = emp["biased"]
    lines += [f"\n   Biased model A=1.05 on real noisy free responses of {b['env_id']}:",
              "   k   pooled  closed form  mean of ratios  true-model pooled | mean of ratios"]
    for i, k in enumerate(emp["horizons"]):
        cells = (b["pooled_relative_error"][i], b["closed_form"][i], b["relative_error"][i],
                 b["true_model_pooled_relative_error"][i], b["true_model_relative_error"][i])
        lines.append("  {:2d}  {:6.1%}  {:10.1%}  {:14.1%}  {:17.1%} | {:6.1%}".format(k, *cells))
    return "\n".join(lines)


def _plot(results, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for true_a, model_a in {(r["true_A"], r["model_A"]) for r in results["compounding"]}:
        rows = [r for r in results["compounding"] if r["model_A"] == model_a]
        ks = [r["horizon"] for r in rows]
        left.plot(ks, [r["relative_error"] for r in rows], "o", label=f"A={true_a}, Â={model_a}")
        left.plot(ks, [r["closed_form"] for r in rows], "k:")
    left.set(title="Compounding error (noise-free; dotted: closed form)", xlabel="horizon k",
             ylabel="relative error")
    left.legend()
    emp = results["empirical"]
    for sys in emp["systems"]:
        right.plot(emp["horizons"], sys["pooled_relative_error"], label=f"fitted, {sys['env_id']}")
    right.plot(emp["horizons"], emp["biased"]["pooled_relative_error"], "k--",
               label="Â=1.05 on A=1.1 (free response)")
    right.set(title="Held-out real noisy trajectories", xlabel="horizon k",
              ylabel="pooled relative error")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="PATH", help="write a relative-error plot (PNG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=10)
    args = parser.parse_args(argv)
    cli.check_output_file(args.plot, "--plot")
    results = {"fit": five_sample_fit(), "compounding": compounding(args.horizon),
               "empirical": empirical(jax.random.PRNGKey(args.seed), args.horizon)}
    print(json.dumps(results) if args.json else _text(results))
    if args.plot:
        _plot(results, args.plot)
    return results


if __name__ == "__main__":
    cli.run(main)
