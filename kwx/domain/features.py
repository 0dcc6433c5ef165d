"""Feature sets, computed by one pure function for training, replay, backtest and the live loop.

Every feature of a candle ending at time t uses only candles and weather observations stamped at
or before t, so a day computed in one batch equals the same day computed minute by minute (a test
holds this). Candle time is Kalshi's ``end_period_ts`` (Unix seconds); the climate day is local
standard time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from kwx.cities import City
from kwx.domain.forecast import (
    DEFAULT_MAX_FORECAST_AGE_HOURS,
    FORECAST_FEATURES,
    ForecastData,
    forecast_features,
)
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F, bracket_bounds

BASELINE = (
    "yes_bid", "yes_ask", "yes_mid", "spread_cents", "minutes_to_close", "temp_now", "temp_to_floor",
    "temp_to_cap", "hour_of_day_local", "day_of_week",
)
ELASTICNET_RICH = (
    *BASELINE, "mid_chg_5m", "spread_pct", "vol_15m", "temp_rollmax_3h", "temp_rollmin_3h", "temp_delta_1h",
    "dewpoint", "humidity", "windspeed",
    # What a weather trader watches most: the high so far today bounds the final high from below.
    "day_max_so_far", "max_to_floor", "max_to_cap",
)
# elasticnet_rich without the absolute temperature levels, which drift with the season out of a 90-day
# window's range (the tails' test weeks suffered most: a tail wins on the season's extreme days); every
# temperature is relative to the bracket, to the last hours or to the dew point, and the market's price
# also enters in log-odds, the scale on which a logistic model can reproduce and correct it.
ELASTICNET_RELATIVE = (
    "yes_bid", "yes_ask", "yes_mid", "market_logit", "spread_cents", "spread_pct", "minutes_to_close",
    "hour_of_day_local", "day_of_week", "mid_chg_5m", "vol_15m",
    "temp_to_floor", "temp_to_cap", "max_to_floor", "max_to_cap", "below_3h_max", "above_3h_min", "temp_delta_1h",
    "dew_depression", "humidity", "windspeed",
)
# elasticnet_relative plus what numerical weather prediction says about the day's high, relative to the bracket:
# the physical prior in log-odds (the scale on which the model corrects it, as it does the market's; one column
# each before the climate day, in its morning and from the afternoon, so its weight can differ as observations
# come to say more than the forecast) and as a probability, the bias-corrected consensus against the strikes,
# its learned error scale, the models' disagreement and the ensemble's vote (censored at the running max); lead
# and age say how fresh it is. Not the default: on the demo it beats elasticnet_relative the day before the
# event, not through the day (docs/guides/data.md, Weather-model forecasts).
ELASTICNET_FORECAST = (
    *ELASTICNET_RELATIVE, "forecast_logit_ahead", "forecast_logit_morning", "forecast_logit_late", "p_forecast",
    "fc_to_floor", "fc_to_cap", "fc_sd", "fc_source_spread", "fc_ens_sd", "fc_ens_in_bracket", "fc_lead_days",
    "fc_age_hours",
)
FEATURE_SETS: dict[str, tuple[str, ...]] = {"baseline": BASELINE, "elasticnet_rich": ELASTICNET_RICH,
                                            "elasticnet_relative": ELASTICNET_RELATIVE,
                                            "elasticnet_forecast": ELASTICNET_FORECAST}
DEFAULT_FEATURE_SET = "elasticnet_relative"
ALL_FEATURES: tuple[str, ...] = tuple(dict.fromkeys(c for columns in FEATURE_SETS.values() for c in columns))

# Features that need a bound the bracket does not have (a *less* tail has no floor, *greater* no cap).
_NEEDS_FLOOR = frozenset({"temp_to_floor", "max_to_floor", "fc_to_floor"})
_NEEDS_CAP = frozenset({"temp_to_cap", "max_to_cap", "fc_to_cap"})

# Bounded history: every feature of a candle at t reads candles in (t - CANDLE_LOOKBACK, t] and
# observations in (obs - WEATHER_LOOKBACK, obs] of its as-of observation (plus the climate day so far),
# so a streaming caller can hold a small window and still compute exactly what the batch does.
WEATHER_LOOKBACK_SECONDS = 3 * 3600
CANDLE_LOOKBACK_SECONDS = 15 * 60

_FORECAST_SLICE = 1 << 17  # rows per slice of the forecast features (temporaries stay in reused memory)
_KEY_SHIFT = np.int64(1) << np.int64(40)  # market code * 2**40 + ts keeps (market, time) order in one int
_OBSERVED = ("temp_f", "dew_f", "humidity_pct", "wind_mph")  # the weather columns features read


class UnknownFeatureSetError(ValueError):
    """A feature set name that is not in FEATURE_SETS."""


def uses_forecasts(feature_set: str) -> bool:
    """Whether a feature set reads weather-model forecasts (its rows are NaN there without them)."""
    return any(name in FORECAST_FEATURES for name in FEATURE_SETS.get(feature_set, ()))


def feature_columns(feature_set: str, bracket: str) -> list[str]:
    try:
        columns = FEATURE_SETS[feature_set]
    except KeyError:
        raise UnknownFeatureSetError(
            f"unknown feature set {feature_set!r}; known: {', '.join(FEATURE_SETS)}"
        ) from None
    excluded = {"less": _NEEDS_FLOOR, "greater": _NEEDS_CAP}.get(bracket, frozenset())
    return [c for c in columns if c not in excluded]


def epoch_seconds(values) -> np.ndarray:
    """Unix seconds of datetime-like values (aware or UTC), whatever resolution pandas stores."""
    if isinstance(values, pd.Series | pd.Index) and pd.api.types.is_datetime64_any_dtype(values.dtype):
        # Already datetimes (the hot path of every tick): read the integers, ~30x cheaper than the
        # Series/accessor round trip below; naive values count as UTC there too.
        return values.array.as_unit("s").asi8.copy()
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return values.astype("datetime64[s]").astype(np.int64)
    return pd.to_datetime(pd.Series(values), utc=True).dt.as_unit("s").astype("int64").to_numpy()


def candles_needed_since(now_ts: int) -> int:
    """Start (exclusive) of the candles a tick at ``now_ts`` must hold to compute its rows exactly.

    The tick uses each market's newest candle of the last CANDLE_LOOKBACK, and that candle's own
    features read CANDLE_LOOKBACK further back: a stale-ish candle needs history older than the tick's window.
    """
    return now_ts - 2 * CANDLE_LOOKBACK_SECONDS


def weather_needed_since(now_ts: int, event_day_start_ts: int, max_obs_age_minutes: int) -> int:
    """Earliest observation time a streaming caller must hold to compute candles at ``now_ts`` exactly.

    The newest candle may be CANDLE_LOOKBACK old, its as-of observation max_obs_age older, and that
    observation's features read WEATHER_LOOKBACK before it (the running max, the whole climate day).
    """
    oldest_obs = now_ts - CANDLE_LOOKBACK_SECONDS - max_obs_age_minutes * 60
    return min(oldest_obs - WEATHER_LOOKBACK_SECONDS, event_day_start_ts)


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """A frame's columns as arrays, a form ``feature_arrays`` also takes its markets and weather in: text as Python
    strings, aware times as UTC datetime64. (A source holding these hands out slices of arrays, not of frames.)"""
    return {name: values.dt.tz_convert(None).to_numpy() if isinstance(values.dtype, pd.DatetimeTZDtype)
            else values.to_numpy(dtype=object) if pd.api.types.is_string_dtype(values.dtype)
            else values.to_numpy() for name, values in frame.items()}


def index_of(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each of ``wanted`` in ``values`` (distinct), -1 where absent.

    ``pd.Index(values).get_indexer(wanted)`` by a sort instead of a hash table: building the table cost more
    than anything else a tick does with its few dozen tickers.
    """
    values, wanted = np.asarray(values), np.asarray(wanted)
    if not len(values):
        return np.full(len(wanted), -1, dtype=np.int64)
    sorter = np.argsort(values, kind="stable")
    at = sorter[np.minimum(np.searchsorted(values, wanted, sorter=sorter), len(values) - 1)]
    return np.where(values[at] == wanted, at, -1)


