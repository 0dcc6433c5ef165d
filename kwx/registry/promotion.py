"""Gated promotion: a stage transition in the MLflow registry, refused unless every gate holds."""

from __future__ import annotations

import getpass
import math
import os
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime

import mlflow.artifacts
import yaml
from mlflow.tracking import MlflowClient

from kwx.config import AcceptanceGates, TrainConfig, parse_config
from kwx.registry.resolution import PromotionRecord, stage_members
from kwx.registry.versions import PENDING_TAG, all_versions, facts, record_tag, registry_state

STAGES = ("Staging", "Production")


def canonical_stage(name: str) -> str | None:
    """The registry's spelling of a stage named in any case; None for a name that is no stage."""
    return {s.lower(): s for s in STAGES}.get(name.lower())


@dataclass(frozen=True)
class Check:
    """One pass/fail check with the measured value, its confidence interval where it has one, and the threshold
    it was held to."""

    name: str
    passed: bool
    value: object
    threshold: object = None
    detail: str = ""
    interval: tuple[float, float] | None = None
    level: float | None = None

    def line(self) -> str:
        low, high = self.interval or (None, None)
        shown = "" if self.interval is None else f" ({self.level:.0%} CI {low:.5g}..{high:.5g})"
        bound = "" if self.threshold is None else f" (threshold {self.threshold})"
        status = "PASS" if self.passed else "FAIL"
        return f"{status} {self.name}: {self.value}{shown}{bound}{' - ' + self.detail if self.detail else ''}"

    def as_dict(self) -> dict[str, object]:
        return {"check": self.name, "passed": self.passed, "value": self.value, "threshold": self.threshold,
                "interval": None if self.interval is None else list(self.interval), "level": self.level,
                "detail": self.detail}


class PromotionRefused(RuntimeError):
    def __init__(self, failing: list[Check]):
        self.failing = failing
        super().__init__("promotion refused: " + "; ".join(c.line() for c in failing))


def run_config(run_id: str) -> TrainConfig:
    """The effective config a training run logged (config.yaml artifact of its parent run)."""
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    return parse_config(yaml.safe_load(text), TrainConfig, f"run {run_id} config.yaml")


def metric_gate(name: str, metrics: dict[str, float], key: str, threshold: float, *, at_most: bool,
                missing: str = "was not logged by this run: retrain it") -> Check:
    """``metrics[key]`` held to ``threshold``; absent (``missing`` says why) or NaN fails with the reason, never
    raises. Every gate kwx applies to logged metrics (acceptance, lifecycle, realized weeks) is one of these."""
    value = metrics.get(key)
    if value is None:
        return Check(name, False, None, threshold, f"{key} {missing}")
    if math.isnan(value):
        return Check(name, False, None, threshold,
                     f"{key} is NaN: no rows to compute it on (for skill: no unlocked rows the market quotes)")
    return Check(name, value <= threshold if at_most else value >= threshold, round(value, 5), threshold)


def _measured(metrics: dict[str, float], key: str, missing: str) -> tuple[float | None, str]:
    """(value, why it cannot be held to a threshold): absent or NaN values come back as None with the reason."""
    value = metrics.get(key)
    if value is None:
        return None, f"{key} {missing}"
    if math.isnan(value):
        return None, f"{key} is NaN: no rows to compute it on (for skill: no unlocked rows the market quotes)"
    return value, ""


def lower_bound_gate(name: str, metrics: dict[str, float], key: str, threshold: float, level: float) -> Check:
    """Passes when the lower end of ``key``'s interval (``{key}_low``..``{key}_high``) is at least ``threshold``:
    the evidence says the value exceeds it beyond noise, so a tie (an interval across it) is refused."""
    value, why = _measured(metrics, key, "was not logged by this run: retrain it")
    low, why_low = _measured(metrics, f"{key}_low", "was not logged by this run (no interval): retrain it")
    high = metrics.get(f"{key}_high", math.nan)
    if value is None or low is None:
        return Check(name, False, None, threshold, why or why_low)
    return Check(name, low >= threshold, round(value, 5), threshold,
                 f"lower bound {low:.5g} {'>=' if low >= threshold else '<'} {threshold}",
                 (round(low, 5), round(high, 5)), level)


