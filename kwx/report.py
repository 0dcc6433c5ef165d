"""Acceptance report for one training run (the seed's step-6 artifacts, measured, not restated).

Every check states pass/fail with its measured value and threshold. The report is written to
``acceptance_reports/{city}_{bracket}/{run_id}/`` and logged as artifacts of the training run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, inspect

from kwx.cities import CITIES, EXCLUDED_VC_CITIES, VC_EXCLUDABLE_COLUMNS
from kwx.data import migrations
from kwx.data.dataset import load_weather
from kwx.data.schema import Base
from kwx.domain.markets import climate_day_bounds
from kwx.domain.metrics import reliability, score
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
    return sorted((c for c in children if c.data.tags.get("kwx.kind") == "window"),
                  key=lambda r: r.data.params["test_start"])


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
    unregistered = [r.data.params["window"] for r in windows if r.data.params["window"] not in registered]
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
        *(Check(f"{k}: VC columns {'all NULL' if v['excluded'] else 'populated'}", v["passed"],
                v["null_fraction"]) for k, v in cities.items()),
    ]
    return {"excluded_cities": sorted(EXCLUDED_VC_CITIES), "columns": list(VC_EXCLUDABLE_COLUMNS),
            "period": [str(start), str(end)], "cities": cities, "checks": [c.as_dict() for c in checks],
            "passed": all(c.passed for c in checks)}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


@dataclass
class Report:
    run_id: str
    directory: Path
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def build_report(client: MlflowClient, engine: Engine, run_id: str, root: Path = REPORT_ROOT) -> Report:
    config = run_config(run_id)
    parent = client.get_run(run_id)
    windows = window_runs(client, run_id)
    if not windows:
        raise LookupError(f"training run {run_id} has no window runs")
    out = root / f"{config.city}_{config.bracket}" / run_id
    out.mkdir(parents=True, exist_ok=True)

    metrics = pd.DataFrame([r.data.metrics for r in windows])
    summary = {
        "run_id": run_id, "model": parent.data.tags.get("kwx.model_name"), "city": config.city,
        "bracket": config.bracket, "feature_set": config.feature_set, "windows": len(windows),
        "test_rows": int(sum(int(r.data.params["n_test"]) for r in windows)),
        "window_names": [r.data.params["window"] for r in windows],
        **{name: _mean_std(metrics[col].tolist()) for name, col in (
            ("log_loss", "test_log_loss"), ("brier", "test_brier"), ("ece", "test_ece"), ("mce", "test_mce"),
            ("auc", "test_auc"), ("sparsity_nonzero_coefs", "nonzero_coefs"),
            ("market_log_loss", "market_log_loss"), ("market_brier", "market_brier"), ("market_ece", "market_ece"))},
    }
    gate_checks = metric_gates(parent.data.metrics, config)
    summary["gates"] = [c.as_dict() for c in gate_checks]

    predictions = pd.concat(
        [pd.read_csv(mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path="test_predictions.csv",
                                                         dst_path=str(out / "_downloads" / r.info.run_id)))
         .assign(window=r.data.params["window"]) for r in windows], ignore_index=True)
    pooled = reliability(predictions["label"], predictions["p_model"])
    last = predictions[predictions["window"] == windows[-1].data.params["window"]]
    last_rel = reliability(last["label"], last["p_model"])
    calibration = {
        "pooled": {"rows": len(predictions), **score(predictions["label"], predictions["p_model"]),
                   "curve": pooled.as_dict()},
        "last_window": {"window": windows[-1].data.params["window"], "rows": len(last),
                        **score(last["label"], last["p_model"]), "curve": last_rel.as_dict()},
        "market_pooled": {"curve": reliability(predictions["label"], predictions["p_market"].clip(0, 1)).as_dict()},
    }
    reliability_diagram({"model (all test weeks)": calibration["pooled"]["curve"],
                         "model (last window)": calibration["last_window"]["curve"],
                         "market yes_mid": calibration["market_pooled"]["curve"]},
                        out / "03_reliability_diagram.png", f"{config.city}/{config.bracket} run {run_id[:8]}")
    calibration_checks = [Check("pooled ECE <= max_ece", calibration["pooled"]["ece"] <= config.acceptance.max_ece,
                                round(calibration["pooled"]["ece"], 5), config.acceptance.max_ece)]

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
        FILES[2]: {**calibration, "checks": [c.as_dict() for c in calibration_checks]},
        FILES[3]: {"config": config.model_dump(mode="json"), "checks": [c.as_dict() for c in config_checks]},
        FILES[4]: {"checks": [c.as_dict() for c in infra], "passed": all(c.passed for c in infra)},
    }
    for filename, document in documents.items():
        (out / filename).write_text(json.dumps(document, indent=2, default=str))
    audit_checks = [Check(c["check"], c["passed"], c["value"], c["threshold"]) for c in audit["checks"]]
    checks = gate_checks + calibration_checks + audit_checks + config_checks + infra
    (out / FILES[5]).write_text(_markdown(summary, calibration, checks))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifacts(str(out), artifact_path="acceptance_report")
    return Report(run_id, out, checks)


def _markdown(summary: dict, calibration: dict, checks: list[Check]) -> str:
    def ms(key: str) -> str:
        return f"{summary[key]['mean']:.4f} ± {summary[key]['std']:.4f}"

    lines = [
        f"# Acceptance report: {summary['model']} (run {summary['run_id']})", "",
        f"**Verdict: {'PASS' if all(c.passed for c in checks) else 'FAIL'}** — {summary['windows']} windows, "
        f"{summary['test_rows']:,} test rows, feature set `{summary['feature_set']}`.", "",
        "| metric (test weeks, mean ± std) | model | market (yes_mid) |", "| --- | --- | --- |",
        f"| log loss | {ms('log_loss')} | {ms('market_log_loss')} |",
        f"| Brier | {ms('brier')} | {ms('market_brier')} |",
        f"| ECE | {ms('ece')} | {ms('market_ece')} |",
        f"| AUC | {ms('auc')} | |",
        f"| non-zero coefficients | {ms('sparsity_nonzero_coefs')} | |", "",
        f"Pooled over all test weeks: ECE {calibration['pooled']['ece']:.4f}, maximum calibration error "
        f"{calibration['pooled']['mce']:.4f}; last window ({calibration['last_window']['window']}): ECE "
        f"{calibration['last_window']['ece']:.4f}. Reliability diagram: `03_reliability_diagram.png`.", "",
        "## Checks", "",
        *(f"- {c.line()}" for c in checks), "",
    ]
    return "\n".join(lines)
