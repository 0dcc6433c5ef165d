"""Kalshi Trade API v2: markets of a series, 1-minute candlesticks, settlements, a series' fees.

Parsing is separate from fetching and pure: payload → DataFrame in the schema's units (cents). Both
the older integer-cent fields and the current ``*_dollars`` / ``*_fp`` string fields are read; a
missing price is NULL, never 0 or 50.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd

from kwx.data.clients.http import JsonHttp, PayloadError, all_pages, unix_seconds
from kwx.domain.fees import FeeChange, SeriesFee
from kwx.domain.markets import BRACKETS, TickerError, contract_from_ticker

PRODUCTION_URL = "https://api.elections.kalshi.com/trade-api/v2"
DEMO_URL = "https://demo-api.kalshi.co/trade-api/v2"
MAX_PAGE = 1000  # Kalshi's cap for GET /markets?limit=
CANDLE_CAP = 5000  # candlesticks per request; longer ranges are split
# A series lists a few markets a day: 1,000 pages is decades of markets even at small page sizes, and a
# bound on a server whose cursors never end (without repeating) stops the loop within minutes.
MAX_PAGES = 1000
REJECTED = "Kalshi refused the request"
# Strike types the SDK lists beside ours (YES on T >= floor / T <= cap); refused at ingest, see parse_market.
INCLUSIVE_TAILS = ("greater_or_equal", "less_or_equal")


class KalshiClient:
    def __init__(self, base_url: str = PRODUCTION_URL, *, http: JsonHttp | None = None,
                 candle_cap: int = CANDLE_CAP, page_limit: int = MAX_PAGE, max_pages: int = MAX_PAGES):
        if not 1 <= page_limit <= MAX_PAGE:
            raise ValueError(f"page_limit must be within 1..{MAX_PAGE}")
        self.http = http or JsonHttp(base_url)
        self.candle_cap = candle_cap
        self.page_limit = page_limit
        self.max_pages = max_pages

    def markets(self, series: str, min_close_ts: int | None = None, max_close_ts: int | None = None) -> list[dict]:
        """Every market of ``series`` (closing in the range, when given), following the cursor.

        A cursor the server already gave, or more than ``max_pages`` pages, raises PagingError naming
        the series: following it would loop forever.
        """
        params: dict[str, object] = {"series_ticker": series, "limit": self.page_limit}
        if min_close_ts is not None:
            params["min_close_ts"] = min_close_ts
        if max_close_ts is not None:
            params["max_close_ts"] = max_close_ts
        return all_pages(self.http, "/markets", params, "markets", what=f"markets of {series}", rejected=REJECTED,
                         max_pages=self.max_pages)

    def candlesticks(self, series: str, ticker: str, start_ts: int, end_ts: int) -> list[dict]:
        """1-minute candlesticks of one market in [start_ts, end_ts], in requests of at most ``candle_cap``."""
        out: list[dict] = []
        for chunk_start, chunk_end in _chunks(start_ts, end_ts, self.candle_cap * 60):
            body = self.http.get(f"/series/{series}/markets/{ticker}/candlesticks",
                                 {"start_ts": chunk_start, "end_ts": chunk_end, "period_interval": 1},
                                 what=f"{ticker}: candlesticks {chunk_start}..{chunk_end}", rejected=REJECTED)
            sticks = body.get("candlesticks")
            if not isinstance(sticks, list):
                raise PayloadError(f"{ticker}: 'candlesticks' is missing or not a list")
            out.extend(sticks)
        return out

    def series_fee(self, series: str) -> SeriesFee:
        """The series' fee type and multiplier in force now (``GET /series/{series}``)."""
        what = f"series {series}"
        return parse_series_fee(self.http.get(f"/series/{series}", what=what, rejected=REJECTED).get("series"),
                                what)

    def fee_changes(self, series: str) -> list[FeeChange]:
        """The series' announced fee changes, past and scheduled (``GET /series/fee_changes``)."""
        what = f"fee changes of {series}"
        body = self.http.get("/series/fee_changes", {"series_ticker": series, "show_historical": "true"}, what=what,
                             rejected=REJECTED)
        return parse_fee_changes(body.get("series_fee_change_arr"), series, what)


