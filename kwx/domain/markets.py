"""Kalshi daily-high market rules: tickers, brackets, settlement and the climate day.

Kalshi settles on the NWS Daily Climate Report, whose day runs midnight to midnight local
*standard* time all year: during daylight time it is 01:00 to 01:00 on the clock. Every
mapping from a UTC instant to a trading day in kwx goes through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args

import numpy as np

from kwx.cities import City, city_for_series

Bracket = Literal["between", "greater", "less"]
BRACKETS: tuple[str, ...] = get_args(Bracket)
StrikeKind = Literal["B", "T"]

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_TICKER_RE = re.compile(
    r"^(?P<series>[A-Z][A-Z0-9]*)-(?P<yy>\d{2})(?P<mon>[A-Z]{3})(?P<dd>\d{2})-(?P<kind>[BT])(?P<strike>-?\d+(?:\.\d+)?)$"
)
_SECONDS_PER_DAY = 86_400


class TickerError(ValueError):
    """A ticker that does not follow SERIES-YYMMMDD-{B|T}strike, or a bracket it cannot be."""


@dataclass(frozen=True)
class TickerParts:
    series: str
    event_date: date
    kind: StrikeKind
    strike: float

    @property
    def city(self) -> City:
        return city_for_series(self.series)

    @property
    def event_ticker(self) -> str:
        return format_event_ticker(self.series, self.event_date)

    @property
    def ticker(self) -> str:
        return format_ticker(self.series, self.event_date, self.kind, self.strike)


def format_event_date(day: date) -> str:
    """25NOV28 for 2025-11-28: Kalshi's YYMMMDD."""
    return f"{day.year % 100:02d}{_MONTHS[day.month - 1]}{day.day:02d}"


def format_strike(strike: float) -> str:
    """33.5 -> '33.5', 40.0 -> '40' (Kalshi writes whole strikes without a decimal)."""
    if float(strike).is_integer():
        return str(int(strike))
    return repr(float(strike))


def format_event_ticker(series: str, event_date: date) -> str:
    return f"{series}-{format_event_date(event_date)}"


def format_ticker(series: str, event_date: date, kind: StrikeKind, strike: float) -> str:
    return f"{format_event_ticker(series, event_date)}-{kind}{format_strike(strike)}"


