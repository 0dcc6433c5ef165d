"""Acceptance report for one training run (the seed's step-6 artifacts, measured, not restated).

Every check states pass/fail with its measured value and threshold. The report is written to
``acceptance_reports/{city}_{bracket}/{run_id}/`` and logged as artifacts of the training run.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, inspect

from kwx.cities import CITIES, EXCLUDED_VC_CITIES, VC_EXCLUDABLE_COLUMNS
from kwx.data import migrations
from kwx.data.dataset import load_weather
from kwx.data.schema import Base
from kwx.domain.markets import climate_day_bounds
from kwx.domain.metrics import pooled_evidence, pooled_metrics, pooled_reliability, reliability, score
from kwx.plots import reliability_diagram
from kwx.registry.promotion import Check, metric_gates, run_config, run_versions

REPORT_ROOT = Path("acceptance_reports")
FILES = ("01_model_validation_summary.json", "02_vc_exclusion_audit.json", "03_calibration_analysis.json",
         "04_config_validation.json", "05_infrastructure_verification.json", "06_summary_report.md")


def latest_training_run(client: MlflowClient, city: str, bracket: str) -> str:
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=(f"tags.`kwx.kind` = 'train' and tags.`kwx.city` = '{city}' and tags.`kwx.bracket` = "
                       f"'{bracket}' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        raise LookupError(f"no finished training run for {city}/{bracket} in {mlflow.get_tracking_uri()}")
    return runs[0].info.run_id


def window_runs(client: MlflowClient, run_id: str) -> list:
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    # A window whose process died before it logged params has none: it sorts first instead of crashing.
    return sorted((c for c in children if c.data.tags.get("kwx.kind") == "window"),
                  key=lambda r: r.data.params.get("test_start", ""))


class IncompleteRunError(LookupError):
    """A training run whose process stopped before it logged everything: a window or the run itself never
    FINISHED (its window runs end FINISHED only once every artifact and the registered version exist)."""


def require_complete(parent, windows: list) -> None:
    run_id = parent.info.run_id
    unfinished = sorted(w.data.tags["kwx.window"] for w in windows if w.info.status != "FINISHED")
    if unfinished:
        raise IncompleteRunError(
            f"training run {run_id} is incomplete: window {', '.join(unfinished)} never finished logging (its "
            "training process stopped before the predictions, plots, model and version were all in) — train again")
    if parent.info.status != "FINISHED":
        raise IncompleteRunError(f"training run {run_id} is {parent.info.status}, not FINISHED: its process "
                                 "stopped before every window was logged — train again")


def infrastructure_checks(engine: Engine, client: MlflowClient, run_id: str) -> list[Check]:
    current, head = migrations.current_revision(engine), migrations.head_revision()
    tables = set(inspect(engine).get_table_names())
    missing = sorted(set(Base.metadata.tables) - tables)
    try:
        client.search_registered_models(max_results=1)
        registry, detail = True, mlflow.get_registry_uri()
    except Exception as exc:
        registry, detail = False, f"{type(exc).__name__}: {exc}"
    windows = window_runs(client, run_id)
    _, versions = run_versions(client, run_id)
    registered = {v.tags.get("window") for v in versions}
    unregistered = [r.data.tags["kwx.window"] for r in windows if r.data.tags["kwx.window"] not in registered]
    return [
        Check("database at migration head", current == head, current, head),
        Check("required tables present", not missing, missing or sorted(Base.metadata.tables),
              detail="missing" if missing else ""),
        Check("model registry reachable", registry, registry, True, detail),
        Check("every window of the run registered", bool(windows) and not unregistered,
              f"{len(windows) - len(unregistered)}/{len(windows)}", "all", ", ".join(unregistered)),
    ]


def vc_exclusion_audit(engine: Engine, start, end) -> dict:
    """Measured on loaded weather: excluded cities' VC columns all NULL, other cities' populated."""
    cities = {}
    for key, city in CITIES.items():
        since, _ = climate_day_bounds(start, city)
        _, until = climate_day_bounds(end, city)
        weather = load_weather(engine, city, since, until)
        if weather.empty:
            continue
        null_fraction = {c: float(weather[c].isna().mean()) for c in VC_EXCLUDABLE_COLUMNS}
        excluded = key in EXCLUDED_VC_CITIES
        passed = all(v == 1.0 for v in null_fraction.values()) if excluded else all(
            v < 1.0 for v in null_fraction.values())
        cities[key] = {"excluded": excluded, "observations": len(weather), "null_fraction": null_fraction,
                       "temp_f_null_fraction": float(weather["temp_f"].isna().mean()), "passed": passed}
    checks = [
        Check("EXCLUDED_VC_CITIES are known cities", set(EXCLUDED_VC_CITIES) <= set(CITIES),
              sorted(EXCLUDED_VC_CITIES)),
        Check("only nyc excluded", set(EXCLUDED_VC_CITIES) == {"nyc"}, sorted(EXCLUDED_VC_CITIES), ["nyc"]),
        # The value is each column's null fraction, so the name states the bound it is held to.
        *(Check(f"{k}: VC columns null fraction {'= 1 (all NULL)' if v['excluded'] else '< 1 (populated)'}",
                v["passed"], v["null_fraction"]) for k, v in cities.items()),
    ]
    return {"excluded_cities": sorted(EXCLUDED_VC_CITIES), "columns": list(VC_EXCLUDABLE_COLUMNS),
            "period": [str(start), str(end)], "cities": cities, "checks": [c.as_dict() for c in checks],
            "passed": all(c.passed for c in checks)}


# Window metrics summarised as mean ± std in 01_model_validation_summary.json: summary key -> window metric.
WINDOW_SUMMARY = {
    "log_loss": "test_log_loss", "brier": "test_brier", "ece": "test_ece", "mce": "test_mce", "auc": "test_auc",
    "unlocked_log_loss": "test_unlocked_log_loss", "unlocked_brier": "test_unlocked_brier",
    "unlocked_ece": "test_unlocked_ece", "sparsity_nonzero_coefs": "nonzero_coefs",
    "market_log_loss": "market_log_loss", "market_brier": "market_brier", "market_ece": "market_ece",
    "market_unlocked_log_loss": "market_unlocked_log_loss", "market_unlocked_brier": "market_unlocked_brier",
    "market_unlocked_ece": "market_unlocked_ece", "brier_skill": "test_brier_skill",
    "windows_beating_market": "test_beats_market",
}


def _finite(value: float) -> float | None:
    # JSON has no NaN: a metric without rows to compute it on is null.
    return None if value is None or math.isnan(value) else float(value)


def _mean_std(metrics: pd.DataFrame, column: str) -> dict[str, float | None] | None:
    """Mean ± std over windows (NaN windows skipped, as the runner's mean_/std_); None for a run that never
    logged the metric."""
    if column not in metrics:
        return None
    return {"mean": _finite(metrics[column].mean()), "std": _finite(metrics[column].std(ddof=0))}


@dataclass
class Report:
    run_id: str
    directory: Path
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def build_report(client: MlflowClient, engine: Engine, run_id: str, root: Path = REPORT_ROOT) -> Report:
    parent = client.get_run(run_id)
    windows = window_runs(client, run_id)
    if not windows:
        raise LookupError(f"training run {run_id} has no window runs")
    require_complete(parent, windows)
    config = run_config(run_id)
    out = root / f"{config.city}_{config.bracket}" / run_id
    out.mkdir(parents=True, exist_ok=True)

    # Downloaded into a temporary directory: the predictions stay in MLflow, not copied into every report.
    with tempfile.TemporaryDirectory() as downloads:
        predictions = pd.concat(
            [pd.read_csv(mlflow.artifacts.download_artifacts(run_id=r.info.run_id,
                                                             artifact_path="test_predictions.csv",
                                                             dst_path=str(Path(downloads) / r.info.run_id)))
             .assign(window=r.data.params["window"]) for r in windows], ignore_index=True)
    metrics = pd.DataFrame([r.data.metrics for r in windows])
    beating = metrics.get("test_beats_market")
    summary = {
        "run_id": run_id, "model": parent.data.tags.get("kwx.model_name"), "city": config.city,
        "bracket": config.bracket, "feature_set": config.feature_set, "windows": len(windows),
        "test_rows": int(sum(int(r.data.params["n_test"]) for r in windows)),
        "window_names": [r.data.params["window"] for r in windows],
        **{name: _mean_std(metrics, column) for name, column in WINDOW_SUMMARY.items()},
        "windows_beating_market_count": None if beating is None else int(beating.sum()),
        # Recomputed from the windows' predictions, so runs logged before pooled metrics existed show them too.
        "pooled": {k: _finite(v) for k, v in (pooled_metrics(predictions) | pooled_evidence(
            predictions, resamples=config.acceptance.bootstrap_resamples, level=config.acceptance.confidence_level,
            seed=config.acceptance.bootstrap_seed)).items()},
    }
    gate_checks = metric_gates(parent.data.metrics, config)
    summary["gates"] = [c.as_dict() for c in gate_checks]

    last = predictions[predictions["window"] == windows[-1].data.params["window"]]
    versus = pooled_reliability(predictions)
    calibration = {
        "pooled": {"rows": len(predictions), **score(predictions["label"], predictions["p_model"]),
                   "curve": reliability(predictions["label"], predictions["p_model"]).as_dict()},
        "last_window": {"window": windows[-1].data.params["window"], "rows": len(last),
                        **score(last["label"], last["p_model"]),
                        "curve": reliability(last["label"], last["p_model"]).as_dict()},
        "unlocked": _unlocked_calibration(predictions),
        "model_vs_market": {"rows": int(summary["pooled"]["pooled_n_comparable_rows"]),
                            **{name: {"ece": rel.ece, "mce": rel.mce, "curve": rel.as_dict()}
                               for name, rel in versus.items()}},
    }
    reliability_diagram({"model": versus["model"].as_dict(), "market yes_mid": versus["market"].as_dict()}
                        if versus else {}, out / "03_reliability_diagram.png",
                        f"{config.city}/{config.bracket} run {run_id[:8]}: all test weeks pooled\n"
                        "(unlocked rows the market quotes)")

    first_day = min(pd.to_datetime(predictions["event_date"])).date() - timedelta(days=config.train_days)
    audit = vc_exclusion_audit(engine, first_day, max(pd.to_datetime(predictions["event_date"])).date())
    config_checks = [Check("config valid under the current schema", True, config.summary()),
                     Check("config hash matches the run's tag",
                           parent.data.tags.get("kwx.config_hash") == config.fingerprint(),
                           config.fingerprint(), parent.data.tags.get("kwx.config_hash"))]
    infra = infrastructure_checks(engine, client, run_id)

    documents = {
        FILES[0]: summary,
        FILES[1]: audit,
        FILES[2]: calibration,
        FILES[3]: {"config": config.model_dump(mode="json"), "checks": [c.as_dict() for c in config_checks]},
        FILES[4]: {"checks": [c.as_dict() for c in infra], "passed": all(c.passed for c in infra)},
    }
    for filename, document in documents.items():
        (out / filename).write_text(json.dumps(document, indent=2, default=str))
    audit_checks = [Check(c["check"], c["passed"], c["value"], c["threshold"]) for c in audit["checks"]]
    checks = gate_checks + audit_checks + config_checks + infra
    (out / FILES[5]).write_text(_markdown(summary, calibration, checks))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifacts(str(out), artifact_path="acceptance_report")
    return Report(run_id, out, checks)


def _unlocked_calibration(predictions: pd.DataFrame) -> dict:
    """ECE and reliability curve of the model on the pooled unlocked rows, the rows the ECE gate reads."""
    unlocked = predictions[~predictions["locked"].astype(bool)] if "locked" in predictions else predictions
    if unlocked.empty:
        return {"rows": 0, "days": 0}
    curve = reliability(unlocked["label"], unlocked["p_model"])
    return {"rows": len(unlocked), "days": int(unlocked["event_date"].nunique()), "ece": curve.ece,
            "curve": curve.as_dict()}


def _markdown(summary: dict, calibration: dict, checks: list[Check]) -> str:
    pooled = summary["pooled"]

    def ms(key: str) -> str:
        value = summary[key]
        if value is None:
            return "not logged"
        return "n/a" if value["mean"] is None else f"{value['mean']:.4f} ± {value['std']:.4f}"

    def pool(key: str) -> str:
        return "n/a" if pooled[key] is None else f"{pooled[key]:.4f}"

    def pool_ci(key: str) -> str:
        low, high = pooled.get(f"{key}_low"), pooled.get(f"{key}_high")
        interval = "" if low is None or high is None else f" ({low:.4f}..{high:.4f})"
        return pool(key) + interval

    def row(label: str, rows: str, key: str) -> str:
        model, market = ("", "market_") if rows == "all" else ("unlocked_", "market_unlocked_")
        return (f"| {label} | {rows} | {ms(model + key)} | {pool('pooled_test_' + model + key)} "
                f"| {ms(market + key)} | {pool('pooled_' + market + key)} |")

    beating, count = summary["windows_beating_market"], summary["windows_beating_market_count"]
    beating_cell = ("not logged" if beating is None
                    else f"{count} of {summary['windows']} ({beating['mean']:.0%})")
    last = calibration["last_window"]
    lines = [
        f"# Acceptance report: {summary['model']} (run {summary['run_id']})", "",
        f"**Verdict: {'PASS' if all(c.passed for c in checks) else 'FAIL'}** — {summary['windows']} windows, "
        f"{summary['test_rows']:,} test rows, feature set `{summary['feature_set']}`.", "",
        "| metric (test weeks) | rows | model: window mean ± std | model: pooled (day-block interval) "
        "| market: window mean ± std "
        "| market: pooled |",
        "| --- | --- | --- | --- | --- | --- |",
        *(row(label, rows, key) for label, key in (("log loss", "log_loss"), ("Brier", "brier"),
                                                        ("ECE", "ece")) for rows in ("all", "unlocked")),
        f"| Brier skill vs market | unlocked, quoted | {ms('brier_skill')} | {pool_ci('pooled_brier_skill')} | | |",
        f"| log-loss skill vs market | unlocked, quoted | | {pool_ci('pooled_log_loss_skill')} | | |",
        f"| calibration slope | unlocked | | {pool_ci('pooled_calibration_slope')} | | |",
        f"| calibration intercept (log-odds) | unlocked | | {pool_ci('pooled_calibration_intercept')} | | |",
        f"| windows beating the market (Brier) | unlocked, quoted | {beating_cell} | | | |",
        f"| AUC | all | {ms('auc')} | {calibration['pooled']['auc']:.4f} | | |",
        f"| non-zero coefficients | | {ms('sparsity_nonzero_coefs')} | | | |", "",
        f"Rows: all {pooled['pooled_n_rows']:,.0f}; unlocked (outcome not yet decided by the settlement rule) "
        f"{pooled['pooled_n_unlocked_rows']:,.0f}; unlocked and quoted by the market "
        f"{pooled['pooled_n_comparable_rows']:,.0f}. The market (yes_mid) is scored on the rows it quotes; Brier "
        "skill is 1 − Brier(model) / Brier(market) on unlocked quoted rows.", "",
        f"Pooled over all test weeks: maximum calibration error {calibration['pooled']['mce']:.4f}; last window "
        f"({last['window']}): ECE {last['ece']:.4f}. Reliability diagram of model and market on unlocked quoted "
        "rows, rows per bin below: `03_reliability_diagram.png`.", "",
        *_reliability_table(calibration["unlocked"]), "",
        "## Checks", "",
        "Skill and calibration are judged on all test weeks pooled; intervals resample climate days (paired "
        "day-block bootstrap), so a tie, whose interval straddles the threshold, is refused.", "",
        "| check | value | interval | threshold | verdict |", "| --- | --- | --- | --- | --- |",
        *(_check_row(c) for c in checks), "",
    ]
    return "\n".join(lines)


def _check_row(check: Check) -> str:
    interval = "" if check.interval is None else f"{check.level:.0%}: {check.interval[0]:.5g}..{check.interval[1]:.5g}"
    value = "n/a" if check.value is None else check.value
    detail = f" ({check.detail})" if check.detail else ""
    threshold = "" if check.threshold is None else check.threshold
    return (f"| {check.name} | {value} | {interval} | {threshold} | "
            f"{'PASS' if check.passed else 'FAIL'}{detail} |").replace("\n", " ")


def _reliability_table(unlocked: dict) -> list[str]:
    """The pooled unlocked rows' reliability, bin by bin: what the ECE gate averages."""
    curve = unlocked.get("curve")
    if not curve:
        return ["No unlocked test rows: no reliability table."]
    rows = zip(curve["mean_predicted"], curve["fraction_positive"], curve["counts"], strict=True)
    return [f"Reliability of the model on the {unlocked['rows']:,} pooled unlocked test rows "
            f"({unlocked['days']} climate days), ECE {unlocked['ece']:.4f}:", "",
            "| mean predicted | observed frequency | rows |", "| --- | --- | --- |",
            *(f"| {p:.4f} | {f:.4f} | {n:,} |" for p, f, n in rows)]