def _chunks(start: int, end: int, span: int) -> Iterator[tuple[int, int]]:
    while start <= end:
        yield start, min(start + span - 1, end)
        start += span


def _number(value, where: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(f"{where}: {value!r} is not a number")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise PayloadError(f"{where}: {value!r} is not a number") from None


def _cents(block, field: str, where: str) -> float | None:
    """``field`` of a price block in cents, from ``{field}_dollars`` ("0.4200") or the older ``{field}`` (42)."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise PayloadError(f"{where}: expected an object, got {type(block).__name__}")
    dollars = _number(block.get(f"{field}_dollars"), f"{where}.{field}_dollars")
    if dollars is not None:
        return float(dollars * 100)
    cents = _number(block.get(field), f"{where}.{field}")
    return None if cents is None else float(cents)


def _count(stick: dict, field: str, where: str) -> float | None:
    value = _number(stick.get(f"{field}_fp"), f"{where}.{field}_fp")
    if value is None:
        value = _number(stick.get(field), f"{where}.{field}")
    return None if value is None else float(value)


CANDLE_FIELDS = [f"{side}_{stat}" for side in ("yes_bid", "yes_ask") for stat in ("open", "high", "low", "close")]
PRICE_FIELDS = ["open", "high", "low", "close", "mean"]


def parse_candles(ticker: str, candlesticks: list) -> pd.DataFrame:
    rows = []
    for i, stick in enumerate(candlesticks):
        where = f"{ticker}: candlesticks[{i}]"
        if not isinstance(stick, dict):
            raise PayloadError(f"{where}: expected an object")
        ts = unix_seconds(stick.get("end_period_ts"), f"{where}.end_period_ts")
        row: dict[str, object] = {"market_ticker": ticker, "end_period_ts": ts}
        for side in ("yes_bid", "yes_ask"):
            for stat in ("open", "high", "low", "close"):
                row[f"{side}_{stat}"] = _cents(stick.get(side), stat, f"{where}.{side}")
        price = stick.get("price") or None  # {} when nothing traded
        for stat in PRICE_FIELDS:
            row[f"price_{stat}"] = _cents(price, stat, f"{where}.price")
        row["volume"] = _count(stick, "volume", where)
        row["open_interest"] = _count(stick, "open_interest", where)
        rows.append(row)
    columns = ["market_ticker", "end_period_ts", *CANDLE_FIELDS, *(f"price_{s}" for s in PRICE_FIELDS), "volume",
               "open_interest"]
    return pd.DataFrame(rows, columns=columns)


# Candles are stamped at the end of their minute; one an hour past the close is not this market's.
CANDLE_CLOSE_GRACE_SECONDS = 3600
PRICE_COLUMNS = [*CANDLE_FIELDS, *(f"price_{s}" for s in PRICE_FIELDS)]


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_candles(ticker: str, candles: pd.DataFrame, open_ts: int, close_ts: int) -> None:
    """Reject a market's candle batch that cannot be real, naming the market and the rule it breaks.

    A batch passes iff every candle ends within the market's life (open_ts .. close_ts plus an hour),
    every price is within 0..100 cents, and at the open and the close of each minute bid <= ask (the
    highs and lows of bid and ask come from different moments, so they may cross).
    """
    if candles.empty:
        return
    ts = candles["end_period_ts"].to_numpy(dtype=np.int64)
    early = np.flatnonzero(ts < open_ts)
    if len(early):
        raise PayloadError(f"{ticker}: candle at {_utc(int(ts[early[0]]))} is before the market opened "
                           f"({_utc(open_ts)})")
    late = np.flatnonzero(ts > close_ts + CANDLE_CLOSE_GRACE_SECONDS)
    if len(late):
        raise PayloadError(f"{ticker}: candle at {_utc(int(ts[late[0]]))} is after the market closed "
                           f"({_utc(close_ts)})")
    for column in PRICE_COLUMNS:
        values = candles[column].to_numpy(dtype=float)
        outside = np.flatnonzero((values < 0) | (values > 100))  # NaN (no price) compares False
        if len(outside):
            i = outside[0]
            raise PayloadError(f"{ticker}: candle at {_utc(int(ts[i]))}: {column} {values[i]:g}¢ is outside 0..100")
    for stat in ("open", "close"):
        bid, ask = (candles[f"yes_{side}_{stat}"].to_numpy(dtype=float) for side in ("bid", "ask"))
        crossed = np.flatnonzero(bid > ask)
        if len(crossed):
            i = crossed[0]
            raise PayloadError(f"{ticker}: candle at {_utc(int(ts[i]))}: yes_bid_{stat} {bid[i]:g}¢ is above "
                               f"yes_ask_{stat} {ask[i]:g}¢")


def _time(market: dict, field: str, ticker: str, required: bool = True) -> datetime | None:
    value = market.get(field)
    if value in (None, "") and not required:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{ticker}: {field}: {value!r} is not an ISO timestamp") from None
    if parsed.tzinfo is None:
        raise PayloadError(f"{ticker}: {field}: {value!r} has no time zone")
    return parsed


def _text(market: dict, field: str, ticker: str) -> str | None:
    """A text field, NUL bytes removed: PostgreSQL text cannot hold them, and one would abort the write."""
    value = market.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{ticker}: {field}: {value!r} is not text")
    return value.replace("\x00", "") or None


def parse_market(market: dict) -> dict:
    if not isinstance(market, dict):
        raise PayloadError(f"market entry is {type(market).__name__}, not an object")
    ticker = market.get("ticker")
    if not isinstance(ticker, str) or not ticker:
        raise PayloadError(f"market entry without a ticker: {str(market)[:120]}")
    strike_type = market.get("strike_type")
    if strike_type in INCLUSIVE_TAILS:
        raise PayloadError(f"{ticker}: strike_type {strike_type!r} is not supported: kwx settles only "
                           f"{', '.join(BRACKETS)} (strict tails); an inclusive tail would need its own rule, "
                           f"features and models, and the daily-high markets kwx trades use none")
    if strike_type not in BRACKETS:
        raise PayloadError(f"{ticker}: strike_type: {strike_type!r} is not one of {list(BRACKETS)}")
    try:
        contract = contract_from_ticker(ticker, strike_type)
    except (TickerError, ValueError) as exc:
        raise PayloadError(f"{ticker}: ticker: {exc}") from None
    floor = _number(market.get("floor_strike"), f"{ticker}: floor_strike")
    cap = _number(market.get("cap_strike"), f"{ticker}: cap_strike")
    needs_floor, needs_cap = strike_type in ("between", "greater"), strike_type in ("between", "less")
    if (needs_floor and floor is None) or (needs_cap and cap is None):
        raise PayloadError(f"{ticker}: {strike_type} market is missing its floor_strike/cap_strike")
    given = (None if floor is None else float(floor), None if cap is None else float(cap))
    if given != (contract.floor, contract.cap):
        # the ticker is what traders see and what the rules read; stored strikes must say the same
        raise PayloadError(f"{ticker}: floor_strike/cap_strike {_bounds(*given)} disagree with the ticker, "
                           f"which denotes a {strike_type} market with {_bounds(contract.floor, contract.cap)}")
    result = _text(market, "result", ticker)
    temperature = _number(market.get("expiration_value"), f"{ticker}: expiration_value") if result else None
    payout = _cents(market, "settlement_value", ticker)
    expected_payout = {"yes": 100.0, "no": 0.0}.get(result or "")
    if payout is not None and expected_payout is not None and payout != expected_payout:
        raise PayloadError(f"{ticker}: settlement_value {payout:g}¢ contradicts result {result!r} "
                           f"(a {result} pays {expected_payout:g}¢)")
    return {
        "ticker": ticker, "event_ticker": _text(market, "event_ticker", ticker) or ticker.rsplit("-", 1)[0],
        "series_ticker": contract.series, "city": contract.city, "event_date": contract.event_date,
        "strike_type": strike_type, "floor_strike": contract.floor, "cap_strike": contract.cap,
        "open_time": _time(market, "open_time", ticker), "close_time": _time(market, "close_time", ticker),
        "expiration_time": _time(market, "expiration_time", ticker, required=False),
        "status": _text(market, "status", ticker), "result": result,
        "expiration_value": None if temperature is None else float(temperature),
        "settlement_value": payout,
        "rules_primary": _text(market, "rules_primary", ticker),
    }


def _bounds(floor: float | None, cap: float | None) -> str:
    return f"floor {'none' if floor is None else f'{floor:g}'}, cap {'none' if cap is None else f'{cap:g}'}"


def markets_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in ("open_time", "close_time", "expiration_time"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def settlements(markets: pd.DataFrame, station: str) -> pd.DataFrame:
    """climate_daily rows from settled markets: one whole-°F high (``expiration_value``) per event;
    disagreement is an error."""
    settled = markets.dropna(subset=["expiration_value"])
    rows = []
    for event_date, group in settled.groupby("event_date"):
        values = set(group["expiration_value"])
        if len(values) != 1:
            raise PayloadError(f"event {group['event_ticker'].iloc[0]}: markets disagree on the settled "
                               f"high (expiration_value) {sorted(values)}")
        value = values.pop()
        if not float(value).is_integer():
            raise PayloadError(f"event {group['event_ticker'].iloc[0]}: expiration_value {value} is not whole °F")
        rows.append({"station": station, "climate_date": event_date, "tmax_f": int(value),
                     "source": "kalshi_settlement"})
    return pd.DataFrame(rows, columns=["station", "climate_date", "tmax_f", "source"])


def _fee(body: dict, where: str) -> SeriesFee:
    fee_type, multiplier = body.get("fee_type"), _number(body.get("fee_multiplier"), f"{where}.fee_multiplier")
    if not isinstance(fee_type, str) or multiplier is None:
        raise PayloadError(f"{where}: fee_type and fee_multiplier are required")
    try:
        return SeriesFee(fee_type, float(multiplier))
    except ValueError as exc:
        raise PayloadError(f"{where}: {exc}") from None


def parse_series_fee(series, where: str) -> SeriesFee:
    """A Series object's fee type and multiplier."""
    if not isinstance(series, dict):
        raise PayloadError(f"{where}: 'series' is missing or not an object")
    return _fee(series, where)


def parse_fee_changes(changes, series: str, where: str) -> list[FeeChange]:
    """SeriesFeeChange objects of ``series`` as FeeChanges at their scheduled time (an RFC 3339 string)."""
    if changes is None:
        return []
    if not isinstance(changes, list):
        raise PayloadError(f"{where}: 'series_fee_change_arr' is not a list")
    out = []
    for i, change in enumerate(changes):
        at = f"{where}[{i}]"
        if not isinstance(change, dict):
            raise PayloadError(f"{at}: expected an object")
        if change.get("series_ticker") not in (None, series):
            continue  # a server that ignores the filter: another series' change is not this one's
        scheduled = change.get("scheduled_ts")
        try:
            effective = datetime.fromisoformat(scheduled.replace("Z", "+00:00")) if isinstance(scheduled, str) \
                else None
        except ValueError:
            effective = None
        if effective is None or effective.tzinfo is None:
            raise PayloadError(f"{at}.scheduled_ts: {scheduled!r} is not an RFC 3339 time")
        out.append(FeeChange(series, int(effective.timestamp()), _fee(change, at)))
    return out
