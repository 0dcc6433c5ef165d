"""Feature sets, computed by one pure function for training, replay, backtest and the live loop.

Every feature of a candle ending at time t uses only candles and weather observations stamped at
or before t, so a day computed in one batch equals the same day computed minute by minute (a test
holds this). Candle time is Kalshi's ``end_period_ts`` (Unix seconds); the climate day is local
standard time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kwx.cities import City

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
FEATURE_SETS: dict[str, tuple[str, ...]] = {"baseline": BASELINE, "elasticnet_rich": ELASTICNET_RICH}

# Features that need a bound the bracket does not have (a *less* tail has no floor, *greater* no cap).
_NEEDS_FLOOR = frozenset({"temp_to_floor", "max_to_floor"})
_NEEDS_CAP = frozenset({"temp_to_cap", "max_to_cap"})

# Bounded history: every feature of a candle at t reads candles in (t - CANDLE_LOOKBACK, t] and
# observations in (obs - WEATHER_LOOKBACK, obs] of its as-of observation (plus the climate day so far),
# so a streaming caller can hold a small window and still compute exactly what the batch does.
WEATHER_LOOKBACK_SECONDS = 3 * 3600
CANDLE_LOOKBACK_SECONDS = 15 * 60

_KEY_SHIFT = np.int64(1) << np.int64(40)  # market code * 2**40 + ts keeps (market, time) order in one int


class UnknownFeatureSetError(ValueError):
    """A feature set name that is not in FEATURE_SETS."""


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


def _asof_positions(keys: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the last key <= target in sorted ``keys`` (-1 when none)."""
    return np.searchsorted(keys, targets, side="right") - 1


def _weather_features(weather: pd.DataFrame, city: City) -> pd.DataFrame:
    """Per-observation features that only look backwards along the station's own series."""
    ts = weather["obs_ts"].to_numpy(dtype=np.int64)
    temp = weather["temp_f"].to_numpy(dtype=float)
    series = pd.Series(temp, index=pd.to_datetime(ts, unit="s"))
    out = pd.DataFrame({"obs_ts": ts})
    out["temp_now"] = temp
    out["temp_rollmax_3h"] = series.rolling("3h").max().to_numpy()
    out["temp_rollmin_3h"] = series.rolling("3h").min().to_numpy()
    hour_ago = np.maximum(_asof_positions(ts, ts - 3600), 0)
    usable = (ts - ts[hour_ago] >= 3600) & (ts - ts[hour_ago] < WEATHER_LOOKBACK_SECONDS)
    out["temp_delta_1h"] = np.where(usable, temp - temp[hour_ago], np.nan)
    offset = int(city.standard_offset.total_seconds())
    out["obs_climate_day"] = (ts + offset) // 86_400
    out["day_max_so_far"] = pd.Series(temp).groupby(out["obs_climate_day"].to_numpy()).cummax().to_numpy()
    out["dewpoint"] = weather["dew_f"].to_numpy(dtype=float)
    out["humidity"] = weather["humidity_pct"].to_numpy(dtype=float)
    out["windspeed"] = weather["wind_mph"].to_numpy(dtype=float)
    return out


