"""Day-block bootstrap evidence: deterministic, pooled, and ~95 % of 95 % intervals cover the truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kwx.domain.evidence import calibration_evidence, day_resample_counts, skill_evidence


def _season(seed: int, n_days: int = 60, rows_per_day: int = 40, model_noise: float = 0.3,
            market_noise: float = 0.6, over_confidence: float = 1.0):
    """Rows clustered in days: a shared day shock moves every row's true log-odds; the model sees the truth through
    row noise (``over_confidence`` times too sharp), the market through a bias that lasts all day, as a crowd's
    misread forecast does, so the two's losses differ day by day, not row by row."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(n_days), rows_per_day)
    truth = -1.5 + rng.standard_normal(n_days)[day] * 1.5 + rng.standard_normal(len(day)) * 0.5
    y = (rng.random(len(day)) < 1 / (1 + np.exp(-truth))).astype(float)
    p_model = 1 / (1 + np.exp(-over_confidence * (truth + rng.standard_normal(len(day)) * model_noise)))
    p_market = 1 / (1 + np.exp(-(truth + rng.standard_normal(n_days)[day] * market_noise
                                 + rng.standard_normal(len(day)) * 0.2)))
    return y, p_model, p_market, day


def _true_brier_skill(model_noise: float, market_noise: float) -> float:
    """The population skill, from one very large season of the same process."""
    y, p_model, p_market, _ = _season(10_000, n_days=40_000, model_noise=model_noise, market_noise=market_noise)
    return 1 - np.mean((p_model - y) ** 2) / np.mean((p_market - y) ** 2)


def test_same_rows_and_seed_give_the_same_interval_and_another_seed_a_close_one():
    y, p_model, p_market, day = _season(1)
    first = skill_evidence(y, p_model, p_market, day, seed=7)
    assert skill_evidence(y, p_model, p_market, day, seed=7) == first
    other = skill_evidence(y, p_model, p_market, day, seed=8)
    assert other.brier_skill.value == first.brier_skill.value  # the point estimate does not resample
    width = first.brier_skill.high - first.brier_skill.low
    assert abs(other.brier_skill.low - first.brier_skill.low) < 0.1 * width
    assert first.n_days == 60 and first.n_rows == 2400


def test_the_point_estimate_is_the_pooled_ratio_of_sums():
    y, p_model, p_market, day = _season(2)
    evidence = skill_evidence(y, p_model, p_market, day, resamples=100)
    assert evidence.brier_skill.value == pytest.approx(1 - np.sum((p_model - y) ** 2) / np.sum((p_market - y) ** 2))
    assert evidence.brier_skill.low <= evidence.brier_skill.value <= evidence.brier_skill.high
    assert evidence.log_loss_skill.low <= evidence.log_loss_skill.value <= evidence.log_loss_skill.high


def test_whole_days_are_resampled():
    counts = day_resample_counts(n_days=30, resamples=500, seed=3)
    assert counts.shape == (500, 30) and (counts.sum(axis=1) == 30).all()
    assert counts.mean() == pytest.approx(1.0, abs=0.05)


def test_ninety_five_percent_intervals_cover_the_true_skill_about_95_percent_of_the_time():
    truth = _true_brier_skill(model_noise=0.3, market_noise=0.6)
    assert 0.02 < truth < 0.3  # a real edge, so the check is not about a degenerate 0
    covered = []
    for seed in range(200):
        evidence = skill_evidence(*_season(seed), resamples=1000, seed=seed).brier_skill
        covered.append(evidence.low <= truth <= evidence.high)
    assert 0.90 <= np.mean(covered) <= 0.985, np.mean(covered)


def test_row_level_resampling_would_have_been_too_narrow():
    """Why days: the same data resampled row by row (each row its own day) gives a far narrower interval."""
    y, p_model, p_market, day = _season(4)
    by_day = skill_evidence(y, p_model, p_market, day).brier_skill
    by_row = skill_evidence(y, p_model, p_market, np.arange(len(y))).brier_skill
    assert (by_row.high - by_row.low) < 0.7 * (by_day.high - by_day.low)


def test_calibration_slope_interval_covers_a_known_over_confidence():
    """A model twice as sharp as the truth (and noise-free) has calibration slope 0.5, intercept 0 by symmetry
    of nothing: only the slope is checked against its known value."""
    covered = []
    for seed in range(100):
        y, p_model, _, day = _season(seed, model_noise=0.0, over_confidence=2.0)
        slope = calibration_evidence(y, p_model, day, resamples=1000, seed=seed).slope
        covered.append(slope.low <= 0.5 <= slope.high)
    assert 0.88 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_a_calibrated_model_has_slope_near_one_and_intercept_near_zero():
    y, p_model, _, day = _season(5, n_days=400, model_noise=0.0)
    evidence = calibration_evidence(y, p_model, day)
    assert evidence.slope.low <= 1.0 <= evidence.slope.high
    assert evidence.intercept.low <= 0.0 <= evidence.intercept.high


def test_nothing_to_compare_is_nan_not_an_error():
    empty = skill_evidence([], [], [], [])
    assert np.isnan(empty.brier_skill.value) and empty.n_days == 0
    one_class = calibration_evidence([0.0, 0.0], [0.1, 0.2], ["2025-07-01", "2025-07-02"])
    assert np.isnan(one_class.slope.value) and one_class.n_days == 2
    perfect_market = skill_evidence([1.0, 0.0], [0.9, 0.1], [1.0, 0.0], ["d1", "d2"], resamples=100)
    assert np.isnan(perfect_market.brier_skill.value)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 40), st.integers(1, 20))
def test_intervals_bracket_their_point_and_skill_never_exceeds_one(seed, n_days, rows):
    y, p_model, p_market, day = _season(seed, n_days=n_days, rows_per_day=rows)
    if not y.any() or y.all():
        y[0] = 1 - y[0]
    evidence = skill_evidence(y, p_model, p_market, day, resamples=200, seed=seed)
    for interval in (evidence.brier_skill, evidence.log_loss_skill):
        assert interval.low <= interval.high <= 1.0
        assert interval.value <= 1.0
