"""Acceptance gates on a training run's parent metrics, without MLflow: each gate at its threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kwx.config import TrainConfig
from kwx.domain.metrics import pooled_evidence, pooled_metrics
from kwx.registry.promotion import metric_gates

ACCEPTANCE = {"max_ece": 0.05, "max_brier": 0.2, "min_windows": 4, "min_brier_skill": 0.02,
              "min_log_loss_skill": 0.01, "min_windows_beating_market": 0.5, "min_window_ece_days": 20,
              "min_calibration_slope": 0.8, "max_calibration_slope": 1.25, "max_abs_calibration_intercept": 0.3}
# Every gate exactly at its threshold: all pass (bounds are inclusive).
AT_THRESHOLD = {"pooled_test_unlocked_ece": 0.05, "n_windows_ece_gated": 2.0, "max_gated_window_unlocked_ece": 0.05,
                "pooled_calibration_slope": 0.7, "pooled_calibration_slope_low": 0.6,
                "pooled_calibration_slope_high": 0.8,
                "pooled_calibration_intercept": 0.4, "pooled_calibration_intercept_low": 0.3,
                "pooled_calibration_intercept_high": 0.5,
                "pooled_test_unlocked_brier": 0.2,
                "pooled_brier_skill": 0.05, "pooled_brier_skill_low": 0.02, "pooled_brier_skill_high": 0.08,
                "pooled_log_loss_skill": 0.03, "pooled_log_loss_skill_low": 0.01, "pooled_log_loss_skill_high": 0.05,
                "mean_test_beats_market": 0.5, "n_windows": 4.0}
# parent metric -> (check name, a value just past the threshold)
GATES = {
    "pooled_test_unlocked_ece": ("pooled unlocked test ECE <= max_ece", 0.0501),
    "max_gated_window_unlocked_ece": ("each window's unlocked test ECE <= max_ece (windows with enough days)", 0.0501),
    "pooled_calibration_slope_high": ("calibration slope within [min_calibration_slope, max_calibration_slope]",
                                      0.799),
    "pooled_calibration_intercept_low": ("calibration intercept within ±max_abs_calibration_intercept", 0.301),
    "pooled_test_unlocked_brier": ("pooled unlocked test Brier <= max_brier", 0.2001),
    "pooled_brier_skill_low": ("pooled Brier skill lower bound >= min_brier_skill", 0.0199),
    "pooled_log_loss_skill_low": ("pooled log-loss skill lower bound >= min_log_loss_skill", 0.0099),
    "mean_test_beats_market": ("share of windows beating the market >= min_windows_beating_market", 0.25),
    "n_windows": ("windows >= min_windows", 3.0),
}
CONFIG = TrainConfig.model_validate({"city": "chicago", "bracket": "between", "start": "2025-07-01",
                                     "end": "2025-07-24", "train_days": 12, "test_days": 4,
                                     "acceptance": ACCEPTANCE})


def _checks(metrics: dict[str, float]) -> dict[str, object]:
    return {c.name: c for c in metric_gates(metrics, CONFIG)}


def test_one_check_per_gate_all_passing_at_their_thresholds():
    checks = _checks(AT_THRESHOLD)
    assert list(checks) == [name for name, _ in GATES.values()]
    assert all(c.passed for c in checks.values()), [c.line() for c in checks.values() if not c.passed]
    skill = checks["pooled Brier skill lower bound >= min_brier_skill"]
    assert (skill.value, skill.interval, skill.threshold, skill.level) == (0.05, (0.02, 0.08), 0.02, 0.95)
    assert "0.05 (95% CI 0.02..0.08) (threshold 0.02)" in skill.line()
    assert checks["windows >= min_windows"].value == 4


@pytest.mark.parametrize("key", GATES)
def test_each_gate_fails_just_past_its_threshold(key):
    name, failing_value = GATES[key]
    checks = _checks({**AT_THRESHOLD, key: failing_value})
    assert [c.name for c in checks.values() if not c.passed] == [name]


def test_a_tie_is_refused_and_a_clear_edge_passes():
    tie = {**AT_THRESHOLD, "pooled_brier_skill": 0.0002, "pooled_brier_skill_low": -0.011,
           "pooled_brier_skill_high": 0.012}
    check = _checks(tie)["pooled Brier skill lower bound >= min_brier_skill"]
    assert not check.passed and check.detail == "lower bound -0.011 < 0.02"
    edge = {**AT_THRESHOLD, "pooled_brier_skill": 0.39, "pooled_brier_skill_low": 0.21,
            "pooled_brier_skill_high": 0.5}
    assert _checks(edge)["pooled Brier skill lower bound >= min_brier_skill"].passed


def test_calibration_is_refused_only_when_the_whole_interval_is_out_of_tolerance():
    name = "calibration slope within [min_calibration_slope, max_calibration_slope]"
    straddling = {**AT_THRESHOLD, "pooled_calibration_slope": 0.75, "pooled_calibration_slope_low": 0.5,
                  "pooled_calibration_slope_high": 1.0}
    assert _checks(straddling)[name].passed
    over_confident = {**straddling, "pooled_calibration_slope_high": 0.79}
    assert not _checks(over_confident)[name].passed
    under_confident = {**straddling, "pooled_calibration_slope_low": 1.3, "pooled_calibration_slope_high": 1.6}
    assert not _checks(under_confident)[name].passed


def test_window_ece_is_gated_only_on_windows_with_enough_days():
    name = "each window's unlocked test ECE <= max_ece (windows with enough days)"
    none_qualify = _checks({**AT_THRESHOLD, "n_windows_ece_gated": 0.0, "max_gated_window_unlocked_ece": float("nan")})
    assert none_qualify[name].passed and none_qualify[name].value is None
    assert "0 of 4 window(s) hold >= 20 unlocked climate days: not gated" in none_qualify[name].detail
    assert not _checks({**AT_THRESHOLD, "max_gated_window_unlocked_ece": 0.2})[name].passed


@pytest.mark.parametrize("key", [k for k in AT_THRESHOLD if not k.endswith("_high")])
def test_a_metric_the_run_never_logged_fails_saying_so(key):
    checks = _checks({k: v for k, v in AT_THRESHOLD.items() if k != key})
    failing = [c for c in checks.values() if not c.passed]
    assert len(failing) == 1 and failing[0].value is None
    assert "not logged" in failing[0].detail and "retrain it" in failing[0].detail


def test_nan_skill_fails_with_a_reason_instead_of_raising():
    checks = _checks({**AT_THRESHOLD, "pooled_brier_skill": float("nan"), "pooled_brier_skill_low": float("nan")})
    check = checks["pooled Brier skill lower bound >= min_brier_skill"]
    assert not check.passed and check.value is None
    assert "is NaN" in check.detail and "no unlocked rows the market quotes" in check.detail
    assert "NaN" in check.line()


@pytest.mark.parametrize(("field", "value"), [("min_brier_skill", -1.5), ("min_brier_skill", float("nan")),
                                              ("min_brier_skill", float("inf")),
                                              ("min_log_loss_skill", 2.0),
                                              ("min_windows_beating_market", 1.2),
                                              ("min_windows_beating_market", -0.1),
                                              ("min_windows_beating_market", float("nan")),
                                              ("min_window_ece_days", 0), ("min_calibration_slope", 1.5),
                                              ("max_calibration_slope", 0.9), ("max_abs_calibration_intercept", 0),
                                              ("confidence_level", 1.0), ("bootstrap_resamples", 10),
                                              ("bootstrap_seed", -1)])
def test_new_gate_bounds_are_validated(field, value):
    with pytest.raises(ValueError, match=f"acceptance.{field}"):
        TrainConfig.model_validate({**CONFIG.model_dump(), "acceptance": {field: value}})


def _predictions(seed: int, model_noise: float, n_days: int = 56, rows_per_day: int = 60):
    """Test-week rows of a family: the market misreads each day by a bias; the model by ``model_noise`` per row
    plus the same share of the market's bias (so a tie, at model_noise ≈ market, is a tie)."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(n_days), rows_per_day)
    truth = -1.2 + rng.standard_normal(n_days)[day] * 1.5 + rng.standard_normal(len(day)) * 0.4
    label = (rng.random(len(day)) < 1 / (1 + np.exp(-truth))).astype(int)
    market_bias = rng.standard_normal(n_days)[day] * 0.8
    model_bias = rng.standard_normal(n_days)[day] * model_noise
    dates = pd.Timestamp("2025-07-01") + pd.to_timedelta(day, unit="D")
    return pd.DataFrame({"event_date": dates.date, "label": label, "locked": False,
                         "p_market": 1 / (1 + np.exp(-(truth + market_bias))),
                         "p_model": 1 / (1 + np.exp(-(truth + model_bias)))})


