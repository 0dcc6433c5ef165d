"""Kalshi's trading fees per series and time: what the exchange publishes, priced by one formula. Pure.

Kalshi gives every series a fee type and a multiplier (``GET /series/{ticker}``) and announces changes
ahead with the time they take effect (``GET /series/fee_changes``). Its fee schedule prices them as:

* ``quadratic``: taker ⌈0.07 · m · C · P · (1 − P)⌉ dollars, makers pay nothing;
* ``quadratic_with_maker_fees``: the same taker fee, and makers ⌈0.0175 · m · C · P · (1 − P)⌉;
* ``flat``: a per-series table kwx does not model: such a series needs the config's rates.

A ``FeeBook`` holds each series' timeline and answers "which rates applied to this market at this time", so a
backtest of last spring pays last spring's fees and the live loop a change from the minute it takes effect.
Before the first record of a series its earliest known fee is assumed (stated by ``describe``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import ArrayLike

from kwx.domain.signals import FeeSchedule

TAKER_RATE = 0.07  # the general schedule's taker coefficient
MAKER_RATE = 0.0175  # its maker coefficient, charged on series "with maker fees" only
FEE_TYPES = ("quadratic", "quadratic_with_maker_fees", "flat")
DEFAULT_FEE_CONTRACTS = 10


class UnpricedFeeError(ValueError):
    """A series' fee type kwx cannot price: the message says what to set instead."""


@dataclass(frozen=True)
class SeriesFee:
    """A series' fee type and multiplier, as the exchange states them."""

    fee_type: str
    multiplier: float

    def __post_init__(self):
        if self.fee_type not in FEE_TYPES:
            raise ValueError(f"unknown Kalshi fee type {self.fee_type!r}; known: {', '.join(FEE_TYPES)}")
        if not (np.isfinite(self.multiplier) and self.multiplier >= 0):
            raise ValueError(f"a fee multiplier must be a finite number >= 0, got {self.multiplier!r}")

    def rates(self) -> tuple[float, float]:
        """(taker rate, maker rate) of the quadratic formula."""
        if self.fee_type == "flat":
            raise UnpricedFeeError("fee type 'flat' follows Kalshi's specific trading fees table, which kwx does "
                                   "not model: set fees.taker_rate and fees.maker_rate in the rt config")
        maker = MAKER_RATE * self.multiplier if self.fee_type == "quadratic_with_maker_fees" else 0.0
        return TAKER_RATE * self.multiplier, maker

    def describe(self) -> str:
        return f"{self.fee_type} ×{self.multiplier:g}"


GENERAL = SeriesFee("quadratic", 1.0)  # Kalshi's general schedule: what a series without fee data is priced at


@dataclass(frozen=True)
class FeeChange:
    """``fee`` applies to ``series`` from ``effective_ts`` (Unix seconds) until the series' next change."""

    series: str
    effective_ts: int
    fee: SeriesFee


def series_of_ticker(market_ticker: str) -> str:
    """A Kalshi market ticker's series: the part before the first dash (SERIES-EVENTDATE-STRIKE), as the exchange
    names markets inside events inside series."""
    return str(market_ticker).split("-", 1)[0]


def series_of(market_tickers: ArrayLike) -> np.ndarray:
    """``series_of_ticker`` of each ticker."""
    return np.array([series_of_ticker(t) for t in np.atleast_1d(np.asarray(market_tickers, dtype=object))],
                    dtype=object)


