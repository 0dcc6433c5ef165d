import itertools
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwx.domain.windows import format_window_name, parse_window_name, plan_windows


def test_plan_matches_the_demo_config():
    windows = plan_windows(date(2025, 5, 1), date(2025, 9, 23), 90, 7, 7)
    assert len(windows) == 8
    first, last = windows[0], windows[-1]
    assert first.name == "win_20250501_20250805"
    assert (first.train_end, first.test_start, first.test_end) == (date(2025, 7, 29), date(2025, 7, 30),
                                                                   date(2025, 8, 5))
    assert last.test_end == date(2025, 9, 23)


@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)), st.integers(1, 120),
       st.integers(1, 14), st.integers(1, 14), st.integers(0, 200))
def test_windows_tile_time_without_leakage(start, train_days, test_days, step_days, extra):
    end = date.fromordinal(start.toordinal() + train_days + test_days + extra - 1)
    windows = plan_windows(start, end, train_days, test_days, step_days)
    assert windows, "at least one window fits by construction"
    for w in windows:
        assert w.train_start <= w.train_end < w.test_start <= w.test_end <= end
        assert (w.train_end - w.train_start).days + 1 == train_days
        assert (w.test_end - w.test_start).days + 1 == test_days
        assert parse_window_name(w.name) == (w.train_start, w.test_end)
    starts = [w.train_start for w in windows]
    assert all((b - a).days == step_days for a, b in itertools.pairwise(starts))
    # the next window would not fit
    assert date.fromordinal(windows[-1].test_end.toordinal() + step_days) > end


@pytest.mark.parametrize("name", ["win_2025_2025", "win_20250231_20250301", "win_20250301_20250201", "x"])
def test_bad_window_names(name):
    with pytest.raises(ValueError, match=repr(name).replace("[", r"\[")):
        parse_window_name(name)


def test_format_round_trip():
    assert format_window_name(date(2025, 8, 2), date(2025, 9, 19)) == "win_20250802_20250919"
    with pytest.raises(ValueError, match=">= 1"):
        plan_windows(date(2025, 1, 1), date(2025, 2, 1), 0, 7, 7)
