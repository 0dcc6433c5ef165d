"""Feature audit of a training run: coefficient stability and permutation importance across its windows.

For every window of the run: the standardized logistic-regression coefficients inside the window's
calibrated model, and the permutation importance of each feature on the window's test week (the
rows rebuilt with ``load_dataset`` for the run's config). Written to
``feature_audit/{city}_{bracket}/{run_id}/`` and logged to the training run under ``feature_audit/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow.sklearn
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.inspection import permutation_importance
from sklearn.metrics import log_loss, make_scorer
from sqlalchemy import Engine

from kwx.data.dataset import load_dataset
from kwx.domain.feature_stability import aggregate_importance, coefficient_stability
from kwx.plots import coefficient_heatmap, importance_bars
from kwx.registry.promotion import run_config
from kwx.report import require_complete, window_runs
from kwx.training.model import fitted_logit
from kwx.training.walkforward import sample_rows

FEATURE_AUDIT_ROOT = Path("feature_audit")
FILES = ("feature_audit.json", "coefficients.png", "permutation_importance.png")
# neg_log_loss with both labels declared: a test week where one outcome never happened still scores.
NEG_LOG_LOSS = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba", labels=[0, 1])


@dataclass
class FeatureAudit:
    run_id: str
    directory: Path
    summary: pd.DataFrame
    document: dict


def load_window_model(run, model_name: str):
    """The window's registered version when it has one (the served model), else the model its run logged."""
    version = run.data.tags.get("kwx.model_version")
    # By the logged model's id, not ``runs:/<run>/<name>``: its name is the window's, or "model" in older runs.
    uri = f"models:/{model_name}/{version}" if version else f"models:/{run.outputs.model_outputs[0].model_id}"
    return mlflow.sklearn.load_model(uri)


def build_feature_audit(client: MlflowClient, engine: Engine, run_id: str, *, repeats: int = 5,
                        root: Path = FEATURE_AUDIT_ROOT,
                        on_window: Callable[[str, int, int], None] | None = None) -> FeatureAudit:
    """Audit every window of training run ``run_id``; ``on_window(name, done, total)`` reports progress."""
    config = run_config(run_id)
    parent = client.get_run(run_id)
    windows = window_runs(client, run_id)
    if not windows:
        raise LookupError(f"training run {run_id} has no window runs")
    require_complete(parent, windows)
    features = parent.data.params["features"].split(",")
    model_name = parent.data.tags["kwx.model_name"]

    first, last = (pd.Timestamp(windows[i].data.params[k]).date() for i, k in ((0, "test_start"), (-1, "test_end")))
    frame = load_dataset(engine, config.city, config.bracket, first, last, config.feature_set,
                         max_obs_age_minutes=config.vc_for(config.city).max_obs_age_minutes,
                         lock_margin_f=config.lock_margin_f, max_forecast_age_hours=config.max_forecast_age_hours)
    # the model speaks only where the settlement rule has not: importance is measured there
    frame = sample_rows(frame[frame["label"].notna() & ~frame["locked"]], config.sample_every_minutes)

    coefficients, importances, per_window = {}, {}, []
    for done, run in enumerate(windows, start=1):
        params = run.data.params
        name = params["window"]
        model = load_window_model(run, model_name)
        days = frame["event_date"]
        test = frame[(days >= pd.Timestamp(params["test_start"]).date())
                     & (days <= pd.Timestamp(params["test_end"]).date())]
        X, y = test[features].astype(float), test["label"].to_numpy(dtype=int)
        coefficients[name] = fitted_logit(model).coef_[0]
        result = permutation_importance(model, X, y, scoring=NEG_LOG_LOSS, n_repeats=repeats,
                                        random_state=config.seed)
        importances[name] = result.importances_mean
        per_window.append({
            "window": name, "version": run.data.tags.get("kwx.model_version"),
            "test_start": params["test_start"], "test_end": params["test_end"], "test_rows": len(test),
            # Equal to what training logged when the test rows were rebuilt exactly.
            "n_test_logged": int(params["n_test"]) - int(params.get("n_test_locked", 0)),
            "test_log_loss": float(-NEG_LOG_LOSS(model, X, y)),
            "test_log_loss_logged": run.data.metrics.get("test_unlocked_log_loss",
                                                         run.data.metrics.get("test_log_loss")),
            "coefficients": dict(zip(features, coefficients[name].tolist(), strict=True)),
            "importance_mean": dict(zip(features, result.importances_mean.tolist(), strict=True)),
            "importance_std": dict(zip(features, result.importances_std.tolist(), strict=True)),
        })
        if on_window is not None:
            on_window(name, done, len(windows))

    coef_matrix = pd.DataFrame(coefficients, index=features).T
    importance_matrix = pd.DataFrame(importances, index=features).T
    summary = coefficient_stability(coef_matrix).join(aggregate_importance(importance_matrix))
    summary = summary.sort_values("importance_rank", kind="stable")

    out = root / f"{config.city}_{config.bracket}" / run_id
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "run_id": run_id, "model": model_name, "city": config.city, "bracket": config.bracket,
        "feature_set": config.feature_set, "windows": list(coef_matrix.index), "n_windows": len(windows),
        "coefficients": "standardized (after median imputation and scaling) logistic-regression coefficients of "
                        "the pipeline inside each window's calibrated model",
        "permutation_importance": {"scoring": "neg_log_loss", "repeats": repeats, "random_state": config.seed,
                                   "rows": "labelled test-week rows the settlement rule leaves open (unlocked), "
                                           f"one candle per market every {config.sample_every_minutes} min"},
        "features": summary.to_dict("index"),
        "sign_flip_features": summary.index[summary["sign_flips"]].tolist(),
        "per_window": per_window,
    }
    (out / FILES[0]).write_text(json.dumps(document, indent=2))
    title = f"{config.city}/{config.bracket} run {run_id[:8]}"
    coefficient_heatmap(coef_matrix, out / FILES[1], f"{title}: standardized coefficients per window")
    importance_bars(summary, out / FILES[2], f"{title}: permutation importance\n(Δ test log loss, mean ± std "
                                             f"over {len(windows)} test weeks)")
    client.log_artifacts(run_id, str(out), artifact_path="feature_audit")
    return FeatureAudit(run_id, out, summary, document)
