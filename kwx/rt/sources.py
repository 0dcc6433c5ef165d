"""Where a tick's data comes from. Replay serves stored history as of the clock and never beyond it."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from kwx.cities import get_city
from kwx.data.dataset import CANDLE_COLUMNS, load_candles, load_markets, load_weather
from kwx.data.forecasts import load_error_scales, load_forecast_data, load_forecasts, newest_forecasts
from kwx.domain.features import (
    CANDLE_LOOKBACK_SECONDS,
    candles_needed_since,
    epoch_seconds,
    frame_columns,
    weather_needed_since,
)
from kwx.domain.forecast import ForecastData
from kwx.domain.markets import climate_day_bounds
from kwx.rt.retry import DbRetry

log = logging.getLogger("kwx.rt")


# The candle columns a tick reads: the features' and, for paper fills, the minute's trade range.
TICK_CANDLE_COLUMNS = (*CANDLE_COLUMNS, "price_low", "price_high")


class LookaheadError(AssertionError):
    """A source handed out data stamped after the clock: a bug that would fake a backtest's edge."""


@dataclass
class Snapshot:
    """Everything a tick may see at ``now_ts``: open markets, recent candles, recent weather per city."""

    now_ts: int
    # the open markets: a frame, or its columns as arrays (close/open_time as UTC datetime64; replay: each tick
    # reads a dozen of them, and a frame's column cost more to read than the array it holds)
    markets: pd.DataFrame | dict[str, np.ndarray]
    candles: pd.DataFrame
    # per city, its observations: a frame, or its columns as arrays (ts_utc as UTC datetime64; replay hands out
    # views of its arrays: slicing seven frames whenever an observation arrived cost more than their features)
    weather: dict[str, pd.DataFrame | dict[str, np.ndarray]]
    failed: dict[str, str] = field(default_factory=dict)  # market ticker -> why its data is missing
    # the forecasts of the open markets' days public by now_ts, with their error scales (None: none read)
    forecasts: ForecastData | None = None
    # Set by a source that can name its data cheaply (replay: the slice bounds); same version, same data, and the
    # same candles inside the candle lookback (it changes when one leaves it).
    data_version: tuple | None = None

    def check_no_lookahead(self, checked: Snapshot | None = None) -> None:
        """``checked``: an earlier snapshot that passed; the frames it handed out too are not read again (nothing
        in them is later than its clock, so nothing is later than this one's)."""
        if checked is not None and checked.now_ts > self.now_ts:
            checked = None
        if len(self.candles) and int(self.candles["end_period_ts"].max()) > self.now_ts:
            raise LookaheadError(f"candle after {self.now_ts} handed to a tick")
        for city, wx in self.weather.items():
            if checked is not None and checked.weather.get(city) is wx:
                continue
            observed = epoch_seconds(wx["ts_utc"])
            if len(observed) and int(observed.max()) > self.now_ts:
                raise LookaheadError(f"{city} weather after {self.now_ts} handed to a tick")
        if self.forecasts is None or (checked is not None and checked.forecasts is self.forecasts):
            return
        published = self.forecasts.forecasts["available_ts"]
        if len(published) and int(published.max()) > self.now_ts:
            raise LookaheadError(f"a forecast public after {self.now_ts} handed to a tick")

    def signature(self) -> tuple:
        """Changes exactly when the tick's inputs change: a candle or observation arriving, or leaving the
        snapshot's window or the candle lookback (the counts), the market set, a fetch failure."""
        failed = tuple(sorted(self.failed.items()))
        if self.data_version is not None:
            return self.data_version, failed
        candle_ts = self.candles["end_period_ts"].to_numpy()
        in_lookback = int((candle_ts > self.now_ts - CANDLE_LOOKBACK_SECONDS).sum())
        last_candle = int(candle_ts.max()) if len(candle_ts) else 0
        observed = [epoch_seconds(w["ts_utc"]) for w in self.weather.values()]
        last_obs = tuple(len(ts) and int(ts.max()) for ts in observed)
        counts = (len(candle_ts), *(len(ts) for ts in observed))
        published = self.forecasts.forecasts if self.forecasts is not None else None
        forecasts = (len(published), int(published["available_ts"].max())) if published is not None and len(
            published) else (0, 0)
        return last_candle, last_obs, counts, forecasts, in_lookback, tuple(self.markets["ticker"]), failed


