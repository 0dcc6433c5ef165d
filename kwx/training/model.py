"""The model: impute → scale → ElasticNet logistic regression (saga), calibrated on day-grouped folds.

MLflow-free and deterministic for a seed, so it is unit-tested directly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from kwx.config import Calibration
from kwx.domain.feature_stability import ZERO

# scikit-learn >= 1.8 deprecates `penalty`; the penalty is expressed through l1_ratio alone.
PENALTY_L1_RATIO: dict[str, float] = {"l1": 1.0, "l2": 0.0}
MAX_ITER = 2000
# Measured on the demo windows: 1e-2 instead of 1e-3 changes log loss by < 1e-4 and makes saga 2-3x faster.
TOL = 1e-2

# Types inside a fitted CalibratedClassifierCV(Pipeline) that skops does not trust by default. Kept
# explicit and minimal (a test checks both): anything else in a model must fail loudly, not load.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
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


def make_pipeline(params: ModelParams, seed: int) -> Pipeline:
    logit = LogisticRegression(
        solver="saga", C=params.C, l1_ratio=params.l1_ratio, max_iter=MAX_ITER, tol=TOL,
        class_weight=None if params.class_weight == "none" else params.class_weight, random_state=seed,
    )
    return Pipeline([
        # keep_empty_features: a column that is all-missing in one window still keeps its slot.
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("logit", logit),
    ])


@dataclass
class FitReport:
    converged: bool
    n_iter: int


def fit_quietly(estimator, X: pd.DataFrame, y: np.ndarray) -> FitReport:
    """Fit, turning saga's ConvergenceWarning into a recorded fact instead of log spam."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return FitReport(converged, int(np.max(fitted_logit(estimator).n_iter_)))


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


def fit_calibrated(
    X: pd.DataFrame, y: np.ndarray, groups, params: ModelParams, calibration: Calibration, n_splits: int, seed: int
) -> tuple[CalibratedClassifierCV, str, FitReport]:
    """Refit on the whole window and calibrate on out-of-fold, day-grouped predictions.

    ``ensemble=False``: the served estimator is the pipeline refit on every training row; the
    calibrator is fit on cross-validated predictions, so it never sees in-sample scores. The
    method is chosen from the rows each calibrator fold holds.
    """
    folds = group_folds(groups, n_splits)
    calibration_rows = min(len(test) for _, test in folds)
    method = calibration.method_for(calibration_rows)
    model = CalibratedClassifierCV(make_pipeline(params, seed), method=method, cv=folds, ensemble=False)
    report = fit_quietly(model, X, y)
    return model, method, report


def nonzero_coefficients(model) -> int:
    return int(np.count_nonzero(np.abs(fitted_logit(model).coef_) > ZERO))
