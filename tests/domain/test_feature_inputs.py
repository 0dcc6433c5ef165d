"""The features take a frame's columns as arrays (what the replay tick hands out) exactly as they take the frame."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from kwx.cities import get_city
from kwx.data.demo import generate_city
from kwx.domain.features import feature_arrays, frame_columns, index_of, weather_arrays


def test_index_of_is_get_indexer():
    rng = np.random.default_rng(1)
    pool = np.array([f"KXHIGH-{i:03d}" for i in range(60)], dtype=object)
    for size in (0, 1, 7, 60):
        values = rng.permutation(pool)[:size]
        wanted = rng.choice(pool, size=40)  # some present, some not, repeats
        np.testing.assert_array_equal(index_of(values, wanted), pd.Index(values).get_indexer(wanted))


def test_features_of_columns_equal_features_of_frames():
    day = date(2025, 8, 5)
    markets, candles, weather = [], [], {}
    for key in ("chicago", "denver"):
        data = generate_city(key, day, day, seed=5)
        markets.append(data.markets.assign(city=key))
        candles.append(data.candles)
        weather[get_city(key)] = data.weather_minutes.iloc[::2]
    markets, candles = pd.concat(markets, ignore_index=True), pd.concat(candles, ignore_index=True)
    framed = feature_arrays(candles, markets, weather)
    columns_of_weather = {city: frame_columns(w) for city, w in weather.items()}
    as_columns = feature_arrays(candles, frame_columns(markets), columns_of_weather)
    assert framed.keys() == as_columns.keys()
    for name, values in framed.items():
        np.testing.assert_array_equal(as_columns[name], values, err_msg=name)
    for name, values in weather_arrays(weather).items():
        np.testing.assert_array_equal(weather_arrays(columns_of_weather)[name], values)


def test_the_newest_rows_alone_equal_those_rows_of_every_row():
    """What a tick computes (each market's newest candle of the lookback, ``newest_as_of``) equals those rows of
    the whole computation, stale candles included, for markets of several cities."""
    from kwx.rt.engine import latest_rows

    day = date(2025, 8, 5)
    markets, candles, weather = [], [], {}
    for key in ("chicago", "la"):
        data = generate_city(key, day, day, seed=6)
        markets.append(data.markets.assign(city=key))
        candles.append(data.candles.iloc[::3])  # gaps: some markets' newest candle is minutes old
        weather[get_city(key)] = data.weather_minutes
    markets, candles = pd.concat(markets, ignore_index=True), pd.concat(candles, ignore_index=True)
    every_row = feature_arrays(candles, markets, weather)
    ends = candles["end_period_ts"]
    compared = 0
    for now in np.random.default_rng(2).integers(ends.min() - 600, ends.max() + 1200, size=40):
        newest = feature_arrays(candles, markets, weather, newest_as_of=int(now))
        expected = latest_rows(every_row, int(now))
        assert newest.keys() == expected.keys()
        for name, values in expected.items():
            np.testing.assert_array_equal(newest[name], values, err_msg=f"{name} at {now}")
        compared += len(expected["market_ticker"])
    assert compared > 100
