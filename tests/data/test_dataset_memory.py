"""The dataset's footprint: float32 features that predict as float64 ones do, and a build whose peak is its rows."""

from __future__ import annotations

import tracemalloc
from datetime import date

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from kwx.cities import get_city
from kwx.data import dataset, migrations
from kwx.data.dataset import forecasts_for, load_candles, load_dataset, load_markets, load_weather_for_markets
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.domain.features import build_features, feature_columns
from kwx.training.model import ModelParams, fit_pipeline

pytestmark = pytest.mark.integration
START, END = date(2025, 7, 10), date(2025, 7, 14)
FEATURE_SET = "elasticnet_forecast"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('memory') / 'kwx.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    load_demo(engine, ["chicago"], START, END, seed=11)
    yield engine
    engine.dispose()


def test_float32_features_give_the_models_probabilities_of_float64_ones(engine):
    data = load_dataset(engine, "chicago", "between", START, END, FEATURE_SET)
    city = get_city("chicago")
    markets = load_markets(engine, "chicago", "between", START, END)
    exact = build_features(load_candles(engine, markets["ticker"].tolist()), markets,
                           load_weather_for_markets(engine, city, markets, START), city,
                           forecasts=forecasts_for(engine, FEATURE_SET, ["chicago"], START, END))
    assert list(exact["end_period_ts"]) == list(data["end_period_ts"])
    names = feature_columns(FEATURE_SET, "between")
    usable = data["label"].notna().to_numpy() & ~data["locked"].to_numpy()
    test_days = data["event_date"].isin([date(2025, 7, 11), date(2025, 7, 13)]).to_numpy()
    train, test = usable & ~test_days, usable & test_days
    y = data["label"].to_numpy(dtype=int)
    probabilities = {}
    for precision, frame in (("float64", exact), ("float32", data)):
        X = frame[names].astype(float)  # training fits float64 matrices whatever the dataset stores
        model = fit_pipeline(X[train], y[train], ModelParams("elasticnet", C=0.1, l1_ratio=0.5, class_weight="none"),
                             seed=0)
        probabilities[precision] = model.predict_proba(X[test])[:, 1]
    p64, p32 = probabilities["float64"], probabilities["float32"]
    assert test.sum() > 1000 and 0 < y[test].mean() < 1
    np.testing.assert_allclose(p32, p64, rtol=0, atol=1e-5)
    assert abs(log_loss(y[test], p32) - log_loss(y[test], p64)) < 1e-6
    assert abs(brier_score_loss(y[test], p32) - brier_score_loss(y[test], p64)) < 1e-6


def test_peak_memory_is_the_rows_and_one_slice_not_copies_of_them(engine, monkeypatch):
    monkeypatch.setattr(dataset, "_SLICE_MARKETS", 2)  # a tenth of the demo's markets: slices cost little
    load_dataset(engine, "chicago", "between", START, END, FEATURE_SET)  # imports and caches outside the count
    tracemalloc.start()
    try:
        data = load_dataset(engine, "chicago", "between", START, END, FEATURE_SET)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    numeric = sum(data[c].to_numpy().nbytes for c in data.columns if data[c].dtype.kind in "fiub")
    # the rows (float32 features), the candles they come from and one slice's float64 temporaries measured
    # 2.1x; one more copy of the features, or a float64 frame, would pass 2.6x
    assert peak < 2.6 * numeric
    assert (data[[*feature_columns(FEATURE_SET, "between"), "p_forecast"]].dtypes == np.float32).all()
