"""Features: exact values on hand-made data, no lookahead, and batch == minute-by-minute streaming."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kwx.cities import get_city
from kwx.data.demo import generate_city
from kwx.domain.features import (
    CANDLE_LOOKBACK_SECONDS,
    FEATURE_SETS,
    UnknownFeatureSetError,
    _range_reduce,
    build_features,
    candles_needed_since,
    epoch_seconds,
    feature_arrays,
    feature_columns,
    weather_needed_since,
)

CHICAGO = get_city("chicago")
T0 = int(datetime(2025, 7, 15, 18, 0, tzinfo=UTC).timestamp())  # 12:00 CST on the 15th


def _market(ticker="KXHIGHCHI-25JUL15-B85.5", bracket="between", floor=85.0, cap=86.0):
    return pd.DataFrame({
        "ticker": [ticker], "event_date": [date(2025, 7, 15)], "strike_type": [bracket],
        "floor_strike": [floor], "cap_strike": [cap],
        "close_time": [datetime(2025, 7, 16, 6, 0, tzinfo=UTC)],
    })


def _candles(minutes, bids, asks, volumes, ticker="KXHIGHCHI-25JUL15-B85.5"):
    return pd.DataFrame({
        "market_ticker": ticker, "end_period_ts": [T0 + 60 * m for m in minutes],
        "yes_bid_close": bids, "yes_ask_close": asks, "volume": volumes,
    })


def _weather(minutes, temps):
    n = len(minutes)
    return pd.DataFrame({
        "ts_utc": pd.to_datetime([T0 + 60 * m for m in minutes], unit="s", utc=True),
        "temp_f": temps, "dew_f": [60.0] * n, "humidity_pct": [50.0] * n, "wind_mph": [5.0] * n,
    })


def test_hand_computed_values():
    candles = _candles([0, 3, 6, 20], [40, 42, 45, 50], [42, 44, 47, 53], [10, 0, 5, 7])
    weather = _weather([-70, -60, -5, 0, 15], [80.0, 81.0, 83.5, 84.0, 84.5])
    f = build_features(candles, _market(), weather, CHICAGO).set_index("end_period_ts")
    row = f.loc[T0 + 360]  # minute 6
    assert row["yes_mid"] == 46 and row["spread_cents"] == 2
    assert row["spread_pct"] == pytest.approx(2 / 46)
    assert row["mid_chg_5m"] == 46 - 41  # mid at minute 0 is the latest at or before minute 1
    assert row["vol_15m"] == 15  # minutes 0, 3, 6 inside (t-15m, t]
    assert row["temp_now"] == 84.0  # observation at minute 0, the latest at or before minute 6
    assert row["temp_delta_1h"] == 84.0 - 81.0  # as of minute -60
    assert row["temp_rollmax_3h"] == 84.0 and row["temp_rollmin_3h"] == 80.0
    assert row["day_max_so_far"] == 84.0
    assert row["temp_to_floor"] == -1.0 and row["temp_to_cap"] == 2.0
    assert row["max_to_floor"] == -1.0 and row["max_to_cap"] == 2.0
    assert row["hour_of_day_local"] == pytest.approx(12.1)
    assert row["day_of_week"] == 1  # 2025-07-15 is a Tuesday
    assert row["minutes_to_close"] == (datetime(2025, 7, 16, 6, tzinfo=UTC).timestamp() - T0) / 60 - 6
    last = f.loc[T0 + 1200]  # minute 20: candles at 6 and 20 in (5m, 20m]
    assert last["vol_15m"] == 12 and last["temp_now"] == 84.5
    assert np.isnan(f.loc[T0, "mid_chg_5m"])  # nothing 5 minutes earlier


def test_no_lookahead_a_later_spike_changes_nothing_before_it():
    candles = _candles(range(0, 30), [40] * 30, [42] * 30, [1] * 30)
    calm = _weather(range(-180, 30, 5), np.linspace(80, 84, 42))
    spiked = calm.copy()
    spiked.loc[spiked["ts_utc"] > pd.Timestamp(T0 + 600, unit="s", tz="UTC"), "temp_f"] = 120.0
    a = build_features(candles, _market(), calm, CHICAGO)
    b = build_features(candles, _market(), spiked, CHICAGO)
    before = a["end_period_ts"] <= T0 + 600
    pd.testing.assert_frame_equal(a[before], b[before])
    assert (b.loc[~before, "temp_now"] == 120.0).any()


def test_stale_weather_is_missing_not_reused():
    candles = _candles([0, 30], [40, 40], [42, 42], [1, 1])
    f = build_features(candles, _market(), _weather([-5], [80.0]), CHICAGO, max_obs_age_minutes=20)
    assert f["temp_now"].tolist()[0] == 80.0 and np.isnan(f["temp_now"].tolist()[1])


def test_running_max_is_missing_before_the_climate_day_starts():
    # 05:00 UTC on the 15th is 23:00 CST on the 14th: the 15th's climate day has not begun.
    day_before = int(datetime(2025, 7, 15, 5, 0, tzinfo=UTC).timestamp())
    candles = pd.DataFrame({"market_ticker": "KXHIGHCHI-25JUL15-B85.5", "end_period_ts": [day_before, T0],
                            "yes_bid_close": [40, 40], "yes_ask_close": [42, 42], "volume": [0, 0]})
    weather = pd.DataFrame({
        "ts_utc": pd.to_datetime([day_before - 60, T0 - 60], unit="s", utc=True), "temp_f": [79.0, 83.0],
        "dew_f": 60.0, "humidity_pct": 50.0, "wind_mph": 5.0,
    })
    f = build_features(candles, _market(), weather, CHICAGO)
    assert np.isnan(f["day_max_so_far"].iloc[0]) and f["temp_now"].iloc[0] == 79.0
    assert f["day_max_so_far"].iloc[1] == 83.0


def test_feature_columns_drop_bounds_a_bracket_lacks():
    assert feature_columns("elasticnet_rich", "between") == list(FEATURE_SETS["elasticnet_rich"])
    assert "temp_to_floor" not in feature_columns("elasticnet_rich", "less")
    assert "max_to_cap" not in feature_columns("elasticnet_rich", "greater")
    assert set(feature_columns("baseline", "between")) < set(feature_columns("elasticnet_rich", "between"))
    with pytest.raises(UnknownFeatureSetError, match="unknown feature set 'fancy'"):
        feature_columns("fancy", "between")


def test_candles_without_metadata_are_refused():
    with pytest.raises(ValueError, match="without metadata"):
        build_features(_candles([0], [1], [2], [0], ticker="KXHIGHCHI-25JUL15-B99.5"), _market(),
                       _weather([0], [80.0]), CHICAGO)


def test_batch_equals_minute_by_minute_streaming():
    """A tick holds only the bounded windows the live sources keep, ending at its clock time; the rows it
    uses (each market's newest candle of the lookback, however stale) must equal the batch's."""
    data = generate_city("chicago", date(2025, 8, 4), date(2025, 8, 5), seed=3)
    markets = data.markets[data.markets["event_date"] == date(2025, 8, 5)]
    candles = data.candles[data.candles["market_ticker"].isin(markets["ticker"])]
    weather = data.weather_minutes
    batch = build_features(candles, markets, weather, CHICAGO).set_index(["market_ticker", "end_period_ts"])
    wx_ts = epoch_seconds(weather["ts_utc"])
    first, last = candles["end_period_ts"].min(), candles["end_period_ts"].max()
    day_start = int(datetime(2025, 8, 5, 6, tzinfo=UTC).timestamp())
    rng = np.random.default_rng(0)
    stale_rows = 0
    for now in rng.integers(first, last, size=80):  # any second, not only candle ends
        seen_candles = candles[(candles["end_period_ts"] <= now)
                               & (candles["end_period_ts"] > candles_needed_since(now))]
        seen_weather = weather[(wx_ts <= now) & (wx_ts >= weather_needed_since(now, day_start, 20))]
        live = build_features(seen_candles, markets, seen_weather, CHICAGO)
        used = live[live["end_period_ts"] > now - CANDLE_LOOKBACK_SECONDS].groupby("market_ticker").tail(1)
        used = used.set_index(["market_ticker", "end_period_ts"])
        assert len(used) > 0
        stale_rows += int((now - used.index.get_level_values("end_period_ts") > 300).sum())
        pd.testing.assert_frame_equal(used, batch.loc[used.index], check_dtype=False, obj=f"tick {now}")
    assert stale_rows > 20  # the case that needs history older than the tick's own window is exercised


def test_cities_in_one_pass_equal_each_city_alone():
    """The live tick builds every city at once; each row must be what that city alone gives (training's call)."""
    day = date(2025, 8, 5)
    per_city, markets, candles, weather = [], [], [], {}
    for key in ("chicago", "denver", "la"):  # three standard offsets
        data = generate_city(key, day, day, seed=4)
        city = get_city(key)
        # sparse denver observations: its gaps must not be filled from another station
        weather[city] = data.weather_minutes.iloc[::3] if key == "denver" else data.weather_minutes
        per_city.append(build_features(data.candles, data.markets, weather[city], city))
        markets.append(data.markets.assign(city=key))
        candles.append(data.candles)
    together = pd.DataFrame(feature_arrays(pd.concat(candles), pd.concat(markets), weather))
    expected = pd.concat(per_city).sort_values(["market_ticker", "end_period_ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(together, expected, check_exact=True)


def test_a_city_without_observations_gets_no_weather_and_a_missing_city_is_named():
    candles = _candles([0, 1], [40, 41], [42, 43], [1, 1])
    f = build_features(candles, _market(), _weather([], []), CHICAGO)
    assert f["temp_now"].isna().all() and f["day_max_so_far"].isna().all() and (f["yes_mid"] == [41, 42]).all()
    with pytest.raises(ValueError, match=r"cities without a weather frame: \['chicago'\]"):
        feature_arrays(candles, _market().assign(city="chicago"), {get_city("nyc"): _weather([0], [1.0])})


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.floats(-100, 130), st.just(np.nan)), min_size=1, max_size=70),
       data=st.data())
def test_range_extremes_equal_a_plain_window_scan(values, data):
    values = np.array(values)
    n = len(values)
    start = np.array([data.draw(st.integers(0, i)) for i in range(n)])
    for reduce in (np.fmax, np.fmin):
        expected = [reduce.reduce(values[s:i + 1]) for i, s in enumerate(start)]
        np.testing.assert_array_equal(_range_reduce(values, start, reduce), expected)
