"""`kwx retrain`: train the forward window that trades the coming week, and promote it by the lifecycle policy.

The same search, calibration, tags, naming and registry path as walk-forward training (``runner.train``
with one planned window); only the test week is missing, which `kwx monitor` scores once it has settled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from mlflow.tracking import MlflowClient
from sqlalchemy import Engine

from kwx import tracking
from kwx.cities import get_city
from kwx.config import TrainConfig
from kwx.data.dataset import load_markets, load_settlements
from kwx.domain.windows import Window
from kwx.lifecycle.forward import forward_config, forward_window
from kwx.lifecycle.policy import EvaluatedWindow, family_health, forward_gates
from kwx.registry import promotion
from kwx.registry.promotion import Check, Promotion, PromotionRefused
from kwx.registry.resolution import stage_members
from kwx.registry.versions import (
    EVALUATION_PENDING,
    EVALUATION_TAG,
    FORWARD,
    ORIGIN_TAG,
    facts,
    model_name,
    registry_state,
)
from kwx.training import runner

log = logging.getLogger(__name__)
PRODUCTION = "Production"
# version tags the policy leaves: its verdict, and the gates that kept a refused window from trading
VERDICT_TAG, REFUSED_TAG = "lifecycle_verdict", "promotion_refused"


class RetrainError(ValueError):
    """A forward window that cannot be trained as asked: the message says which days or labels are missing."""


@dataclass
class RetrainOutcome:
    as_of: date
    window: Window
    model_name: str
    settled_days: int
    version: str | None = None  # None on a dry run
    run_id: str | None = None  # the training (parent) run
    created: bool = False  # False: the version for this day and config already existed
    dry_run: bool = False
    checks: list[Check] = field(default_factory=list)  # the policy's, when --promote asked for it
    promotion: Promotion | None = None
    already_promoted: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # the training run's (``TrainSummary.timings``)

    @property
    def refused(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def lines(self) -> list[str]:
        w = self.window
        head = (f"{self.model_name} {w.name}: trains on {w.train_start}..{w.train_end} ({self.settled_days} settled "
                f"days), trades {w.test_start}..{w.test_end}")
        if self.dry_run:
            lines = [f"would train {head}"]
        elif self.created:
            lines = [f"trained {head} -> version {self.version} (evaluation=pending), run {self.run_id}"]
        else:
            lines = [f"already trained {head}: version {self.version}, run {self.run_id} (nothing new registered)"]
        lines += [f"  {c.line()}" for c in self.checks]
        if self.already_promoted:
            lines.append(f"version {self.version} already trades at {PRODUCTION}")
        elif self.promotion is not None:
            lines.append(f"promoted version {self.version} to {PRODUCTION}"
                         + (f"; archived {', '.join(self.promotion.archived)}" if self.promotion.archived else ""))
            lines += self.promotion.notes
        elif self.refused and not self.dry_run:
            lines.append(f"not promoted: the loop keeps trading the previous window ({len(self.refused)} failing "
                         "check(s) recorded in the version's promotion_refused tag)")
        return lines


def check_training_days(engine: Engine, config: TrainConfig, window: Window) -> int:
    """The number of settled training days; RetrainError when a day with markets is not settled yet, or too
    few days hold markets (``lifecycle.min_train_coverage``)."""
    city = get_city(config.city)
    markets = load_markets(engine, config.city, config.bracket, window.train_start, window.train_end)
    with_markets = sorted(set(markets["event_date"]))
    settled = set(load_settlements(engine, city, window.train_start, window.train_end).index)
    unsettled = [d for d in with_markets if d not in settled]
    if unsettled:
        shown = ", ".join(str(d) for d in unsettled[:5]) + (f" and {len(unsettled) - 5} more" if len(unsettled) > 5
                                                             else "")
        raise RetrainError(f"{len(unsettled)} of the training days {window.train_start}..{window.train_end} of "
                           f"{config.city}/{config.bracket} are not settled yet ({shown}): a forward window trains "
                           "on settled days only; load their climate reports (`kwx ingest`) or pick an earlier "
                           "--as-of")
    needed = config.lifecycle.min_train_coverage * config.train_days
    if len(with_markets) < needed:
        raise RetrainError(f"only {len(with_markets)} of the {config.train_days} training days "
                           f"{window.train_start}..{window.train_end} hold settled {config.city}/{config.bracket} "
                           f"markets; lifecycle.min_train_coverage={config.lifecycle.min_train_coverage} needs "
                           f"{needed:g}")
    return len(with_markets)


def existing_version(versions: list, window: Window, config_hash: str):
    """The forward version this window and effective config already registered, if any (newest first)."""
    matches = [v for v in versions if v.tags.get("window") == window.name and v.tags.get("config_hash") == config_hash
               and v.tags.get(ORIGIN_TAG) == FORWARD]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def evaluated_windows(client: MlflowClient, versions: list, *, exclude: str | None,
                      limit: int) -> list[EvaluatedWindow]:
    """The family's ``limit`` most recent versions whose trading week has been scored (walk-forward windows
    at training, forward windows by `kwx monitor`), newest test week first."""
    candidates = sorted((v for v in versions if str(v.version) != exclude
                         and v.tags.get(EVALUATION_TAG) != EVALUATION_PENDING and "test_end" in v.tags),
                        key=lambda v: (v.tags["test_end"], int(v.version)), reverse=True)
    evaluated = []
    for v in candidates:
        metrics = client.get_run(v.run_id).data.metrics
        if "test_unlocked_ece" not in metrics:  # a run from before unlocked metrics were logged
            continue
        evaluated.append(EvaluatedWindow(str(v.version), v.tags["window"], date.fromisoformat(v.tags["test_end"]),
                                         dict(metrics)))
        if len(evaluated) == limit:
            break
    return evaluated


def retrain(config: TrainConfig, engine: Engine, *, as_of: date, now: datetime, promote: bool = False,
            dry_run: bool = False, workers: int = 1, config_text: str | None = None,
            client: MlflowClient | None = None) -> RetrainOutcome:
    """Train (or find) the forward window of ``config`` trading from ``as_of``; with ``promote`` apply
    the lifecycle policy and promote it to Production through ``kwx promote``'s code when it passes."""
    window = forward_window(as_of, config.train_days, config.test_days)
    effective = forward_config(config, as_of)
    settled_days = check_training_days(engine, effective, window)
    name = model_name(config.city, config.bracket)
    outcome = RetrainOutcome(as_of, window, name, settled_days, dry_run=dry_run)
    try:
        prepared = runner.prepare(effective, engine, windows=[window])
    except runner.TrainingError as exc:
        raise RetrainError(str(exc)) from None
    tracking.configure()
    client = client or MlflowClient()
    versions, _ = registry_state(client, name)
    found = existing_version(versions, window, effective.fingerprint())
    if dry_run:
        if found is not None:
            outcome.version, outcome.run_id = str(found.version), found.tags.get("parent_run_id")
        return outcome
    if found is None:
        summary = runner.train(effective, engine, workers=workers, config_text=config_text, prepared=prepared,
                               forward_as_of=as_of)
        outcome.version, outcome.run_id, outcome.created = summary.versions[window.name], summary.parent_run_id, True
        outcome.timings = summary.timings
    else:
        outcome.version, outcome.run_id = str(found.version), found.tags["parent_run_id"]
    if promote:
        _apply_policy(client, engine, effective, outcome, now)
    return outcome


