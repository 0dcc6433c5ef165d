"""predict_yes: the numpy evaluation of our calibrated model equals scikit-learn's predict_proba."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression

from kwx.config import Calibration
from kwx.training import model as model_module
from kwx.training.model import ModelParams, compile_yes_probability, fit_calibrated, predict_yes

SIGMOID, ISOTONIC = Calibration(isotonic_min_rows=10**6), Calibration(isotonic_min_rows=1, isotonic_min_events=1)


def _data(seed=0, n_days=10, per_day=40):
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(5, 3, size=n), "c": rng.normal(size=n),
                      "empty": np.nan})
    X.loc[rng.random(n) < 0.1, "b"] = np.nan
    y = (X["a"] - 0.2 * X["b"].fillna(5) + rng.normal(size=n) > -1).astype(int).to_numpy()
    groups = np.repeat(pd.date_range("2025-07-01", periods=n_days).date, per_day)
    return X, y, groups


ENET = ModelParams("elasticnet", 0.5, 0.5, "none")


def _fit(calibration, params=ENET, seed=0):
    X, y, groups = _data(seed)
    model, _, _ = fit_calibrated(X, y, groups, params, calibration, n_splits=3, seed=0)
    return model, X


@pytest.mark.parametrize("calibration", [SIGMOID, ISOTONIC], ids=["sigmoid", "isotonic"])
@pytest.mark.parametrize("params", [ModelParams("l1", 0.05, 1.0, "none"), ModelParams("l2", 2.0, 0.0, "balanced"),
                                    ModelParams("elasticnet", 0.5, 0.3, "balanced")], ids=["l1", "l2", "enet"])
def test_compiled_model_equals_predict_proba(calibration, params):
    model, X = _fit(calibration, params)
    compiled = compile_yes_probability(model)
    assert compiled.compiled and compiled.columns == ("a", "b", "c", "empty")
    np.testing.assert_allclose(compiled(X), model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    # columns are matched by name, as sklearn requires them to be
    np.testing.assert_allclose(compiled(X[X.columns[::-1]].assign(extra=1.0)), compiled(X), rtol=0, atol=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=arrays(np.float64, st.tuples(st.integers(1, 30), st.just(4)),
                   elements=st.one_of(st.floats(-1e3, 1e3), st.just(np.nan))))
def test_any_rows_with_any_gaps_score_like_sklearn(rows, fitted_pair):
    for model in fitted_pair:
        X = pd.DataFrame(rows, columns=["a", "b", "c", "empty"])
        p = predict_yes(model, X)
        np.testing.assert_allclose(p, model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
        assert ((p >= 0) & (p <= 1)).all()


@pytest.fixture(scope="module")
def fitted_pair():
    return _fit(SIGMOID)[0], _fit(ISOTONIC)[0]


def test_predict_yes_compiles_each_model_once(monkeypatch, fitted_pair):
    model = fitted_pair[0]
    X = _data()[0]
    predict_yes(model, X)
    monkeypatch.setattr(model_module, "compile_yes_probability",
                        lambda m: pytest.fail("compiled again for a model already seen"))
    predict_yes(model, X.head(3))


def test_missing_feature_is_named():
    model, X = _fit(SIGMOID)
    with pytest.raises(ValueError, match=r"lack the model's columns \['c'\]"):
        compile_yes_probability(model)(X.drop(columns="c"))


def test_other_estimators_use_sklearn():
    X, y, _ = _data()
    plain = LogisticRegression().fit(X.drop(columns="empty").fillna(0), y)
    assert not compile_yes_probability(plain).compiled
    rows = X.drop(columns="empty").fillna(0)
    np.testing.assert_array_equal(predict_yes(plain, rows), plain.predict_proba(rows)[:, 1])
    ensemble = CalibratedClassifierCV(LogisticRegression(), cv=3, ensemble=True).fit(rows, y)
    assert not compile_yes_probability(ensemble).compiled
    with pytest.raises(ValueError, match="fitted without column names"):
        compile_yes_probability(LogisticRegression().fit(rows.to_numpy(), y))


def test_an_imputer_that_drops_empty_columns_is_left_to_sklearn():
    model, _ = _fit(SIGMOID)
    imputer = model.calibrated_classifiers_[0].estimator.named_steps["impute"]
    imputer.statistics_ = imputer.statistics_.copy()
    imputer.statistics_[3] = np.nan  # what keep_empty_features=False leaves for the all-missing column
    assert model_module._linear_parts(model) is None


def test_a_compiled_model_that_disagrees_is_not_used(monkeypatch):
    model, X = _fit(SIGMOID)
    fill, mean, scale, coef, intercept, calibrator = model_module._linear_parts(model)
    # sklearn sees the real coefficients; the compiled function is built from perturbed ones
    monkeypatch.setattr(model_module, "_linear_parts",
                        lambda m: (fill, mean, scale, coef + 1e-3, intercept, calibrator))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = compile_yes_probability(model)
    assert not compiled.compiled
    assert any("disagrees with predict_proba" in str(w.message) for w in caught)
    np.testing.assert_array_equal(compiled(X), model.predict_proba(X)[:, 1])

