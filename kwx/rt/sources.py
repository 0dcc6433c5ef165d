"""Where a tick's data comes from. Replay serves stored history as of the clock and never beyond it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from kwx.cities import get_city
from kwx.data.dataset import load_candles, load_markets, load_weather
from kwx.domain.features import CANDLE_LOOKBACK_SECONDS, epoch_seconds, weather_needed_since
from kwx.domain.markets import climate_day_bounds


class LookaheadError(AssertionError):
    """A source handed out data stamped after the clock: a bug that would fake a backtest's edge."""


@dataclass
class Snapshot:
    """Everything a tick may see at ``now_ts``: open markets, recent candles, recent weather per city."""

    now_ts: int
    markets: pd.DataFrame
    candles: pd.DataFrame
    weather: dict[str, pd.DataFrame]

    def check_no_lookahead(self) -> None:
        if len(self.candles) and int(self.candles["end_period_ts"].max()) > self.now_ts:
            raise LookaheadError(f"candle after {self.now_ts} handed to a tick")
        for city, wx in self.weather.items():
            if len(wx) and int(epoch_seconds(wx["ts_utc"]).max()) > self.now_ts:
                raise LookaheadError(f"{city} weather after {self.now_ts} handed to a tick")

    def signature(self) -> tuple:
        """Changes exactly when the tick's inputs change (new candle, new observation, market set)."""
        last_candle = int(self.candles["end_period_ts"].max()) if len(self.candles) else 0
        last_obs = tuple(len(w) and int(epoch_seconds(w["ts_utc"]).max()) for w in self.weather.values())
        return last_candle, last_obs, tuple(self.markets["ticker"])


class ReplaySource:
    """Stored markets, candles and weather for one trading day, served as of a simulated clock."""

    def __init__(self, engine: Engine, markets: list[tuple[str, str]], day: date, max_obs_age_minutes: int):
        self.max_obs_age_minutes = max_obs_age_minutes
        frames = [load_markets(engine, city, bracket, day, day + timedelta(days=1)) for city, bracket in markets]
        selected = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        self.markets = selected.assign(
            open_ts=epoch_seconds(selected["open_time"]), close_ts=epoch_seconds(selected["close_time"]),
        ) if len(selected) else selected
        candles = load_candles(engine, self.markets["ticker"].tolist()) if len(selected) else pd.DataFrame()
        self.candles = candles.sort_values("end_period_ts", kind="stable").reset_index(drop=True)
        self._candle_ts = self.candles["end_period_ts"].to_numpy() if len(candles) else np.array([], dtype=np.int64)
        self.weather: dict[str, pd.DataFrame] = {}
        self._weather_ts: dict[str, np.ndarray] = {}
        self.day_start: dict[str, int] = {}
        for city_key in sorted({c for c, _ in markets}):
            city = get_city(city_key)
            start, end = climate_day_bounds(day, city)
            wx = load_weather(engine, city, start - timedelta(days=1, hours=4), end + timedelta(days=1))
            self.weather[city_key] = wx
            self._weather_ts[city_key] = epoch_seconds(wx["ts_utc"]) if len(wx) else np.array([], dtype=np.int64)
            self.day_start[city_key] = int(start.timestamp())

    def snapshot(self, now_ts: int) -> Snapshot:
        m = self.markets
        open_now = m[(m["open_ts"] <= now_ts) & (now_ts < m["close_ts"])] if len(m) else m
        lo = np.searchsorted(self._candle_ts, now_ts - CANDLE_LOOKBACK_SECONDS, side="right")
        hi = np.searchsorted(self._candle_ts, now_ts, side="right")
        candles = self.candles.iloc[lo:hi]
        candles = candles[candles["market_ticker"].isin(open_now["ticker"])] if len(candles) else candles
        weather = {}
        for city_key, wx in self.weather.items():
            ts = self._weather_ts[city_key]
            since = weather_needed_since(now_ts, self.day_start[city_key], self.max_obs_age_minutes)
            weather[city_key] = wx.iloc[np.searchsorted(ts, since, side="left"):np.searchsorted(ts, now_ts, "right")]
        snap = Snapshot(now_ts, open_now, candles, weather)
        snap.check_no_lookahead()
        return snap