def parse_ticker(ticker: str) -> TickerParts:
    match = _TICKER_RE.match(ticker)
    if match is None:
        raise TickerError(f"ticker {ticker!r} is not of the form SERIES-YYMMMDD-{{B|T}}strike")
    month_name = match["mon"]
    if month_name not in _MONTHS:
        raise TickerError(f"ticker {ticker!r}: unknown month {month_name!r}")
    try:
        event_date = date(2000 + int(match["yy"]), _MONTHS.index(month_name) + 1, int(match["dd"]))
    except ValueError as exc:
        raise TickerError(f"ticker {ticker!r}: invalid event date ({exc})") from None
    return TickerParts(match["series"], event_date, match["kind"], float(match["strike"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Contract:
    """What one market pays on: YES wins when the day's high falls in [floor, cap] by bracket rule."""

    ticker: str
    series: str
    city: str
    event_date: date
    bracket: Bracket
    floor: float | None
    cap: float | None

    def wins(self, tmax_f: int) -> bool:
        return bool(settlement_outcomes([self.bracket], [self.floor], [self.cap], [tmax_f])[0])


def contract_from_ticker(ticker: str, strike_type: str | None = None) -> Contract:
    """Build the contract a ticker denotes.

    ``B`` tickers are always *between* with the strike at the bracket's centre (B33.5 pays on
    33-34 °F). ``T`` tickers are a tail whose direction the ticker does not say, so Kalshi's
    ``strike_type`` (greater/less) is required for them.
    """
    parts = parse_ticker(ticker)
    if parts.kind == "B":
        if strike_type not in (None, "between"):
            raise TickerError(f"ticker {ticker!r} is a between bracket, not {strike_type!r}")
        return Contract(
            ticker, parts.series, parts.city.key, parts.event_date, "between",
            parts.strike - 0.5, parts.strike + 0.5,
        )
    if strike_type == "greater":
        return Contract(ticker, parts.series, parts.city.key, parts.event_date, "greater", parts.strike, None)
    if strike_type == "less":
        return Contract(ticker, parts.series, parts.city.key, parts.event_date, "less", None, parts.strike)
    raise TickerError(f"ticker {ticker!r} is a tail (T) market: strike_type must be 'greater' or 'less', "
                      f"got {strike_type!r}")


def settlement_outcomes(brackets, floors, caps, tmax_f) -> np.ndarray:
    """1.0 where YES wins, 0.0 where it loses, NaN where the high is not yet known.

    between: floor <= T <= cap; greater: T > floor; less: T < cap. T is the whole-degree
    value of the NWS daily climate report. Vectorised: the training labels and the scalar
    ``Contract.wins`` both come through here so there is one rule.
    """
    brackets = np.asarray(brackets, dtype=object)
    floors = np.asarray(floors, dtype=float)
    caps = np.asarray(caps, dtype=float)
    tmax = np.asarray(tmax_f, dtype=float)
    unknown = sorted({str(b) for b in np.unique(brackets)} - set(BRACKETS))
    if unknown:
        raise ValueError(f"unknown bracket(s) {unknown}; expected one of {list(BRACKETS)}")
    is_between, is_greater, is_less = (brackets == b for b in BRACKETS)
    for name, needed, values in (("floor", is_between | is_greater, floors), ("cap", is_between | is_less, caps)):
        if np.isnan(values[needed]).any():
            raise ValueError(f"{name} strike missing for a bracket that needs it")
    with np.errstate(invalid="ignore"):
        wins = np.select(
            [is_between, is_greater, is_less],
            [(tmax >= floors) & (tmax <= caps), tmax > floors, tmax < caps],
            default=False,
        )
    out = wins.astype(float)
    out[np.isnan(tmax)] = np.nan
    return out




def bracket_bounds(brackets, floors, caps) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the continuous high whose whole-degree report (rounded half up) pays YES.

    ``settlement_outcomes`` in continuous form: between (floor <= T <= cap) is [floor - ½, cap + ½); greater
    (T > floor, T >= floor + 1) is [floor + ½, ∞); less (T < cap) is (-∞, cap - ½). A ladder's brackets tile
    the line, so probabilities over them sum to one.
    """
    brackets = np.asarray(brackets, dtype=object)
    floors = np.asarray(floors, dtype=float)
    caps = np.asarray(caps, dtype=float)
    lo = np.where(brackets == "greater", floors + 0.5, np.where(brackets == "less", -np.inf, floors - 0.5))
    hi = np.where(brackets == "greater", np.inf, np.where(brackets == "less", caps - 0.5, caps + 0.5))
    return lo, hi

# Observed maxima can sit above the climate report's by up to ~0.9 °F (°C-rounded 5-minute reports
# converted to °F; the report keeps the 1-minute sensor's whole-°F maximum), so a lock trusts the
# running maximum only this far below what it reads. `kwx audit lock-margin` measures the margin a
# dataset needs (``kwx.domain.lock_margin``): the demo needs 0.05 °F.
DEFAULT_LOCK_MARGIN_F = 1.0


def locked_outcomes(brackets, floors, caps, running_max_f, margin_f: float = DEFAULT_LOCK_MARGIN_F) -> np.ndarray:
    """1.0 / 0.0 where the settlement rule already decides the outcome, NaN where it is still open.

    The day's high can only rise, and the report's whole-°F high T is at least the running maximum
    of the observations less ``margin_f``, rounded as the settlement rounds (half up). So *greater*
    (T > floor) is YES once that bound exceeds the floor; *less* (T < cap) is NO once it reaches the
    cap; *between* (floor <= T <= cap) is NO once it exceeds the cap. Nothing else can be decided
    before the day ends: a YES for *between*/*less* or a NO for *greater* needs the final high.
    """
    if not np.isfinite(margin_f) or margin_f < 0:
        raise ValueError(f"lock margin must be a finite number of °F >= 0, got {margin_f!r}")
    brackets = np.asarray(brackets, dtype=object)
    floors = np.asarray(floors, dtype=float)
    caps = np.asarray(caps, dtype=float)
    with np.errstate(invalid="ignore"):
        high_at_least = np.floor(np.asarray(running_max_f, dtype=float) - margin_f + 0.5)
        yes = (brackets == "greater") & (high_at_least > floors)
        no = ((brackets == "less") & (high_at_least >= caps)) | ((brackets == "between") & (high_at_least > caps))
    return np.where(yes, 1.0, np.where(no, 0.0, np.nan))


def with_locked_outcomes(p_yes, locked_outcome) -> np.ndarray:
    """``p_yes`` where the outcome is open, the decided outcome (exactly 1 or 0) where it is locked."""
    locked_outcome = np.asarray(locked_outcome, dtype=float)
    return np.where(np.isnan(locked_outcome), np.asarray(p_yes, dtype=float), locked_outcome)

@dataclass(frozen=True)
class LadderSpec:
    """One event's ladder: a *less* tail, ``n_between`` two-degree brackets, a *greater* tail."""

    series: str
    event_date: date
    lowest_cap: int
    n_between: int

    def contracts(self) -> list[Contract]:
        if self.n_between < 1:
            raise ValueError("a ladder needs at least one between bracket")
        top_floor = self.lowest_cap + 2 * self.n_between - 1
        tickers = [(format_ticker(self.series, self.event_date, "T", self.lowest_cap), "less")]
        tickers += [
            (format_ticker(self.series, self.event_date, "B", self.lowest_cap + 2 * i + 0.5), "between")
            for i in range(self.n_between)
        ]
        tickers.append((format_ticker(self.series, self.event_date, "T", top_floor), "greater"))
        return [contract_from_ticker(t, s) for t, s in tickers]


# --- the climate day -----------------------------------------------------------------------------

def _as_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no time zone; kwx needs aware UTC instants")
    return ts.astimezone(UTC)


def to_local_standard(ts: datetime, city: City) -> datetime:
    """The wall-clock reading of local standard time (naive), as the climate report keeps it."""
    return (_as_utc(ts) + city.standard_offset).replace(tzinfo=None)


def climate_day(ts: datetime, city: City) -> date:
    return to_local_standard(ts, city).date()


def climate_day_bounds(day: date, city: City) -> tuple[datetime, datetime]:
    """[start, end) of a climate day as UTC instants: always exactly 24 hours."""
    start = datetime.combine(day, time(0), tzinfo=UTC) - city.standard_offset
    return start, start + timedelta(days=1)


def climate_days_from_epoch(epoch_seconds: np.ndarray, city: City) -> np.ndarray:
    """Vectorised ``climate_day`` over Unix seconds; returns datetime64[D]."""
    offset = int(city.standard_offset.total_seconds())
    days = np.floor_divide(np.asarray(epoch_seconds, dtype=np.int64) + offset, _SECONDS_PER_DAY)
    return days.astype("datetime64[D]")
