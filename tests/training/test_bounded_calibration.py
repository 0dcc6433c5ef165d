"""Calibrated probabilities stay inside (0, 1): pure calibration bins no longer say exactly 0 or 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from kwx.config import Calibration
from kwx.training.model import ModelParams, fit_calibrated, group_folds, out_of_fold_decisions, predict_yes

ISOTONIC, SIGMOID = Calibration(isotonic_min_rows=1, isotonic_min_events=1), Calibration(isotonic_min_rows=10**6)
PARAMS = ModelParams("l2", 10.0, 0.0, "none")


def _separable(n_days=12, per_day=50, seed=0):
    """A feature that separates the classes almost perfectly: isotonic's end bins are pure."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    x = rng.normal(size=n)
    y = (x + 0.05 * rng.normal(size=n) > 0).astype(int)
    groups = np.repeat(pd.date_range("2025-07-01", periods=n_days).date, per_day)
    return pd.DataFrame({"x": x, "noise": rng.normal(size=n)}), y, groups


def test_unbounded_isotonic_has_pure_bins():
    """The fault, reproduced: sklearn's isotonic map on this data says exactly 0 and 1."""
    X, y, groups = _separable()
    folds = group_folds(groups, 3)
    decisions = out_of_fold_decisions(X, y, folds, PARAMS, 0)
    raw = IsotonicRegression(out_of_bounds="clip").fit(decisions, y)
    assert raw.y_thresholds_.min() == 0.0 and raw.y_thresholds_.max() == 1.0


@pytest.mark.parametrize("calibration", [ISOTONIC, SIGMOID], ids=["isotonic", "sigmoid"])
def test_no_prediction_is_0_or_1(calibration):
    X, y, groups = _separable()
    model, _, report = fit_calibrated(X, y, groups, PARAMS, calibration, n_splits=3, seed=0)
    low, high = report.bounds
    assert 0 < low < 0.01 and 0.99 < high < 1
    extreme = pd.DataFrame({"x": [-1e6, -50, -5, 0, 5, 50, 1e6, np.nan], "noise": 0.0})
    for rows in (X, extreme):
        p = predict_yes(model, rows)
        assert ((p > 0) & (p < 1)).all()
        assert p.min() >= low - 1e-15 and p.max() <= high + 1e-15
        # the registered artifact's own predict_proba (what `mlflow models serve` runs) agrees
        np.testing.assert_allclose(model.predict_proba(rows)[:, 1], p, rtol=0, atol=1e-12)


def test_bound_shrinks_a_pure_bin_by_its_count():
    """A pure end bin of n rows says m·π / (n + m) with m prior rows at base rate π."""
    X, y, groups = _separable()
    calibration = Calibration(isotonic_min_rows=1, isotonic_min_events=1, prior_rows=4.0)
    _, _, report = fit_calibrated(X, y, groups, PARAMS, calibration, n_splits=3, seed=0)
    folds = group_folds(groups, 3)
    decisions = out_of_fold_decisions(X, y, folds, PARAMS, 0)
    raw = IsotonicRegression(out_of_bounds="clip").fit(decisions, y)
    pure_low = int(np.sum(raw.predict(decisions) == 0.0))
    assert report.bounds[0] == pytest.approx(4.0 * y.mean() / (pure_low + 4.0))


@pytest.mark.parametrize("calibration", [ISOTONIC, SIGMOID], ids=["isotonic", "sigmoid"])
def test_bounding_keeps_the_map_monotone(calibration):
    rng = np.random.default_rng(3)
    n = 1200
    X = pd.DataFrame({"x": rng.normal(size=n), "noise": rng.normal(size=n)})
    y = (X["x"] + rng.normal(size=n) > 0).astype(int).to_numpy()
    groups = np.repeat(pd.date_range("2025-07-01", periods=12).date, 100)
    model, _, _ = fit_calibrated(X, y, groups, PARAMS, calibration, n_splits=3, seed=0)
    grid = pd.DataFrame({"x": np.linspace(-4, 4, 400), "noise": 0.0})
    p = predict_yes(model, grid)
    assert np.all(np.diff(p) >= -1e-12)
    assert p.min() > 0 and p.max() < 1
