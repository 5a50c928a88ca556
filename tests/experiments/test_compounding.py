"""The ensemble compounding-error experiment on a small linear system."""

import numpy as np

from experiments import compounding


def test_ensemble_k_step_error_curves(tmp_path):
    result = compounding.main(["--env", "linear/random_4x2", "--preset", "tiny",
                               "--train-trajectories", "8", "--test-trajectories", "3",
                               "--length", "25", "--horizon", "6",
                               "--json", str(tmp_path / "c.json")])
    curves = result["curves"]
    assert set(curves) == {"mean", "ts1", "tsinf", "no_change"}
    for prop, c in curves.items():
        err = np.asarray(c["pooled_relative_error"])
        assert err.shape == (6,) and np.all(np.isfinite(err)) and np.all(err >= 0), prop
        if prop != "no_change":
            assert err[-1] > err[0], (prop, err)  # model errors compound with the horizon
    # The fitted model beats predicting "no change": by far one step ahead, still at k = H.
    mean, still = curves["mean"]["pooled_relative_error"], curves["no_change"][
        "pooled_relative_error"]
    assert mean[0] < 0.5 * still[0] and mean[5] < still[5], (mean, still)
