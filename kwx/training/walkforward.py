"""One walk-forward window: plan it against the data, search, calibrate, score on its test week.

MLflow-free (the runner logs the ``WindowResult``), so it runs in worker processes and in tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from kwx.config import TrainConfig
from kwx.domain.metrics import reliability, score
from kwx.training.model import fit_calibrated, group_folds, nonzero_coefficients, predict_yes
from kwx.training.search import join_search, run_search
from kwx.training.windows import Window, plan_windows


@dataclass(frozen=True)
class WindowPlan:
    window: Window
    n_train: int
    n_test: int
    train_days: int
    test_days: int
    skip_reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.skip_reason is None


def sample_rows(frame: pd.DataFrame, every_minutes: int) -> pd.DataFrame:
    """Candles ending on a multiple of N minutes: a fixed clock grid, the same for every market."""
    if every_minutes == 1:
        return frame
    return frame[(frame["end_period_ts"] // 60) % every_minutes == 0]


def _between(frame: pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    days = frame["event_date"]
    return frame[(days >= first) & (days <= last)]


def plan(config: TrainConfig, frame: pd.DataFrame) -> list[WindowPlan]:
    """Every window of the config with its row counts; a window that cannot train says why."""
    labelled = frame[frame["label"].notna()]
    plans = []
    for window in plan_windows(config.start, config.end, config.train_days, config.test_days, config.step_days):
        train = _between(labelled, window.train_start, window.train_end)
        test = _between(labelled, window.test_start, window.test_end)
        train_days, test_days = train["event_date"].nunique(), test["event_date"].nunique()
        reason = None
        if train_days < config.cv_splits:
            reason = f"{train_days} settled training days, fewer than cv_splits={config.cv_splits}"
        elif train["label"].nunique() < 2:
            reason = "training labels are all one class"
        elif test.empty:
            reason = "no settled test rows"
        else:
            reason = _single_class_fold(train, config.cv_splits)
        plans.append(WindowPlan(window, len(train), len(test), train_days, test_days, reason))
    return plans


def _single_class_fold(train: pd.DataFrame, cv_splits: int) -> str | None:
    """A fold whose training part holds one class cannot fit a classifier (rare YES brackets, short windows)."""
    labels = train["label"].to_numpy()
    for k, (fit_rows, _) in enumerate(group_folds(train["event_date"].to_numpy(), cv_splits)):
        if np.unique(labels[fit_rows]).size < 2:
            return f"cross-validation fold {k + 1} of {cv_splits} trains on one label class only"
    return None


@dataclass
class WindowResult:
    window: Window
    params: dict[str, object]
    metrics: dict[str, float]
    reliability: dict[str, list[float]]
    predictions: pd.DataFrame
    trials: pd.DataFrame
    model: object
    input_example: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)


def search_window(
    frame: pd.DataFrame, features: list[str], config: TrainConfig, window_plan: WindowPlan, *,
    optuna_storage, study_prefix: str,
) -> int:
    """A search worker's share of one window's shared study (``optuna_storage``); returns its trial count."""
    window = window_plan.window
    train = _between(frame, window.train_start, window.train_end)
    return join_search(train[features], train["label"].to_numpy(dtype=int), train["event_date"].to_numpy(), config,
                       storage=optuna_storage, study_name=f"{study_prefix}-{window.name}")


def train_window(
    frame: pd.DataFrame, features: list[str], config: TrainConfig, window_plan: WindowPlan, *,
    optuna_storage=None, study_prefix: str = "kwx",
) -> WindowResult:
    """Search, calibrate and score one window; ``frame`` holds labelled rows of (at least) this window.

    ``optuna_storage`` (``search.make_storage``; default in-memory) may be shared with search workers.
    """
    window = window_plan.window
    train = _between(frame, window.train_start, window.train_end)
    test = _between(frame, window.test_start, window.test_end)
    X, y, groups = train[features], train["label"].to_numpy(dtype=int), train["event_date"].to_numpy()

    started = time.perf_counter()
    search = run_search(X, y, groups, config, storage=optuna_storage, study_name=f"{study_prefix}-{window.name}")
    searched = time.perf_counter()
    model, method, report = fit_calibrated(X, y, groups, search.best, config.calibration, config.cv_splits,
                                           config.seed)
    fitted = time.perf_counter()

    p_model = predict_yes(model, test[features])
    y_test = test["label"].to_numpy(dtype=int)
    p_market = np.clip(test["yes_mid"].to_numpy(dtype=float) / 100, 0, 1)
    quoted = ~np.isnan(p_market)
    metrics = {f"test_{k}": v for k, v in score(y_test, p_model).items()}
    metrics |= {f"market_{k}": v for k, v in score(y_test[quoted], p_market[quoted]).items() if k != "auc"}
    metrics |= {
        "cv_log_loss": search.best_cv_log_loss,
        "nonzero_coefs": float(nonzero_coefficients(model)),
        "search_fits": float(search.fits),
        "unconverged_fits": float(search.unconverged_fits + (not report.converged)),
        "final_fit_converged": float(report.converged),
    }
    params = {
        **search.best.as_dict(),
        "window": window.name,
        "train_start": window.train_start.isoformat(), "train_end": window.train_end.isoformat(),
        "test_start": window.test_start.isoformat(), "test_end": window.test_end.isoformat(),
        "n_train": len(train), "n_test": len(test), "calibration_method": method,
        "feature_set": config.feature_set, "n_features": len(features),
    }
    predictions = test[["market_ticker", "end_period_ts", "event_date", "yes_mid", "label"]].assign(
        p_model=p_model, p_market=p_market
    )
    return WindowResult(
        window, params, metrics, reliability(y_test, p_model).as_dict(), predictions.reset_index(drop=True),
        search.trials, model, train[features].head(5).reset_index(drop=True),
        {"search_seconds": searched - started, "calibrate_seconds": fitted - searched,
         "fit_seconds_per_fit": (searched - started) / max(search.fits, 1)},
    )
