"""One retry policy for every database touch of the loop: reads, writes, candle marks, registry refreshes.

``Backoff`` is the pure schedule; ``DbRetry`` is the one place that sleeps on it. A call that stays
unreachable through the schedule raises ``DatabaseUnavailable``, which the loop turns into a skipped
tick (reads) or a buffered one (writes) instead of exiting.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger("kwx.rt")
T = TypeVar("T")

# A lost database costs a live tick at most this share of tick_seconds per call (one read, one write):
# the loop keeps its pace and records the outage tick by tick rather than hanging inside one.
LIVE_WAIT_SHARE = 0.25


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: doubling from ``first`` up to ``cap`` seconds, at most ``budget`` in all."""

    attempts: int = 6
    first: float = 0.5
    cap: float = 10.0
    budget: float | None = None  # None: the doubling schedule alone bounds it (replay has no tick to keep)

    def delays(self) -> list[float]:
        """The wait after each failed attempt that another follows; fewer attempts once the budget is spent."""
        waits: list[float] = []
        left = math.inf if self.budget is None else self.budget
        for attempt in range(self.attempts - 1):
            wait = min(self.first * 2**attempt, self.cap, left)
            if wait <= 0:
                break
            waits.append(wait)
            left -= wait
        return waits


def unreachable(exc: BaseException | None) -> bool:
    """A lost, refused or locked connection (worth waiting out), unlike a bad statement or a constraint.

    The cause chain is followed: MLflow's SQL store wraps SQLAlchemy's error, and the loop's fast reads
    use the driver's cursor directly, so the driver's own error can arrive unwrapped (PEP 249 names
    those classes alike in every driver). An MLflow server whose own store is away answers 503, which
    its client raises as TEMPORARILY_UNAVAILABLE.
    """
    while exc is not None:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        text = str(exc).lower()
        if type(exc).__name__ in ("OperationalError", "InterfaceError") and (
                "connect" in text or "database is locked" in text):
            return True
        exc = exc.__cause__
    return False


def reason(exc: BaseException) -> str:
    """The driver's own first line (the innermost cause): what an operator reads in a skip reason."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class DatabaseUnavailable(RuntimeError):
    """The database stayed unreachable through one call's every retry; the message is the driver's reason."""


@dataclass(frozen=True)
class DbRetry:
    backoff: Backoff = Backoff()
    sleep: Callable[[float], None] = time.sleep

    def __call__(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)``, retried on ``backoff``'s schedule while the database is unreachable."""
        delays = self.backoff.delays()
        for attempt, wait in enumerate([*delays, None]):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                if wait is None:
                    raise DatabaseUnavailable(reason(exc)) from exc
                log.warning("database unreachable (%s); retry %d/%d in %.2g s", reason(exc), attempt + 1,
                            len(delays), wait)
                self.sleep(wait)


# The doubling schedule alone: what a replay uses (it keeps no real-time pace) and the default elsewhere.
UNPACED = DbRetry()
