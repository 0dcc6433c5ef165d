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
from kwx.data.clients.http import AuthError, FetchError, PayloadError, StatusError
from kwx.data.clients.kalshi import (
    KalshiClient,
    check_candles,
    markets_frame,
    parse_candles,
    parse_market,
    settlements,
)
from kwx.data.clients.open_meteo import (
    PREVIOUS_DAYS,
    OpenMeteoClient,
    RunChangedError,
    model_spec,
    parse_ensemble,
    parse_forecast,
    parse_previous_runs,
)
from kwx.data.clients.visual_crossing import VisualCrossingClient, parse_timeline
from kwx.data.fees import refresh_series_fees
from kwx.data.store import upsert_frame, upsert_frames


def _named(what: str, exc: Exception) -> str:
    """A failure line that names its market or city once, whether or not the error already does."""
    return str(exc) if what in str(exc) else f"{what}: {exc}"


@dataclass
class IngestSummary:
    markets: int = 0
    candles: int = 0
    weather: int = 0
    settled_days: int = 0
    forecasts: int = 0
    fee_records: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


Progress = Callable[[str, int, int], None]


def ingest_kalshi(engine: Engine, client: KalshiClient, series: str, start: date, end: date, *,
                  now: datetime, progress: Progress | None = None) -> IngestSummary:
    """Markets of ``series`` with event dates in [start, end], their candles up to ``now``, settlements, and the
    series' fee data (``ingest_fees``)."""
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
            summary.failures.append(_named(ticker, exc))
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
    fees = ingest_fees(engine, client, [series], now)  # after the listing: one that never ends writes nothing
    summary.fee_records, summary.failures = fees.fee_records, summary.failures + fees.failures
    return summary


def ingest_fees(engine: Engine, client: KalshiClient, series: list[str], now: datetime) -> IngestSummary:
    """Each series' fee type and multiplier and its announced changes (``kwx.data.fees``); a series whose
    fee data cannot be read is reported by name and the others carry on."""
    summary = IngestSummary()
    for name in series:
        try:
            summary.fee_records += refresh_series_fees(engine, client, [name], int(now.timestamp()))
        except AuthError:
            raise
        except (FetchError, PayloadError) as exc:
            summary.failures.append(_named(f"fees of {name}", exc))
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


def ingest_forecasts(engine: Engine, client: OpenMeteoClient, city_key: str, start: date | None, end: date | None, *,
                     models: list[str] | tuple[str, ...], now: datetime, progress: Progress | None = None,
                     live: bool = False, ensemble_models: list[str] | tuple[str, ...] = ()) -> IngestSummary:
    """Open-Meteo forecasts of the climate days [start, end] of one city into ``forecasts``.

    History (default): the Previous Runs API, ``client.chunk_days`` climate days per request and model; each
    chunk is parsed whole and upserted in its own transaction (the rows are a pure function of the answer, so a
    re-run changes nothing). ``live``: the Forecast API for ``models`` and the Ensemble API for
    ``ensemble_models`` (``start``/``end`` optional filters); a live row already stored is kept as first seen
    (``ON CONFLICT DO NOTHING``), so its available_ts never moves. Rows whose available_ts is after ``now`` are
    never stored (see kwx.data.clients.open_meteo for the availability rule).

    Failures are named in the summary, and the rest is still written: a malformed answer fails its chunk (live:
    its model), a 4xx its model; a server that cannot be reached (retries exhausted, the deadline) ends this
    city with one failure, as every further request would wait the same way. A refused request (401/403) is
    raised: every other city would be refused too.
    """
    city = get_city(city_key)
    specs = [model_spec(m, ensemble=False) for m in models]  # an unknown model fails before any request
    ensemble_specs = [model_spec(m, ensemble=True) for m in ensemble_models] if live else []
    if not live and (start is None or end is None):
        raise ValueError("history needs a start and an end climate day")
    summary = IngestSummary()
    now_ts = int(now.timestamp())

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        mask = frame["available_ts"] <= now_ts
        days = pd.to_datetime(frame["climate_date"]).dt.date
        if start is not None:
            mask &= days >= start
        if end is not None:
            mask &= days <= end
        return frame[mask]

    if live:
        jobs = [(spec, None) for spec in [*specs, *ensemble_specs]]
    else:
        # No previous_dayN row of a climate day more than 8 days after today (in the city's standard time) can be
        # public yet, and Open-Meteo refuses dates beyond its forecast range.
        last_useful = (now.astimezone(UTC) + city.standard_offset).date() + timedelta(days=len(PREVIOUS_DAYS) + 1)
        chunks = client.chunks(start, min(end, last_useful)) if start <= last_useful else []
        jobs = [(spec, chunk) for spec in specs for chunk in chunks]
    failed_models: set[str] = set()
    for i, (spec, chunk) in enumerate(jobs):
        label = f"{city.key} {spec.name}" + (f" {chunk[0]}..{chunk[1]}" if chunk else "")
        if spec.name not in failed_models:
            try:
                if chunk is None:
                    payload, run = client.live(city, spec.name, ensemble=spec.ensemble)
                    frame = (parse_ensemble if spec.ensemble else parse_forecast)(city, spec.name, payload, run)
                else:
                    frame = parse_previous_runs(city, spec.name, client.previous_runs(city, spec.name, *chunk))
            except AuthError:
                raise
            except (StatusError, RunChangedError) as exc:  # every request of this model would fail the same way
                summary.failures.append(_named(city.key, exc))
                failed_models.add(spec.name)
            except FetchError as exc:  # unreachable, 5xx or timeouts after retries, the deadline: give the city up
                summary.failures.append(_named(city.key, exc))
                return summary
            except PayloadError as exc:
                summary.failures.append(_named(city.key, exc))
            else:
                frame = keep(frame)
                if not frame.empty:
                    with engine.begin() as conn:
                        upsert_frame(conn, "forecasts", frame, on_conflict="nothing" if live else "update")
                summary.forecasts += len(frame)
        if progress is not None:
            progress(label, i + 1, len(jobs))
    return summary


@dataclass
class LiveForecastPoller:
    """The live loop's forecaster: stores the current runs of a city's models as they are published.

    ``poll`` returns the failures by name (a missed poll only ages the stored forecasts; markets skip once their
    day's newest forecast passes ``max_forecast_age_hours``); a refused request raises AuthError.
    """

    engine: Engine
    client: OpenMeteoClient
    models: list[str]
    ensemble_models: list[str]

    def poll(self, city_key: str, now_ts: int) -> list[str]:
        summary = ingest_forecasts(self.engine, self.client, city_key, None, None, models=self.models,
                                   now=datetime.fromtimestamp(now_ts, UTC), live=True,
                                   ensemble_models=self.ensemble_models)
        return summary.failures
