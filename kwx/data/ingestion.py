"""Ingest from Kalshi and Visual Crossing into the database: fetch, parse whole, then upsert atomically.

Each market is fetched, parsed and checked completely before anything of it is written, and its market
row and candles go in one transaction: a malformed or impossible payload (strikes the ticker does not
denote, a strike type kwx has no rule for, ``check_candles``) or a failed fetch writes nothing of that
market, is reported by name, and the other markets carry on. A market listing that never ends stops the
ingest before anything is written; a rejected key stops it at once (markets already written stay whole).
Upserts make re-runs change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
from sqlalchemy import Engine

from kwx.cities import city_for_series, get_city
from kwx.data.clients.http import AuthError, FetchError, PayloadError
from kwx.data.clients.kalshi import (
    KalshiClient,
    check_candles,
    markets_frame,
    parse_candles,
    parse_market,
    settlements,
)
from kwx.data.clients.visual_crossing import VisualCrossingClient, parse_timeline
from kwx.data.store import upsert_frames


@dataclass
class IngestSummary:
    markets: int = 0
    candles: int = 0
    weather: int = 0
    settled_days: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


Progress = Callable[[str, int, int], None]


def ingest_kalshi(engine: Engine, client: KalshiClient, series: str, start: date, end: date, *,
                  now: datetime, progress: Progress | None = None) -> IngestSummary:
    """Markets of ``series`` with event dates in [start, end], their candles up to ``now``, settlements."""
    city = city_for_series(series)
    summary = IngestSummary()
    window_start = int(datetime.combine(start - timedelta(days=1), time(0), tzinfo=UTC).timestamp())
    window_end = int(datetime.combine(end + timedelta(days=2), time(0), tzinfo=UTC).timestamp())
    parsed = []
    for raw in client.markets(series, min_close_ts=window_start, max_close_ts=window_end):
        try:
            row = parse_market(raw)
        except PayloadError as exc:
            summary.failures.append(str(exc))
            continue
        if start <= row["event_date"] <= end:
            parsed.append(row)
    now_ts = int(now.timestamp())
    written = []
    for i, row in enumerate(parsed):
        ticker = row["ticker"]
        open_ts, close_ts = int(row["open_time"].timestamp()), int(row["close_time"].timestamp())
        try:
            sticks = client.candlesticks(series, ticker, open_ts, min(close_ts, now_ts))
            candles = parse_candles(ticker, sticks)
            check_candles(ticker, candles, open_ts, close_ts)
        except AuthError:
            raise  # every other market would be refused the same way: stop with the one reason
        except (FetchError, PayloadError) as exc:
            summary.failures.append(str(exc) if ticker in str(exc) else f"{ticker}: {exc}")
        else:
            upsert_frames(engine, {"markets": markets_frame([row]), "candles": candles})
            written.append(row)
            summary.markets += 1
            summary.candles += len(candles)
        if progress is not None:
            progress(ticker, i + 1, len(parsed))
    if written:
        try:
            climate = settlements(markets_frame(written), city.station)
        except PayloadError as exc:
            summary.failures.append(str(exc))
        else:
            upsert_frames(engine, {"climate_daily": climate})
            summary.settled_days = len(climate)
    return summary


def ingest_vc(engine: Engine, client: VisualCrossingClient, city_key: str, start: date, end: date, *,
              progress: Progress | None = None) -> IngestSummary:
    """Station-locked minute weather for the climate days [start, end] (padded a day for local time)."""
    city = get_city(city_key)
    summary = IngestSummary()
    payloads = client.timeline(city, start - timedelta(days=1), end + timedelta(days=1))
    frames = []
    for i, payload in enumerate(payloads):
        frames.append(parse_timeline(city.station, payload))
        if progress is not None:
            progress(city.station, i + 1, len(payloads))
    weather = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not weather.empty:
        upsert_frames(engine, {"weather_minutes": weather})
    summary.weather = len(weather)
    return summary
