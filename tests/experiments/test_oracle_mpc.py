"""Oracle MPC: CEM scoring plans with the true simulator regulates an unstable linear system."""

import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents.mpc import cem
from experiments import oracle_mpc


def test_oracle_mpc_regulates_unstable_system_and_costs_apply():
    env = envs.make("linear/scalar_a1.1")
    planner = cem.CEMConfig(horizon=5, population=64, elites=8, iterations=4)
    result = oracle_mpc.run_episode(env, planner, seed=3, steps=30)
    obs = np.asarray(result["observations"])[:, 0]
    assert result["length"] == 30 and obs.shape == (31,)
    # The planner keeps the state near 0 (noise std 0.1); uncontrolled, |x| grows 1.1^t.
    assert np.mean(np.abs(obs[-10:])) < 0.5, obs
    # Zero actions let x grow like 1.1^t from the same start.
    assert abs(obs[0]) > 0.3
    # The planning-only cost changes the plans, not the reported (true) reward's definition.
    with_cost = oracle_mpc.run_episode(env, planner, seed=3, steps=5,
                                       obs_cost=jnp.array([5.0]))
    assert with_cost["length"] == 5 and np.isfinite(with_cost["return"])


def test_oracle_mpc_cli_errors():
    with pytest.raises(ValueError, match="unknown PETS preset"):
        oracle_mpc.main(["--env", "linear/scalar_a1.1", "--preset", "nope"])
    with pytest.raises(ValueError, match="one per"):
        oracle_mpc.main(["--env", "linear/scalar_a1.1", "--preset", "tiny", "--obs-cost", "1,2",
                         "--steps", "1"])


def test_oracle_mpc_cli_planner_overrides(tmp_path):
    import json
    out = str(tmp_path / "oracle.json")
    results = oracle_mpc.main(["--env", "linear/scalar_a1.1", "--preset", "tiny", "--steps", "3",
                               "--seeds", "0,1", "--horizon", "4", "--keep-elites",
                               "--no-return-best", "--noise-beta", "2", "--out", out])
    planner = json.load(open(out))["planner"]
    assert (planner["horizon"], planner["keep_elites"], planner["return_best"],
            planner["noise_beta"]) == (4, True, False, 2.0)
    assert [r["length"] for r in results] == [3, 3]
