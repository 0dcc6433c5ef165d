"""The replay snapshot's reuse of what did not change, the lookahead check's, and the tick's model grouping."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from kwx.cities import get_city
from kwx.domain.markets import climate_day_bounds
from kwx.rt.engine import _groups
from kwx.rt.sources import LookaheadError, ReplaySource, Snapshot

DAY = date(2025, 7, 18)
NO_CANDLES = pd.DataFrame({"end_period_ts": np.zeros(0, np.int64)})


def _observations(*ts: int) -> dict[str, np.ndarray]:
    return {"ts_utc": np.array(ts, dtype="datetime64[s]").astype("datetime64[us]"), "temp_f": np.full(len(ts), 80.0)}


def test_the_lookahead_check_skips_only_what_an_earlier_snapshot_handed_out():
    markets = {"ticker": np.array([], dtype=object)}
    early = _observations(900, 1_000)
    first = Snapshot(1_000, markets, NO_CANDLES, {"chicago": early})
    first.check_no_lookahead()
    # a frame handed out before passed at an earlier clock: not read again
    later = Snapshot(1_100, markets, NO_CANDLES, {"chicago": early})
    later.check_no_lookahead(checked=first)
    # a new frame is read, whatever was checked before
    leaking = Snapshot(1_100, markets, NO_CANDLES, {"chicago": _observations(1_000, 1_200)})
    with pytest.raises(LookaheadError, match="chicago weather after 1100"):
        leaking.check_no_lookahead(checked=first)
    # an earlier snapshot from a later clock vouches for nothing
    rewound = Snapshot(950, markets, NO_CANDLES, {"chicago": early})
    with pytest.raises(LookaheadError):
        rewound.check_no_lookahead(checked=first)


def test_replay_hands_out_the_open_markets_once_per_open_set_and_only_their_candles(promoted):
    source = ReplaySource(promoted["engine"], [("chicago", "between")], DAY, 20)
    start, _ = climate_day_bounds(DAY, get_city("chicago"))
    now = int(start.timestamp()) + 12 * 3600
    first, later = source.snapshot(now), source.snapshot(now + 120)
    assert later.candles is not first.candles and later.markets is first.markets  # new data, same open set
    open_now = (source.markets["open_ts"] <= now) & (now < source.markets["close_ts"])
    assert list(first.markets["ticker"]) == list(source.markets.loc[open_now, "ticker"])
    np.testing.assert_array_equal(epoch_seconds_of(first.markets["close_time"]),
                                  source.markets.loc[open_now, "close_ts"].to_numpy())

    closing = first.markets["ticker"][0]
    source._close_ts = np.where(source.markets["ticker"] == closing, now + 60, source._close_ts)
    after = source.snapshot(now + 180)  # the market closed a minute before: its candles are not handed out
    assert closing not in list(after.markets["ticker"])
    assert len(after.candles) and closing not in set(after.candles["market_ticker"])


def epoch_seconds_of(values: np.ndarray) -> np.ndarray:
    return values.astype("datetime64[s]").astype(np.int64)


def test_rows_group_by_their_market_keys_in_key_order_without_missing_keys():
    day1, day2 = date(2025, 7, 18), date(2025, 7, 19)
    tickers = np.array(["B", "A", "C", "B", "D", "A", "E"], dtype=object)
    city = np.array(["nyc", "chicago", "nyc", "nyc", None, "chicago", "chicago"], dtype=object)
    bracket = np.array(["less", "between", "less", "less", "less", "between", "between"], dtype=object)
    event = np.array([day2, day1, day1, day2, day1, day1, day2], dtype=object)
    rows = np.array([0, 1, 2, 3, 4, 5, 6])
    groups = [(key, list(found)) for key, found in _groups(tickers, [city, bracket, event], rows)]
    assert groups == [(("chicago", "between", day1), [1, 5]), (("chicago", "between", day2), [6]),
                      (("nyc", "less", day1), [2]), (("nyc", "less", day2), [0, 3])]
    subset = [(key, list(found)) for key, found in _groups(tickers, [city, bracket, event], np.array([3, 5, 6]))]
    assert subset == [(("chicago", "between", day1), [5]), (("chicago", "between", day2), [6]),
                      (("nyc", "less", day2), [3])]
    assert list(_groups(tickers, [city, bracket, event], np.array([], dtype=np.int64))) == []


def test_a_ticks_newest_rows_with_forecasts_equal_the_whole_days(promoted):
    """The replayed window's newest rows alone (``newest_as_of``), forecast features included, equal the rows the
    tick takes from every row of its window and from the whole day's batch."""
    from kwx.domain.features import feature_arrays
    from kwx.rt.engine import latest_rows

    source = ReplaySource(promoted["engine"], [("chicago", "between")], DAY, 20)
    chicago = get_city("chicago")
    day = feature_arrays(source.candles, source.markets.assign(city="chicago"), {chicago: source.weather["chicago"]},
                         forecasts=source.forecasts)
    start, _ = climate_day_bounds(DAY, chicago)
    forecast_rows = 0
    for k in range(-20, 96):
        now = int(start.timestamp()) + 900 * k + 37
        snap = source.snapshot(now)
        weather = {chicago: snap.weather["chicago"]}
        newest = feature_arrays(snap.candles, snap.markets, weather, forecasts=snap.forecasts, newest_as_of=now)
        window = latest_rows(feature_arrays(snap.candles, snap.markets, weather, forecasts=snap.forecasts), now)
        for name, values in window.items():
            np.testing.assert_array_equal(newest[name], values, err_msg=f"{name} at {now}")
        whole = latest_rows(day, now)
        for name in ("yes_mid", "mid_chg_5m", "vol_15m", "temp_now", "day_max_so_far", "p_forecast"):
            np.testing.assert_array_equal(newest[name], whole[name], err_msg=f"{name} at {now}")
        forecast_rows += int(np.count_nonzero(~np.isnan(newest["p_forecast"])))
    assert forecast_rows > 50