def band_gate(name: str, metrics: dict[str, float], key: str, lowest: float, highest: float, level: float) -> Check:
    """Refused only when ``key``'s whole interval lies outside [``lowest``, ``highest``]: the evidence says the
    value is out of tolerance, not merely that a noisy estimate strayed."""
    value, why = _measured(metrics, key, "was not logged by this run: retrain it")
    low, why_low = _measured(metrics, f"{key}_low", "was not logged by this run (no interval): retrain it")
    high = metrics.get(f"{key}_high", math.nan)
    if value is None or low is None or math.isnan(high):
        return Check(name, False, None, f"{lowest}..{highest}", why or why_low or f"{key}_high was not logged")
    outside = high < lowest or low > highest
    detail = ("the whole interval lies outside the tolerance" if outside
              else "the interval reaches the tolerance")
    return Check(name, not outside, round(value, 5), f"{lowest}..{highest}", detail, (round(low, 5), round(high, 5)),
                 level)


def window_ece_gate(name: str, ece: float | None, windows_gated: int | None, windows: int,
                    gates: AcceptanceGates) -> Check:
    """The worst ECE among the ``windows_gated`` windows (of ``windows``) that hold ``gates.min_window_ece_days``
    climate days of unlocked rows; with none such, nothing is gated and the pooled ECE decides. None for
    ``windows_gated``: the run logged no day counts."""
    if windows_gated is None:
        return Check(name, False, None, gates.max_ece, "the windows' unlocked climate days were not logged: retrain it")
    days = f"{windows_gated} of {windows} window(s) hold >= {gates.min_window_ece_days} unlocked climate days"
    if windows_gated == 0:
        return Check(name, True, None, gates.max_ece, f"{days}: not gated (a week's ECE measures how its few "
                                                      "outcomes fell; the pooled ECE is gated)")
    if ece is None or math.isnan(ece):
        return Check(name, False, None, gates.max_ece, f"{days} but their ECE was not logged: retrain it")
    return Check(name, ece <= gates.max_ece, round(ece, 5), gates.max_ece, days)


