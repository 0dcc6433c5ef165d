"""The dataset on real databases: as-of join, labels from the settlement rule, the NYC VC exclusion."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete

from kwx.cities import VC_EXCLUDABLE_COLUMNS, get_city
from kwx.data import dataset, migrations
from kwx.data.dataset import (
    DatasetError,
    forecasts_for,
    forecasts_shared,
    load_candles,
    load_dataset,
    load_markets,
    load_settlements,
    load_weather,
    load_weather_for_markets,
)
from kwx.data.db import make_engine
from kwx.data.demo import generate, load_demo
from kwx.data.forecasts import load_forecast_data, load_forecasts
from kwx.data.schema import ClimateDaily
from kwx.domain import features
from kwx.domain.features import build_features, feature_columns
from kwx.domain.forecast import FORECAST_COLUMNS
from kwx.domain.markets import locked_outcomes, settlement_outcomes

pytestmark = pytest.mark.integration
START, END = date(2025, 7, 10), date(2025, 7, 14)


@pytest.fixture
def engine(db_url):
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    load_demo(engine, ["chicago", "nyc"], START, END, seed=11)
    yield engine
    engine.dispose()


def test_rows_identifiers_and_labels(engine):
    data = load_dataset(engine, "chicago", "between", START, END, "elasticnet_rich")
    assert list(data.columns[:6]) == ["market_ticker", "end_period_ts", "event_date", "bracket", "floor_strike",
                                      "cap_strike"]
    assert data.columns[-1] == "label"
    assert set(feature_columns("elasticnet_rich", "between")) < set(data.columns)
    assert (data["bracket"] == "between").all()
    assert set(data["event_date"]) == {date(2025, 7, d) for d in range(10, 15)}
    demo = generate(["chicago"], START, END, seed=11)
    tmax = demo.climate_daily.set_index("climate_date")["tmax_f"]
    expected = settlement_outcomes(data["bracket"], data["floor_strike"], data["cap_strike"],
                                   data["event_date"].map(tmax).astype(float))
    np.testing.assert_array_equal(data["label"].to_numpy(), expected)
    # one row per stored candle of those markets
    tickers = demo.markets.loc[demo.markets["strike_type"] == "between", "ticker"]
    assert len(data) == demo.candles["market_ticker"].isin(tickers).sum()


def test_features_are_float32_and_identifiers_exact(engine):
    data = load_dataset(engine, "chicago", "between", START, END, "elasticnet_forecast")
    features = [*feature_columns("elasticnet_forecast", "between"), "p_forecast"]
    assert (data[features].dtypes == np.float32).all()
    assert data["end_period_ts"].dtype == np.int64
    assert {c: data[c].dtype for c in ("floor_strike", "cap_strike", "locked_outcome", "label")} == dict.fromkeys(
        ("floor_strike", "cap_strike", "locked_outcome", "label"), np.float64)
    assert isinstance(data["event_date"].iloc[0], date) and data["locked"].dtype == bool


def test_forecasts_read_back_as_written_and_only_once_public(engine):
    """The driver's values (SQLite's dates are text, its booleans 0/1) come back as the generator wrote them."""
    written = generate(["chicago", "nyc"], START, END, seed=11).forecasts
    key = ["climate_date", "model", "member", "run_ts"]
    read = load_forecasts(engine, ["chicago"], START, date(2025, 7, 12))
    expected = written[(written["city"] == "chicago") & (written["climate_date"] <= date(2025, 7, 12))]
    assert isinstance(read["climate_date"].iloc[0], date)
    pd.testing.assert_frame_equal(read.sort_values(key, ignore_index=True),
                                  expected[list(FORECAST_COLUMNS)].sort_values(key, ignore_index=True),
                                  check_dtype=False)
    assert read.dtypes.drop(["city", "climate_date", "model"]).to_dict() == {
        "member": np.int64, "run_ts": np.int64, "available_ts": np.int64, "lead_days": np.int64,
        "high_f": np.float64, "ensemble": bool}
    cutoff = int(np.median(expected["available_ts"]))
    public = load_forecasts(engine, ["chicago"], START, date(2025, 7, 12), available_until_ts=cutoff)
    assert len(public) == (expected["available_ts"] <= cutoff).sum() and public["available_ts"].max() <= cutoff
    assert not load_forecasts(engine, ["chicago"], date(2030, 1, 1), date(2030, 1, 2)).shape[0]


@pytest.mark.parametrize("bracket", ["between", "less"])
def test_slices_of_markets_equal_one_build_of_all(engine, monkeypatch, bracket):
    monkeypatch.setattr(dataset, "_SLICE_MARKETS", 3)  # the demo's 5 days of a bracket: several slices
    data = load_dataset(engine, "chicago", bracket, START, END, "elasticnet_forecast")
    city = get_city("chicago")
    markets = load_markets(engine, "chicago", bracket, START, END)
    whole = build_features(load_candles(engine, markets["ticker"].tolist()), markets,
                           load_weather_for_markets(engine, city, markets, START), city,
                           forecasts=forecasts_for(engine, "elasticnet_forecast", ["chicago"], START, END))
    assert len(data) > 3 * 1000 and list(data["market_ticker"]) == list(whole["market_ticker"])
    for name in [*feature_columns("elasticnet_forecast", bracket), "p_forecast"]:
        np.testing.assert_array_equal(data[name].to_numpy(), whole[name].to_numpy().astype(np.float32), name)
    for name in ("end_period_ts", "event_date", "bracket", "floor_strike", "cap_strike"):
        np.testing.assert_array_equal(data[name].to_numpy(), whole[name].to_numpy(), name)
    tmax = load_settlements(engine, city, START, END)
    np.testing.assert_array_equal(data["label"], settlement_outcomes(
        whole["bracket"], whole["floor_strike"], whole["cap_strike"], whole["event_date"].map(tmax).astype(float)))
    np.testing.assert_array_equal(data["locked_outcome"], locked_outcomes(
        whole["bracket"], whole["floor_strike"], whole["cap_strike"], whole["day_max_so_far"]))


def test_datasets_built_in_a_shared_block_read_the_forecasts_once_and_equal_separate_builds(engine, monkeypatch):
    separate = {b: load_dataset(engine, "chicago", b, START, END, "elasticnet_forecast") for b in ("between", "less")}
    reads = []
    monkeypatch.setattr(dataset, "load_forecast_data",
                        lambda *args, **kwargs: reads.append(args[1:]) or load_forecast_data(*args, **kwargs))
    with forecasts_shared():
        shared = {b: load_dataset(engine, "chicago", b, START, END, "elasticnet_forecast") for b in ("between", "less")}
        load_dataset(engine, "chicago", "less", START, date(2025, 7, 13), "elasticnet_forecast")  # other days
    assert reads == [(["chicago"], START, END), (["chicago"], START, date(2025, 7, 13))]
    for bracket, data in separate.items():
        pd.testing.assert_frame_equal(shared[bracket], data)
    load_dataset(engine, "chicago", "less", START, END, "elasticnet_forecast")
    assert len(reads) == 3  # after the block every build reads what is stored now


def test_forecast_features_in_slices_equal_one_pass(engine, monkeypatch):
    whole = load_dataset(engine, "chicago", "between", START, END, "elasticnet_forecast")
    monkeypatch.setattr(features, "_FORECAST_SLICE", 1000)  # every slice of markets in several pieces
    sliced = load_dataset(engine, "chicago", "between", START, END, "elasticnet_forecast")
    assert len(whole) > 3 * 1000
    pd.testing.assert_frame_equal(sliced, whole)


def test_weather_is_joined_as_of_never_after(engine):
    data = load_dataset(engine, "chicago", "less", START, END, "elasticnet_rich")
    weather = load_weather(engine, get_city("chicago"), *_span(data))
    obs_ts = weather["ts_utc"].astype("datetime64[s, UTC]").astype("int64").to_numpy()
    pos = np.searchsorted(obs_ts, data["end_period_ts"].to_numpy(), side="right") - 1
    fresh = (pos >= 0) & (data["end_period_ts"].to_numpy() - obs_ts[np.maximum(pos, 0)] <= 20 * 60)
    expected = np.where(fresh, weather["temp_f"].to_numpy()[np.maximum(pos, 0)], np.nan)
    np.testing.assert_array_equal(data["temp_now"].to_numpy(), expected.astype(dataset.FEATURE_DTYPE))


def _span(data):
    import pandas as pd
    ts = pd.to_datetime(data["end_period_ts"], unit="s", utc=True)
    return (ts.min() - pd.Timedelta(hours=4)).to_pydatetime(), ts.max().to_pydatetime()


def test_nyc_vc_columns_are_null_and_temperature_kept(engine):
    nyc = load_dataset(engine, "nyc", "between", START, END, "elasticnet_rich")
    chicago = load_dataset(engine, "chicago", "between", START, END, "elasticnet_rich")
    for column in ("dewpoint", "humidity", "windspeed"):
        assert nyc[column].isna().all(), column
        assert chicago[column].notna().mean() > 0.95, column
    assert nyc["temp_now"].notna().mean() > 0.95
    relative = load_dataset(engine, "nyc", "between", START, END)  # the default set derives from dew point too
    assert relative["dew_depression"].isna().all() and relative["temp_to_cap"].notna().mean() > 0.95
    raw = load_weather(engine, get_city("nyc"), *_span(nyc))
    assert raw[list(VC_EXCLUDABLE_COLUMNS)].isna().all().all() and raw["temp_f"].notna().all()


def test_unsettled_days_have_no_label(engine):
    with engine.begin() as conn:
        conn.execute(delete(ClimateDaily).where(ClimateDaily.climate_date == END))
    data = load_dataset(engine, "chicago", "greater", START, END)
    assert data.loc[data["event_date"] == END, "label"].isna().all()
    assert data.loc[data["event_date"] < END, "label"].notna().all()


def test_clear_errors_for_missing_data(engine):
    with pytest.raises(DatasetError, match=r"no miami/between markets with event dates 2025-07-10\.\.2025-07-14"):
        load_dataset(engine, "miami", "between", START, END)
    with pytest.raises(DatasetError, match="no chicago/between markets with event dates 2024"):
        load_dataset(engine, "chicago", "between", date(2024, 1, 1), date(2024, 2, 1))
    with pytest.raises(ValueError, match="unknown feature set"):
        load_dataset(engine, "chicago", "between", START, END, "fancy")


def test_demo_load_is_idempotent(engine):
    from kwx.data.store import coverage_summary

    before = coverage_summary(engine)
    load_demo(engine, ["chicago", "nyc"], START, END, seed=11)
    after = coverage_summary(engine)
    assert before.equals(after)
    assert set(after["city"]) == {"chicago", "nyc"}
    assert (after["markets"] == 6 * 5).all() and (after["settled_days"] == 6).all()


@pytest.mark.parametrize("bracket", ["between", "greater", "less"])
def test_locked_rows_are_decided_and_agree_with_the_settlement(engine, bracket):
    data = load_dataset(engine, "chicago", bracket, START, END)
    locked = data[data["locked"]]
    assert len(locked) and (~data["locked"]).any()
    np.testing.assert_array_equal(locked["locked_outcome"].to_numpy(), locked["label"].to_numpy())
    assert data.loc[~data["locked"], "locked_outcome"].isna().all()
    # a larger margin locks a subset of the rows, never different ones
    wide = load_dataset(engine, "chicago", bracket, START, END, lock_margin_f=3.0)
    assert not (wide["locked"] & ~data["locked"]).any() and wide["locked"].sum() <= data["locked"].sum()
