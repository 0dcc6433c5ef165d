"""Probability-forecast metrics, pure numpy: the numbers acceptance gates and the MLflow UI compare.

Log loss and Brier match scikit-learn's ``log_loss`` / ``brier_score_loss``; the reliability curve
matches ``calibration_curve(strategy="uniform")`` (tests check all three against scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = np.finfo(float).eps


def _validated(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float)
    q = np.asarray(p, dtype=float)
    if y.shape != q.shape or y.ndim != 1:
        raise ValueError(f"y_true and probabilities must be 1-D and the same length, got {y.shape} and {q.shape}")
    if len(y) == 0:
        raise ValueError("no rows to score")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0/1 labels")
    if np.isnan(q).any() or (q < 0).any() or (q > 1).any():
        raise ValueError("probabilities must be within [0, 1] and not NaN")
    return y, q


def log_loss(y_true, p) -> float:
    y, q = _validated(y_true, p)
    q = np.clip(q, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def brier(y_true, p) -> float:
    y, q = _validated(y_true, p)
    return float(np.mean((q - y) ** 2))


@dataclass(frozen=True)
class Reliability:
    """Per non-empty bin: mean predicted probability, observed frequency, and row count."""

    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |observed - predicted| over bins."""
        gaps = np.abs(self.fraction_positive - self.mean_predicted)
        return float(np.sum(gaps * self.counts) / np.sum(self.counts))

    @property
    def mce(self) -> float:
        """Maximum calibration error: the worst bin's gap."""
        return float(np.max(np.abs(self.fraction_positive - self.mean_predicted)))

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean_predicted": self.mean_predicted.tolist(), "fraction_positive": self.fraction_positive.tolist(),
                "counts": self.counts.astype(int).tolist()}


def reliability(y_true, p, n_bins: int = 10) -> Reliability:
    y, q = _validated(y_true, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Same binning as scikit-learn's calibration_curve: right-closed except the first, p == 1 in the last.
    bins = np.searchsorted(edges[1:-1], q)
    counts = np.bincount(bins, minlength=n_bins).astype(float)
    sum_p = np.bincount(bins, weights=q, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    filled = counts > 0
    return Reliability(sum_p[filled] / counts[filled], sum_y[filled] / counts[filled], counts[filled])


def auc(y_true, p) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity, ties given average ranks; NaN for one class only."""
    y, q = _validated(y_true, p)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(q, kind="mergesort")
    sorted_q = q[order]
    ranks = np.empty(len(q))
    # Average ranks over ties, vectorised via the start/end of each run of equal values.
    boundaries = np.r_[0, np.flatnonzero(np.diff(sorted_q)) + 1, len(q)]
    run_rank = (boundaries[:-1] + boundaries[1:] + 1) / 2
    ranks[order] = np.repeat(run_rank, np.diff(boundaries))
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score(y_true, p, n_bins: int = 10) -> dict[str, float]:
    """The standard metric set for one probability forecast."""
    rel = reliability(y_true, p, n_bins)
    return {"log_loss": log_loss(y_true, p), "brier": brier(y_true, p), "ece": rel.ece, "mce": rel.mce,
            "auc": auc(y_true, p)}
