"""Model-free baselines from ``brax.training`` (PPO and SAC), run on our task ids.

``run_baseline(method, env_id, steps=..., seed=...)`` trains brax.training's own PPO or SAC (not
ours, so the comparison with the model-based agents is fair) and returns its learning curve:
``{"env_steps": [...], "eval_return": [...], "wall_time": s}`` from brax's periodic evaluations
(``progress_fn``; ``eval/episode_reward`` is the mean undiscounted return of
``num_eval_envs`` greedy episodes of up to 1000 steps).

Environments: ``brax/<name>`` via ``brax.envs.get_environment``; ``dmc/<name>`` via
``mujoco_playground.registry.load`` (MJX ``impl="jax"``, which runs on CPU) wrapped with
``mujoco_playground.wrapper.wrap_for_brax_training``. Hyper-parameters: PPO follows brax's
published settings for the task where there are some (inverted_pendulum: brax's training
colab; DMC: Playground's ``dm_control_suite_params``), with fewer parallel environments on CPU;
SAC uses standard settings (update-to-data ratio 1). Every setting can be overridden.
``core.compat.install()`` is called first (brax.training calls ``jax.device_put_replicated``).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Dict, Optional
from experiments import cli

METHODS = ("ppo", "sac")

# Settings per (method, family or env id); later keys override earlier ones.
_SETTINGS: Dict[str, Dict[str, Any]] = {
    "ppo": dict(num_envs=256, batch_size=256, num_minibatches=8, unroll_length=5,
                num_updates_per_batch=4, learning_rate=3e-4, entropy_cost=1e-2,
                discounting=0.97, reward_scaling=10.0, normalize_observations=True,
                num_eval_envs=16),
    "ppo:dmc": dict(unroll_length=30, num_minibatches=8, num_updates_per_batch=16,
                    discounting=0.995, learning_rate=1e-3, entropy_cost=1e-2),
    "sac": dict(num_envs=8, batch_size=256, grad_updates_per_step=8, learning_rate=3e-4,
                discounting=0.99, reward_scaling=1.0, normalize_observations=True,
                min_replay_size=1000, max_replay_size=200_000, num_eval_envs=16),
}


def settings(method: str, env_id: str, **overrides) -> Dict[str, Any]:
    """brax.training keyword arguments for ``method`` on ``env_id``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    family = env_id.split("/")[0]
    out: Dict[str, Any] = {}
    for key in (method, f"{method}:{family}", f"{method}:{env_id}"):
        out.update(_SETTINGS.get(key, {}))
    out.update(overrides)
    return out


def brax_environment(env_id: str):
    """``(env, wrap_env_fn or None, episode_length)`` for brax.training."""
    family, name = env_id.split("/", 1)
    if family == "brax":
        import brax.envs

        from envs import brax_env
        try:
            return brax_env.load(name), None, 1000
        except KeyError:  # brax lists its ids only in a private dict
            known = sorted(getattr(brax.envs, "_envs", {}))
            raise ValueError(f"unknown brax environment {name!r}; known: {known}") from None
    if family == "dmc":
        from mujoco_playground import registry, wrapper

        from envs.dmc import TASKS
        if name not in TASKS:
            raise ValueError(f"unknown dmc task {name!r}; known: {sorted(TASKS)}")
        env = registry.load(TASKS[name], config_overrides={"impl": "jax"})
        return env, wrapper.wrap_for_brax_training, int(env._config.episode_length)
    raise ValueError(f"brax.training baselines support brax/* and dmc/* ids, got {env_id!r}")


def run_baseline(method: str, env_id: str, *, steps: int, seed: int = 0, num_evals: int = 10,
                 **overrides) -> Dict[str, Any]:
    """Trains brax.training's ``method`` for ``steps`` environment steps; returns its curve.

    ``num_evals`` evaluations are spread over the budget (the first at step 0). brax rounds the
    budget up to whole training epochs, so the last ``env_steps`` may exceed ``steps``.
    """
    for name, value in (("steps", steps), ("num_evals", num_evals)):
        if value < 1:
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be >= 1, got {value}")
    from core import compat
    compat.install()
    if method == "ppo":
        from brax.training.agents.ppo import train as trainer
    else:
        from brax.training.agents.sac import train as trainer
    env, wrap_env_fn, episode_length = brax_environment(env_id)
    kwargs = settings(method, env_id, **overrides)
    if wrap_env_fn is not None:
        kwargs["wrap_env_fn"] = wrap_env_fn
    curve: Dict[str, list] = {"env_steps": [], "eval_return": [], "wall_time": []}
    start = time.time()

    def progress(num_steps, metrics):
        curve["env_steps"].append(int(num_steps))
        curve["eval_return"].append(float(metrics["eval/episode_reward"]))
        curve["wall_time"].append(time.time() - start)
        print(f"[baselines] brax_{method} seed {seed}: {int(num_steps)} steps, eval return "
              f"{curve['eval_return'][-1]:.1f} ({curve['wall_time'][-1]:.0f} s)", flush=True)

    train_fn = functools.partial(trainer.train, environment=env, num_timesteps=int(steps),
                                 episode_length=episode_length, num_evals=int(num_evals),
                                 seed=int(seed), progress_fn=progress, **kwargs)
    train_fn()
    return {"method": f"brax_{method}", "env": env_id, "seed": int(seed), "settings": {
        k: v for k, v in kwargs.items() if k != "wrap_env_fn"}, **curve,
        "total_wall_time": time.time() - start}


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    """``python -m experiments.baselines --method ppo --env brax/inverted_pendulum --steps N``."""
    import json

    p = cli.ArgumentParser(prog="python -m experiments.baselines")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-evals", type=int, default=10)
    p.add_argument("--out", default=None, help="write the curve as JSON here")
    args = p.parse_args(argv)
    cli.check_output_file(args.out, "--out")
    result = run_baseline(args.method, args.env, steps=args.steps, seed=args.seed,
                          num_evals=args.num_evals)
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    return result


if __name__ == "__main__":
    cli.run(main)