def test_a_tick_whose_models_read_no_forecasts_builds_none_and_signals_the_same(promoted, monkeypatch):
    """The promoted models read the relative set: the runner's ticks build no forecast feature, though the day has
    forecasts, and price every market as the full build's rows do; a model that reads forecasts gets them built."""
    from kwx.config import RtConfig
    from kwx.domain import features
    from kwx.registry.cache import RegistryCache
    from kwx.rt.engine import ModelHandle, prepare_inputs, price
    from kwx.rt.loop import RegistryResolver, TickRunner, snapshot_features

    built = []
    real = features.forecast_features
    monkeypatch.setattr(features, "forecast_features", lambda *a, **k: built.append(1) or real(*a, **k))
    config = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}]})
    source = ReplaySource(promoted["engine"], [("chicago", "between")], DAY, config.max_obs_age_minutes)
    assert len(source.forecasts.forecasts)
    resolve = RegistryResolver(RegistryCache(promoted["client"]), "Production")
    runner = TickRunner(config, source, resolve)
    start, _ = climate_day_bounds(DAY, get_city("chicago"))
    now = int(start.timestamp()) + 13 * 3600 + 5
    runner.run(now)
    assert built == []
    snap = source.snapshot(now)
    everything = prepare_inputs(snap.markets, snapshot_features(snap, config), resolve)
    assert built  # the full build computes them
    assert not np.isnan(runner._memo[1].p_model).all()
    np.testing.assert_array_equal(runner._memo[1].p_model, everything.p_model)
    np.testing.assert_array_equal(runner._memo[2].p_blend, price(everything, config).p_blend)

    built.clear()

    def reads_forecasts(city, bracket, day):
        handle = resolve(city, bracket, day)
        return ModelHandle(handle.model, handle.model_id, handle.window, "elasticnet_forecast")

    TickRunner(config, source, reads_forecasts).run(now)
    assert built
