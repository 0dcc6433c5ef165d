"""Metrics agree with scikit-learn's own implementations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from kwx.domain.metrics import auc, brier, log_loss, reliability, score


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