def newest_rows(codes: np.ndarray, ts: np.ndarray, now_ts: int) -> np.ndarray:
    """Positions of each market's newest row in (now - CANDLE_LOOKBACK, now], of rows sorted by (market code,
    time): what a tick at ``now_ts`` uses of the candles it holds."""
    seen = np.flatnonzero((ts <= now_ts) & (ts > now_ts - CANDLE_LOOKBACK_SECONDS))
    newest = np.ones(len(seen), dtype=bool)
    newest[:-1] = codes[seen[1:]] != codes[seen[:-1]]
    return seen[newest]


def _asof_positions(keys: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the last key <= target in sorted ``keys`` (-1 when none)."""
    return np.searchsorted(keys, targets, side="right") - 1


def _range_reduce(values: np.ndarray, start: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` (np.fmax or np.fmin: NaN-skipping) over ``values[start[i]:i + 1]`` for every i.

    A sparse table answers every window in log2(longest window) vectorised passes, so a rolling
    or running extreme costs the same for one station or seven; all-NaN windows give NaN.
    """
    n = len(values)
    level = np.frexp(np.arange(n) - start + 1)[1] - 1  # floor(log2(window length))
    result = np.empty(n)
    table, k = values, 0
    while True:
        rows = np.flatnonzero(level == k)
        result[rows] = reduce(table[start[rows]], table[rows - (1 << k) + 1])
        if not n or (2 << k) > n or k >= level.max():
            return result
        table = reduce(table[: -(1 << k)], table[1 << k:])  # table[j] = reduce(values[j : j + 2**(k+1)])
        k += 1


def weather_arrays(weather: Mapping[City, pd.DataFrame | Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every station's observations as arrays sorted by (station code, time), with their features.

    ``weather``: per city, a frame of observations or its columns as arrays (``ts_utc`` as UTC datetime64).

    Each feature of an observation looks only backwards along its own station's series. Row 0 is a
    placeholder of station code -1 that matches no market, so lookups never index an empty array.
    """
    frames = list(weather.values())
    stamps = [epoch_seconds(w["ts_utc"]) for w in frames]
    obs_ts = np.concatenate([np.zeros(1, np.int64), *stamps])
    code = np.concatenate([np.full(1, -1, np.int64), *(np.full(len(ts), i, np.int64) for i, ts in enumerate(stamps))])
    order = np.lexsort((obs_ts, code))
    code, obs_ts = code[order], obs_ts[order]
    # one float block per station, then one row order for all (single-column reads: a list of labels
    # costs more than the columns themselves on frames this small)
    measured = np.concatenate([np.full((1, len(_OBSERVED)), np.nan),
                               *(np.column_stack([np.asarray(w[name], dtype=float) for name in _OBSERVED])
                                 for w in frames)])[order]

    def column(name: str) -> np.ndarray:
        return measured[:, _OBSERVED.index(name)]

    keys = code * _KEY_SHIFT + obs_ts
    temp = column("temp_f")
    in_3h = np.searchsorted(keys, keys - 3 * 3600, side="right")  # window (t - 3h, t]
    hour_ago = np.maximum(_asof_positions(keys, keys - 3600), 0)
    age = obs_ts - obs_ts[hour_ago]
    usable = (code[hour_ago] == code) & (age >= 3600) & (age < WEATHER_LOOKBACK_SECONDS)
    offsets = np.array([*(int(c.standard_offset.total_seconds()) for c in weather), 0], dtype=np.int64)
    climate_day = (obs_ts + offsets[code]) // 86_400
    # the running max restarts with each station's climate day
    first_of_day = np.ones(len(keys), dtype=bool)
    first_of_day[1:] = (code[1:] != code[:-1]) | (climate_day[1:] != climate_day[:-1])
    day_start = np.maximum.accumulate(np.where(first_of_day, np.arange(len(keys)), 0))
    return {
        "code": code, "obs_ts": obs_ts, "keys": keys, "climate_day": climate_day,
        "temp_now": temp,
        "temp_rollmax_3h": _range_reduce(temp, in_3h, np.fmax),
        "temp_rollmin_3h": _range_reduce(temp, in_3h, np.fmin),
        "temp_delta_1h": np.where(usable, temp - temp[hour_ago], np.nan),
        "day_max_so_far": np.where(np.isnan(temp), np.nan, _range_reduce(temp, day_start, np.fmax)),
        "dewpoint": column("dew_f"),
        "humidity": column("humidity_pct"),
        "windspeed": column("wind_mph"),
    }


_WEATHER_FEATURES = ("temp_now", "temp_rollmax_3h", "temp_rollmin_3h", "temp_delta_1h", "dewpoint", "humidity",
                     "windspeed", "day_max_so_far")


def build_features(
    candles: pd.DataFrame,
    markets: pd.DataFrame,
    weather: pd.DataFrame,
    city: City,
    *,
    max_obs_age_minutes: int = 20,
    forecasts: ForecastData | None = None,
    max_forecast_age_hours: float = DEFAULT_MAX_FORECAST_AGE_HOURS,
    lock_margin_f: float = DEFAULT_LOCK_MARGIN_F,
) -> pd.DataFrame:
    """Every feature of every candle of one city's markets: one row per candle, by (market_ticker, end_period_ts).

    candles: market_ticker, end_period_ts, yes_bid_close, yes_ask_close, volume.
    markets: ticker, event_date, strike_type, floor_strike, cap_strike, close_time (aware UTC).
    weather: one station's ts_utc (aware UTC), temp_f, dew_f, humidity_pct, wind_mph.
    forecasts: the city's published forecasts and error scales (``kwx.domain.forecast``); None: the
    forecast features are NaN. lock_margin_f: how far below its reading the running max bounds the settled
    high in the forecast prior (the lock rule's margin).
    """
    return pd.DataFrame(feature_arrays(candles, markets.assign(city=city.key), {city: weather},
                                       max_obs_age_minutes=max_obs_age_minutes, forecasts=forecasts,
                                       max_forecast_age_hours=max_forecast_age_hours, lock_margin_f=lock_margin_f))


def feature_arrays(
    candles: pd.DataFrame,
    markets: pd.DataFrame | Mapping[str, np.ndarray],
    weather: Mapping[City, pd.DataFrame | Mapping[str, np.ndarray]],
    *,
    max_obs_age_minutes: int = 20,
    forecasts: ForecastData | None = None,
    max_forecast_age_hours: float = DEFAULT_MAX_FORECAST_AGE_HOURS,
    lock_margin_f: float = DEFAULT_LOCK_MARGIN_F,
    weather_features: dict[str, np.ndarray] | None = None,
    newest_as_of: int | None = None,
) -> dict[str, object]:
    """``build_features`` for markets of several cities in one pass (the live tick's cost does not grow per city),
    one array per column: a caller keeping only some of them (the dataset slice by slice, the tick a row per
    market) pays for no frame.

    ``markets`` also has ``city`` (a city key), and may be a frame's columns as arrays (``close_time`` as UTC
    datetime64); ``weather`` holds each of those cities' station observations (an empty frame for a city with
    none), frames or their columns as arrays (``weather_arrays``).

    weather_features: ``weather_arrays(weather)`` when the caller holds it already (the live tick: its weather
    changes every few minutes, its candles every minute).

    newest_as_of: a clock time: only the rows a tick at that time uses (each market's newest candle of the candle
    lookback, ``newest_rows``), equal to those rows of the whole computation; None: every candle's row."""
    tickers = np.asarray(markets["ticker"], dtype=object)
    candle_ts = candles["end_period_ts"].to_numpy(dtype=np.int64)
    # the column itself, not Python strings of it: a string column factorizes without making one per candle
    codes, unique = pd.factorize(candles["market_ticker"], sort=True)
    names = unique.to_numpy(dtype=object)
    row_of_market = index_of(tickers, names)
    if (row_of_market < 0).any():
        raise ValueError(f"candles for markets without metadata: {list(names[row_of_market < 0][:5])}")
    order = np.lexsort((candle_ts, codes))
    history_codes, history_ts = codes.astype(np.int64)[order], candle_ts[order]
    history_keys = history_codes * _KEY_SHIFT + history_ts
    # The rows computed: every candle, or the few a tick uses (a tick's window holds ~20 candles per market).
    # A row's features read the candles before it, so the history keeps them all.
    rows = slice(None) if newest_as_of is None else newest_rows(history_codes, history_ts, newest_as_of)
    codes, ts, keys = history_codes[rows], history_ts[rows], history_keys[rows]

    # Market constants are computed once per market and spread to its candles by code: per-candle
    # lookups and datetime accessors dominated the live tick, whose frames are small.
    def per_market(name: str, dtype=None) -> np.ndarray:
        return np.asarray(markets[name], dtype=dtype)[row_of_market]

    event_day = per_market("event_date", object).astype("datetime64[D]")
    event_day_number = event_day.astype(np.int64)[codes]
    strike_type = per_market("strike_type", object)
    market_floor, market_cap = per_market("floor_strike", float), per_market("cap_strike", float)
    floor, cap = market_floor[codes], market_cap[codes]
    close_ts = epoch_seconds(markets["close_time"])[row_of_market][codes]
    station_of_city = {c.key: i for i, c in enumerate(weather)}
    city_keys = per_market("city", object)
    unknown = sorted(set(city_keys) - set(station_of_city))
    if unknown:
        raise ValueError(f"markets of cities without a weather frame: {unknown}")
    station = np.array([station_of_city[key] for key in city_keys], dtype=np.int64)[codes]
    offsets = np.array([int(c.standard_offset.total_seconds()) for c in weather], dtype=np.int64)
    offset = offsets[station]

    history_bid = candles["yes_bid_close"].to_numpy(dtype=float)[order]
    history_ask = candles["yes_ask_close"].to_numpy(dtype=float)[order]
    history_mid = (history_bid + history_ask) / 2
    bid, ask, mid = history_bid[rows], history_ask[rows], history_mid[rows]
    # Columns are collected as arrays and framed once: column-by-column assignment dominated the
    # live loop's per-minute cost on small frames.
    cols: dict[str, object] = {
        "market_ticker": names[codes],
        "end_period_ts": ts,
        "event_date": event_day.astype(object)[codes],
        "bracket": strike_type[codes],
        "floor_strike": floor,
        "cap_strike": cap,
        "yes_bid": bid,
        "yes_ask": ask,
        "yes_mid": mid,
        "spread_cents": ask - bid,
        "minutes_to_close": (close_ts - ts) / 60,
        "hour_of_day_local": ((ts + offset) % 86_400) / 3600,
        # Monday = 0 (1970-01-01 was a Thursday); float: models see one dtype
        "day_of_week": ((event_day_number + 3) % 7).astype(float),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["spread_pct"] = np.where(mid > 0, (ask - bid) / mid, np.nan)
    quoted = np.clip(mid, 1, 99)  # a one-sided 0 or 100 mid has no finite log-odds
    cols["market_logit"] = np.log(quoted / (100 - quoted))

    five_ago = np.maximum(_asof_positions(history_keys, keys - 300), 0)
    age = ts - history_ts[five_ago]
    recent = (history_codes[five_ago] == codes) & (age >= 300) & (age < CANDLE_LOOKBACK_SECONDS)
    cols["mid_chg_5m"] = np.where(recent, mid - history_mid[five_ago], np.nan)
    volume = np.nan_to_num(candles["volume"].to_numpy(dtype=float)[order])
    # each market's running volume: one cumulative sum, less what came before the market's first row (rows are
    # by market; volumes are whole contracts, so the difference is exact)
    total = np.cumsum(volume)
    first = (np.flatnonzero(np.r_[True, history_codes[1:] != history_codes[:-1]]) if len(history_codes)
             else np.zeros(0, np.int64))
    cum_volume = total - np.repeat((total - volume)[first], np.diff(np.r_[first, len(history_codes)]))
    window_start = _asof_positions(history_keys, keys - 900)
    before = (window_start >= 0) & (history_codes[np.maximum(window_start, 0)] == codes)
    cols["vol_15m"] = cum_volume[rows] - np.where(before, cum_volume[np.maximum(window_start, 0)], 0.0)

    wx = weather_features if weather_features is not None else weather_arrays(weather)
    obs = _asof_positions(wx["keys"], station * _KEY_SHIFT + ts)  # >= 0: the placeholder sorts first
    fresh = (wx["code"][obs] == station) & (ts - wx["obs_ts"][obs] <= max_obs_age_minutes * 60)
    for column in _WEATHER_FEATURES:
        cols[column] = np.where(fresh, wx[column][obs], np.nan)
    # The running max belongs to the event's climate day only once that day has begun.
    cols["day_max_so_far"] = np.where(wx["climate_day"][obs] == event_day_number, cols["day_max_so_far"], np.nan)
    cols["temp_to_floor"] = cols["temp_now"] - floor
    cols["temp_to_cap"] = cap - cols["temp_now"]
    cols["max_to_floor"] = cols["day_max_so_far"] - floor
    cols["max_to_cap"] = cap - cols["day_max_so_far"]
    cols["below_3h_max"] = cols["temp_rollmax_3h"] - cols["temp_now"]
    cols["above_3h_min"] = cols["temp_now"] - cols["temp_rollmin_3h"]
    cols["dew_depression"] = cols["temp_now"] - cols["dewpoint"]
    # per market, then spread to its candles: comparing millions of bracket strings costs more than the rest
    lo, hi = (bound[codes] for bound in bracket_bounds(strike_type, market_floor, market_cap))
    day_start = event_day_number * 86_400 - offset
    cols.update(_forecast_columns(forecasts, station_of_city, station, event_day_number, day_start, ts, lo, hi,
                                  floor, cap, cols, max_forecast_age_hours, lock_margin_f))
    return cols


def _forecast_columns(forecasts: ForecastData | None, city_codes: dict[str, int], station: np.ndarray,
                      event_day_number: np.ndarray, day_start: np.ndarray, ts: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray,
                      floor: np.ndarray, cap: np.ndarray, cols: dict, max_age_hours: float,
                      lock_margin_f: float) -> dict[str, np.ndarray]:
    """The forecast features of every candle row (NaN throughout without forecasts)."""
    if forecasts is None or not len(forecasts.forecasts):
        return {name: np.full(len(ts), np.nan) for name in FORECAST_FEATURES}
    states, scales = forecasts.prepared(city_codes)

    def features_of(rows: slice) -> dict[str, np.ndarray]:
        return forecast_features(
            states, scales, row_city=station[rows], row_day=event_day_number[rows], row_day_start=day_start[rows],
            row_ts=ts[rows], lo=lo[rows], hi=hi[rows], floor=floor[rows], cap=cap[rows],
            running_max=cols["day_max_so_far"][rows], hour_local=cols["hour_of_day_local"][rows],
            temp_now=cols["temp_now"][rows], max_age_hours=max_age_hours, lock_margin_f=lock_margin_f)

    if 0 < len(ts) <= _FORECAST_SLICE:  # a dataset build hands over a slice of this size: no copy
        return features_of(slice(None))
    out = {name: np.empty(len(ts)) for name in FORECAST_FEATURES}
    # In slices: a city-year's rows through ~40 temporaries at once page-faulted more than they computed.
    for begin in range(0, len(ts), _FORECAST_SLICE):
        rows = slice(begin, begin + _FORECAST_SLICE)
        for name, values in features_of(rows).items():
            out[name][rows] = values
    return out