class ReplaySource:
    """Stored markets, candles and weather for one trading day, served as of a simulated clock."""

    def __init__(self, engine: Engine, markets: list[tuple[str, str]], day: date, max_obs_age_minutes: int):
        self.max_obs_age_minutes = max_obs_age_minutes
        frames = [load_markets(engine, city, bracket, day, day + timedelta(days=1)) for city, bracket in markets]
        selected = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        self.markets = selected.assign(
            open_ts=epoch_seconds(selected["open_time"]), close_ts=epoch_seconds(selected["close_time"]),
        ) if len(selected) else selected
        self._market_columns = frame_columns(self.markets)
        self._open_ts = self.markets["open_ts"].to_numpy() if len(selected) else np.zeros(0, np.int64)
        self._close_ts = self.markets["close_ts"].to_numpy() if len(selected) else np.zeros(0, np.int64)
        self._last: Snapshot | None = None
        self._open: tuple[np.ndarray, dict[str, np.ndarray]] | None = None  # (open market rows, their columns)
        self._weather_bounds: dict[str, tuple[int, int]] = {}  # the last snapshot's weather rows per city
        candles = load_candles(engine, self.markets["ticker"].tolist() if len(selected) else [],
                               columns=TICK_CANDLE_COLUMNS)
        self.candles = candles.sort_values("end_period_ts", kind="stable").reset_index(drop=True)
        self._candle_ts = self.candles["end_period_ts"].to_numpy() if len(candles) else np.array([], dtype=np.int64)
        # each candle's market as a row of self.markets: "is its market open" is then an array lookup
        self._candle_market = (pd.Index(self.markets["ticker"]).get_indexer(self.candles["market_ticker"])
                               if len(candles) else np.array([], dtype=np.int64))
        self.weather: dict[str, pd.DataFrame] = {}
        self._weather_columns: dict[str, dict[str, np.ndarray]] = {}  # self.weather's, as arrays
        self._weather_ts: dict[str, np.ndarray] = {}
        self.day_start: dict[str, int] = {}
        for city_key in sorted({c for c, _ in markets}):
            city = get_city(city_key)
            start, end = climate_day_bounds(day, city)
            wx = load_weather(engine, city, start - timedelta(days=1, hours=4), end + timedelta(days=1))
            self.weather[city_key] = wx
            self._weather_columns[city_key] = frame_columns(wx)
            self._weather_ts[city_key] = epoch_seconds(wx["ts_utc"]) if len(wx) else np.array([], dtype=np.int64)
            self.day_start[city_key] = int(start.timestamp())
        # every forecast of the replayed markets' days, served as it became public
        stored = load_forecast_data(engine, sorted(self.weather), day, day + timedelta(days=1))
        self.forecasts = ForecastData(stored.forecasts.sort_values("available_ts", kind="stable").reset_index(
            drop=True), stored.scales)
        self._forecast_ts = self.forecasts.forecasts["available_ts"].to_numpy(dtype=np.int64)
        self._published: tuple[int, ForecastData] | None = None

    def snapshot(self, now_ts: int) -> Snapshot:
        open_now = np.flatnonzero((self._open_ts <= now_ts) & (now_ts < self._close_ts))
        lo = np.searchsorted(self._candle_ts, candles_needed_since(now_ts), side="right")
        hi = np.searchsorted(self._candle_ts, now_ts, side="right")
        bounds = {}
        for city_key, ts in self._weather_ts.items():
            since = weather_needed_since(now_ts, self.day_start[city_key], self.max_obs_age_minutes)
            bounds[city_key] = (int(np.searchsorted(ts, since, side="left")), int(np.searchsorted(ts, now_ts, "right")))
        published = int(np.searchsorted(self._forecast_ts, now_ts, side="right"))
        # the first candle inside the candle lookback: the version changes when one leaves it (``Snapshot.signature``
        # then need not count them every tick); counted over every market's candles, so it may change for a closed
        # market's candle too, which only recomputes the same features
        lookback = int(np.searchsorted(self._candle_ts, now_ts - CANDLE_LOOKBACK_SECONDS, side="right"))
        version = (open_now.tobytes(), int(lo), lookback, int(hi), tuple(bounds.values()), published)
        if self._last is not None and self._last.data_version == version:
            # Most ticks fall inside the same minute bar: the same slices, seen at a later clock time.
            return replace(self._last, now_ts=now_ts)
        # the open markets change a few times a day, the data every minute: an unchanged set is the same frame
        if self._open is None or not np.array_equal(self._open[0], open_now):
            self._open = (open_now, {name: values[open_now] for name, values in self._market_columns.items()})
        markets = self._open[1]
        is_open = np.zeros(len(self.markets), dtype=bool)
        is_open[open_now] = True
        in_window = is_open[self._candle_market[lo:hi]]
        # markets have candles only while open, so the window is usually all theirs: a slice, not a row gather
        candles = self.candles.iloc[lo:hi] if in_window.all() else self.candles.iloc[lo + np.flatnonzero(in_window)]
        # an unchanged window is handed out as the same columns: the tick reuses its weather features (``TickRunner``)
        last = self._last.weather if self._last is not None else {}
        weather = {city_key: last[city_key] if self._weather_bounds.get(city_key) == (a, b)
                   else {name: values[a:b] for name, values in self._weather_columns[city_key].items()}
                   for city_key, (a, b) in bounds.items()}
        if self._published is None or self._published[0] != published:  # a new run: new states, else the same
            self._published = (published, ForecastData(self.forecasts.forecasts.iloc[:published],
                                                       self.forecasts.scales))
        forecasts = self._published[1]
        snap = Snapshot(now_ts, markets, candles, weather, data_version=version, forecasts=forecasts)
        snap.check_no_lookahead(checked=self._last)
        self._last, self._weather_bounds = snap, bounds
        return snap