def build_features(
    candles: pd.DataFrame,
    markets: pd.DataFrame,
    weather: pd.DataFrame,
    city: City,
    *,
    max_obs_age_minutes: int = 20,
) -> pd.DataFrame:
    """Every feature of every candle, one row per candle, sorted by (market_ticker, end_period_ts).

    candles: market_ticker, end_period_ts, yes_bid_close, yes_ask_close, volume.
    markets: ticker, event_date, strike_type, floor_strike, cap_strike, close_time (aware UTC).
    weather: one station's ts_utc (aware UTC), temp_f, dew_f, humidity_pct, wind_mph.
    """
    meta = markets.set_index("ticker")
    unknown = set(candles["market_ticker"].unique()) - set(meta.index)
    if unknown:
        raise ValueError(f"candles for markets without metadata: {sorted(unknown)[:5]}")
    frame = candles.sort_values(["market_ticker", "end_period_ts"], kind="stable").reset_index(drop=True)
    ts = frame["end_period_ts"].to_numpy(dtype=np.int64)
    ticker = frame["market_ticker"]
    category = pd.Categorical(ticker)
    codes = category.codes.astype(np.int64)
    keys = codes * _KEY_SHIFT + ts

    # Market constants are computed once per market and spread to its candles by code: per-candle
    # lookups and datetime accessors dominated the live tick, whose frames are small.
    per_market = meta.reindex(category.categories)
    market_day = pd.to_datetime(pd.Series(per_market["event_date"].to_numpy()))
    event_date = market_day.dt.date.to_numpy(dtype=object)[codes]
    event_day_number = epoch_seconds(market_day)[codes] // 86_400
    bracket = per_market["strike_type"].to_numpy(dtype=object)[codes]
    floor = per_market["floor_strike"].to_numpy(dtype=float)[codes]
    cap = per_market["cap_strike"].to_numpy(dtype=float)[codes]
    close_ts = epoch_seconds(per_market["close_time"])[codes]

    bid = frame["yes_bid_close"].to_numpy(dtype=float)
    ask = frame["yes_ask_close"].to_numpy(dtype=float)
    mid = (bid + ask) / 2
    offset = int(city.standard_offset.total_seconds())
    # Columns are collected as arrays and framed once: column-by-column assignment dominated the
    # live loop's per-minute cost on small frames.
    cols: dict[str, object] = {
        "market_ticker": ticker.to_numpy(dtype=object),
        "end_period_ts": ts,
        "event_date": event_date,
        "bracket": bracket,
        "floor_strike": floor,
        "cap_strike": cap,
        "yes_bid": bid,
        "yes_ask": ask,
        "yes_mid": mid,
        "spread_cents": ask - bid,
        "minutes_to_close": (close_ts - ts) / 60,
        "hour_of_day_local": ((ts + offset) % 86_400) / 3600,
        "day_of_week": market_day.dt.day_of_week.to_numpy(dtype=float)[codes],  # float: models see one dtype
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["spread_pct"] = np.where(mid > 0, (ask - bid) / mid, np.nan)

    five_ago = np.maximum(_asof_positions(keys, keys - 300), 0)
    recent = (codes[five_ago] == codes) & (ts - ts[five_ago] >= 300) & (ts - ts[five_ago] < CANDLE_LOOKBACK_SECONDS)
    cols["mid_chg_5m"] = np.where(recent, mid - mid[five_ago], np.nan)
    cum_volume = pd.Series(frame["volume"].fillna(0).to_numpy(dtype=float)).groupby(codes).cumsum().to_numpy()
    window_start = _asof_positions(keys, keys - 900)
    before = (window_start >= 0) & (codes[np.maximum(window_start, 0)] == codes)
    cols["vol_15m"] = cum_volume - np.where(before, cum_volume[np.maximum(window_start, 0)], 0.0)

    wx = weather.assign(obs_ts=epoch_seconds(weather["ts_utc"]))
    wx = _weather_features(wx.sort_values("obs_ts", kind="stable").reset_index(drop=True), city)
    obs = _asof_positions(wx["obs_ts"].to_numpy(), ts)
    fresh = (obs >= 0) & (ts - wx["obs_ts"].to_numpy()[np.maximum(obs, 0)] <= max_obs_age_minutes * 60)
    for column in ("temp_now", "temp_rollmax_3h", "temp_rollmin_3h", "temp_delta_1h", "dewpoint", "humidity",
                   "windspeed", "day_max_so_far"):
        values = wx[column].to_numpy(dtype=float) if len(wx) else np.array([np.nan])
        cols[column] = np.where(fresh, values[np.maximum(obs, 0)], np.nan)
    # The running max belongs to the event's climate day only once that day has begun.
    obs_day = wx["obs_climate_day"].to_numpy()[np.maximum(obs, 0)] if len(wx) else np.full(len(ts), -1)
    cols["day_max_so_far"] = np.where(obs_day == event_day_number, cols["day_max_so_far"], np.nan)
    cols["temp_to_floor"] = cols["temp_now"] - floor
    cols["temp_to_cap"] = cap - cols["temp_now"]
    cols["max_to_floor"] = cols["day_max_so_far"] - floor
    cols["max_to_cap"] = cap - cols["day_max_so_far"]
    return pd.DataFrame(cols)
