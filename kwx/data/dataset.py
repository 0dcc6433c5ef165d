"""The training/replay dataset: candles ⋈ market metadata ⋈ weather as of each candle ⋈ label.

IO only: rows come from the database, every feature from ``kwx.domain.features`` (``feature_arrays``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Integer, String, and_, column, func, select, values

from kwx.cities import EXCLUDED_VC_CITIES, VC_EXCLUDABLE_COLUMNS, City, get_city
from kwx.data.demo import SOURCE as DEMO_SOURCE
from kwx.data.forecasts import load_forecast_data
from kwx.data.schema import Candle, ClimateDaily, Market, WeatherMinute
from kwx.data.store import IN_CHUNK, driver_records, driver_rows, rows_frame
from kwx.domain.features import (
    DEFAULT_FEATURE_SET,
    WEATHER_LOOKBACK_SECONDS,
    epoch_seconds,
    feature_arrays,
    feature_columns,
    uses_forecasts,
    weather_needed_since,
)
from kwx.domain.forecast import DEFAULT_MAX_FORECAST_AGE_HOURS, ForecastData
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F, climate_day_bounds, locked_outcomes, settlement_outcomes

MARKET_COLUMNS = ("ticker", "city", "event_date", "strike_type", "floor_strike", "cap_strike", "open_time",
                  "close_time")
CANDLE_COLUMNS = ("market_ticker", "end_period_ts", "yes_bid_close", "yes_ask_close", "volume")
WEATHER_COLUMNS = ("ts_utc", "temp_f", "dew_f", "humidity_pct", "wind_mph")


# Markets per slice of a dataset build: ~130k candles of a city-year's between markets, whose float64
# temporaries (~60 columns) stay near 100 MB while the finished rows accumulate.
_SLICE_MARKETS = 96
# Feature values are kept as float32: cents, °F, minutes and log-odds need far fewer than its ~7 significant
# digits, and a city-year's rows take half the memory. Identifiers, strikes, locks and labels stay exact.
FEATURE_DTYPE = np.float32


class DatasetError(ValueError):
    """No usable data for the request; the message says what was asked and what is missing."""


def _frame(engine: Engine, statement, columns: tuple[str, ...]) -> pd.DataFrame:
    with engine.connect() as conn:
        return rows_frame(conn.execute(statement), columns)


def load_markets(engine: Engine, city: str, bracket: str | None, start: date, end: date) -> pd.DataFrame:
    conditions = [Market.city == city, Market.event_date >= start, Market.event_date <= end]
    if bracket is not None:
        conditions.append(Market.strike_type == bracket)
    statement = select(*(getattr(Market, c) for c in MARKET_COLUMNS)).where(and_(*conditions))
    return _frame(engine, statement.order_by(Market.ticker), MARKET_COLUMNS)


def require_markets_near(engine: Engine, city: str, bracket: str, start: date, end: date, *, margin_days: int) -> None:
    """DatasetError unless stored markets of ``city``/``bracket`` fall in [start, end] and the range reaches at
    most ``margin_days`` beyond them: every window out there would be empty, and a start decades early plans
    thousands of them. One COUNT/MIN/MAX query, before anything is loaded."""
    statement = select(func.count(), func.min(Market.event_date), func.max(Market.event_date)).where(
        Market.city == city, Market.strike_type == bracket)
    with engine.connect() as conn:
        count, first, last = conn.execute(statement).one()
    if not count:
        raise DatasetError(f"no {city}/{bracket} markets with event dates {start}..{end}: none are stored "
                           f"(load some with `kwx data demo` or `kwx ingest kalshi`)")
    stored = f"the {count:,} stored {city}/{bracket} markets have event dates {first}..{last}"
    if end < first or start > last:
        raise DatasetError(f"no {city}/{bracket} markets with event dates {start}..{end}: {stored}")
    if (first - start).days > margin_days or (end - last).days > margin_days:
        raise DatasetError(f"start..end {start}..{end} reaches more than {margin_days} days (train_days + "
                           f"test_days) beyond the data, where every window would be empty: {stored}")


def load_candles(engine: Engine, tickers: list[str], until_ts: int | None = None,
                 columns: tuple[str, ...] = CANDLE_COLUMNS) -> pd.DataFrame:
    """Candles of the given markets; ``until_ts`` keeps only those ending at or before it.

    ``columns``: market_ticker, end_period_ts and nullable price/volume columns (float, NaN for NULL).
    """
    records = _candle_records(engine, tickers, [c for c in columns if c != "market_ticker"], until_ts)
    return _candle_frame(pd.Series(tickers).array, records, columns)


def _candle_records(engine: Engine, tickers: list[str], columns: list[str],
                    until_ts: int | None = None) -> np.ndarray:
    """The candles of ``tickers`` as one structured array: ``market`` (the candle's position in ``tickers``),
    then ``columns`` (end_period_ts, floats with NaN for NULL)."""
    dtype = np.dtype([("market", np.int64), *((c, np.int64 if c == "end_period_ts" else float) for c in columns)])
    pieces = []
    for begin in range(0, len(tickers), IN_CHUNK):
        # Each market is joined by its position, not selected by ticker: no string is made per candle (a
        # city-year has millions), and the rows go straight into numpy (``driver_records``).
        wanted = values(column("market", Integer), column("ticker", String), name="wanted").data(
            list(enumerate(tickers[begin:begin + IN_CHUNK], start=begin))).cte()
        statement = select(wanted.c.market, *(getattr(Candle, c) for c in columns)).join_from(
            wanted, Candle, Candle.market_ticker == wanted.c.ticker)
        if until_ts is not None:
            statement = statement.where(Candle.end_period_ts <= until_ts)
        pieces.append(driver_records(engine, statement, dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)


def _candle_frame(tickers: pd.api.extensions.ExtensionArray, records: np.ndarray,
                  columns: tuple[str, ...]) -> pd.DataFrame:
    ticker = tickers.take(records["market"])  # each ticker converted once, not once per candle
    return pd.DataFrame({c: ticker if c == "market_ticker" else records[c] for c in columns})


def load_weather(engine: Engine, city: City, since: datetime, until: datetime) -> pd.DataFrame:
    """One station's observations in [since, until], with the seed's VC exclusion applied here, at load time."""
    statement = select(*(getattr(WeatherMinute, c) for c in WEATHER_COLUMNS)).where(
        WeatherMinute.station == city.station, WeatherMinute.ts_utc >= since, WeatherMinute.ts_utc <= until
    )
    rows = [row for part in driver_rows(engine, statement.order_by(WeatherMinute.ts_utc)) for row in part]
    weather = pd.DataFrame.from_records(rows, columns=list(WEATHER_COLUMNS))
    # the driver's UTC text (SQLite) or aware datetimes (PostgreSQL), parsed at once instead of row by row
    weather["ts_utc"] = pd.to_datetime(weather["ts_utc"], utc=True, format="ISO8601")
    for name in WEATHER_COLUMNS[1:]:
        weather[name] = weather[name].astype(float)
    if city.key in EXCLUDED_VC_CITIES:
        weather[list(VC_EXCLUDABLE_COLUMNS)] = np.nan
    return weather


def load_weather_for_markets(engine: Engine, city: City, markets: pd.DataFrame, first_day: date) -> pd.DataFrame:
    """The station's observations from the weather lookback before the first market opens to the last close."""
    first_open = pd.to_datetime(markets["open_time"], utc=True).min().to_pydatetime()
    since = min(first_open, climate_day_bounds(first_day, city)[0]) - timedelta(seconds=WEATHER_LOOKBACK_SECONDS)
    until = pd.to_datetime(markets["close_time"], utc=True).max().to_pydatetime()
    return load_weather(engine, city, since, until)


def load_settlements(engine: Engine, city: City, start: date, end: date) -> pd.Series:
    statement = select(ClimateDaily.climate_date, ClimateDaily.tmax_f).where(
        ClimateDaily.station == city.station, ClimateDaily.climate_date >= start, ClimateDaily.climate_date <= end
    )
    frame = _frame(engine, statement, ("climate_date", "tmax_f"))
    return pd.Series(frame["tmax_f"].to_numpy(dtype=float), index=list(frame["climate_date"]))


def has_demo_settlements(engine: Engine, cities: list[str], start: date, end: date) -> bool:
    """Whether any settlement of ``cities`` in [start, end] was written by the demo generator.

    The generator writes every climate day of its markets, so this flags demo markets; trading them
    measures a model against a synthetic market, never a real one.
    """
    stations = sorted({get_city(city).station for city in cities})
    statement = select(ClimateDaily.station).where(
        ClimateDaily.station.in_(stations), ClimateDaily.climate_date >= start, ClimateDaily.climate_date <= end,
        ClimateDaily.source == DEMO_SOURCE,
    ).limit(1)
    with engine.connect() as conn:
        return conn.execute(statement).first() is not None


_shared_forecasts: ContextVar[dict[tuple, ForecastData] | None] = ContextVar("kwx_shared_forecasts", default=None)


@contextmanager
def forecasts_shared() -> Iterator[None]:
    """Within the block, datasets of the same cities and days read the stored forecasts once and share them
    (with their states, computed once too): a matrix prepares a city's brackets one after another, and each
    read the same rows. Only within the block, so no build ever sees forecasts older than the block."""
    token = _shared_forecasts.set({})
    try:
        yield
    finally:
        _shared_forecasts.reset(token)


def forecasts_for(engine: Engine, feature_set: str | None, cities: list[str], start: date,
                  end: date) -> ForecastData | None:
    """The stored forecasts of [start, end] when ``feature_set`` reads them (all sets when None), else None:
    a set without forecast features pays nothing for them. Inside ``forecasts_shared``, read once per block."""
    if feature_set is not None and not uses_forecasts(feature_set):
        return None
    shared = _shared_forecasts.get()
    if shared is None:
        return load_forecast_data(engine, cities, start, end)
    key = (engine, tuple(sorted(cities)), start, end)
    if key not in shared:
        shared[key] = load_forecast_data(engine, cities, start, end)
    return shared[key]


def load_dataset(
    engine: Engine,
    city: str,
    bracket: str,
    start: date,
    end: date,
    feature_set: str = DEFAULT_FEATURE_SET,
    *,
    max_obs_age_minutes: int = 20,
    lock_margin_f: float = DEFAULT_LOCK_MARGIN_F,
    max_forecast_age_hours: float = DEFAULT_MAX_FORECAST_AGE_HOURS,
) -> pd.DataFrame:
    """Feature rows for every candle of ``city``/``bracket`` markets with event dates in [start, end].

    A feature set that reads forecasts gets the stored ones, each entering a row only once public.

    Columns: identifiers (market_ticker, end_period_ts, event_date — the climate day and the CV
    group — bracket, strikes), the feature set's columns (``FEATURE_DTYPE``), ``locked_outcome`` (1/0
    where the day's running maximum already decides the market, ``locked_outcomes``; NaN where it is
    open) and its flag ``locked``, and ``label`` (1 YES won, 0 lost, NaN while the day is unsettled).
    Rows come by (market_ticker, end_period_ts).

    Built a slice of markets at a time: the features of a market's candles read only its own candles
    and the weather before them, so the slices equal one build of everything, and only the finished
    rows grow with the period.
    """
    columns = feature_columns(feature_set, bracket)
    if uses_forecasts(feature_set) and "p_forecast" not in columns:
        columns.append("p_forecast")  # the physical prior rides along: test predictions score it beside the model
    city_spec = get_city(city)
    markets = load_markets(engine, city, bracket, start, end)
    if markets.empty:
        raise DatasetError(
            f"no {city}/{bracket} markets with event dates {start}..{end} "
            f"(load some with `kwx data demo` or `kwx ingest kalshi`)"
        )
    # by ticker as Python orders strings (a database's collation may not): the slices' rows then follow one
    # another in the (market_ticker, end_period_ts) order of a single build
    markets = markets.assign(city=city).sort_values("ticker", ignore_index=True)
    records = _candle_records(engine, markets["ticker"].tolist(), list(CANDLE_COLUMNS[1:]))
    if not len(records):
        raise DatasetError(f"{len(markets)} {city}/{bracket} markets in {start}..{end} but no candles")
    weather = load_weather_for_markets(engine, city_spec, markets, start)
    observed_ts = epoch_seconds(weather["ts_utc"])
    forecasts = forecasts_for(engine, feature_set, [city], start, end)
    bracket_of = markets["strike_type"].to_numpy(dtype=object)
    floor, cap = markets["floor_strike"].to_numpy(dtype=float), markets["cap_strike"].to_numpy(dtype=float)
    # the finished rows, allocated once: slices of markets write their rows in place, in order
    rows = {"market": np.empty(len(records), np.int64), "end_period_ts": np.empty(len(records), np.int64),
            **{name: np.empty(len(records), FEATURE_DTYPE) for name in columns},
            "locked_outcome": np.empty(len(records))}
    order = np.argsort(records["market"], kind="stable")  # the candles of each slice, as the database gave them
    starts = range(0, len(markets), _SLICE_MARKETS)
    edges = np.searchsorted(records["market"][order], [*starts, len(markets)])
    for begin, first, stop in zip(starts, edges[:-1], edges[1:], strict=True):
        if first == stop:
            continue
        some = markets.iloc[begin:begin + _SLICE_MARKETS]
        candles = _candle_frame(markets["ticker"].array, records[order[first:stop]], CANDLE_COLUMNS)
        near = _weather_read_by(candles["end_period_ts"].to_numpy(), min(some["event_date"]), weather, observed_ts,
                                city_spec, max_obs_age_minutes)
        arrays = feature_arrays(candles, some, {city_spec: near}, max_obs_age_minutes=max_obs_age_minutes,
                                forecasts=forecasts, max_forecast_age_hours=max_forecast_age_hours,
                                lock_margin_f=lock_margin_f)
        # each row's market (its position in `markets`), from the few distinct tickers of the slice
        codes, unique = pd.factorize(arrays["market_ticker"])
        market = begin + pd.Index(some["ticker"]).get_indexer(unique)[codes]
        written = slice(first, stop)
        rows["market"][written], rows["end_period_ts"][written] = market, arrays["end_period_ts"]
        for name in columns:
            rows[name][written] = arrays[name]
        rows["locked_outcome"][written] = locked_outcomes(bracket_of[market], floor[market], cap[market],
                                                          arrays["day_max_so_far"], lock_margin_f)
    del records, order
    tmax = load_settlements(engine, city_spec, start, end)
    return _dataset_frame(rows, markets, settlement_outcomes(bracket_of, floor, cap,
                                                             markets["event_date"].map(tmax).to_numpy(dtype=float)))


def _weather_read_by(candle_ts: np.ndarray, first_day: date, weather: pd.DataFrame, observed_ts: np.ndarray,
                     city: City, max_obs_age_minutes: int) -> pd.DataFrame:
    """The observations the features of candles ending at ``candle_ts``, of climate days from ``first_day`` on,
    read: from the weather lookback before the first (or that day's start) to the last. Features from these
    equal features from all of ``weather`` (sorted, its times ``observed_ts``)."""
    day_start = int(climate_day_bounds(first_day, city)[0].timestamp())
    since = weather_needed_since(int(candle_ts.min()), day_start, max_obs_age_minutes)
    return weather.iloc[np.searchsorted(observed_ts, since):np.searchsorted(observed_ts, candle_ts.max(), side="right")]


def _dataset_frame(rows: dict[str, np.ndarray], markets: pd.DataFrame, label: np.ndarray) -> pd.DataFrame:
    """The dataset from its per-row arrays (``market``: the row's position in ``markets``; ``label``: per market).

    Identifiers and the label are the market's, taken for each row: no string or date is made per row, and the
    arrays become the frame's columns as they are (no copy).
    """
    market, locked = rows.pop("market"), rows.pop("locked_outcome")
    return pd.DataFrame({
        "market_ticker": markets["ticker"].array.take(market), "end_period_ts": rows.pop("end_period_ts"),
        "event_date": markets["event_date"].to_numpy(dtype=object)[market],
        "bracket": markets["strike_type"].array.take(market),
        "floor_strike": markets["floor_strike"].to_numpy(dtype=float)[market],
        "cap_strike": markets["cap_strike"].to_numpy(dtype=float)[market],
        **rows, "locked_outcome": locked, "locked": ~np.isnan(locked), "label": label[market],
    }, copy=False)
