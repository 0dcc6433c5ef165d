"""Calibrated probabilities stay inside (0, 1): pure calibration bins no longer say exactly 0 or 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


def _many_rows(n_days=40, per_day=750, seed=0):
    """So many rows that the pseudo-rows alone would allow ~10⁻⁴: the floor must hold the ends."""
    return _separable(n_days=n_days, per_day=per_day, seed=seed)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_pseudo_rows_alone_allow_near_certainty_that_the_floor_refuses(method):
    X, y, groups = _many_rows()
    extreme = pd.DataFrame({"x": [-1e6, -50, 0, 50, 1e6], "noise": 0.0})
    base = ISOTONIC if method == "isotonic" else SIGMOID
    unfloored = base.model_copy(update={"probability_floor": 0.0})
    _, _, loose = fit_calibrated(X, y, groups, PARAMS, unfloored, n_splits=3, seed=0)
    assert loose.bounds[0] < 1e-3  # the fault: a 30,000-row calibration set says 10⁻⁴ on 40 independent days
    model, _, report = fit_calibrated(X, y, groups, PARAMS, base, n_splits=3, seed=0)
    assert report.bounds == (pytest.approx(1e-3), pytest.approx(1 - 1e-3))
    for rows in (X, extreme):
        p = predict_yes(model, rows)
        assert p.min() >= 1e-3 - 1e-15 and p.max() <= 1 - 1e-3 + 1e-15
    assert report.out_of_fold.min() >= 1e-3 - 1e-15 and report.out_of_fold.max() <= 1 - 1e-3 + 1e-15


@settings(max_examples=15, deadline=None)
@given(floor=st.sampled_from([0.0, 1e-4, 1e-3, 0.02]), seed=st.integers(0, 1000),
       method=st.sampled_from(["isotonic", "sigmoid"]))
def test_every_probability_stays_within_the_floor(floor, seed, method):
    X, y, groups = _separable(seed=seed)
    calibration = (ISOTONIC if method == "isotonic" else SIGMOID).model_copy(update={"probability_floor": floor})
    model, _, report = fit_calibrated(X, y, groups, PARAMS, calibration, n_splits=3, seed=0)
    rows = pd.concat([X, pd.DataFrame({"x": [-1e6, 1e6, np.nan], "noise": 0.0})], ignore_index=True)
    p = predict_yes(model, rows)
    assert p.min() >= max(floor, 0) - 1e-15 and p.max() <= 1 - floor + 1e-15
    assert (p > 0).all() and (p < 1).all()  # the pseudo-rows bound holds even without a floor
    assert report.bounds[0] >= floor - 1e-15 and report.bounds[1] <= 1 - floor + 1e-15
    assert np.all(np.diff(predict_yes(model, pd.DataFrame({"x": np.linspace(-4, 4, 200), "noise": 0.0}))) >= -1e-12)


def test_the_floor_is_validated():
    with pytest.raises(ValueError, match="probability_floor"):
        Calibration(probability_floor=0.2)
    with pytest.raises(ValueError, match="probability_floor"):
        Calibration(probability_floor=-1e-3)
