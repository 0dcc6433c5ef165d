"""The tick engine's pure steps: model resolution per rows, signal rows, the session's strongest signals."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from kwx.config import Calibration, RtConfig
from kwx.domain.features import feature_columns
from kwx.rt.engine import (
    SIGNAL_COLUMNS,
    ModelHandle,
    ModelUnavailable,
    SignalRows,
    decide,
    inputs_from_rows,
    signal_rows,
)
from kwx.rt.replay import StrongestSignals
from kwx.training.model import ModelParams, fit_calibrated

DAY = date(2025, 7, 18)
CONFIG = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}]})


@pytest.fixture(scope="module")
def baseline_model():
    rng = np.random.default_rng(0)
    columns = feature_columns("baseline", "between")
    X = pd.DataFrame(rng.normal(size=(240, len(columns))), columns=columns)
    y = (X["temp_to_floor"] + rng.normal(size=240) > 0).astype(int).to_numpy()
    groups = np.repeat(pd.date_range("2025-06-01", periods=12).date, 20)
    model, _, _ = fit_calibrated(X, y, groups, ModelParams("l2", 1.0, 0.0, "none"), Calibration(), 3, 0)
    return model


def _rows(n=4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    rows = {name: rng.normal(size=n) for name in feature_columns("elasticnet_rich", "between")}
    rows |= {"market_ticker": np.array([f"KXHIGHCHI-25JUL18-B{80 + i}.5" for i in range(n)], dtype=object),
             "city": np.full(n, "chicago", dtype=object), "bracket": np.full(n, "between", dtype=object),
             "event_date": np.full(n, DAY, dtype=object), "close_ts": np.full(n, 1_752_900_000),
             "yes_bid": np.full(n, 40.0), "yes_ask": np.full(n, 42.0), "end_period_ts": np.full(n, 1_752_850_000.0),
             "floor_strike": 80.0 + np.arange(n), "cap_strike": 81.0 + np.arange(n), "day_max_so_far": np.full(n, 70.0)}
    return rows


def test_locked_rows_take_the_decided_outcome_under_their_days_model(baseline_model):
    rows = _rows()
    rows["day_max_so_far"][:] = [83.4, 83.6, 79.0, np.nan]

    def resolve(city, bracket, day):
        return ModelHandle(baseline_model, "m/1", "w", "baseline")

    inputs = inputs_from_rows(rows, resolve)
    # B80.5 pays on 80-81 and B81.5 on 81-82: highs of at least 82 and 83 (max - 1 °F, rounded half up)
    assert list(inputs.locked) == [True, True, False, False]
    assert list(inputs.p_model[:2]) == [0.0, 0.0] and 0 < inputs.p_model[2] < 1
    assert (inputs.model_id == "m/1").all()  # a locked market still trades only under a promoted model
    d = decide(1_752_850_030, inputs, CONFIG)
    assert list(d.p_blend[:2]) == [0.0, 0.0]  # not pooled with the market's 41 %
    frame = signal_rows(1_752_850_030, inputs, d).frame()
    assert frame["locked"].tolist() == [True, True, False, False]
    # with 1.5 °F: 83.4 -> at least 82 (above 81), 83.6 -> at least 82 (not above 82); with 2 °F: nothing
    assert list(inputs_from_rows(rows, resolve, lock_margin_f=1.5).locked) == [True, False, False, False]
    assert not inputs_from_rows(rows, resolve, lock_margin_f=2.0).locked.any()


def test_each_model_predicts_its_own_columns_and_a_mismatched_feature_set_is_skipped(baseline_model):
    rows = _rows()
    handle = ModelHandle(baseline_model, "kwx_chicago_between/3", "win_a", "baseline")
    inputs = inputs_from_rows(rows, lambda city, bracket, day: handle)
    expected = baseline_model.predict_proba(pd.DataFrame({c: rows[c] for c in feature_columns("baseline", "between")}))
    np.testing.assert_allclose(inputs.p_model, expected[:, 1], rtol=0, atol=1e-12)
    assert (inputs.model_id == "kwx_chicago_between/3").all() and (inputs.window == "win_a").all()

    mislabelled = ModelHandle(baseline_model, "kwx_chicago_between/4", "win_b", "elasticnet_rich")
    skipped = inputs_from_rows(rows, lambda city, bracket, day: mislabelled)
    assert np.isnan(skipped.p_model).all()
    assert set(skipped.data_skip) == {"model kwx_chicago_between/4 does not take the elasticnet_rich features"}


def test_rows_without_a_model_or_data_are_skipped_with_the_first_reason(baseline_model):
    rows = _rows()
    rows["yes_ask"][0] = np.nan
    rows["temp_now"][1] = np.nan
    rows["event_date"][3] = date(2025, 7, 19)  # tomorrow's market has no model yet

    def resolve(city, bracket, day):
        if day != DAY:
            raise ModelUnavailable(f"no model for {city}/{bracket} on {day}")
        return ModelHandle(baseline_model, "m/1", "w", "baseline")

    inputs = inputs_from_rows(rows, resolve, failed={rows["market_ticker"][1]: "timeout"})
    assert list(inputs.data_skip) == ["no two-sided quote", "data fetch failed: timeout", None,
                                      "no model: no model for chicago/between on 2025-07-19"]
    assert np.isnan(inputs.p_model[[0, 1, 3]]).all() and not np.isnan(inputs.p_model[2])


def test_signal_rows_frame_and_the_decision_counts(baseline_model):
    rows = _rows()
    inputs = inputs_from_rows(rows, lambda *_: ModelHandle(baseline_model, "m/1", "w", "baseline"))
    now = 1_752_850_030
    d = decide(now, inputs, CONFIG)
    out = signal_rows(now, inputs, d)
    frame = out.frame()
    assert list(frame.columns) == SIGNAL_COLUMNS
    assert (frame["ts_utc"] == pd.Timestamp(now, unit="s", tz="UTC")).all()
    assert d.sized() == int((frame["size_fraction"] > 0).sum())
    assert sum(d.skip_counts().values()) == int(frame["skip_reason"].notna().sum())
    assert all(isinstance(reason, str) for reason in d.skip_counts())  # never a NaN "reason"
    both = SignalRows.concat([out, out.take([1, 2])])
    assert len(both) == 6 and list(both.columns["market_ticker"][4:]) == list(rows["market_ticker"][1:3])


def test_strongest_signals_keep_each_markets_best_sized_row():
    def tick(ts, edges, sizes):
        n = len(edges)
        return SignalRows({"ts_utc": np.full(n, ts), "market_ticker": np.array(["A", "B", "C"][:n], dtype=object),
                           "edge_cents": np.array(edges, dtype=float), "size_fraction": np.array(sizes, dtype=float)})

    strongest = StrongestSignals()
    assert strongest.table().empty
    strongest.add(tick(100, [5.0, 9.0, 1.0], [0.1, 0.0, 0.2]))
    strongest.add(tick(109, [7.0, 3.0, 0.5], [0.1, 0.2, 0.2]))
    strongest.add(tick(118, [6.0, 4.0, 8.0], [0.1, 0.2, 0.0]))  # C's 8.0 was not sized
    table = strongest.table()
    assert strongest.sized == 7
    assert table[["market_ticker", "edge_cents"]].values.tolist() == [["A", 7.0], ["B", 4.0], ["C", 1.0]]
    assert table["ts_utc"].tolist() == [pd.Timestamp(s, unit="s", tz="UTC") for s in (109, 118, 100)]


def test_a_tick_asks_for_each_model_once_and_knows_whether_any_reads_forecasts(baseline_model):
    from kwx.rt.engine import TickResolutions, reads_forecasts

    asked = []
    sets = {"chicago": "elasticnet_relative", "nyc": "elasticnet_forecast"}

    def resolve(city, bracket, day):
        asked.append((city, bracket, day))
        if city == "miami":
            raise ModelUnavailable(f"no model for {city}/{bracket} on {day}")
        return ModelHandle(baseline_model, f"{city}/1", "w", sets[city])

    def markets(*cities):
        return {"city": np.array(cities, dtype=object), "strike_type": np.full(len(cities), "between", dtype=object),
                "event_date": np.full(len(cities), DAY, dtype=object)}

    tick = TickResolutions(resolve)
    assert not reads_forecasts(markets("chicago", "chicago", "miami", None), tick)
    assert reads_forecasts(markets("chicago", "nyc"), tick)
    for _ in range(2):  # the rows' own resolution finds every answer kept, the missing model's reason too
        assert tick("chicago", "between", DAY).feature_set == "elasticnet_relative"
        with pytest.raises(ModelUnavailable, match="no model for miami/between on 2025-07-18"):
            tick("miami", "between", DAY)
    assert sorted(asked) == [("chicago", "between", DAY), ("miami", "between", DAY), ("nyc", "between", DAY)]
    assert not reads_forecasts(markets(), TickResolutions(resolve))