class LiveSource:
    """Polls Kalshi and Visual Crossing, upserts what is new, then serves the tick from the database.

    A market whose fetch fails (timeout, 429/5xx after retries) or whose payload is malformed is
    skipped for this tick with the reason; the others carry on. Nothing half-parsed is written.
    A source that rejects kwx's credentials (401/403) skips every market of its city with that
    reason, tick after tick, until a fetch from it succeeds again: the stored data would otherwise
    let those markets trade on quietly until it aged out.

    Every fetch of a tick shares one deadline (``fetch_deadline_seconds``): a source that has not
    answered by then skips the markets it feeds for that tick, so a hung server cannot stretch a tick.
    Every database touch goes through ``db``, the loop's one retry policy; a database still unreachable
    after it raises ``DatabaseUnavailable`` out of ``snapshot`` (the loop records a skipped tick).
    """

    def __init__(self, engine: Engine, kalshi, vc, pairs: list[tuple[str, str]], max_obs_age_minutes: int, *,
                 db: DbRetry, fetch_deadline_seconds: float, market_refresh_seconds: int = 600,
                 weather_refresh_seconds: int = 60, forecaster=None, forecast_refresh_seconds: float = 900):
        """``forecaster``: stores new forecast runs of a city (``kwx.data.ingestion.LiveForecastPoller``); None
        reads only what is stored (filled by `kwx ingest forecasts --live` on a schedule)."""
        self.engine, self.kalshi, self.vc = engine, kalshi, vc
        self.forecaster, self.forecast_refresh_seconds = forecaster, forecast_refresh_seconds
        self._forecast_at: dict[str, int] = {}
        self._scales: tuple[date, pd.DataFrame] | None = None
        self._published: tuple[tuple, ForecastData] | None = None
        self.db, self.fetch_deadline_seconds = db, fetch_deadline_seconds
        self.pairs = pairs
        self.max_obs_age_minutes = max_obs_age_minutes
        self.market_refresh_seconds = market_refresh_seconds
        self.weather_refresh_seconds = weather_refresh_seconds
        self._markets_at = -10**12
        self._weather_at: dict[str, int] = {}
        self._last_candle: dict[str, int] = {}
        self.failures: dict[str, str] = {}
        self.rejected: dict[str, tuple[str, str]] = {}  # source -> (city key, why it refused kwx)
        self.late: dict[str, tuple[str, str]] = {}  # this tick: source -> (city key, the deadline it missed)

    def _record(self, source: str, city_key: str, exc: Exception) -> None:
        """A failed fetch: for this tick, or (credentials rejected) until the source accepts kwx again."""
        from kwx.data.clients.http import AuthError, DeadlineError

        self.failures[source] = str(exc)
        if isinstance(exc, DeadlineError):
            self.late[source] = (city_key, str(exc))
        if isinstance(exc, AuthError):
            if source not in self.rejected:
                log.error("%s", exc)
            self.rejected[source] = (city_key, str(exc))

    def _refresh_markets(self, now_ts: int) -> None:
        from kwx.cities import get_city
        from kwx.data.clients.http import FetchError, PayloadError
        from kwx.data.clients.kalshi import markets_frame, parse_market
        from kwx.data.store import upsert_frames

        if now_ts - self._markets_at < self.market_refresh_seconds:
            return
        for city_key in sorted({c for c, _ in self.pairs}):
            series = get_city(city_key).series
            try:
                raw = self.kalshi.markets(series, min_close_ts=now_ts, max_close_ts=now_ts + 3 * 86_400)
            except (FetchError, PayloadError) as exc:
                self._record(f"markets of {series}", city_key, exc)
                continue
            self.rejected.pop(f"markets of {series}", None)
            rows = []
            for market in raw:
                try:
                    rows.append(parse_market(market))
                except PayloadError as exc:
                    self.failures[str(market.get("ticker", series))] = str(exc)
            if rows:
                self.db(upsert_frames, self.engine, {"markets": markets_frame(rows)})
        self._markets_at = now_ts

    def _open_markets(self, now_ts: int) -> pd.DataFrame:
        from datetime import UTC, datetime

        now = datetime.fromtimestamp(now_ts, UTC)
        today = now.date()
        frames = [self.db(load_markets, self.engine, c, b, today - timedelta(days=1), today + timedelta(days=2))
                  for c, b in self.pairs]
        m = pd.concat(frames, ignore_index=True)
        if m.empty:
            return m.assign(open_ts=pd.Series(dtype="int64"), close_ts=pd.Series(dtype="int64"))
        m = m.assign(open_ts=epoch_seconds(m["open_time"]), close_ts=epoch_seconds(m["close_time"]))
        return m[(m["open_ts"] <= now_ts) & (now_ts < m["close_ts"])].reset_index(drop=True)

    def _poll_candles(self, markets: pd.DataFrame, now_ts: int) -> None:
        from kwx.data.clients.http import AuthError, FetchError, PayloadError
        from kwx.data.clients.kalshi import check_candles, parse_candles
        from kwx.data.store import upsert_frames

        for row in markets.itertuples():
            series = row.ticker.split("-")[0]
            if f"candles of {series}" in self.failures:
                continue  # refused once this tick: the series' other markets would be refused alike
            since = self._last_candle.get(row.ticker, max(int(row.open_ts), candles_needed_since(now_ts)))
            try:
                sticks = self.kalshi.candlesticks(series, row.ticker, since + 1, now_ts)
                candles = parse_candles(row.ticker, sticks)
                check_candles(row.ticker, candles, int(row.open_ts), int(row.close_ts))
            except (FetchError, PayloadError) as exc:
                self.failures[row.ticker] = str(exc)
                if isinstance(exc, AuthError):
                    self._record(f"candles of {series}", row.city, exc)
                continue
            self.rejected.pop(f"candles of {series}", None)
            candles = candles[candles["end_period_ts"] <= now_ts]
            if len(candles):
                self.db(upsert_frames, self.engine, {"candles": candles})
                self._last_candle[row.ticker] = int(candles["end_period_ts"].max())

    def _poll_weather(self, city_key: str, now_ts: int) -> None:
        from datetime import UTC, datetime

        from kwx.data.clients.http import FetchError, PayloadError
        from kwx.data.clients.visual_crossing import parse_timeline
        from kwx.data.store import upsert_frames

        if self.vc is None or now_ts - self._weather_at.get(city_key, -10**12) < self.weather_refresh_seconds:
            return
        city = get_city(city_key)
        today = datetime.fromtimestamp(now_ts, UTC).date()
        try:
            frames = [parse_timeline(city.station, p) for p in self.vc.timeline(city, today - timedelta(days=1),
                                                                                today)]
        except (FetchError, PayloadError) as exc:
            self._record(f"weather {city.station}", city_key, exc)
            if f"weather {city.station}" in self.rejected:
                self._weather_at[city_key] = now_ts  # a refused key is asked again at the usual pace, not every tick
            return
        self.rejected.pop(f"weather {city.station}", None)
        weather = pd.concat(frames, ignore_index=True)
        weather = weather[epoch_seconds(weather["ts_utc"]) <= now_ts]
        if len(weather):
            self.db(upsert_frames, self.engine, {"weather_minutes": weather})
        self._weather_at[city_key] = now_ts

    def _poll_forecasts(self, now_ts: int) -> None:
        """Ask for new runs of the city most overdue, one city a tick: a city's poll is a dozen requests, and
        every fetch of a tick shares its deadline."""
        from kwx.data.clients.http import AuthError, FetchError, PayloadError

        if self.forecaster is None:
            return
        cities = sorted({c for c, _ in self.pairs}, key=lambda c: self._forecast_at.get(c, -10**12))
        city_key = cities[0]
        if now_ts - self._forecast_at.get(city_key, -10**12) < self.forecast_refresh_seconds:
            return
        self._forecast_at[city_key] = now_ts
        try:
            failures = self.forecaster.poll(city_key, now_ts)
        except (FetchError, PayloadError) as exc:
            failures = [str(exc)]
            if isinstance(exc, AuthError):
                log.error("%s", exc)
        for failure in failures:
            # a missed poll only ages the stored forecasts; markets skip once past max_forecast_age_hours
            log.warning("forecasts for %s not refreshed: %s", city_key, failure)

    def _forecasts(self, now_ts: int) -> ForecastData:
        """Stored forecasts of yesterday..the day after tomorrow public by ``now_ts``; their error scales are
        read once a day (they change only as days settle)."""
        from datetime import UTC, datetime

        today = datetime.fromtimestamp(now_ts, UTC).date()
        cities = sorted({c for c, _ in self.pairs})
        first, last = today - timedelta(days=1), today + timedelta(days=2)
        if self._scales is None or self._scales[0] != today:
            self._scales = (today, self.db(load_error_scales, self.engine, cities, first, last))
        # The rows are re-read only when a newer run is public (a poll stored one, or one came of age): the newest
        # per city is two index seeks, the rows of four days of every member tens of milliseconds.
        newest = self.db(newest_forecasts, self.engine, now_ts, cities)
        version = (today, tuple(newest["available_ts"]))
        if self._published is None or self._published[0] != version:
            forecasts = self.db(load_forecasts, self.engine, cities, first, last, available_until_ts=now_ts)
            self._published = (version, ForecastData(forecasts, self._scales[1]))
        return self._published[1]

    def snapshot(self, now_ts: int) -> Snapshot:
        from datetime import UTC, datetime

        from kwx.data.clients.http import Deadline

        self.failures, self.late = {}, {}
        deadline = Deadline(self.fetch_deadline_seconds)
        with ExitStack() as fetches:
            for client in (self.kalshi, self.vc):
                if client is not None:
                    fetches.enter_context(client.http.within(deadline))
            if self.forecaster is not None:
                fetches.enter_context(self.forecaster.client.within(deadline))
            self._refresh_markets(now_ts)
            markets = self._open_markets(now_ts)
            self._poll_candles(markets, now_ts)
            candles = self.db(load_candles, self.engine, markets["ticker"].tolist(), until_ts=now_ts,
                              columns=TICK_CANDLE_COLUMNS) if len(
                markets) else pd.DataFrame(columns=["market_ticker", "end_period_ts"])
            candles = candles[candles["end_period_ts"] > candles_needed_since(now_ts)]
            weather = {}
            for city_key in sorted({c for c, _ in self.pairs}):
                self._poll_weather(city_key, now_ts)
                city = get_city(city_key)
                day_start, _ = climate_day_bounds(datetime.fromtimestamp(now_ts, UTC).date(), city)
                since = weather_needed_since(now_ts, int(day_start.timestamp()), self.max_obs_age_minutes)
                weather[city_key] = self.db(load_weather, self.engine, city, datetime.fromtimestamp(since, UTC),
                                            datetime.fromtimestamp(now_ts, UTC))
            self._poll_forecasts(now_ts)
            forecasts = self._forecasts(now_ts)
        failed = dict(self.failures)
        for city_key, why in [*self.rejected.values(), *self.late.values()]:
            for ticker in markets.loc[markets["city"] == city_key, "ticker"]:
                failed.setdefault(ticker, why)
        snap = Snapshot(now_ts, markets, candles, weather, failed=failed, forecasts=forecasts)
        snap.check_no_lookahead()
        return snap