class FeeBook:
    """Fee rates by series and time: the exchange's timelines, or one pair of rates from the config.

    ``override`` (taker, maker) replaces every series' fee (the rt config's ``fees`` rates); a series without
    any record is priced at Kalshi's general schedule, and ``describe`` says so.
    """

    def __init__(self, changes: Iterable[FeeChange] = (), *, contracts: int = DEFAULT_FEE_CONTRACTS,
                 override: tuple[float, float] | None = None):
        self.contracts, self.override = contracts, override
        timelines: dict[str, list[FeeChange]] = {}
        for change in changes:
            timelines.setdefault(change.series, []).append(change)
        self._times: dict[str, list[int]] = {}
        self._rates: dict[str, list[tuple[float, float]]] = {}
        self._changes: dict[str, list[FeeChange]] = {}
        for series, timeline in timelines.items():
            timeline.sort(key=lambda c: c.effective_ts)
            self._changes[series] = timeline
            self._times[series] = [c.effective_ts for c in timeline]
            if override is None:  # the override prices every series, a flat one too
                self._rates[series] = [_rates_of(c) for c in timeline]

    @classmethod
    def fixed(cls, taker_rate: float, maker_rate: float, contracts: int = DEFAULT_FEE_CONTRACTS) -> FeeBook:
        """The same rates for every series and time."""
        return cls(contracts=contracts, override=(taker_rate, maker_rate))

    def rates(self, series: str, ts: float) -> tuple[float, float]:
        """(taker, maker) rate of ``series`` at Unix time ``ts``."""
        if self.override is not None:
            return self.override
        times = self._times.get(series)
        if not times:
            return GENERAL.rates()
        # the last change in force at ts; before the first record, the earliest fee known
        return self._rates[series][max(bisect.bisect_right(times, ts) - 1, 0)]

    def schedule(self, market_tickers: ArrayLike, ts: ArrayLike) -> FeeSchedule:
        """Per-row rates of markets at times (one time, or one per row), as one vectorised ``FeeSchedule``."""
        tickers = np.atleast_1d(np.asarray(market_tickers, dtype=object))
        if self.override is not None:
            return FeeSchedule(*self.override, self.contracts)
        times = np.broadcast_to(np.asarray(ts, dtype=float), tickers.shape)
        taker, maker = np.zeros(len(tickers)), np.zeros(len(tickers))
        series = series_of(tickers)
        for name in np.unique(series) if len(series) else ():
            rows = np.flatnonzero(series == name)
            known = self._times.get(name)
            if not known:
                taker[rows], maker[rows] = GENERAL.rates()
                continue
            at = np.maximum(np.searchsorted(np.asarray(known, dtype=float), times[rows], side="right") - 1, 0)
            pairs = np.asarray(self._rates[name], dtype=float)[at]
            taker[rows], maker[rows] = pairs[:, 0], pairs[:, 1]
        return FeeSchedule(taker, maker, self.contracts)

    def order_cents(self, market_ticker: str, ts: float, price_cents, contracts, maker: bool = False) -> float:
        """The fee of one order (or fill) of ``contracts`` at ``price_cents`` on a market at ``ts``."""
        taker_rate, maker_rate = self.rates(series_of_ticker(market_ticker), ts)
        return float(FeeSchedule(taker_rate, maker_rate, self.contracts).order_cents(price_cents, contracts, maker))

    def describe(self, series: Iterable[str] = ()) -> str:
        """Where the fees come from, per series asked about: for logs, MLflow and the backtest summary."""
        if self.override is not None:
            return f"config: taker rate {self.override[0]:g}, maker rate {self.override[1]:g} for every series"
        parts = []
        for name in sorted(set(series) | set(self._changes)):
            timeline = self._changes.get(name)
            if not timeline:
                parts.append(f"{name}: no fee data, Kalshi's general schedule ({GENERAL.describe()})")
                continue
            steps = ", ".join(f"{c.fee.describe()} from {_day(c.effective_ts)}" for c in timeline)
            parts.append(f"{name}: {steps} (the first also before)")
        return "exchange: " + ("; ".join(parts) if parts else "no series")


def _rates_of(change: FeeChange) -> tuple[float, float]:
    try:
        return change.fee.rates()
    except UnpricedFeeError as exc:
        raise UnpricedFeeError(f"series {change.series}: {exc}") from None


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