def _verdict(predictions: pd.DataFrame) -> dict[str, bool]:
    metrics = pooled_metrics(predictions) | pooled_evidence(predictions, resamples=1000, level=0.95, seed=0)
    metrics |= {"n_windows": 8.0, "mean_test_beats_market": 1.0, "n_windows_ece_gated": 0.0,
                "max_gated_window_unlocked_ece": float("nan")}
    config = TrainConfig.model_validate({**CONFIG.model_dump(), "acceptance": {"max_ece": 0.1}})
    return {c.name: c.passed for c in metric_gates(metrics, config)}


SKILL = "pooled Brier skill lower bound >= min_brier_skill"


def test_constructed_families_an_edge_passes_a_tie_and_a_worse_model_are_refused():
    edge = _verdict(_predictions(1, model_noise=0.3))
    assert all(edge.values()), edge
    tied = _predictions(1, model_noise=0.8)
    evidence = pooled_evidence(tied, resamples=1000, level=0.95, seed=0)
    # the old gate, pooled point skill >= 0, promoted this: its interval says it could as well be worse
    assert evidence["pooled_brier_skill"] > 0 > evidence["pooled_brier_skill_low"]
    tie = _verdict(tied)
    assert not tie[SKILL] and not tie["pooled log-loss skill lower bound >= min_log_loss_skill"]
    worse = _verdict(_predictions(1, model_noise=1.6))
    assert not worse[SKILL]
