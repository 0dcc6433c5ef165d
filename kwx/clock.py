"""Time comes from a clock object, never from ``datetime.now()`` in domain code.

``SystemClock`` for live trading; ``SimulatedClock`` for replay, backtests and tests. The simulated
clock refuses to go backwards (as nautilus_trader's test clock does), so no code path can look at data
from its own future by rewinding time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SimulatedClock:
    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs an aware UTC start time")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError(f"a simulated clock cannot go backwards (asked to move by {delta})")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> datetime:
        return self.advance(when.astimezone(UTC) - self._now)
