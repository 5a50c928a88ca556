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
RUNS = {
    "mpc": ["--env", "linear/scalar_a1.1", "--steps", "100", "--num-envs", "2"],
    "pets": ["--env", "linear/scalar_a1.1", "--steps", "100", "--num-envs", "2"],
    "sac": ["--env", "linear/scalar_a0.5", "--steps", "120", "--num-envs", "2"],
    "mbpo": ["--env", "linear/scalar_a0.5", "--steps", "120", "--num-envs", "1"],
    "dreamer": ["--env", "gymnax/CartPole-v1", "--steps", "160", "--num-envs", "2"],
    "muzero": ["--env", "gymnax/CartPole-v1", "--steps", "96", "--num-envs", "2"],
    "gumbel_muzero": ["--env", "gymnax/CartPole-v1", "--steps", "96", "--num-envs", "2"],
    "sampled_muzero": ["--env", "linear/scalar_a0.5", "--steps", "96", "--num-envs", "2"],
    "stochastic_muzero": ["--env", "gymnax/CartPole-v1", "--steps", "96", "--num-envs", "2"],
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
    argv = ["--agent", agent, "--preset", "tiny", *RUNS[agent], *COMMON,
            "--log-every", RUNS[agent][RUNS[agent].index("--steps") + 1]]
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
