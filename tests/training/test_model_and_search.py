"""Search space mapping, day-grouped folds, calibration switch, skops trust list (MLflow-free)."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression

from kwx.config import Calibration, TrainConfig
from kwx.training import model as model_module
from kwx.training.model import (
    LEGACY_SKOPS_TYPES,
    SKOPS_TRUSTED_TYPES,
    ModelParams,
    bound_calibration,
    calibrated_model,
    fit_calibrated,
    fit_logit,
    fit_pipeline,
    group_folds,
    l1_ratio_for,
    make_pipeline,
    nonzero_coefficients,
    out_of_fold_decisions,
    outcome_days,
)
from kwx.training.search import run_search, suggest_params

BASE = {"city": "chicago", "bracket": "between", "start": "2025-05-01", "end": "2025-09-23"}


def _config(**changes) -> TrainConfig:
    return TrainConfig.model_validate({**BASE, **changes})


def _data(n_days=12, per_day=60, seed=0):
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "empty": np.nan})
    y = (X["a"] + 0.5 * rng.normal(size=n) > 0.3).astype(int).to_numpy()
    groups = np.repeat(pd.date_range("2025-07-01", periods=n_days).date, per_day)
    return X, y, groups


@pytest.mark.parametrize(("penalty", "expected"), [("l1", 1.0), ("l2", 0.0)])
def test_fixed_penalties_map_to_l1_ratio_without_searching_it(penalty, expected):
    trial = optuna.trial.FixedTrial({"penalty": penalty, "class_weight": "none"})
    params = suggest_params(trial, _config(penalties=[penalty], search={"C_min": 0.5}))
    assert params == ModelParams(penalty, 0.5, expected, "none")  # C: where every trial's path starts
    assert set(trial.params) == {"penalty", "class_weight"}  # C is swept along the path, not drawn


def test_elasticnet_searches_l1_ratio_within_the_configured_range():
    config = _config(penalties=["elasticnet"], search={"l1_ratio_min": 0.2, "l1_ratio_max": 0.4})
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    for _ in range(15):
        trial = study.ask()
        params = suggest_params(trial, config)
        assert 0.2 <= params.l1_ratio <= 0.4 and params.l1_ratio == trial.params["l1_ratio"]
        assert "C" not in trial.params
        study.tell(trial, 0.0)


def test_l1_ratio_mapping_rejects_nonsense():
    assert l1_ratio_for("elasticnet", 0.3) == 0.3
    with pytest.raises(ValueError, match="elasticnet needs"):
        l1_ratio_for("elasticnet")
    with pytest.raises(ValueError, match="unknown penalty"):
        l1_ratio_for("lasso")


def test_pipeline_uses_saga_and_no_deprecated_penalty():
    logit = make_pipeline(ModelParams("l1", 1.0, 1.0, "balanced"), seed=3).named_steps["logit"]
    assert logit.solver == "saga" and logit.l1_ratio == 1.0 and logit.class_weight == "balanced"
    assert logit.get_params()["penalty"] == "deprecated"


def test_group_folds_never_split_a_day():
    _, _, groups = _data()
    folds = group_folds(groups, 4)
    assert len(folds) == 4
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(groups)))
    with pytest.raises(ValueError, match="12 distinct days cannot make 13 folds"):
        group_folds(groups, 13)


@pytest.mark.parametrize(("events", "expected"), [(3, "isotonic"), (4, "sigmoid")])
def test_isotonic_needs_enough_outcome_days_not_just_rows(events, expected):
    X, y, groups = _data()  # each calibration fold holds 3 days, each with winning and losing rows
    _, method, _ = fit_calibrated(X, y, groups, ModelParams("l2", 1.0, 0.0, "none"),
                                  Calibration(isotonic_min_rows=1, isotonic_min_events=events), n_splits=4, seed=0)
    assert method == expected


def test_outcome_days_count_the_rarer_outcomes_days():
    days = np.repeat(np.array(["d1", "d2", "d3", "d4"]), 3)
    won = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0])  # wins on d1 and d3; losses on d2, d3, d4
    assert outcome_days(days, won) == 2
    assert outcome_days(days, np.zeros(12)) == 0


@pytest.mark.parametrize(("threshold", "expected"), [(180, "isotonic"), (181, "sigmoid")])
def test_calibration_switches_at_the_threshold(threshold, expected):
    X, y, groups = _data()  # 12 days x 60 rows in 4 folds: each calibration fold holds 180 rows
    model, method, report = fit_calibrated(X, y, groups, ModelParams("l2", 1.0, 0.0, "none"),
                                           Calibration(isotonic_min_rows=threshold, isotonic_min_events=1),
                                           n_splits=4, seed=0)
    assert method == expected and report.converged
    assert model.method == expected
    p = model.predict_proba(X)[:, 1]
    assert ((p >= 0) & (p <= 1)).all()
    assert nonzero_coefficients(model) >= 1


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_the_assembled_model_is_what_calibrated_classifier_cv_fits(method):
    """``calibrated_model`` builds sklearn's fitted object from parts; it must be the one ``fit`` makes."""
    X, y, groups = _data()
    params, folds = ModelParams("elasticnet", 1.0, 0.5, "balanced"), group_folds(groups, 4)
    with pytest.MonkeyPatch.context() as patch:  # sklearn's fit, its logistic regressions fit as kwx fits them
        patch.setattr(LogisticRegression, "fit", lambda self, X, y: fit_logit(self, np.ascontiguousarray(X), y))
        fitted = CalibratedClassifierCV(make_pipeline(params, 0), method=method, cv=folds, ensemble=False).fit(X, y)
    built = calibrated_model(make_pipeline(params, 0), fit_pipeline(X, y, params, 0),
                             out_of_fold_decisions(X, y, folds, params, 0), y, method, folds)
    assert type(built) is type(fitted) and built.method == method and not built.ensemble and built.cv is folds
    assert {k for k in vars(built) if k.endswith("_")} == {k for k in vars(fitted) if k.endswith("_")}
    np.testing.assert_array_equal(built.classes_, fitted.classes_)
    np.testing.assert_array_equal(built.feature_names_in_, fitted.feature_names_in_)
    assert built.n_features_in_ == fitted.n_features_in_
    (ours,), (theirs,) = built.calibrated_classifiers_, fitted.calibrated_classifiers_
    assert type(ours) is type(theirs) and ours.method == theirs.method
    assert [type(c) for c in ours.calibrators] == [type(c) for c in theirs.calibrators]
    np.testing.assert_array_equal(built.predict_proba(X), fitted.predict_proba(X))
    # and so fit_calibrated serves what it served when CalibratedClassifierCV fit the folds itself
    calibration = Calibration(isotonic_min_rows=1 if method == "isotonic" else 10**6, isotonic_min_events=1)
    served, served_method, _ = fit_calibrated(X, y, groups, params, calibration, 4, 0)
    bound_calibration(fitted, out_of_fold_decisions(X, y, folds, params, 0), y, calibration.prior_rows,
                      calibration.probability_floor)
    assert served_method == method
    np.testing.assert_array_equal(served.predict_proba(X), fitted.predict_proba(X))


