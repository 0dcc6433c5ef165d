"""Probability-forecast metrics, pure numpy: the numbers acceptance gates and the MLflow UI compare.

Log loss and Brier match scikit-learn's ``log_loss`` / ``brier_score_loss``; the reliability curve
matches ``calibration_curve(strategy="uniform")`` (tests check all three against scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kwx.domain.evidence import calibration_evidence, skill_evidence

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


def brier_skill(y_true, p_model, p_market) -> float:
    """1 − Brier(model) / Brier(market) on the same rows: > 0 when the model beats the market.

    NaN when there is no row to compare on, or when the market's Brier is 0 (nothing to improve on).
    """
    if len(y_true) == 0:
        return float("nan")
    market = brier(y_true, p_market)
    return float("nan") if market == 0 else 1 - brier(y_true, p_model) / market


def _row_sets(predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, p_model, p_market, unlocked, comparable): comparable rows are unlocked with a market quote."""
    y = np.asarray(predictions["label"], dtype=float)
    p_model = np.asarray(predictions["p_model"], dtype=float)
    p_market = np.asarray(predictions["p_market"], dtype=float)
    # Runs logged before the settlement lock existed have no `locked` column: none of their rows was locked.
    locked = np.asarray(predictions["locked"], dtype=bool) if "locked" in predictions else np.zeros(len(y), bool)
    unlocked = ~locked
    return y, p_model, p_market, unlocked, unlocked & ~np.isnan(p_market)


SCORES = ("log_loss", "brier", "ece", "mce", "auc")


def prefixed_scores(prefix: str, y_true, p, keys: tuple[str, ...] = SCORES, n_bins: int = 10) -> dict[str, float]:
    """``score``'s ``keys`` named ``{prefix}_{key}``; NaN for each when there is no row to score."""
    if len(y_true) == 0:
        return {f"{prefix}_{k}": float("nan") for k in keys}
    values = score(y_true, p, n_bins)
    return {f"{prefix}_{k}": values[k] for k in keys}


def pooled_metrics(predictions, n_bins: int = 10) -> dict[str, float]:
    """Metrics over every window's test rows at once, beside the per-window means.

    ``predictions`` is the concatenated ``test_predictions`` frames (columns label, p_model, p_market
    and, in newer runs, locked). ``pooled_test_*`` score the model on all rows, ``pooled_test_unlocked_*``
    on rows whose outcome is still open; ``pooled_market_*`` score yes_mid on quoted rows and
    ``pooled_market_unlocked_*`` on unlocked quoted rows, where ``pooled_brier_skill`` compares the two.
    A row set that is empty gives NaN, never an error.
    """
    y, p_model, p_market, unlocked, comparable = _row_sets(predictions)
    quoted = ~np.isnan(p_market)
    keys = ("log_loss", "brier", "ece")
    return {
        **prefixed_scores("pooled_test", y, p_model, keys, n_bins),
        **prefixed_scores("pooled_test_unlocked", y[unlocked], p_model[unlocked], keys, n_bins),
        **prefixed_scores("pooled_market", y[quoted], p_market[quoted], keys, n_bins),
        **prefixed_scores("pooled_market_unlocked", y[comparable], p_market[comparable], keys, n_bins),
        "pooled_brier_skill": brier_skill(y[comparable], p_model[comparable], p_market[comparable]),
        "pooled_n_rows": float(len(y)),
        "pooled_n_unlocked_rows": float(unlocked.sum()),
        "pooled_n_comparable_rows": float(comparable.sum()),
    }


def pooled_reliability(predictions, n_bins: int = 10) -> dict[str, Reliability]:
    """Model and market reliability on the rows they compete on (unlocked, quoted); empty without such rows."""
    y, p_model, p_market, _, comparable = _row_sets(predictions)
    if not comparable.any():
        return {}
    return {"model": reliability(y[comparable], p_model[comparable], n_bins),
            "market": reliability(y[comparable], p_market[comparable], n_bins)}


def pooled_evidence(predictions, *, resamples: int, level: float, seed: int) -> dict[str, float]:
    """How sure the pooled comparison is: ``pooled_brier_skill`` and ``pooled_log_loss_skill`` (on unlocked quoted
    rows) and the model's calibration slope and intercept (on unlocked rows), each with ``_low`` / ``_high``
    bounds of a paired day-block bootstrap interval (``kwx.domain.evidence``), and the climate days behind them.
    ``predictions`` needs ``event_date`` beside ``pooled_metrics``' columns."""
    y, p_model, p_market, unlocked, comparable = _row_sets(predictions)
    days = np.asarray(predictions["event_date"], dtype=object)
    skill = skill_evidence(y[comparable], p_model[comparable], p_market[comparable], days[comparable],
                           resamples=resamples, level=level, seed=seed)
    calibration = calibration_evidence(y[unlocked], p_model[unlocked], days[unlocked], resamples=resamples,
                                       level=level, seed=seed)
    out = {"pooled_n_comparable_days": float(skill.n_days), "pooled_n_unlocked_days": float(calibration.n_days)}
    for key, interval in (("pooled_brier_skill", skill.brier_skill), ("pooled_log_loss_skill", skill.log_loss_skill),
                          ("pooled_calibration_slope", calibration.slope),
                          ("pooled_calibration_intercept", calibration.intercept)):
        out |= {key: interval.value, f"{key}_low": interval.low, f"{key}_high": interval.high}
    return out
