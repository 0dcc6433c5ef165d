"""Walk-forward windows over climate days, named win_YYYYMMDD_YYYYMMDD (first train day, last test day)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

_WINDOW_RE = re.compile(r"^win_(\d{8})_(\d{8})$")


@dataclass(frozen=True)
class Window:
    train_start: date
    train_end: date
    test_start: date
    test_end: date

    @property
    def name(self) -> str:
        return format_window_name(self.train_start, self.test_end)

    def contains_test_day(self, day: date) -> bool:
        return self.test_start <= day <= self.test_end


def format_window_name(first_train_day: date, last_test_day: date) -> str:
    return f"win_{first_train_day:%Y%m%d}_{last_test_day:%Y%m%d}"


def parse_window_name(name: str) -> tuple[date, date]:
    """(first train day, last test day) of a window name; ValueError naming the input otherwise."""
    match = _WINDOW_RE.match(name)
    if match is None:
        raise ValueError(f"window name {name!r} is not of the form win_YYYYMMDD_YYYYMMDD")
    try:
        first, last = (date(int(s[:4]), int(s[4:6]), int(s[6:])) for s in match.groups())
    except ValueError as exc:
        raise ValueError(f"window name {name!r} holds an invalid date ({exc})") from None
    if first > last:
        raise ValueError(f"window name {name!r} ends before it starts")
    return first, last


def plan_windows(start: date, end: date, train_days: int, test_days: int, step_days: int) -> list[Window]:
    """Every window whose train and test periods fit in [start, end], stepping by ``step_days``."""
    if min(train_days, test_days, step_days) < 1:
        raise ValueError("train_days, test_days and step_days must all be >= 1")
    windows = []
    train_start = start
    while True:
        train_end = train_start + timedelta(days=train_days - 1)
        test_end = train_end + timedelta(days=test_days)
        if test_end > end:
            return windows
        windows.append(Window(train_start, train_end, train_end + timedelta(days=1), test_end))
        train_start += timedelta(days=step_days)
