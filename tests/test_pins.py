"""Pinned metrics of a tiny fixed-seed run of every agent (CPU, float32).

A refactoring that should not change behaviour keeps these numbers (to about 1e-6); a
deliberate change of behaviour updates them with ``PIN_UPDATE=1 make test-slow`` and says why in
its commit. The pins are of this machine's XLA CPU build: another jax version may differ in
the last digits, which is why these are ``slow`` checks rather than part of ``make test``.
"""

import json
import math
import os

import pytest

from core import runner
from experiments import train

PINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pins.json")
COMMON = ["--seed", "3", "--no-progress", "--eval-episodes", "2", "--num-seeds", "2"]
# (env, --steps, --log-every, --num-envs): each run is its random prefill, then one chunk.
RUNS = {
    "mpc": ("linear/scalar_a1.1", 120, 100, 2),
    "pets": ("linear/scalar_a1.1", 140, 100, 2),
    "sac": ("linear/scalar_a0.5", 184, 120, 2),
    "mbpo": ("linear/scalar_a0.5", 220, 120, 1),
    "dreamer": ("gymnax/CartPole-v1", 224, 160, 2),
    "muzero": ("gymnax/CartPole-v1", 128, 96, 2),
    "gumbel_muzero": ("gymnax/CartPole-v1", 128, 96, 2),
    "sampled_muzero": ("linear/scalar_a0.5", 128, 96, 2),
    "stochastic_muzero": ("gymnax/CartPole-v1", 128, 96, 2),
}


def _numbers(record):
    """The numeric metrics of a metric line (``wall_time`` left out)."""
    out = {}
    for key, value in record.items():
        if key == "wall_time" or isinstance(value, str):
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                out[f"{key}[{i}]"] = float(item)
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def run(agent):
    env_id, steps, log_every, num_envs = RUNS[agent]
    argv = ["--agent", agent, "--preset", "tiny", "--env", env_id, "--steps", str(steps),
            "--log-every", str(log_every), "--num-envs", str(num_envs), *COMMON]
    env, built, run_cfg, record = train.build(argv)
    import dataclasses
    run_cfg = dataclasses.replace(run_cfg, logdir=None, eval_every=0)
    result = runner.train(env, built, run_cfg, record)
    return _numbers(result.history[-1])


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(RUNS))
def test_tiny_run_matches_its_pin(agent):
    got = run(agent)
    pins = json.load(open(PINS)) if os.path.exists(PINS) else {}
    if os.environ.get("PIN_UPDATE"):
        pins[agent] = got
        with open(PINS, "w") as f:
            json.dump(pins, f, indent=1, sort_keys=True)
        return
    assert agent in pins, f"no pin for {agent}: run with PIN_UPDATE=1 once"
    want = pins[agent]
    assert sorted(got) == sorted(want)
    bad = {k: (got[k], want[k]) for k in want
           if not math.isclose(got[k], want[k], rel_tol=1e-5, abs_tol=1e-6)}
    assert not bad, bad