def test_calibration_fits_each_fold_once(monkeypatch):
    """CalibratedClassifierCV.fit fits every fold for the calibrator and out_of_fold_decisions fit them all again
    for the bounds and the cross-fitted scores: one set of fold fits serves all three, then the refit."""
    X, y, groups = _data()
    fits = []
    fit = model_module.fit_logit
    monkeypatch.setattr(model_module, "fit_logit", lambda logit, *a: fits.append(logit) or fit(logit, *a))
    model, _, _ = fit_calibrated(X, y, groups, ModelParams("elasticnet", 1.0, 0.5, "none"), Calibration(), 4, 0)
    assert len(fits) == 4 + 1
    assert fits[-1] is model.calibrated_classifiers_[0].estimator.named_steps["logit"]


def test_search_is_deterministic_for_a_seed():  # pruning: test_path_search
    X, y, groups = _data()
    config = _config(trials=8, cv_splits=3, penalties=["l1", "l2", "elasticnet"])
    a = run_search(X, y, groups, config)
    b = run_search(X, y, groups, config)
    assert a.best == b.best and a.best_cv_log_loss == b.best_cv_log_loss
    assert a.trials.drop(columns="duration").equals(b.trials.drop(columns="duration"))
    assert len(a.trials) == 8 and a.fits <= 8 * 3 * config.search.C_path_points  # a fit: one C of a fold's path
    assert set(a.trials["state"]) <= {"COMPLETE", "PRUNED"}


def test_skops_trusted_types_are_exactly_what_models_need():
    X, y, groups = _data()
    needed = set()
    for threshold in (1, 10**6):  # isotonic and sigmoid
        model, _, _ = fit_calibrated(X, y, groups, ModelParams("elasticnet", 1.0, 0.5, "balanced"),
                                     Calibration(isotonic_min_rows=threshold, isotonic_min_events=1), n_splits=3,
                                     seed=0)
        needed |= set(sio.get_untrusted_types(data=sio.dumps(model)))
        loaded = sio.loads(sio.dumps(model), trusted=list(SKOPS_TRUSTED_TYPES))
        np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))
    assert needed | set(LEGACY_SKOPS_TYPES) == set(SKOPS_TRUSTED_TYPES)
