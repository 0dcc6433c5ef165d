"""Gated promotion: a stage transition in the MLflow registry, refused unless every gate holds."""

from __future__ import annotations

import getpass
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime

import mlflow.artifacts
import yaml
from mlflow.tracking import MlflowClient

from kwx.config import TrainConfig, parse_config
from kwx.registry.versions import all_versions, facts

STAGES = ("Staging", "Production")


@dataclass(frozen=True)
class Check:
    """One pass/fail check with the measured value and the threshold it was held to."""

    name: str
    passed: bool
    value: object
    threshold: object = None
    detail: str = ""

    def line(self) -> str:
        bound = "" if self.threshold is None else f" (threshold {self.threshold})"
        status = "PASS" if self.passed else "FAIL"
        return f"{status} {self.name}: {self.value}{bound}{' - ' + self.detail if self.detail else ''}"

    def as_dict(self) -> dict[str, object]:
        return {"check": self.name, "passed": self.passed, "value": self.value, "threshold": self.threshold,
                "detail": self.detail}


class PromotionRefused(RuntimeError):
    def __init__(self, failing: list[Check]):
        self.failing = failing
        super().__init__("promotion refused: " + "; ".join(c.line() for c in failing))


def run_config(run_id: str) -> TrainConfig:
    """The effective config a training run logged (config.yaml artifact of its parent run)."""
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    return parse_config(yaml.safe_load(text), TrainConfig, f"run {run_id} config.yaml")


def metric_gates(parent_metrics: dict[str, float], config: TrainConfig) -> list[Check]:
    gates = config.acceptance
    ece, brier = parent_metrics.get("mean_test_ece"), parent_metrics.get("mean_test_brier")
    windows = int(parent_metrics.get("n_windows", 0))
    return [
        Check("mean test ECE <= max_ece", ece is not None and ece <= gates.max_ece,
              None if ece is None else round(ece, 5), gates.max_ece),
        Check("mean test Brier <= max_brier", brier is not None and brier <= gates.max_brier,
              None if brier is None else round(brier, 5), gates.max_brier),
        Check("windows >= min_windows", windows >= gates.min_windows, windows, gates.min_windows),
    ]


def run_versions(client: MlflowClient, run_id: str) -> tuple[str, list]:
    """(registered model name, versions registered by the training run ``run_id``)."""
    run = client.get_run(run_id)
    name = run.data.tags.get("kwx.model_name")
    if run.data.tags.get("kwx.kind") != "train" or not name:
        raise ValueError(f"run {run_id} is not a kwx training (parent) run")
    return name, [v for v in all_versions(client, name) if v.tags.get("parent_run_id") == run_id]


@dataclass
class Promotion:
    run_id: str
    name: str
    stage: str
    promoted: list[str]
    archived: list[str]
    checks: list[Check]
    dry_run: bool
    alias: str | None = None
    notes: list[str] = field(default_factory=list)


def promote(
    client: MlflowClient, run_id: str, stage: str, *, now: datetime, infrastructure: list[Check],
    dry_run: bool = False, archive_existing: bool = True, reason: str = "", actor: str | None = None,
) -> Promotion:
    """Move every window version of ``run_id`` to ``stage`` if all gates pass; else PromotionRefused.

    Versions already in ``stage`` from other runs whose test periods overlap this run's are archived
    (the ones this promotion replaces); non-overlapping older windows keep trading their dates.
    """
    canonical = {s.lower(): s for s in STAGES}.get(stage.lower())
    if canonical is None:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    name, versions = run_versions(client, run_id)
    config = run_config(run_id)
    parent_metrics = client.get_run(run_id).data.metrics
    checks = metric_gates(parent_metrics, config) + infrastructure
    failing = [c for c in checks if not c.passed]
    if not versions:
        failing.append(Check("registered window versions", False, 0, ">= 1"))
    if failing:
        raise PromotionRefused(failing)

    mine = sorted((facts(v) for v in versions), key=lambda f: int(f.version))
    replaced = sorted((
        v for v in all_versions(client, name)
        if v.current_stage == canonical and v.tags.get("parent_run_id") != run_id and archive_existing
        and any(facts(v).test_start <= f.test_end and f.test_start <= facts(v).test_end for f in mine)
    ), key=lambda v: int(v.version))
    latest = max(mine, key=lambda f: (f.test_end, int(f.version)))
    result = Promotion(run_id, name, canonical, [f.version for f in mine], [str(v.version) for v in replaced],
                       checks, dry_run, alias=canonical.lower())
    if dry_run:
        return result
    who = actor or os.environ.get("KWX_USER") or getpass.getuser()
    stamp = now.isoformat()
    with warnings.catch_warnings():
        # MLflow 3 warns that stages are deprecated (since 2.9); the product promises stage transitions,
        # and sets aliases alongside, which is MLflow's recommended path.
        warnings.simplefilter("ignore", FutureWarning)
        for v in replaced:
            client.transition_model_version_stage(name, v.version, "Archived")
            client.set_model_version_tag(name, v.version, "archived_by_run", run_id)
            client.set_model_version_tag(name, v.version, "archived_at", stamp)
        for f in mine:
            client.transition_model_version_stage(name, f.version, canonical, archive_existing_versions=False)
            for key, value in (("promoted_at", stamp), ("promoted_by", who), ("promoted_stage", canonical),
                               ("promotion_reason", reason or "gates passed"), ("promotion_run_id", run_id)):
                client.set_model_version_tag(name, f.version, key, value)
    client.set_registered_model_alias(name, canonical.lower(), latest.version)
    result.notes.append(f"alias @{canonical.lower()} -> version {latest.version} ({latest.window})")
    return result

