"""The demo generator must look like the real thing: seasons, diurnal cycle, ladders, an imperfect market."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from kwx.cities import get_city
from kwx.data.demo import generate_city
from kwx.domain.features import epoch_seconds
from kwx.domain.markets import climate_days_from_epoch, contract_from_ticker, parse_ticker

CHICAGO = get_city("chicago")


@pytest.fixture(scope="module")
def summer():
    return generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=7)


def test_deterministic_for_a_seed(summer):
    again = generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=7)
    for name, frame in summer.frames().items():
        pd.testing.assert_frame_equal(frame, again.frames()[name], obj=name)
    other = generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=8)
    assert not other.climate_daily["tmax_f"].equals(summer.climate_daily["tmax_f"])


def test_seasonal_climatology():
    jan = generate_city("chicago", date(2025, 1, 1), date(2025, 1, 31), seed=1).climate_daily["tmax_f"].mean()
    jul = generate_city("chicago", date(2025, 7, 1), date(2025, 7, 31), seed=1).climate_daily["tmax_f"].mean()
    miami_jan = generate_city("miami", date(2025, 1, 1), date(2025, 1, 31), seed=1).climate_daily["tmax_f"].mean()
    assert 20 < jan < 45 and 75 < jul < 95 and jul - jan > 30
    assert miami_jan > jan + 25


def test_diurnal_cycle_in_local_standard_time(summer):
    wx = summer.weather_minutes
    ts = pd.to_datetime(wx["ts_utc"], utc=True)
    local_hour = ((ts - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds() // 3600
                  + CHICAGO.standard_offset.total_seconds() // 3600) % 24
    by_hour = wx["temp_f"].groupby(local_hour.to_numpy()).mean()
    assert 4 <= by_hour.idxmin() <= 8
    assert 13 <= by_hour.idxmax() <= 17
    assert by_hour.max() - by_hour.min() > 10


def test_weather_is_physically_consistent(summer):
    wx = summer.weather_minutes
    assert (wx["dew_f"] <= wx["temp_f"]).all()
    assert wx["humidity_pct"].between(1, 100).all()
    assert (wx["wind_mph"] >= 0).all()
    gaps = pd.to_datetime(wx["ts_utc"]).diff().dt.total_seconds().dropna()
    assert gaps.min() == 300 and gaps.max() > 1800  # 5-minute cadence with some outages


def test_settlement_high_bounds_the_observations(summer):
    wx = summer.weather_minutes
    days = climate_days_from_epoch(epoch_seconds(wx["ts_utc"]), CHICAGO)
    obs_max = wx["temp_f"].groupby(days).max()
    tmax = summer.climate_daily.set_index(pd.to_datetime(summer.climate_daily["climate_date"]))["tmax_f"]
    joined = pd.concat([obs_max.rename("obs"), tmax.rename("tmax")], axis=1, join="inner")
    # The 5-minute observations can miss the peak minute but never exceed the report by more than
    # its whole-degree rounding plus their own 0.1 °F rounding.
    assert (joined["obs"] <= joined["tmax"] + 0.55).all()
    assert (joined["tmax"] - joined["obs"]).mean() < 1.5


def test_ladders_are_real_kalshi_shaped(summer):
    markets = summer.markets
    assert markets["event_date"].min() == date(2025, 7, 1)
    for _, event in markets.groupby("event_ticker"):
        assert sorted(event["strike_type"]) == ["between"] * 4 + ["greater", "less"]
        assert (event["result"] == "yes").sum() == 1
        for row in event.itertuples():
            contract = contract_from_ticker(row.ticker, row.strike_type)
            assert (contract.floor, contract.cap) == (
                None if np.isnan(row.floor_strike) else row.floor_strike,
                None if np.isnan(row.cap_strike) else row.cap_strike,
            )
            assert contract.wins(int(row.settlement_value)) == (row.result == "yes")
            assert parse_ticker(row.ticker).event_date == row.event_date
    winners = markets[markets["result"] == "yes"]["strike_type"].value_counts(normalize=True)
    assert winners.get("between", 0) > 0.5  # the ladder is centred on the forecast


def test_markets_open_the_day_before_and_close_at_the_end_of_the_climate_day(summer):
    m = summer.markets
    close_local = pd.to_datetime(m["close_time"]) + CHICAGO.standard_offset
    assert (close_local.dt.hour == 0).all()
    assert (close_local.dt.date == (pd.to_datetime(m["event_date"]) + pd.Timedelta(days=1)).dt.date).all()
    open_local = pd.to_datetime(m["open_time"]) + CHICAGO.standard_offset
    assert (open_local.dt.date == (pd.to_datetime(m["event_date"]) - pd.Timedelta(days=1)).dt.date).all()


def test_candles_are_quotes_inside_market_hours(summer):
    c = summer.candles.merge(summer.markets[["ticker", "open_time", "close_time"]],
                             left_on="market_ticker", right_on="ticker")
    end = pd.to_datetime(c["end_period_ts"], unit="s", utc=True)
    assert (end > c["open_time"]).all() and (end <= c["close_time"]).all()
    assert (c["yes_bid_close"] < c["yes_ask_close"]).all()
    assert c["yes_bid_close"].between(1, 98).all() and c["yes_ask_close"].between(2, 99).all()
    no_trade = c["volume"] == 0
    assert c.loc[no_trade, "price_close"].isna().all() and c.loc[~no_trade, "price_close"].notna().all()
    per_market = c.groupby("market_ticker").size()
    assert 1000 < per_market.mean() < 1700  # ~3 million candles a year for one city


def test_market_sharpens_through_the_day_but_knows_less_than_the_weather(summer):
    c = summer.candles.merge(summer.markets[["ticker", "close_time", "result"]],
                             left_on="market_ticker", right_on="ticker")
    p = (c["yes_bid_close"] + c["yes_ask_close"]) / 200
    y = (c["result"] == "yes").astype(float)
    hours_left = (pd.to_datetime(c["close_time"]) - pd.to_datetime(c["end_period_ts"], unit="s", utc=True))
    hours_left = hours_left.dt.total_seconds() / 3600
    brier_early = ((p - y) ** 2)[hours_left > 24].mean()
    brier_late = ((p - y) ** 2)[hours_left < 6].mean()
    assert brier_late < brier_early / 2
    # Even near the close the market is not an oracle: there is something for a model to learn.
    assert brier_late > 0.005
