"""Metrics agree with scikit-learn's own implementations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from kwx.domain.metrics import auc, brier, brier_skill, log_loss, pooled_metrics, pooled_reliability, reliability, score


@st.composite
def forecasts(draw):
    n = draw(st.integers(2, 200))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=float)
    p = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    if draw(st.booleans()):  # coarse values create ties and bin-edge hits
        p = np.round(p, 1)
    return y, p


@given(forecasts())
def test_matches_scikit_learn(data):
    y, p = data
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p))
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1]), rel=1e-9)
    rel = reliability(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(rel.fraction_positive, prob_true)
    np.testing.assert_allclose(rel.mean_predicted, prob_pred)
    if 0 < y.sum() < len(y):
        assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    else:
        assert np.isnan(auc(y, p))


def test_ece_and_mce_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    rel = reliability(y, p, n_bins=10)
    # bins: 0.05 (2 rows, observed 0), 0.55 (2 rows, observed 0.5), 0.95 (2 rows, observed 1)
    assert rel.ece == pytest.approx((2 * 0.05 + 2 * 0.05 + 2 * 0.05) / 6)
    assert rel.mce == pytest.approx(0.05)
    assert set(score(y, p)) == {"log_loss", "brier", "ece", "mce", "auc"}


@pytest.mark.parametrize(("y", "p", "message"), [
    ([0, 1], [0.5], "same length"),
    ([], [], "no rows"),
    ([0, 2], [0.1, 0.2], "0/1 labels"),
    ([0, 1], [0.1, 1.2], "within"),
    ([0, 1], [0.1, np.nan], "within"),
])
def test_bad_inputs_are_named(y, p, message):
    with pytest.raises(ValueError, match=message):
        score(y, p)


# Four pooled test rows: a locked row (the model says exactly 1, the outcome is decided) and an unquoted one.
POOLED = pd.DataFrame({"label": [1, 0, 1, 0], "p_model": [0.8, 0.2, 1.0, 0.4], "p_market": [0.6, 0.5, 0.9, np.nan],
                       "locked": [False, False, True, False]})


def test_pooled_metrics_by_hand():
    m = pooled_metrics(POOLED)
    assert m["pooled_test_brier"] == pytest.approx((0.04 + 0.04 + 0 + 0.16) / 4)
    assert m["pooled_test_log_loss"] == pytest.approx(-(2 * np.log(0.8) + np.log(0.6)) / 4)
    assert m["pooled_test_ece"] == pytest.approx((0.2 + 0.2 + 0 + 0.4) / 4)  # one row per bin
    assert m["pooled_test_unlocked_brier"] == pytest.approx((0.04 + 0.04 + 0.16) / 3)
    assert m["pooled_market_brier"] == pytest.approx((0.16 + 0.25 + 0.01) / 3)  # every quoted row
    # The comparison rows are the first two: unlocked and quoted.
    assert m["pooled_market_unlocked_brier"] == pytest.approx((0.16 + 0.25) / 2)
    assert m["pooled_brier_skill"] == pytest.approx(1 - 0.04 / 0.205)
    assert (m["pooled_n_rows"], m["pooled_n_unlocked_rows"], m["pooled_n_comparable_rows"]) == (4, 3, 2)
    curves = pooled_reliability(POOLED)
    assert set(curves) == {"model", "market"} and curves["model"].counts.sum() == 2
    np.testing.assert_allclose(curves["market"].mean_predicted, [0.5, 0.6])


def test_pooled_brier_skill_is_negative_when_the_market_is_better():
    quoted = POOLED.iloc[:3]
    swapped = quoted.assign(p_model=quoted["p_market"], p_market=quoted["p_model"])
    assert pooled_metrics(swapped)["pooled_brier_skill"] == pytest.approx(1 - 0.205 / 0.04)
    assert brier_skill(np.array([1.0, 0.0]), np.array([0.7, 0.3]), np.array([0.7, 0.3])) == 0


def test_runs_without_a_locked_column_count_every_row_as_unlocked():
    m = pooled_metrics(POOLED.drop(columns="locked"))
    assert m["pooled_n_unlocked_rows"] == 4 and m["pooled_n_comparable_rows"] == 3
    assert m["pooled_test_unlocked_brier"] == m["pooled_test_brier"]


@pytest.mark.parametrize("rows", [POOLED.assign(locked=True), POOLED.assign(p_market=np.nan)])
def test_no_comparable_rows_gives_nan_not_an_error(rows):
    m = pooled_metrics(rows)
    assert m["pooled_n_comparable_rows"] == 0
    assert np.isnan(m["pooled_brier_skill"]) and np.isnan(m["pooled_market_unlocked_brier"])
    assert m["pooled_test_brier"] == pytest.approx(0.06)
    assert pooled_reliability(rows) == {}


def test_skill_against_a_perfect_market_is_nan():
    assert np.isnan(brier_skill(np.array([1.0, 0.0]), np.array([0.9, 0.1]), np.array([1.0, 0.0])))
    assert np.isnan(brier_skill(np.array([]), np.array([]), np.array([])))
