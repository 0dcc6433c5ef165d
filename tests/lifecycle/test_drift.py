"""The drift rules (pure): rolling quality, the alarm lines, the realized acceptance checks, the loop's view."""

from __future__ import annotations

import math
import re
from datetime import date

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss

from kwx.config import AcceptanceGates, DriftThresholds
from kwx.domain.metrics import reliability
from kwx.lifecycle.drift import drift_breaches, loop_quality, realized_checks, rolling_quality

SPAN = (date(2025, 9, 1), date(2025, 9, 14))
GOOD = {"rolling_ece": 0.05, "rolling_brier": 0.1, "rolling_brier_skill": 0.02, "rolling_days": 14.0}


@st.composite
def scored_rows(draw, min_size: int = 0):
    n = draw(st.integers(min_size, 60))
    probability = st.floats(0, 1, allow_nan=False)
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=float)
    p_model = np.array(draw(st.lists(probability, min_size=n, max_size=n)))
    p_market = np.array(draw(st.lists(st.one_of(probability, st.just(float("nan"))), min_size=n, max_size=n)))
    locked = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    days = np.array([date(2025, 9, 1 + d) for d in draw(st.lists(st.integers(0, 13), min_size=n, max_size=n))],
                    dtype=object)
    return y, p_model, p_market, locked, days


def _ece(y, p) -> float:
    return reliability(y, p).ece if len(y) else float("nan")


@given(scored_rows())
@example((np.zeros(8), np.array([0, 0, 0, 0, 0, 0, 0, 1.0]),
          np.array([0, np.nan, np.nan, 0, 0, np.nan, np.nan, 1.36580371e-50]), np.zeros(8, dtype=bool),
          np.array([date(2025, 9, 1)] * 8, dtype=object)))
