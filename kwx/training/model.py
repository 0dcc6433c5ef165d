"""The model: impute → scale → ElasticNet logistic regression, calibrated on day-grouped folds; the search scores
its hyperparameters along exact regularization paths, and the chosen ones are fit at their exact minimum (glum).

MLflow-free and deterministic for a seed, so it is unit-tested directly.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from glum import GeneralizedLinearRegressor
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from kwx.config import Calibration
from kwx.domain.feature_stability import ZERO

# scikit-learn >= 1.8 deprecates `penalty`; the penalty is expressed through l1_ratio alone.
PENALTY_L1_RATIO: dict[str, float] = {"l1": 1.0, "l2": 0.0}
MAX_ITER = 2000
# saga's, as make_logit describes the model (kwx fits it with glum, ``fit_pipeline``; saga fits only if a caller
# refits the saved estimator): measured on the demo windows, 1e-2 instead of 1e-3 changed log loss by < 1e-4.
TOL = 1e-2

# Types inside a fitted CalibratedClassifierCV(Pipeline) that skops does not trust by default. Kept
# explicit and minimal (a test checks both): anything else in a model must fail loudly, not load.
# Models registered before calibration was bounded (``bound_calibration``) hold a Platt calibrator.
LEGACY_SKOPS_TYPES: tuple[str, ...] = ("sklearn.calibration._SigmoidCalibration",)
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    *LEGACY_SKOPS_TYPES,
)


@dataclass(frozen=True)
class ModelParams:
    penalty: str
    C: float
    l1_ratio: float
    class_weight: str

    def as_dict(self) -> dict[str, object]:
        return {"penalty": self.penalty, "C": self.C, "l1_ratio": self.l1_ratio, "class_weight": self.class_weight}


def l1_ratio_for(penalty: str, searched: float | None = None) -> float:
    if penalty in PENALTY_L1_RATIO:
        return PENALTY_L1_RATIO[penalty]
    if penalty == "elasticnet":
        if searched is None or not 0 <= searched <= 1:
            raise ValueError(f"elasticnet needs a searched l1_ratio in [0, 1], got {searched!r}")
        return searched
    raise ValueError(f"unknown penalty {penalty!r}; expected l1, l2 or elasticnet")


def make_logit(params: ModelParams, seed: int) -> LogisticRegression:
    return LogisticRegression(
        solver="saga", C=params.C, l1_ratio=params.l1_ratio, max_iter=MAX_ITER, tol=TOL,
        class_weight=None if params.class_weight == "none" else params.class_weight, random_state=seed,
    )


def make_preprocessing() -> Pipeline:
    # keep_empty_features: a column that is all-missing in one window still keeps its slot.
    return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler())])


def make_pipeline(params: ModelParams, seed: int) -> Pipeline:
    return Pipeline([*make_preprocessing().steps, ("logit", make_logit(params, seed))])


# glum stops a fit when its gradient's norm is below this: measured on the demo's folds, every C's held-out log
# loss is then within ~1e-4 of an (almost) exact saga fit (tol 1e-5); saga at TOL is up to 6e-3 away.
GRADIENT_TOL = 1e-4


def fit_pipeline(X: pd.DataFrame, y: np.ndarray, params: ModelParams, seed: int) -> Pipeline:
    """``make_pipeline(params, seed)`` fitted to ``X``, ``y``: the preprocessing by scikit-learn, the logistic
    regression's coefficients by glum at the same objective's minimum (``fit_logit``).

    The result is the same scikit-learn pipeline a ``fit`` makes, so it is saved, served and loaded as before; its
    coefficients are the exact minimum's instead of where saga stopped at ``TOL``, and fitting them costs a
    fraction (saga's five fits a window were ~35 % of training).
    """
    pipeline = make_pipeline(params, seed)
    preprocessed = pipeline[:-1].fit_transform(X, y)  # the slice shares its steps: this fits the pipeline's own
    fit_logit(pipeline.named_steps["logit"], np.ascontiguousarray(preprocessed, dtype=np.float64), y)
    return pipeline


def _logistic_glm(l1_ratio: float, **alphas) -> GeneralizedLinearRegressor:
    """glum's logistic regression with an intercept, on predictors kwx has scaled already, to ``GRADIENT_TOL``."""
    return GeneralizedLinearRegressor(family="binomial", l1_ratio=l1_ratio, fit_intercept=True,
                                      scale_predictors=False, gradient_tol=GRADIENT_TOL, **alphas)


def fit_logit(logit: LogisticRegression, X: np.ndarray, y: np.ndarray) -> LogisticRegression:
    """Set ``logit``'s fitted attributes to the minimum of its own objective on ``X``, ``y`` (classes 0 and 1),
    found by glum's IRLS coordinate descent: LogisticRegression minimises C·Σ wᵢ·lossᵢ + penalty, glum the
    sample-weighted mean loss + alpha·penalty, the same minimum at alpha = 1 / (C·Σ wᵢ). Deterministic: no seed.
    An unconverged fit warns ``ConvergenceWarning``, as saga's does."""
    weights = compute_sample_weight(logit.class_weight, y)
    glm = _logistic_glm(logit.l1_ratio, alpha=1 / (logit.C * weights.sum()))
    with threadpool_limits(limits=1):  # one core per process: training runs a process per core
        glm.fit(X, y, sample_weight=weights)
    logit.classes_ = np.unique(y)
    logit.coef_ = np.asarray(glm.coef_, dtype=np.float64).reshape(1, -1)
    logit.intercept_ = np.array([float(glm.intercept_)])
    logit.n_iter_ = np.array([int(glm.n_iter_)], dtype=np.int32)
    logit.n_features_in_ = X.shape[1]
    return logit


@dataclass
class FitReport:
    converged: bool
    n_iter: int
    bounds: tuple[float, float] = (0.0, 1.0)  # the calibrated model's lowest and highest probability
    # every training row's cross-fitted calibrated probability (``cross_fitted_probabilities``)
    out_of_fold: np.ndarray | None = None


def fitted_logit(estimator) -> LogisticRegression:
    """The logistic regression inside a fitted pipeline, or inside a calibrated one (ensemble=False: one)."""
    if isinstance(estimator, CalibratedClassifierCV):
        estimator = estimator.calibrated_classifiers_[0].estimator
    return estimator.named_steps["logit"]


def group_folds(groups, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold positions: every row of one group (climate day) lands in the same fold."""
    n_groups = pd.unique(np.asarray(groups)).size
    if n_groups < n_splits:
        raise ValueError(f"{n_groups} distinct days cannot make {n_splits} folds")
    return list(GroupKFold(n_splits=n_splits).split(np.zeros(len(groups)), groups=groups))


@dataclass(frozen=True)
class PreparedFold:
    """One cross-validation fold imputed and scaled as ``make_pipeline`` does, fitted on the fold's training rows.

    Plain contiguous float64 arrays, so every trial of a window reuses them (and processes could share them).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def prepare_folds(X: pd.DataFrame, y: np.ndarray, folds) -> list[PreparedFold]:
    prepared = []
    for fit_rows, held_out in folds:
        preprocessing = make_preprocessing()
        prepared.append(PreparedFold(
            np.ascontiguousarray(preprocessing.fit_transform(X.iloc[fit_rows]), dtype=np.float64),
            np.ascontiguousarray(y[fit_rows]),
            np.ascontiguousarray(preprocessing.transform(X.iloc[held_out]), dtype=np.float64),
            np.ascontiguousarray(y[held_out])))
    return prepared


@dataclass(frozen=True)
class PathReport:
    losses: np.ndarray  # the fold's held-out log loss at each C of the path
    unconverged: int  # fits along the path that stopped before converging (glum's ConvergenceWarning)


def regularization_path(fold: PreparedFold, params: ModelParams, Cs: np.ndarray) -> PathReport:
    """``params``' penalty, l1_ratio and class weight fit at each C of ``Cs`` (ascending: strong to weak
    regularization), scored on the fold's held-out rows.

    glum's IRLS coordinate descent sweeps the path, each fit starting from the previous C's solution. Its
    objective is the sample-weighted mean loss + alpha·penalty, LogisticRegression's is C·Σ wᵢ·lossᵢ + penalty: the
    same minimum at alpha = 1 / (C·Σ wᵢ) (``fit_logit``). Deterministic: no seed.
    """
    weights = compute_sample_weight(None if params.class_weight == "none" else params.class_weight, fold.y_train)
    glm = _logistic_glm(params.l1_ratio, alpha_search=True, alphas=1 / (Cs * weights.sum()))
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):  # one core per process
        warnings.simplefilter("always", ConvergenceWarning)
        glm.fit(fold.X_train, fold.y_train, sample_weight=weights)
    losses = [decision_log_loss(fold.y_test, fold.X_test @ coef + intercept)
              for coef, intercept in zip(glm.coef_path_, glm.intercept_path_, strict=True)]
    return PathReport(np.array(losses), sum(issubclass(w.category, ConvergenceWarning) for w in caught))


def decision_log_loss(y: np.ndarray, decision: np.ndarray) -> float:
    """Mean log loss of a logistic model from its decision values: log(1 + e^d) - y·d, exact at any d."""
    return float(np.mean(np.logaddexp(0.0, decision) - y * decision))


def fit_calibrated(
    X: pd.DataFrame, y: np.ndarray, groups, params: ModelParams, calibration: Calibration, n_splits: int, seed: int
) -> tuple[CalibratedClassifierCV, str, FitReport]:
    """Refit on the whole window and calibrate on out-of-fold, day-grouped decision values.

    The model ``CalibratedClassifierCV(make_pipeline(params, seed), cv=folds, ensemble=False).fit`` builds: the
    served estimator is the pipeline refit on every training row; the calibrator is fit on cross-validated
    decision values, so it never sees in-sample scores. The method is chosen from the rows each calibrator fold
    holds. Each fold is fit once (``fit`` would fit them again for ``out_of_fold_decisions``): the same decision
    values fit the calibrator, bound it and cross-fit the scores. ``converged``: every one of those fits.
    """
    folds = group_folds(groups, n_splits)
    calibration_rows = min(len(test) for _, test in folds)
    method = calibration.method_for(calibration_rows, min(outcome_days(groups[held_out], y[held_out])
                                                          for _, held_out in folds))
    with warnings.catch_warnings(record=True) as caught:  # a ConvergenceWarning: a recorded fact, not log spam
        warnings.simplefilter("always", ConvergenceWarning)
        decisions = out_of_fold_decisions(X, y, folds, params, seed)
        refit = fit_pipeline(X, y, params, seed)
    report = FitReport(converged=not any(issubclass(w.category, ConvergenceWarning) for w in caught),
                       n_iter=int(np.max(fitted_logit(refit).n_iter_)))
    model = calibrated_model(make_pipeline(params, seed), refit, decisions, y, method, folds)
    report.bounds = bound_calibration(model, decisions, y, calibration.prior_rows, calibration.probability_floor)
    report.out_of_fold = cross_fitted_probabilities(decisions, y, folds, method, calibration.prior_rows,
                                                    calibration.probability_floor)
    return model, method, report


def calibrated_model(estimator: Pipeline, refit: Pipeline, decisions: np.ndarray, y: np.ndarray, method: str,
                     folds) -> CalibratedClassifierCV:
    """What ``CalibratedClassifierCV(estimator, method=method, cv=folds, ensemble=False).fit(X, y)`` returns
    when its cross-validated decision values are ``decisions`` and its refit of ``estimator`` is ``refit``:
    only the calibrator is fit here. (It still says 0 and 1: ``bound_calibration``.)

    The parts are sklearn's private classes, as the skops types above name them; a test holds the result to
    what ``fit`` builds.
    """
    model = CalibratedClassifierCV(estimator, method=method, cv=folds, ensemble=False)
    model.classes_ = np.unique(y)
    calibrator = IsotonicRegression(out_of_bounds="clip") if method == "isotonic" else _SigmoidCalibration()
    calibrator.fit(decisions, (y == model.classes_[1]).astype(int))
    model.calibrated_classifiers_ = [_CalibratedClassifier(refit, [calibrator], classes=model.classes_,
                                                           method=method)]
    for fitted in ("n_features_in_", "feature_names_in_"):  # as fit copies them: names only from a frame
        if hasattr(refit, fitted):
            setattr(model, fitted, getattr(refit, fitted))
    return model


def outcome_days(groups, y: np.ndarray) -> int:
    """Days of the rarer outcome: how many climate days hold a winning row, or a losing one, if fewer.

    A market's rows share one outcome, and a day's brackets are one draw of the weather, so these days,
    not rows, are the independent outcomes a calibrator learns from.
    """
    days = pd.DataFrame({"day": np.asarray(groups), "won": np.asarray(y)}).drop_duplicates()
    return int(min((days["won"] == 1).sum(), (days["won"] == 0).sum()))


def out_of_fold_decisions(X: pd.DataFrame, y: np.ndarray, folds, params: ModelParams, seed: int) -> np.ndarray:
    """Each fold's rows scored by a pipeline fit on the others: the values ``CalibratedClassifierCV(cv=folds)``
    calibrates on (the same folds and parameters), each fold's pipeline fit by ``fit_pipeline``.
    """
    decisions = np.empty(len(y))
    for fit_rows, held_out in folds:
        pipeline = fit_pipeline(X.iloc[fit_rows], y[fit_rows], params, seed)
        decisions[held_out] = pipeline.decision_function(X.iloc[held_out])
    return decisions


# Points a Platt (sigmoid) map is tabulated on: linear interpolation between them is within ~1e-5 of it.
SIGMOID_KNOTS = 1024


def bound_calibration(model: CalibratedClassifierCV, decisions: np.ndarray, y: np.ndarray,
                      prior_rows: float, floor: float = 0.0) -> tuple[float, float]:
    """Keep the calibrated probability inside (0, 1) by what the calibration data can support.

    Isotonic calibration fits each bin of decision values its observed rate, so a pure bin says
    exactly 0 or 1 — certainty no finite sample earns. Each bin's rate becomes a Bayesian estimate
    with ``prior_rows`` pseudo-rows at the base rate, (k + m·π) / (n + m), then re-pooled so the map
    stays monotone. A Platt map is bounded the same way as if all N calibration rows were one pure
    bin, and tabulated over the decision values the calibration saw (held at its ends beyond them,
    as isotonic maps are). Probabilities then stay within [``floor``, 1 − ``floor``]: pseudo-rows shrink a bin
    by its size, so a bin of tens of thousands of rows may still say 10⁻⁵, which its handful of independent
    days cannot support. Either way the calibrator becomes a plain ``IsotonicRegression``, so the
    registered artifact, ``predict_yes`` and ``mlflow models serve`` all give the bounded values.
    Returns the map's lowest and highest probability.
    """
    calibrated = model.calibrated_classifiers_[0]
    calibrator = calibrated.calibrators[0]
    if isinstance(calibrator, IsotonicRegression):
        bounded = _bounded_isotonic(calibrator, decisions, y, prior_rows, floor)
    else:
        bounded = _bounded_platt(_calibration_function(calibrator), decisions, y, prior_rows, floor)
    calibrated.calibrators[0] = bounded
    return float(bounded.y_thresholds_.min()), float(bounded.y_thresholds_.max())


def _check_prior_rows(prior_rows: float) -> None:
    if prior_rows <= 0:
        raise ValueError(f"prior_rows must be > 0, got {prior_rows}")


def _bounded_isotonic(calibrator: IsotonicRegression, decisions: np.ndarray, y: np.ndarray,
                      prior_rows: float, floor: float) -> IsotonicRegression:
    _check_prior_rows(prior_rows)
    base_rate = float(np.mean(y))
    fitted = calibrator.predict(decisions)
    rates, rows_in_bin = np.unique(fitted, return_counts=True)
    positives = np.bincount(np.searchsorted(rates, fitted), weights=y, minlength=len(rates))
    shrunk = (positives + prior_rows * base_rate) / (rows_in_bin + prior_rows)
    # shrinking toward the base rate can reorder a small bin and its neighbour: pool them again
    shrunk = IsotonicRegression().fit(rates, shrunk, sample_weight=rows_in_bin + prior_rows).predict(rates)
    values = np.clip(np.interp(calibrator.y_thresholds_, rates, shrunk), floor, 1 - floor)
    # y_min/y_max clip the refit's pooled means too: averaging many floor values can land an ulp below it
    return IsotonicRegression(out_of_bounds="clip", y_min=floor, y_max=1 - floor).fit(calibrator.X_thresholds_, values)


def _bounded_platt(platt: Callable[[np.ndarray], np.ndarray], decisions: np.ndarray, y: np.ndarray,
                   prior_rows: float, floor: float) -> IsotonicRegression:
    _check_prior_rows(prior_rows)
    base_rate = float(np.mean(y))
    low = max(prior_rows * base_rate / (len(y) + prior_rows), floor)
    high = min(1 - prior_rows * (1 - base_rate) / (len(y) + prior_rows), 1 - floor)
    knots = np.linspace(decisions.min(), decisions.max(), SIGMOID_KNOTS)
    values = np.clip(platt(knots), low, high)
    return IsotonicRegression(out_of_bounds="clip", increasing=bool(values[-1] >= values[0]), y_min=low,
                              y_max=high).fit(knots, values)


def _fitted_platt(decisions: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Platt scaling: a one-feature logistic regression of the labels on the decision values."""
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(decisions.reshape(-1, 1), y)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    return lambda decision: expit(a * decision + b)


def cross_fitted_probabilities(decisions: np.ndarray, y: np.ndarray, folds, method: str,
                               prior_rows: float, floor: float = 0.0) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each fold's out-of-fold decision values mapped by a bounded
    calibrator (``method``) fit on the other folds only.

    The served calibrator is fit on every fold's decisions, so scoring it on them would grade it on what it
    memorised; cross-fitting gives the honest cross-validated scores a forward window is gated on.
    """
    p = np.empty(len(y))
    for fit_rows, held_out in folds:
        d, labels = decisions[fit_rows], y[fit_rows]
        if np.unique(labels).size < 2:  # a fold of one class: the bounded base rate is all it can say
            p[held_out] = np.clip((labels.sum() + prior_rows * labels.mean()) / (len(labels) + prior_rows),
                                  floor, 1 - floor)
            continue
        if method == "isotonic":
            bounded = _bounded_isotonic(IsotonicRegression(out_of_bounds="clip").fit(d, labels), d, labels,
                                        prior_rows, floor)
        else:
            bounded = _bounded_platt(_fitted_platt(d, labels), d, labels, prior_rows, floor)
        p[held_out] = bounded.predict(decisions[held_out])
    return p


# A compiled model must agree with sklearn to this tolerance on its probe rows, or it is not used.
COMPILED_TOLERANCE = 1e-12
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class YesProbability:
    """P(label = 1) of one fitted model, over float rows holding its ``columns`` in that order."""

    columns: tuple[str, ...]
    of_rows: Callable[[np.ndarray], np.ndarray]
    compiled: bool

    def __call__(self, X: pd.DataFrame) -> np.ndarray:
        missing = [name for name in self.columns if name not in X.columns]
        if missing:
            raise ValueError(f"feature rows lack the model's columns {missing}")
        return self.of_rows(X[list(self.columns)].to_numpy(dtype=float))


def predict_yes(model, X: pd.DataFrame) -> np.ndarray:
    """``model.predict_proba(X)[:, 1]``, with X's columns matched by name: the only way kwx asks a model."""
    return yes_probability(model)(X)


def yes_probability(model) -> YesProbability:
    """The model's P(yes), compiled once per model object.

    Training scores, backtests, replay and the live loop all predict through this, so they share
    one path. Our own model structure is evaluated with plain numpy, because sklearn's per-call input
    validation costs milliseconds and the live loop predicts a few rows per model every minute.
    """
    try:
        return _compiled[model]
    except KeyError:
        _compiled[model] = compiled = compile_yes_probability(model)
        return compiled


def compile_yes_probability(model) -> YesProbability:
    """Numpy evaluation of a calibrated impute → scale → logit model; sklearn's own ``predict_proba`` otherwise.

    Recognised: ``CalibratedClassifierCV(ensemble=False)`` over the ``make_pipeline`` structure, two
    classes, sigmoid or isotonic calibration. The compiled function is checked against
    ``predict_proba`` on probe rows (NaNs included) before it is used; on any disagreement, or
    for any other estimator, sklearn does the work.
    """
    if not hasattr(model, "feature_names_in_"):
        raise ValueError(f"{type(model).__name__} was fitted without column names; kwx models are fitted on "
                         "named feature frames")
    columns = tuple(model.feature_names_in_)

    def with_sklearn(rows: np.ndarray) -> np.ndarray:
        return model.predict_proba(pd.DataFrame(rows, columns=list(columns)))[:, 1]

    parts = _linear_parts(model)
    if parts is None:
        return YesProbability(columns, with_sklearn, compiled=False)
    fill, mean, scale, coef, intercept, calibrate = parts

    def compiled(rows: np.ndarray) -> np.ndarray:
        rows = np.where(np.isnan(rows), fill, rows)
        p = calibrate(((rows - mean) / scale) @ coef + intercept)
        # as sklearn: a probability an ulp above 1 from the calibrator's arithmetic is 1
        p[(p > 1.0) & (p <= 1.0 + 1e-5)] = 1.0
        return p

    probe = _probe_rows(fill, scale)
    if not np.allclose(compiled(probe), with_sklearn(probe), rtol=0, atol=COMPILED_TOLERANCE):
        warnings.warn("compiled model disagrees with predict_proba; using scikit-learn", RuntimeWarning,
                      stacklevel=2)
        return YesProbability(columns, with_sklearn, compiled=False)
    return YesProbability(columns, compiled, compiled=True)


def _linear_parts(model):
    """(impute fill, scaler mean, scaler scale, coef, intercept, calibration function) of our structure, else None."""
    if not (isinstance(model, CalibratedClassifierCV) and len(model.calibrated_classifiers_) == 1
            and len(model.classes_) == 2):
        return None
    calibrated = model.calibrated_classifiers_[0]
    pipeline = calibrated.estimator
    calibrate = _calibration_function(calibrated.calibrators[0]) if len(calibrated.calibrators) == 1 else None
    if calibrate is None:
        return None
    if not (isinstance(pipeline, Pipeline) and [type(step) for _, step in pipeline.steps]
            == [SimpleImputer, StandardScaler, LogisticRegression]):
        return None
    imputer, scaler, logit = (step for _, step in pipeline.steps)
    # an imputer that drops all-missing columns (keep_empty_features=False) changes the column count
    if not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values)
            and not imputer.add_indicator and not np.isnan(imputer.statistics_).any()
            and logit.coef_.shape == (1, len(imputer.statistics_))):
        return None
    n = len(imputer.statistics_)
    mean = np.zeros(n) if scaler.mean_ is None else scaler.mean_
    scale = np.ones(n) if scaler.scale_ is None else scaler.scale_
    return imputer.statistics_, mean, scale, logit.coef_[0], logit.intercept_[0], calibrate


def _calibration_function(calibrator) -> Callable[[np.ndarray], np.ndarray] | None:
    """The calibrator's map from decision values to probabilities, without sklearn's input checks."""
    # by name: sklearn's Platt calibrator is private, so an import could break where this check only misses
    if type(calibrator).__name__ == "_SigmoidCalibration":
        a, b = calibrator.a_, calibrator.b_
        return lambda decision: expit(-(a * decision + b))
    if isinstance(calibrator, IsotonicRegression) and calibrator.out_of_bounds == "clip":
        # np.interp holds the end values outside the thresholds, as out_of_bounds="clip" does
        x, y = calibrator.X_thresholds_, calibrator.y_thresholds_
        return lambda decision: np.interp(decision, x, y)
    return None


def _probe_rows(fill: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows spread around the training distribution; every other row misses one value, each column in turn."""
    rng = np.random.default_rng(0)
    rows = fill + rng.normal(0, 3, size=(64, len(fill))) * scale
    gappy = np.arange(0, 64, 2)
    rows[gappy, (gappy // 2) % len(fill)] = np.nan
    return rows


def nonzero_coefficients(model) -> int:
    return int(np.count_nonzero(np.abs(fitted_logit(model).coef_) > ZERO))
