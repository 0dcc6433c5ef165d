"""Load a backtest period from the database: markets, candles, weather, settlements → decision rows."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
from sqlalchemy import Engine

from kwx.backtest.engine import Period, decision_rows
from kwx.cities import get_city
from kwx.config import FeeConfig
from kwx.data.dataset import (
    CANDLE_COLUMNS,
    DatasetError,
    forecasts_for,
    load_candles,
    load_markets,
    load_settlements,
    load_weather_for_markets,
)
from kwx.data.fees import load_fee_book
from kwx.domain.features import build_features
from kwx.domain.forecast import DEFAULT_MAX_FORECAST_AGE_HOURS
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F, settlement_outcomes
from kwx.rt.engine import Resolver, inputs_from_rows


def load_period(engine: Engine, pairs: list[tuple[str, str]], start: date, end: date, resolve: Resolver, *,
                max_obs_age_minutes: int = 20, lock_margin_f: float = DEFAULT_LOCK_MARGIN_F,
                max_forecast_age_hours: float = DEFAULT_MAX_FORECAST_AGE_HOURS, fees: FeeConfig | None = None
                ) -> Period:
    """Decision rows of every market of ``pairs`` with event dates in [start, end], with model inputs, priced
    at the fees ``fees`` names (each series' stored fee in force at each row's time, or the config's rates)."""
    frames, outcomes = [], []
    for city_key, bracket in pairs:
        city = get_city(city_key)
        markets = load_markets(engine, city_key, bracket, start, end)
        if markets.empty:
            raise DatasetError(f"no {city_key}/{bracket} markets with event dates {start}..{end}")
        candles = load_candles(engine, markets["ticker"].tolist(), columns=(*CANDLE_COLUMNS, "price_low",
                                                                            "price_high"))
        weather = load_weather_for_markets(engine, city, markets, start)
        # every model a backtest may resolve could read forecasts: load them whatever the feature set
        features = build_features(candles, markets, weather, city, max_obs_age_minutes=max_obs_age_minutes,
                                  forecasts=forecasts_for(engine, None, [city_key], start, end),
                                  max_forecast_age_hours=max_forecast_age_hours, lock_margin_f=lock_margin_f)
        frames.append(decision_rows(markets, features, candles))
        tmax = load_settlements(engine, city, start, end)
        won = settlement_outcomes(markets["strike_type"].to_numpy(), markets["floor_strike"].to_numpy(dtype=float),
                                  markets["cap_strike"].to_numpy(dtype=float),
                                  markets["event_date"].map(tmax).to_numpy(dtype=float))
        outcomes.append(pd.Series(won, index=markets["ticker"].to_numpy()))
    rows = pd.concat(frames, ignore_index=True).sort_values(["market_ticker", "tick_ts"], kind="stable")
    rows = rows.reset_index(drop=True)
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    book = load_fee_book(engine, fees or FeeConfig())
    return Period(rows, inputs_from_rows(rows, resolve, lock_margin_f=lock_margin_f, fees=book), pd.concat(outcomes),
                  days, book)
