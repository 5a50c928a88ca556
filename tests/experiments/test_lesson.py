"""The lesson script reproduces the lesson's numbers from code."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from experiments import lesson


@pytest.fixture(scope="module")
def results():
    """One in-process run of ``python -m experiments.lesson --json``, parsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        lesson.main(["--json"])
    (line,) = out.getvalue().strip().splitlines()  # exactly one JSON object
    return json.loads(line)


def test_five_sample_fit(results):
    fit = results["fit"]
    assert fit["XtX"] == [[6.25, -2.5], [-2.5, 3.25]]
    assert fit["det"] == pytest.approx(14.0625)
    assert fit["XtY"] == [0.625, 2.0]
    assert round(fit["A_hat"], 4) == 0.5 and round(fit["B_hat"], 4) == 1.0


def test_compounding_table(results):
    table = {(r["true_A"], r["model_A"], r["horizon"]): r["relative_error"]
             for r in results["compounding"]}
    assert round(table[(1.1, 1.05, 5)], 2) == 0.21
    assert round(table[(1.1, 1.05, 10)], 2) == 0.37
    assert round(table[(1.05, 1.1, 10)], 2) == 0.59
    for row in results["compounding"]:
        assert 0.0 < row["relative_error"] < 1.0  # a fraction, not a percentage
        assert row["relative_error"] == pytest.approx(row["closed_form"], rel=1e-4)


def test_empirical_fits_and_curves(results):
    emp = results["empirical"]
    systems = {s["env_id"]: s for s in emp["systems"]}
    assert set(systems) >= {"linear/scalar_a1.1", "linear/scalar_a1.05", "linear/scalar_a0.5"}
    for sys in systems.values():
        np.testing.assert_allclose(sys["A_hat"], sys["true_A"], atol=0.05)
        np.testing.assert_allclose(sys["B_hat"], sys["true_B"], atol=0.05)
        assert sys["noise_std_hat"] == pytest.approx(sys["noise_std"], rel=0.15)
        assert len(sys["relative_error"]) == len(emp["horizons"])
        # A well-fitted model is no worse than the true model by more than a little.
        np.testing.assert_allclose(sys["pooled_relative_error"],
                                   sys["true_model_pooled_relative_error"], rtol=0.1, atol=0.002)
    biased = emp["biased"]
    assert biased["pooled_relative_error"][4] == pytest.approx(0.21, abs=0.02)
    assert biased["pooled_relative_error"][9] == pytest.approx(0.37, abs=0.02)


def test_text_and_plot(results, tmp_path):
    text = lesson._text(results)
    assert "XtX = [[6.25, -2.5], [-2.5, 3.25]]" in text and "37.20%" in text
    path = tmp_path / "lesson.png"
    lesson._plot(results, str(path))
    assert path.stat().st_size > 1000
