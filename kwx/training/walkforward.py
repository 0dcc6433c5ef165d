"""One walk-forward window: plan it against the data, search, calibrate, score on its test week.

MLflow-free (the runner logs the ``WindowResult``), so it runs in worker processes and in tests.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from kwx.config import TrainConfig
from kwx.domain.markets import with_locked_outcomes
from kwx.domain.metrics import SCORES, brier_skill, prefixed_scores, reliability
from kwx.domain.windows import Window, plan_windows
from kwx.plots import reliability_diagram
from kwx.training.model import fit_calibrated, group_folds, nonzero_coefficients, predict_yes
from kwx.training.search import join_search, run_search


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


FINGERPRINTED_COLUMNS = ["market_ticker", "end_period_ts", "yes_bid", "yes_ask", "label"]


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Rows' identity for MLflow: their markets, minutes, quotes and labels, hashed."""
    hashed = pd.util.hash_pandas_object(frame[FINGERPRINTED_COLUMNS], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def _training_rows(frame: pd.DataFrame, window: Window) -> pd.DataFrame:
    """The window's training days without their locked rows: the settlement rule already answers those,
    so they teach the model nothing it may use and would pull its fit toward a step it cannot draw."""
    train = _between(frame, window.train_start, window.train_end)
    return train[~train["locked"].to_numpy(dtype=bool)]


def train_test_rows(frame: pd.DataFrame, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows ``window`` trains on and the rows it is tested on."""
    return _training_rows(frame, window), _between(frame, window.test_start, window.test_end)


def plan(config: TrainConfig, frame: pd.DataFrame, *, windows: list[Window] | None = None) -> list[WindowPlan]:
    """Every window of the config (or ``windows``) with its row counts; a window that cannot train says why.

    A window whose test period starts after the last settled day is a forward window: it trains without
    test rows (``kwx retrain``) and is scored once its week has settled (``kwx monitor``).
    """
    labelled = frame[frame["label"].notna()]
    plans = []
    if windows is None:
        windows = plan_windows(config.start, config.end, config.train_days, config.test_days, config.step_days)
    last_settled = labelled["event_date"].max() if len(labelled) else None
    for window in windows:
        train = _training_rows(labelled, window)
        test = _between(labelled, window.test_start, window.test_end)
        train_days, test_days = train["event_date"].nunique(), test["event_date"].nunique()
        reason = None
        if train_days < config.cv_splits:
            reason = f"{train_days} settled training days, fewer than cv_splits={config.cv_splits}"
        elif train["label"].nunique() < 2:
            reason = "training labels are all one class"
        elif test.empty and (last_settled is None or window.test_start <= last_settled):
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


def window_scores(y: np.ndarray, p_model: np.ndarray, p_market: np.ndarray, locked: np.ndarray,
                  days: np.ndarray) -> dict[str, float]:
    """A window's test-week scores: over all rows (``test_*``, ``market_*``) and over the rows the
    settlement rule leaves open (``*_unlocked_*``), where the model alone speaks; ``test_unlocked_days``
    counts the climate days behind those (the independent outcomes a window's ECE rests on).

    ``test_brier_skill`` = 1 − Brier_model / Brier_market and ``test_beats_market`` (1 or 0) compare
    the two on the open rows where the market quotes: what promotion asks the model to add.
    """
    quoted = ~np.isnan(p_market)
    open_quoted = quoted & ~locked
    market_keys = tuple(k for k in SCORES if k != "auc")
    metrics = prefixed_scores("test", y, p_model)
    metrics |= prefixed_scores("market", y[quoted], p_market[quoted], market_keys)
    metrics |= prefixed_scores("test_unlocked", y[~locked], p_model[~locked])
    metrics |= prefixed_scores("market_unlocked", y[open_quoted], p_market[open_quoted], market_keys)
    skill = brier_skill(y[open_quoted], p_model[open_quoted], p_market[open_quoted])
    metrics["test_brier_skill"] = skill
    # beating a market whose Brier is 0 is impossible: NaN skill there counts as not beating it
    metrics["test_beats_market"] = float(skill > 0) if open_quoted.any() else float("nan")
    metrics["test_unlocked_days"] = float(pd.unique(np.asarray(days, dtype=object)[~locked]).size)
    metrics["test_locked_fraction"] = float(np.mean(locked))
    metrics["test_at_bounds_fraction"] = float(np.mean((p_model[~locked] <= 0) | (p_model[~locked] >= 1))) \
        if (~locked).any() else 0.0
    return metrics


PREDICTION_COLUMNS = ("market_ticker", "end_period_ts", "event_date", "yes_mid", "locked", "label", "p_model",
                      "p_market")


def _market_probability(rows: pd.DataFrame) -> np.ndarray:
    """The market's probability of YES: the quote's mid, NaN where one side is missing."""
    return np.clip(rows["yes_mid"].to_numpy(dtype=float) / 100, 0, 1)


def cv_scores(y: np.ndarray, p_out_of_fold: np.ndarray, p_market: np.ndarray) -> dict[str, float]:
    """Cross-validated scores of the calibrated model on its (unlocked) training rows, beside the market's on
    the rows it quotes: ``cv_calibrated_*``, ``cv_market_*`` and ``cv_brier_skill``. What a forward window,
    whose test week is still ahead, is gated on (``kwx.lifecycle.policy``)."""
    quoted = ~np.isnan(p_market)
    metrics = prefixed_scores("cv_calibrated", y, p_out_of_fold, ("log_loss", "brier", "ece", "auc"))
    metrics |= prefixed_scores("cv_market", y[quoted], p_market[quoted], ("log_loss", "brier", "ece"))
    metrics["cv_brier_skill"] = brier_skill(y[quoted], p_out_of_fold[quoted], p_market[quoted])
    return metrics


@dataclass(frozen=True)
class ScoredRows:
    """A model scored on settled rows: ``window_scores`` metrics, the per-row predictions and the
    reliability curves ("model" over all rows, "market" over the rows it quotes)."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    curves: dict[str, dict[str, list[float]]]


def score_test_rows(model, rows: pd.DataFrame, features: list[str]) -> ScoredRows:
    """Score ``model`` on labelled dataset rows (``load_dataset`` columns) the way a window's test week is
    scored: locked rows take their decided outcome, the market is ``yes_mid``. Training's test metrics and
    `kwx monitor`'s realized metrics both come from here, so the two are the same numbers."""
    locked = rows["locked"].to_numpy(dtype=bool)
    p_model = with_locked_outcomes(predict_yes(model, rows[features]), rows["locked_outcome"].to_numpy(dtype=float))
    y = rows["label"].to_numpy(dtype=int)
    p_market = _market_probability(rows)
    predictions = rows[list(PREDICTION_COLUMNS[:6])].assign(p_model=p_model, p_market=p_market)
    if "p_forecast" in rows:  # the physical prior beside the model: how much of its edge is the prior's
        predictions["p_forecast"] = rows["p_forecast"].to_numpy(dtype=float)
    quoted = ~np.isnan(p_market)
    curves = {"model": reliability(y, p_model).as_dict()}
    if quoted.any():
        curves["market"] = reliability(y[quoted], p_market[quoted]).as_dict()
    metrics = window_scores(y, p_model, p_market, locked, rows["event_date"].to_numpy())
    return ScoredRows(metrics, predictions.reset_index(drop=True), curves)


def write_test_artifacts(out: Path, predictions: pd.DataFrame, curves: dict, label: str, window: str) -> None:
    """A window's test-week artifacts, as training and `kwx monitor` both log them: the per-row predictions
    and the model-vs-market reliability curves (JSON and diagram)."""
    predictions.to_csv(out / "test_predictions.csv", index=False)
    (out / "reliability.json").write_text(json.dumps(curves))
    reliability_diagram(curves, out / "reliability.png", f"{label} {window} test week (market: rows it quotes)")


def window_artifacts(trials: pd.DataFrame, scored: ScoredRows | None, label: str, window: str) -> dict[str, bytes]:
    """The files a window's run logs, by name: written where the window trained (a worker process), so the
    process that logs every window to MLflow only uploads them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        trials.to_csv(out / "optuna_trials.csv", index=False)
        if scored is not None:
            write_test_artifacts(out, scored.predictions, scored.curves, label, window)
        return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


@dataclass
class WindowResult:
    window: Window
    params: dict[str, object]
    metrics: dict[str, float]
    predictions: pd.DataFrame  # the test week's rows scored (``PREDICTION_COLUMNS``), pooled by the run's summary
    model: object
    input_example: pd.DataFrame
    artifacts: dict[str, bytes]  # the run's files by name (``window_artifacts``)
    timings: dict[str, float] = field(default_factory=dict)
    # (data_fingerprint, row count) of the rows it trained on ("train") and was tested on ("test", when its week
    # had rows): what its MLflow datasets say of them, taken where the rows are
    rows: dict[str, tuple[str, int]] = field(default_factory=dict)


def search_window(
    frame: pd.DataFrame, features: list[str], config: TrainConfig, window_plan: WindowPlan, *,
    optuna_storage, study_prefix: str,
) -> int:
    """A search worker's share of one window's shared study (``optuna_storage``); returns its trial count."""
    window = window_plan.window
    train = _training_rows(frame, window)
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
    # Wall-clock bounds for the window's MLflow run, which is logged later by the parent process.
    started_at = time.time()
    train, test = train_test_rows(frame, window)
    X, y, groups = train[features], train["label"].to_numpy(dtype=int), train["event_date"].to_numpy()

    started = time.perf_counter()
    search = run_search(X, y, groups, config, storage=optuna_storage, study_name=f"{study_prefix}-{window.name}")
    searched = time.perf_counter()
    model, method, report = fit_calibrated(X, y, groups, search.best, config.calibration, config.cv_splits,
                                           config.seed)
    fitted = time.perf_counter()

    # A forward window's test week has not happened yet: it is scored later, by `kwx monitor`.
    scored = score_test_rows(model, test, features) if len(test) else None
    metrics = dict(scored.metrics) if scored else {}
    metrics |= cv_scores(y, report.out_of_fold, _market_probability(train))
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
        "n_train": len(train),
        "calibration_method": method, "calibration_bounds": f"{report.bounds[0]:.3g},{report.bounds[1]:.3g}",
        "lock_margin_f": config.lock_margin_f,
        "feature_set": config.feature_set, "n_features": len(features),
    }
    if scored:  # params are immutable: a forward window's counts are logged when `kwx monitor` scores its week
        params |= {"n_test": len(test), "n_test_locked": int(test["locked"].sum())}
    return WindowResult(
        window, params, metrics, scored.predictions if scored else pd.DataFrame(columns=PREDICTION_COLUMNS),
        model, train[features].head(5).reset_index(drop=True),
        window_artifacts(search.trials, scored, f"{config.city}/{config.bracket}", window.name),
        {"search_seconds": searched - started, "calibrate_seconds": fitted - searched,
         "started_at": started_at, "finished_at": time.time()},
        {part: (data_fingerprint(rows), len(rows)) for part, rows in (("train", train), ("test", test)) if len(rows)},
    )