def _apply_policy(client: MlflowClient, engine: Engine, config: TrainConfig, outcome: RetrainOutcome,
                  now: datetime) -> None:
    from kwx.report import infrastructure_checks  # the report module pulls in plotting: only when promoting

    versions, records = registry_state(client, outcome.model_name)
    trading = {f.version for f in stage_members([facts(v) for v in versions], records, PRODUCTION)}
    if outcome.version in trading:
        outcome.already_promoted = True
        return
    this = next(v for v in versions if str(v.version) == outcome.version)
    gates = forward_gates(client.get_run(this.run_id).data.metrics, config.lifecycle.gates)
    history = evaluated_windows(client, versions, exclude=outcome.version, limit=config.lifecycle.recent_windows)
    gates.append(family_health(history, config.lifecycle, config.acceptance))
    infrastructure = infrastructure_checks(engine, client, outcome.run_id)
    outcome.checks = gates + infrastructure
    try:
        outcome.promotion = promotion.promote(
            client, outcome.run_id, PRODUCTION, now=now, infrastructure=infrastructure, gates=gates,
            reason=f"forward window as of {outcome.as_of}: lifecycle policy passed", actor="kwx retrain")
    except PromotionRefused as exc:
        failing = "; ".join(c.name for c in exc.failing)
        client.set_model_version_tag(outcome.model_name, outcome.version, REFUSED_TAG, failing)
        client.set_model_version_tag(outcome.model_name, outcome.version, VERDICT_TAG, f"refused at {now.isoformat()}")
        log.warning("%s version %s not promoted: %s", outcome.model_name, outcome.version, failing)
        return
    client.set_model_version_tag(outcome.model_name, outcome.version, VERDICT_TAG, f"promoted at {now.isoformat()}")
    client.set_model_version_tag(outcome.model_name, outcome.version, REFUSED_TAG, "")
