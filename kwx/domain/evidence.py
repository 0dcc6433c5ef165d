"""Evidence that holds: how sure a pooled score is, with confidence intervals from a paired day-block bootstrap.

Every row of one climate day shares that day's weather, so rows are not independent outcomes: a week of a
tail bracket holds thousands of rows but seven outcomes. Intervals therefore resample *days* (all of a day's
rows together, model and market on the same resampled days: paired), seeded so the same rows always give
the same interval. Intervals are percentile intervals of ``resamples`` bootstrap replicates.

The calibration slope and intercept (the logistic recalibration of the outcome on the model's logit, as in
Van Calster et al. 2016: slope 1 and intercept 0 for a calibrated model; slope < 1 means over-confident) are
fitted by Newton's method; their intervals use the one-step bootstrap (each replicate one Newton step from
the full-sample fit, from per-day score and information sums), which is exact to first order and costs no
refit per replicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
# Probabilities are clipped this far from 0 and 1 before the log loss and the logit, as ``metrics.log_loss`` does.
_EPS = np.finfo(float).eps
_NEWTON_STEPS = 50


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval at ``level``; NaN where nothing could be computed."""

    value: float
    low: float
    high: float
    level: float

    def text(self, digits: int = 4) -> str:
        return f"{self.value:.{digits}f} ({self.level:.0%} CI {self.low:.{digits}f}..{self.high:.{digits}f})"

    @classmethod
    def missing(cls, level: float) -> Interval:
        return cls(float("nan"), float("nan"), float("nan"), level)


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(z / 2))  # the logistic function without exp overflow


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def day_resample_counts(n_days: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_days) how often each day is drawn in each replicate: n_days draws with replacement."""
    if n_days < 1:
        raise ValueError("no days to resample")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_days, np.full(n_days, 1.0 / n_days), size=resamples).astype(float)


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _day_index(days) -> tuple[np.ndarray, int]:
    """Each row's day as 0..n_days-1, and n_days (days compare by their ISO text: dates, strings or timestamps)."""
    uniques, codes = np.unique(np.asarray(days, dtype=object).astype(str), return_inverse=True)
    return codes, len(uniques)


def _losses(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row squared error and log loss."""
    q = np.clip(p, _EPS, 1 - _EPS)
    return (p - y) ** 2, -(y * np.log(q) + (1 - y) * np.log(1 - q))


@dataclass(frozen=True)
class SkillEvidence:
    """Model vs market on the same rows: Brier and log-loss skill (1 − model / market), with day-block intervals."""

    brier_skill: Interval
    log_loss_skill: Interval
    n_days: int
    n_rows: int


def skill_evidence(y, p_model, p_market, days, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                   seed: int = 0) -> SkillEvidence:
    """Pooled Brier and log-loss skill of ``p_model`` over ``p_market`` on rows ``y`` of climate ``days``.

    The point estimate is the pooled skill 1 − Σ loss_model / Σ loss_market over all rows (a ratio of sums, not a
    mean of per-window ratios, which weeks with a small market loss would dominate). Each bootstrap replicate
    redraws the days and recomputes both sums on them. NaN where there is no row, or the market's loss is 0.
    """
    y, p_model, p_market = (np.asarray(a, dtype=float) for a in (y, p_model, p_market))
    if len(y) == 0:
        return SkillEvidence(Interval.missing(level), Interval.missing(level), 0, 0)
    codes, n_days = _day_index(days)
    counts = day_resample_counts(n_days, resamples, seed)
    intervals = []
    for model_loss, market_loss in zip(_losses(y, p_model), _losses(y, p_market), strict=True):
        model_by_day = np.bincount(codes, weights=model_loss, minlength=n_days)
        market_by_day = np.bincount(codes, weights=market_loss, minlength=n_days)
        point = _skill(model_by_day.sum(), market_by_day.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates = 1 - (counts @ model_by_day) / (counts @ market_by_day)
        intervals.append(Interval(point, *_percentiles(replicates, level), level))
    return SkillEvidence(intervals[0], intervals[1], n_days, len(y))


def _skill(model_total: float, market_total: float) -> float:
    return float("nan") if market_total == 0 else float(1 - model_total / market_total)


@dataclass(frozen=True)
class CalibrationEvidence:
    """The calibration slope (logistic recalibration on the model's logit) and the calibration intercept
    (calibration in the large: the intercept with the logit as an offset), with day-block intervals."""

    slope: Interval
    intercept: Interval
    n_days: int
    n_rows: int


def calibration_evidence(y, p, days, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                         seed: int = 0) -> CalibrationEvidence:
    """Slope and intercept of ``p``'s calibration on outcomes ``y`` of climate ``days``; NaN for one class only."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0 or np.unique(y).size < 2:
        return CalibrationEvidence(Interval.missing(level), Interval.missing(level), 0 if len(y) == 0 else
                                   _day_index(days)[1], len(y))
    codes, n_days = _day_index(days)
    counts = day_resample_counts(n_days, resamples, seed)
    x = _logit(np.clip(p, _EPS, 1 - _EPS))
    _, slope = _one_step_bootstrap(np.column_stack([np.ones_like(x), x]), y, np.zeros_like(x), codes, n_days,
                                   counts, level)
    (intercept,) = _one_step_bootstrap(np.ones((len(x), 1)), y, x, codes, n_days, counts, level)
    return CalibrationEvidence(slope, intercept, n_days, len(y))


def _logistic_fit(design: np.ndarray, y: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Maximum-likelihood coefficients of P(y) = expit(design · beta + offset), by Newton's method."""
    beta = np.zeros(design.shape[1])
    for _ in range(_NEWTON_STEPS):
        mu = _expit(design @ beta + offset)
        gradient = design.T @ (y - mu)
        information = (design * (mu * (1 - mu))[:, None]).T @ design
        step = np.linalg.lstsq(information, gradient, rcond=None)[0]
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def _one_step_bootstrap(design: np.ndarray, y: np.ndarray, offset: np.ndarray, codes: np.ndarray, n_days: int,
                        counts: np.ndarray, level: float) -> list[Interval]:
    """Every coefficient's interval: replicates are one Newton step from the full fit, each day's score and
    information weighted by how often the replicate drew it."""
    beta = _logistic_fit(design, y, offset)
    mu = _expit(design @ beta + offset)
    k = design.shape[1]
    score_by_day = np.stack([np.bincount(codes, weights=design[:, j] * (y - mu), minlength=n_days)
                             for j in range(k)], axis=1)
    weight = mu * (1 - mu)
    info_by_day = np.stack([np.bincount(codes, weights=design[:, i] * design[:, j] * weight, minlength=n_days)
                            for i in range(k) for j in range(k)], axis=1)
    scores = counts @ score_by_day
    informations = (counts @ info_by_day).reshape(-1, k, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        determinant_ok = np.abs(np.linalg.det(informations)) > 1e-12
        steps = np.full((len(counts), k), np.nan)
        steps[determinant_ok] = np.linalg.solve(informations[determinant_ok], scores[determinant_ok][..., None])[..., 0]
    replicates = beta[None, :] + steps
    return [Interval(float(beta[j]), *_percentiles(replicates[:, j], level), level) for j in range(k)]
