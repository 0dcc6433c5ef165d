"""The lock-margin study on constructed climate days (Chicago: LST = UTC−6)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from kwx.cities import get_city
from kwx.domain import lock_margin
from kwx.domain.markets import locked_outcomes, settlement_outcomes

CHICAGO = get_city("chicago")
FIRST = date(2025, 7, 1)


def constructed_days(gaps: list[float], settled: list[float] | None = None, first: date = FIRST,
                     ) -> tuple[pd.DataFrame, pd.Series]:
    """Weather and settled highs for consecutive Chicago climate days from ``first``: observations every
    half hour from 09:00 to 18:00 CDT, peaking at 15:00 CDT at the settled high + the day's gap."""
    settled = settled or [80.0 + i for i in range(len(gaps))]
    stamps, temps = [], []
    for i, (gap, high) in enumerate(zip(gaps, settled, strict=True)):
        day = first + timedelta(days=i)
        for half_hours in range(19):  # 14:00..23:00 UTC = 09:00..18:00 CDT
            stamp = datetime(day.year, day.month, day.day, 14, tzinfo=UTC) + timedelta(minutes=30 * half_hours)
            stamps.append(stamp)
            temps.append(high + gap if half_hours == 12 else high - 6 + half_hours * 0.25)
    weather = pd.DataFrame({"ts_utc": pd.to_datetime(stamps, utc=True), "temp_f": temps})
    return weather, pd.Series(settled, index=[first + timedelta(days=i) for i in range(len(gaps))], dtype=float)


def _days(gaps: list[float], settled: list[float] | None = None) -> pd.DataFrame:
    return lock_margin.climate_day_gaps(*constructed_days(gaps, settled), CHICAGO)


OVERSHOOTS = [0.7, 1.23, 0.3, -0.4, 0.0]


def test_the_gap_is_each_climate_days_observed_maximum_less_its_settled_high():
    days = _days(OVERSHOOTS)
    assert list(days.index) == [FIRST + timedelta(days=i) for i in range(5)]
    assert days["settled_f"].tolist() == [80.0, 81.0, 82.0, 83.0, 84.0]
    assert days["observed_max_f"].tolist() == pytest.approx([80.7, 82.23, 82.3, 82.6, 84.0])
    assert days["gap_f"].tolist() == pytest.approx(OVERSHOOTS)


@pytest.mark.parametrize(("margin", "misjudged"), [(0.0, 2), (0.1, 2), (0.5, 1), (0.7, 1), (0.8, 0), (1.0, 0)])
def test_a_lock_misjudges_the_days_whose_maximum_reaches_the_settled_high_plus_half_plus_margin(margin, misjudged):
    days = _days(OVERSHOOTS)
    assert lock_margin.misjudged(days, margin).sum() == misjudged
    # Exactly when the gap reaches 0.5 + margin (no constructed gap sits on that boundary).
    assert list(lock_margin.misjudged(days, margin)) == list(days["gap_f"] >= 0.5 + margin)


@pytest.mark.parametrize(("step", "recommended"), [(0.1, 0.8), (0.05, 0.75), (0.25, 0.75), (1.0, 1.0)])
def test_the_recommendation_is_the_smallest_grid_margin_above_the_largest_overshoot_less_half(step, recommended):
    days = _days(OVERSHOOTS)
    # The rule: largest overshoot 1.23 °F − 0.5 = 0.73, so the first grid point above 0.73.
    assert lock_margin.smallest_safe_margin(days, step) == recommended
    assert not lock_margin.misjudged(days, recommended).any()
    assert lock_margin.misjudged(days, round(recommended - step, 6)).any()


def _every_strike_near(high: float) -> tuple[list, list, list]:
    """Every greater / less tail and two-degree between bracket with a whole strike within 4 °F of ``high``."""
    strikes = range(int(high) - 4, int(high) + 5)
    brackets = ["greater"] * len(strikes) + ["less"] * len(strikes) + ["between"] * len(strikes)
    floors = [*strikes, *[np.nan] * len(strikes), *strikes]
    caps = [*[np.nan] * len(strikes), *strikes, *(s + 1 for s in strikes)]
    return brackets, floors, caps


def test_misjudged_days_are_exactly_the_days_some_market_locks_against_its_settlement():
    """The reduction to the *greater than T* market: any market, locked on the day's observed maximum,
    disagrees with its settlement on exactly the days ``misjudged`` names."""
    rng = np.random.default_rng(11)
    gaps = list(np.round(rng.uniform(-1.5, 2.5, 60), 2))
    settled = list(rng.integers(60, 95, 60).astype(float))
    days = _days(gaps, settled)
    for margin in (0.0, 0.3, 1.0):
        wrong = []
        for r in days.itertuples():
            brackets, floors, caps = _every_strike_near(r.settled_f)
            locked = locked_outcomes(brackets, floors, caps, np.full(len(brackets), r.observed_max_f), margin)
            settles = settlement_outcomes(brackets, floors, caps, np.full(len(brackets), r.settled_f))
            decided = ~np.isnan(locked)
            wrong.append(bool((locked[decided] != settles[decided]).any()))
        assert wrong == list(lock_margin.misjudged(days, margin))
        assert 0 < sum(wrong) < len(wrong)