def test_rolling_quality_matches_a_direct_computation(rows):
    y, p_model, p_market, locked, days = rows
    quality = rolling_quality(y, p_model, p_market, locked, days)
    open_rows = ~locked
    both = open_rows & ~np.isnan(p_market)
    assert quality["rolling_rows"] == len(y)
    assert quality["rolling_unlocked_rows"] == open_rows.sum()
    assert quality["rolling_comparable_rows"] == both.sum()
    assert quality["rolling_days"] == len(set(days.tolist()))
    expected = {
        "rolling_ece": _ece(y[open_rows], p_model[open_rows]),
        "rolling_brier": brier_score_loss(y[open_rows], p_model[open_rows]) if open_rows.any() else math.nan,
        "rolling_market_ece": _ece(y[both], p_market[both]),
        "rolling_market_brier": brier_score_loss(y[both], p_market[both]) if both.any() else math.nan,
    }
    for key, value in expected.items():
        assert quality[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    # The skill's ratio from the definition: scikit-learn's binary Brier squares 1 - p, which rounds to 1 for a
    # p below 1e-17 and halves a market Brier that small (CI's derandomized example: p = 1.4e-50).
    market_brier = np.mean((p_market[both] - y[both]) ** 2) if both.any() else math.nan
    if both.any() and market_brier > 0:
        model_brier = np.mean((p_model[both] - y[both]) ** 2)
        assert quality["rolling_brier_skill"] == pytest.approx(1 - model_brier / market_brier, rel=1e-9, abs=1e-12)
    else:
        assert math.isnan(quality["rolling_brier_skill"])


def test_rolling_quality_of_no_rows_is_nan_with_zero_counts():
    empty = np.zeros(0)
    quality = rolling_quality(empty, empty, empty, empty.astype(bool), empty)
    assert all(math.isnan(quality[k]) for k in ("rolling_ece", "rolling_brier", "rolling_market_brier",
                                                "rolling_market_ece", "rolling_brier_skill"))
    assert quality["rolling_rows"] == quality["rolling_days"] == 0


def test_breach_lines_name_family_metric_threshold_and_span():
    quality = GOOD | {"rolling_ece": 0.153, "rolling_brier": 0.31, "rolling_brier_skill": -0.2}
    verdict = drift_breaches(quality, DriftThresholds(), name="kwx-chicago-between", span=SPAN)
    assert verdict.breaches == [
        "kwx-chicago-between: rolling ECE 0.153 > drift.max_ece 0.12 over 14 settled days (2025-09-01..2025-09-14)",
        "kwx-chicago-between: rolling Brier 0.310 > drift.max_brier 0.25 over 14 settled days "
        "(2025-09-01..2025-09-14)",
        "kwx-chicago-between: rolling Brier skill -0.200 < drift.min_brier_skill -0.1 over 14 settled days "
        "(2025-09-01..2025-09-14)",
    ]
    assert verdict.notes == []
    assert drift_breaches(GOOD, DriftThresholds(), name="m", span=SPAN).breaches == []


def test_too_few_days_raise_no_alarm_but_say_so():
    quality = GOOD | {"rolling_ece": 0.9, "rolling_days": 2.0}
    verdict = drift_breaches(quality, DriftThresholds(min_days=3), name="kwx-chicago-between", span=SPAN)
    assert verdict.breaches == []
    assert verdict.notes == ["kwx-chicago-between: 2 settled days in the span, fewer than drift.min_days 3: "
                             "no drift alarm"]


def test_nan_metrics_never_breach_and_are_noted():
    quality = GOOD | {"rolling_brier_skill": float("nan"), "rolling_ece": 0.5}
    verdict = drift_breaches(quality, DriftThresholds(), name="m", span=SPAN)
    assert len(verdict.breaches) == 1 and "rolling ECE 0.500 > drift.max_ece" in verdict.breaches[0]
    assert len(verdict.notes) == 1 and "rolling Brier skill is NaN" in verdict.notes[0]


metric_value = st.one_of(st.floats(0, 1), st.just(float("nan")))


@given(ece=metric_value, brier=metric_value, skill=st.one_of(st.floats(-1, 1), st.just(float("nan"))),
       days=st.integers(0, 30), a=st.tuples(st.floats(0.01, 1), st.floats(0.01, 1), st.floats(-1, 1)),
       b=st.tuples(st.floats(0.01, 1), st.floats(0.01, 1), st.floats(-1, 1)), min_days=st.integers(1, 30))
def test_looser_thresholds_never_add_breaches(ece, brier, skill, days, a, b, min_days):
    quality = {"rolling_ece": ece, "rolling_brier": brier, "rolling_brier_skill": skill, "rolling_days": float(days)}
    strict = DriftThresholds(max_ece=min(a[0], b[0]), max_brier=min(a[1], b[1]), min_brier_skill=max(a[2], b[2]),
                             min_days=min_days)
    loose = DriftThresholds(max_ece=max(a[0], b[0]), max_brier=max(a[1], b[1]), min_brier_skill=min(a[2], b[2]),
                            min_days=min_days)

    def breached(thresholds) -> set[str]:
        return {re.search(r"drift\.(\w+)", line).group(1)
                for line in drift_breaches(quality, thresholds, name="m", span=SPAN).breaches}

    assert breached(loose) <= breached(strict)


ECE_CHECK = "realized unlocked test ECE <= max_ece (weeks with enough days)"


def test_realized_checks_hold_one_week_to_the_acceptance_gates():
    gates = AcceptanceGates(max_ece=0.08, max_brier=0.2, min_brier_skill=0.0, min_window_ece_days=7)
    week = {"test_unlocked_ece": 0.05, "test_unlocked_days": 7.0, "test_unlocked_brier": 0.1, "test_brier_skill": 0.01}
    assert [c.passed for c in realized_checks(week, gates)] == [True, True, True]
    failing = realized_checks({"test_unlocked_ece": 0.09, "test_unlocked_days": 7.0,
                               "test_unlocked_brier": float("nan")}, gates)
    assert [c.passed for c in failing] == [False, False, False]
    assert [c.name for c in failing] == [ECE_CHECK, "realized unlocked test Brier <= max_brier",
                                         "realized Brier skill >= min_brier_skill"]
    assert failing[0].value == 0.09 and failing[0].threshold == 0.08
    assert "NaN" in failing[1].detail and "not logged" in failing[2].detail


def test_a_weeks_ece_is_not_gated_on_too_few_outcome_days():
    """Seven outcomes' ECE says how those seven fell: with the default 28 days a week is never gated on it."""
    week = {"test_unlocked_ece": 0.3, "test_unlocked_days": 7.0, "test_unlocked_brier": 0.1, "test_brier_skill": 0.01}
    check = realized_checks(week, AcceptanceGates())[0]
    assert check.passed and check.value is None and "not gated" in check.detail
    unlogged = realized_checks({k: v for k, v in week.items() if k != "test_unlocked_days"}, AcceptanceGates())[0]
    assert not unlogged.passed and "retrain it" in unlogged.detail


@given(st.dictionaries(st.sampled_from(["test_unlocked_ece", "test_unlocked_days", "test_unlocked_brier",
                                        "test_brier_skill", "other"]),
                       st.floats(allow_nan=True, allow_infinity=True)))
def test_realized_checks_never_raise(metrics):
    checks = realized_checks(metrics, AcceptanceGates(min_window_ece_days=1))
    assert len(checks) == 3
    for check in checks:
        value = metrics.get({ECE_CHECK: "test_unlocked_ece",
                             "realized unlocked test Brier <= max_brier": "test_unlocked_brier",
                             "realized Brier skill >= min_brier_skill": "test_brier_skill"}[check.name])
        gated = check.name != ECE_CHECK or metrics.get("test_unlocked_days", 0) >= 1
        if gated and (value is None or math.isnan(value)):
            assert not check.passed and check.detail


def test_loop_quality_counts_sized_rows_and_scores_them_against_the_label():
    nan = float("nan")
    p_model = np.array([0.9, 0.2, nan, 0.6, 0.5])
    p_market = np.array([0.7, 0.3, 0.5, nan, 0.4])
    edge = np.array([3.0, -1.0, nan, 2.0, 5.0])
    size = np.array([0.1, 0.0, 0.0, 0.2, nan])
    label = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    loop = loop_quality(p_model, p_market, edge, size, label)
    assert loop["loop_signals"] == 4 and loop["loop_sized_signals"] == 2
    assert loop["loop_mean_edge_cents"] == pytest.approx(2.5)
    # the second sized row has no market quote: the two Briers compare on the same (first) row only
    assert loop["loop_traded_brier_model"] == pytest.approx(0.01)
    assert loop["loop_traded_brier_market"] == pytest.approx(0.09)
    empty = loop_quality(*(np.zeros(0),) * 5)
    assert empty["loop_signals"] == empty["loop_sized_signals"] == 0
    assert all(math.isnan(empty[k]) for k in ("loop_mean_edge_cents", "loop_traded_brier_model",
                                               "loop_traded_brier_market"))