def metric_gates(parent_metrics: dict[str, float], config: TrainConfig) -> list[Check]:
    """The acceptance gates on a training run's parent metrics: its test weeks pooled, with day-block intervals
    (``kwx.domain.evidence``), and single windows only where they hold enough outcome-days."""
    gates = config.acceptance
    level = gates.confidence_level
    windows = parent_metrics.get("n_windows")
    gated = parent_metrics.get("n_windows_ece_gated")
    return [
        # over unlocked rows: locked ones are exactly right by rule, and would flatter the model
        metric_gate("pooled unlocked test ECE <= max_ece", parent_metrics, "pooled_test_unlocked_ece",
                    gates.max_ece, at_most=True),
        window_ece_gate("each window's unlocked test ECE <= max_ece (windows with enough days)",
                        parent_metrics.get("max_gated_window_unlocked_ece"), None if gated is None else int(gated),
                        0 if windows is None else int(windows), gates),
        band_gate("calibration slope within [min_calibration_slope, max_calibration_slope]", parent_metrics,
                  "pooled_calibration_slope", gates.min_calibration_slope, gates.max_calibration_slope, level),
        band_gate("calibration intercept within ±max_abs_calibration_intercept", parent_metrics,
                  "pooled_calibration_intercept", -gates.max_abs_calibration_intercept,
                  gates.max_abs_calibration_intercept, level),
        metric_gate("pooled unlocked test Brier <= max_brier", parent_metrics, "pooled_test_unlocked_brier",
                    gates.max_brier, at_most=True),
        lower_bound_gate("pooled Brier skill lower bound >= min_brier_skill", parent_metrics, "pooled_brier_skill",
                         gates.min_brier_skill, level),
        lower_bound_gate("pooled log-loss skill lower bound >= min_log_loss_skill", parent_metrics,
                         "pooled_log_loss_skill", gates.min_log_loss_skill, level),
        metric_gate("share of windows beating the market >= min_windows_beating_market", parent_metrics,
                    "mean_test_beats_market", gates.min_windows_beating_market, at_most=False),
        Check("windows >= min_windows", windows is not None and windows >= gates.min_windows,
              None if windows is None else int(windows), gates.min_windows,
              "" if windows is not None else "n_windows was not logged by this run: retrain it"),
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
    gates: list[Check] | None = None,
) -> Promotion:
    """Move every window version of ``run_id`` to ``stage`` if all gates pass; else PromotionRefused.

    ``gates`` replaces the acceptance gates on the run's test windows (``metric_gates``): a forward window
    has no test week yet and is held to the lifecycle policy instead (``kwx.lifecycle.policy``).

    Versions already in ``stage`` from other runs whose test periods overlap this run's are archived
    (the ones this promotion replaces); non-overlapping older windows keep trading their dates.

    All or nothing for resolution, whenever it is killed: the new versions enter the stage marked
    pending, then one registered-model tag records the promotion (from that write on they trade and
    the replaced ones do not), then the alias moves, tags are written, the pending marks are cleared and
    the replaced are archived. Running it again after a kill finishes the job: a mark left behind names
    an unfinished promotion, or a finished one killed before clearing it (then it changes nothing).
    """
    canonical = canonical_stage(stage)
    if canonical is None:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    name, versions = run_versions(client, run_id)
    config = run_config(run_id)
    parent_metrics = client.get_run(run_id).data.metrics
    checks = (metric_gates(parent_metrics, config) if gates is None else gates) + infrastructure
    failing = [c for c in checks if not c.passed]
    if not versions:
        failing.append(Check("registered window versions", False, 0, ">= 1"))
    if failing:
        raise PromotionRefused(failing)

    everything, records = registry_state(client, name)
    trading = {f.version for f in stage_members([facts(v) for v in everything], records, canonical)}
    mine = sorted((facts(v) for v in everything if v.tags.get("parent_run_id") == run_id),
                  key=lambda f: int(f.version))
    replaced = sorted((
        facts(v) for v in everything
        if v.current_stage == canonical and v.tags.get("parent_run_id") != run_id and archive_existing
        and any(facts(v).test_start <= f.test_end and f.test_start <= facts(v).test_end for f in mine)
    ), key=lambda f: int(f.version))
    latest = max(mine, key=lambda f: (f.test_end, int(f.version)))
    result = Promotion(run_id, name, canonical, [f.version for f in mine], [f.version for f in replaced],
                       checks, dry_run, alias=canonical.lower())
    if dry_run:
        return result
    who = actor or os.environ.get("KWX_USER") or getpass.getuser()
    stamp = now.isoformat()
    # ids sort in promotion order (newest promotion wins an overlap); the token keeps concurrent ones apart
    record = PromotionRecord(f"{len(records) + 1:06d}-{uuid.uuid4().hex[:8]}", canonical, run_id, now,
                             tuple(result.promoted), tuple(result.archived))
    with warnings.catch_warnings():
        # MLflow 3 warns that stages are deprecated (since 2.9); the product promises stage transitions,
        # and sets aliases alongside, which is MLflow's recommended path.
        warnings.simplefilter("ignore", FutureWarning)
        for f in mine:
            if f.version not in trading:
                # marked pending before it enters the stage, so it cannot trade before the record exists
                client.set_model_version_tag(name, f.version, PENDING_TAG, record.id)
                if f.stage != canonical:
                    client.transition_model_version_stage(name, f.version, canonical,
                                                          archive_existing_versions=False)
        # The one write that switches trading from the old set to the new; a kill before it leaves the
        # old set trading, and every write after it only brings stages, alias and tags in line.
        key, value = record_tag(record)
        client.set_registered_model_tag(name, key, value)
        client.set_registered_model_alias(name, canonical.lower(), latest.version)
        for f in mine:
            for key, value in (("promoted_at", stamp), ("promoted_by", who), ("promoted_stage", canonical),
                               ("promotion_reason", reason or "gates passed"), ("promotion_run_id", run_id),
                               ("promotion_id", record.id)):
                client.set_model_version_tag(name, f.version, key, value)
        for f in mine:
            # marked above, or left by an earlier finished promotion (a version trading here is never
            # marked by an unfinished one): either way the record now stands, so the mark says nothing
            if f.version not in trading or f.pending is not None:
                client.delete_model_version_tag(name, f.version, PENDING_TAG)
        for f in replaced:
            client.set_model_version_tag(name, f.version, "archived_by_run", run_id)
            client.set_model_version_tag(name, f.version, "archived_at", stamp)
            client.transition_model_version_stage(name, f.version, "Archived")
    result.notes.append(f"alias @{canonical.lower()} -> version {latest.version} ({latest.window}); "
                        f"promotion {record.id} recorded")
    return result

