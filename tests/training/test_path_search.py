"""The search by regularization paths: prepared folds, warm-started sweeps over C, the chosen C (MLflow-free)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.utils.class_weight import compute_sample_weight

from kwx.config import TrainConfig
from kwx.training.model import (
    ModelParams,
    fit_logit,
    fit_pipeline,
    group_folds,
    make_logit,
    make_pipeline,
    prepare_folds,
    regularization_path,
)
from kwx.training.search import c_path, run_search

BASE = {"city": "chicago", "bracket": "between", "start": "2025-05-01", "end": "2025-09-23", "seed": 7}


def _config(**changes) -> TrainConfig:
    return TrainConfig.model_validate({**BASE, **changes})


def _data(n_days=16, per_day=50, seed=0):
    """Five features, two informative, gaps in one; a minority class, so class weights matter."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    X = pd.DataFrame(rng.normal(size=(n, 5)) * [1, 3, 0.5, 2, 1] + [0, 10, -2, 0, 5], columns=list("abcde"))
    y = (X["a"] + 0.2 * X["b"] + rng.normal(scale=1.2, size=n) > 2.5).to_numpy(dtype=int)
    X.loc[rng.random(n) < 0.2, "c"] = np.nan
    groups = np.repeat(pd.date_range("2025-07-01", periods=n_days).date, per_day)
    return X, y, groups


def test_prepared_folds_are_what_the_pipeline_feeds_its_logit():
    X, y, groups = _data()
    folds = group_folds(groups, 4)
    params = ModelParams("elasticnet", 0.3, 0.5, "none")
    for (fit_rows, held_out), fold in zip(folds, prepare_folds(X, y, folds), strict=True):
        pipeline = fit_pipeline(X.iloc[fit_rows], y[fit_rows], params, seed=1)
        preprocessing = pipeline[:-1]
        np.testing.assert_array_equal(fold.X_train, preprocessing.transform(X.iloc[fit_rows]))
        np.testing.assert_array_equal(fold.X_test, preprocessing.transform(X.iloc[held_out]))
        np.testing.assert_array_equal(fold.y_train, y[fit_rows])
        np.testing.assert_array_equal(fold.y_test, y[held_out])
        for matrix in (fold.X_train, fold.X_test):
            assert matrix.dtype == np.float64 and matrix.flags.c_contiguous
        # so a logit fit on the prepared rows is the pipeline's own
        logit = fit_logit(make_logit(params, seed=1), fold.X_train, fold.y_train)
        np.testing.assert_array_equal(logit.coef_, pipeline.named_steps["logit"].coef_)


@pytest.mark.parametrize("params", [ModelParams("elasticnet", 0.3, 0.5, "none"),
                                    ModelParams("l1", 0.05, 1.0, "balanced"),
                                    ModelParams("l2", 3.0, 0.0, "balanced")])
def test_the_fitted_pipeline_is_the_exact_minimum_as_a_plain_sklearn_model(params):
    """``fit_pipeline``'s logistic regression is the minimum saga reaches only far past kwx's TOL, and it is the
    LogisticRegression ``make_logit`` describes: saved, served and loaded without glum or kwx."""
    X, y, _ = _data()
    ours = fit_pipeline(X, y, params, seed=1)
    exact = make_pipeline(params, seed=1).set_params(logit__tol=1e-10, logit__max_iter=200_000).fit(X, y)
    at_tol = make_pipeline(params, seed=1).fit(X, y)  # what kwx served before: saga stopped at TOL
    gap = np.abs(ours.decision_function(X) - exact.decision_function(X)).max()
    assert gap < 2e-4 < np.abs(at_tol.decision_function(X) - exact.decision_function(X)).max()
    np.testing.assert_allclose(ours.predict_proba(X), exact.predict_proba(X), atol=1e-4)
    logit = ours.named_steps["logit"]
    assert type(logit) is LogisticRegression and logit.get_params() == make_logit(params, seed=1).get_params()
    assert logit.coef_.shape == (1, X.shape[1]) and logit.intercept_.shape == (1,) and logit.n_iter_[0] >= 1
    np.testing.assert_array_equal(logit.classes_, [0, 1])
    assert ours.n_features_in_ == X.shape[1] and list(ours.feature_names_in_) == list(X.columns)


@pytest.mark.parametrize("params", [ModelParams("elasticnet", 0.0, 0.5, "none"),
                                    ModelParams("l1", 0.0, 1.0, "balanced"),
                                    ModelParams("l2", 0.0, 0.0, "none")])
def test_a_path_scores_each_C_as_the_exact_fit_does(params):
    X, y, groups = _data()
    fold = prepare_folds(X, y, group_folds(groups, 4))[1]
    Cs = np.geomspace(1e-3, 10, 9)
    path = regularization_path(fold, params, Cs)
    weight = None if params.class_weight == "none" else params.class_weight
    exact = []
    for C in Cs[2:]:  # saga, converged far past kwx's TOL (it stalls short of the optimum at the strongest Cs)
        logit = LogisticRegression(solver="saga", C=float(C), l1_ratio=params.l1_ratio, tol=1e-10, max_iter=200_000,
                                   class_weight=weight, random_state=3).fit(fold.X_train, fold.y_train)
        exact.append(log_loss(fold.y_test, logit.predict_proba(fold.X_test)[:, 1]))
    np.testing.assert_allclose(path.losses[2:], exact, atol=5e-5)
    if params.l1_ratio > 0:  # penalised to nothing: the model is the training rows' (weighted) base rate
        w = compute_sample_weight(weight, fold.y_train)
        rate = np.sum(w * fold.y_train) / w.sum()
        assert path.losses[0] == pytest.approx(log_loss(fold.y_test, np.full(len(fold.y_test), rate)), abs=1e-7)
    assert path.unconverged == 0


def test_the_chosen_C_is_the_grid_point_of_least_mean_fold_loss():
    X, y, groups = _data()
    config = _config(trials=6, cv_splits=4, search={"C_path_points": 7})
    result = run_search(X, y, groups, config)
    Cs = c_path(config.search)
    assert Cs[0] == pytest.approx(config.search.C_min) and Cs[-1] == pytest.approx(config.search.C_max)
    assert result.best.C in Cs
    folds = prepare_folds(X, y, group_folds(groups, 4))
    mean = np.mean([regularization_path(fold, result.best, Cs).losses for fold in folds], axis=0)
    assert Cs[np.argmin(mean)] == result.best.C
    assert result.best_cv_log_loss == pytest.approx(mean.min(), rel=1e-12)
    assert "C" not in {c.removeprefix("params_") for c in result.trials.columns if c.startswith("params_")}
    completed = result.trials[result.trials["state"] == "COMPLETE"]
    assert completed["C"].isin(Cs).all()
    assert completed.loc[completed["value"].idxmin(), "C"] == result.best.C
    # a fit is one C of one fold's path: whole paths, at most every fold of every trial
    assert result.fits % len(Cs) == 0 and result.fits <= 6 * 4 * len(Cs)


def test_median_pruning_still_stops_bad_trials():
    X, y, groups = _data()
    # balanced class weights cost log loss on a minority class: those trials fall behind the median
    config = _config(trials=16, cv_splits=4, penalties=["l1", "l2", "elasticnet"])
    result = run_search(X, y, groups, config)
    assert (result.trials["state"] == "PRUNED").any()
    assert (result.trials["state"] == "COMPLETE").sum() >= 5  # the pruner's start-up trials