def test_observations_that_are_the_settlement_source_recommend_zero():
    # The report's high is the station's maximum rounded half up: every gap lies in [−0.5, 0.5).
    study = lock_margin.lock_margin_study(_days([0.4, -0.5, 0.0, 0.49, -0.2]), 1.0, 0.1)
    assert study["recommended_margin_f"] == 0.0
    assert study["rounded"] == {"above": 0.0, "equal": 1.0, "below": 0.0}
    assert study["misjudged_days"] == 0 and study["reading_low_days"] == 0 and study["passed"]
    # A margin of 0 reaches each settled high; the current 1.0 °F holds every lock short of it.
    assert study["recommended_late_days"] == 0 and study["late_days"] == 5


def test_observations_that_read_low_never_misjudge_and_their_locks_come_late():
    study = lock_margin.lock_margin_study(_days([-0.7, -1.2, -0.2], settled=[90.0, 91.0, 92.0]), 0.0, 0.1)
    assert study["misjudged_days"] == 0 and study["passed"] and study["recommended_margin_f"] == 0.0
    assert study["reading_low_days"] == study["late_days"] == 2  # 89.3 and 89.8 round below; 91.8 to 92
    assert [d.isoformat() for d in study["reading_low"].index] == ["2025-07-02", "2025-07-01"]  # lowest first
    assert study["rounded"]["below"] == pytest.approx(2 / 3)
    assert study["gap_f"]["min"] == pytest.approx(-1.2) and study["gap_f"]["max"] == pytest.approx(-0.2)


def test_the_study_names_the_worst_misjudged_days_and_its_quantiles():
    study = lock_margin.lock_margin_study(_days(OVERSHOOTS), 0.1, 0.1)
    assert study["misjudged_days"] == 2 and not study["passed"]
    worst = study["worst_misjudged"]
    assert [d.isoformat() for d in worst.index] == ["2025-07-02", "2025-07-01"]
    assert worst["gap_f"].tolist() == pytest.approx([1.23, 0.7])
    assert study["gap_f"]["max"] == 1.23 and study["gap_f"]["min"] == -0.4 and study["gap_f"]["p50"] == 0.3
    assert study["rounded"] == {"above": 0.4, "equal": 0.6, "below": 0.0}
    assert study["thin_sample"]  # five days


def test_no_margin_on_the_grid_when_observations_run_far_above_the_settlement():
    study = lock_margin.lock_margin_study(_days([6.0, 0.2]), 1.0, 0.1)
    assert study["recommended_margin_f"] is None and study["recommended_late_days"] is None
    assert study["misjudged_days"] == 1 and not study["passed"]


def test_an_observation_at_0030_daylight_time_belongs_to_the_previous_standard_day():
    weather, settled = constructed_days([0.0, 0.0])
    # 2025-07-02 00:30 CDT = 2025-07-01 23:30 CST: still climate day 2025-07-01; 01:30 CDT starts 2025-07-02.
    late_evening = pd.DataFrame({"ts_utc": pd.to_datetime([datetime(2025, 7, 2, 5, 30, tzinfo=UTC),
                                                           datetime(2025, 7, 2, 6, 30, tzinfo=UTC)], utc=True),
                                 "temp_f": [81.0, 82.6]})
    days = lock_margin.climate_day_gaps(pd.concat([weather, late_evening], ignore_index=True), settled, CHICAGO)
    assert days.loc[date(2025, 7, 1), "observed_max_f"] == 81.0  # the 00:30 CDT reading, not the 80.0 peak
    assert days.loc[date(2025, 7, 2), "observed_max_f"] == 82.6  # settled 81
    assert list(lock_margin.misjudged(days, 0.0)) == [True, True]
    assert list(lock_margin.misjudged(days, 0.6)) == [False, True]


def test_days_without_observations_or_settlement_are_left_out():
    weather, settled = constructed_days([0.0, 0.3, 0.1])
    days = lock_margin.climate_day_gaps(weather[weather["ts_utc"].dt.day != 2], settled.drop(date(2025, 7, 3)),
                                        CHICAGO)
    assert list(days.index) == [date(2025, 7, 1)]
    with pytest.raises(ValueError, match="no settled day"):
        lock_margin.lock_margin_study(days.iloc[:0], 1.0, 0.1)


def test_margin_grid_holds_the_configs_range_in_exact_steps():
    grid = lock_margin.margin_grid(0.1)
    assert len(grid) == 51 and grid[0] == 0.0 and grid[-1] == 5.0 and grid[3] == 0.3
    assert lock_margin.margin_grid(0.3)[-1] == pytest.approx(4.8)
    for bad in (0.0, -0.1, float("nan"), 6.0):
        with pytest.raises(ValueError, match="margin step"):
            lock_margin.margin_grid(bad)


def test_a_season_is_not_thin():
    gaps = list(np.round(np.random.default_rng(5).uniform(-0.5, 0.45, lock_margin.THIN_SAMPLE_DAYS), 2))
    study = lock_margin.lock_margin_study(_days(gaps, [75.0] * len(gaps)), 1.0, 0.1)
    assert study["days"] == lock_margin.THIN_SAMPLE_DAYS and not study["thin_sample"]
    assert study["recommended_margin_f"] == 0.0
