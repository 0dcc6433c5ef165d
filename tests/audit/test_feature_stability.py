"""Stability summary and importance aggregation, on hand-made window × feature matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kwx.domain.feature_stability import aggregate_importance, coefficient_stability


def test_coefficient_stability():
    coefs = pd.DataFrame({"stable": [1.0, 2.0, 0.0, 3.0], "flips": [1.0, -1.0, 1.0, 1.0],
                          "unused": [0.0, 0.0, 0.0, 1e-12], "negative": [-0.5, -0.5, -0.5, -0.5]},
                         index=["w1", "w2", "w3", "w4"])
    summary = coefficient_stability(coefs)
    assert summary.index.tolist() == ["stable", "flips", "unused", "negative"]
    assert summary.loc["stable", "coef_mean"] == pytest.approx(1.5)
    assert summary.loc["stable", "coef_std"] == pytest.approx(np.std([1, 2, 0, 3]))
    assert summary["nonzero_fraction"].tolist() == [0.75, 1.0, 0.0, 1.0]
    assert summary["majority_sign"].tolist() == [1, 1, 0, -1]
    assert summary["sign_stability"].tolist() == [1.0, 0.75, 1.0, 1.0]
    assert summary["sign_flips"].tolist() == [False, True, False, False]
    assert summary.loc["flips", "coef_mean_abs"] == pytest.approx(1.0)
    assert summary["sign_stability"].between(0, 1).all()


def test_even_split_is_half_stable():
    summary = coefficient_stability(pd.DataFrame({"x": [2.0, -1.0]}))
    assert summary.loc["x", "sign_stability"] == 0.5 and summary.loc["x", "sign_flips"]


def test_aggregate_importance():
    importances = pd.DataFrame({"a": [0.1, 0.3], "b": [0.0, 0.0], "c": [0.9, -0.1]}, index=["w1", "w2"])
    summary = aggregate_importance(importances)
    assert summary["importance_mean"].tolist() == pytest.approx([0.2, 0.0, 0.4])
    assert summary["importance_std"].tolist() == pytest.approx([0.1, 0.0, 0.5])
    assert summary["importance_min"].tolist() == pytest.approx([0.1, 0.0, -0.1])
    assert summary["importance_max"].tolist() == pytest.approx([0.3, 0.0, 0.9])
    assert summary["importance_rank"].tolist() == [2, 3, 1]
