"""`kwx monitor`: score forward windows once their week has settled, watch the Production families for drift.

One pass, at ``as_of`` (a climate day), does three things:

1. **Realized evaluation.** A version tagged ``evaluation=pending`` (a forward window, `kwx retrain`) whose week
   ended before ``as_of`` and whose market days are all settled is scored on that week exactly as training
   scores a test week (``score_test_rows`` on the rows ``load_dataset`` rebuilds with its run's config). The
   numbers, predictions and reliability curves go to its window run, its training run's summary is brought up
   to date, and the version is tagged with its realized verdict; ``evaluation=done`` is written last, so a
   killed pass simply runs again.
2. **Drift.** For every family with Production versions: the settled days of the last ``lifecycle.monitor_days``,
   each scored by the version that trades it, pooled into rolling quality and held to ``lifecycle.drift``. One
   run per family in the ``kwx-monitoring`` experiment charts it over time (one step per ``as_of``).
3. **Withdrawal** (``lifecycle.auto_withdraw``, off by default): on a drift alarm the version trading ``as_of``
   is archived, so resolution falls back to the previous window.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import mlflow.artifacts
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, select

from kwx import runs, tracking
from kwx.cities import City, get_city
from kwx.config import ConfigError, TrainConfig
from kwx.data.dataset import DatasetError, load_settlements
from kwx.data.schema import ClimateDaily, Market, RtSignal
from kwx.data.store import rows_frame
from kwx.domain.features import feature_columns
from kwx.domain.markets import climate_day_bounds, settlement_outcomes
from kwx.lifecycle.drift import DriftVerdict, drift_breaches, loop_quality, realized_checks, rolling_quality
from kwx.registry.promotion import run_config
from kwx.registry.resolution import NoModelError, VersionFacts, resolve, stage_members
from kwx.registry.versions import (
    EVALUATION_DONE,
    EVALUATION_PENDING,
    EVALUATION_TAG,
    all_versions,
    facts,
    model_name,
    registry_state,
)
from kwx.training.runner import labelled_rows, windows_summary
from kwx.training.walkforward import score_test_rows, write_test_artifacts

log = logging.getLogger(__name__)
MONITOR_EXPERIMENT = "kwx-monitoring"
MONITOR_KIND = "monitor"
STAGE = "Production"
PRODUCTION_ALIAS = "production"
# Version tags a realized evaluation writes (EVALUATION_TAG=done last of all).
EVALUATED_AT_TAG, VERDICT_TAG, FAILING_TAG = "evaluated_at", "realized_verdict", "realized_failing"
# Version tags of a drift withdrawal; the as_of tag keeps a rerun of the same day from withdrawing a second one.
WITHDRAWN_AT_TAG, WITHDRAWN_REASON_TAG, WITHDRAWN_AS_OF_TAG = "withdrawn_at", "withdrawn_reason", "withdrawn_as_of"
TAG_VALUE_LIMIT = 5000  # MLflow's longest tag value
# Shown per evaluated version and in `kwx monitor`'s table.
KEY_METRICS = ("test_unlocked_ece", "test_unlocked_brier", "test_brier_skill", "test_log_loss",
               "market_unlocked_brier")


class MonitorError(RuntimeError):
    """A version or family that cannot be handled this pass; the message is one line saying why."""


@dataclass
class Evaluation:
    """One forward window scored on its settled week."""

    name: str
    version: str
    window: str
    test_start: date
    test_end: date
    rows: int
    metrics: dict[str, float]
    loop: dict[str, float]
    verdict: str  # "pass" or "fail"
    failing: list[str]

    def line(self) -> str:
        m = self.metrics
        failing = f" ({'; '.join(self.failing)})" if self.failing else ""
        return (f"evaluated {self.name} version {self.version} ({self.window}, {self.test_start}..{self.test_end}): "
                f"{self.rows} rows, unlocked ECE {_fmt(m.get('test_unlocked_ece'))}, unlocked Brier "
                f"{_fmt(m.get('test_unlocked_brier'))}, Brier skill {_fmt(m.get('test_brier_skill'))}, "
                f"{int(self.loop['loop_sized_signals'])} sized loop signals: {self.verdict}{failing}")


@dataclass
class FamilyDrift:
    """Rolling realized quality of one Production family over its span of settled days."""

    name: str
    span: tuple[date, date] | None
    quality: dict[str, float]
    breaches: list[str]
    notes: list[str]
    trading: dict[date, str]  # settled day -> "version (window)" that trades it
    logged: bool  # False when this as_of was already in the family's monitoring run

    def line(self) -> str:
        q = self.quality
        span = f"{self.span[0]}..{self.span[1]}" if self.span else "no settled days"
        status = f"ALARM ({len(self.breaches)} breaches)" if self.breaches else "ok"
        return (f"drift {self.name} {span} ({int(q['rolling_days'])} days, {int(q['rolling_rows'])} rows): ECE "
                f"{_fmt(q['rolling_ece'])}, Brier {_fmt(q['rolling_brier'])}, market Brier "
                f"{_fmt(q['rolling_market_brier'])}, Brier skill {_fmt(q['rolling_brier_skill'])}: {status}")


@dataclass
class MonitorReport:
    as_of: date
    evaluated: list[Evaluation] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    drift: list[FamilyDrift] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The pass as plain text, one fact per line (what a scheduler logs)."""
        out = [f"kwx monitor as of {self.as_of}"]
        out += [e.line() for e in self.evaluated]
        out += [f"waiting: {w}" for w in self.waiting]
        for family in self.drift:
            out.append(family.line())
            out += [f"  note: {n}" for n in family.notes]
        out += [f"ALARM {a}" for a in self.alarms]
        out += [f"withdrawn: {w}" for w in self.withdrawn]
        if len(out) == 1:
            out.append("nothing to evaluate and no Production family to watch")
        return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


class _Cache:
    """Per pass: each training run's config and each version's model are read once."""

    def __init__(self):
        self._configs: dict[str, TrainConfig] = {}
        self._models: dict[str, object] = {}

    def config(self, parent_run_id: str | None) -> TrainConfig:
        if not parent_run_id:
            raise MonitorError("its version has no parent_run_id tag, so its training config is unknown")
        if parent_run_id not in self._configs:
            try:
                self._configs[parent_run_id] = run_config(parent_run_id)
            except (MlflowException, ConfigError, OSError) as exc:
                raise MonitorError(f"the config.yaml of training run {parent_run_id} cannot be read "
                                   f"({_one_line(exc)})") from None
        return self._configs[parent_run_id]

    def model(self, model_id: str):
        if model_id not in self._models:
            try:
                self._models[model_id] = mlflow.sklearn.load_model(f"models:/{model_id}")
            except Exception as exc:  # missing, truncated or unreadable artifacts all mean: no model
                raise MonitorError(f"model {model_id} cannot be loaded ({_one_line(exc)})") from None
        return self._models[model_id]


def registered_families(client: MlflowClient) -> list[str]:
    """Every registered ``kwx-*`` model, by name."""
    names, token = [], None
    while True:
        page = client.search_registered_models("name LIKE 'kwx-%'", max_results=100, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def unsettled_days(engine: Engine, city: str, bracket: str, first: date, last: date) -> tuple[list[date], int]:
    """(days of [first, last] with stored markets but no climate report yet, number of days with markets)."""
    station = get_city(city).station
    market_days = select(Market.event_date).where(
        Market.city == city, Market.strike_type == bracket, Market.event_date >= first, Market.event_date <= last
    ).distinct()
    settled = select(ClimateDaily.climate_date).where(
        ClimateDaily.station == station, ClimateDaily.climate_date >= first, ClimateDaily.climate_date <= last)
    with engine.connect() as conn:
        with_markets = set(conn.scalars(market_days))
        reported = set(conn.scalars(settled))
    return sorted(with_markets - reported), len(with_markets)


def loop_view(engine: Engine, model_id: str, city: City, first: date, last: date) -> dict[str, float]:
    """What the live loop did with ``model_id`` over the climate days [first, last]: its rt_signals rows, the
    sized ones, and the realized Brier of model and market on those traded rows (one query)."""
    since, _ = climate_day_bounds(first, city)
    _, until = climate_day_bounds(last, city)
    statement = select(RtSignal.p_model, RtSignal.p_market, RtSignal.edge_cents, RtSignal.size_fraction,
                       Market.event_date, Market.strike_type, Market.floor_strike, Market.cap_strike).join(
        Market, Market.ticker == RtSignal.market_ticker).where(
        RtSignal.model_id == model_id, RtSignal.ts_utc >= since, RtSignal.ts_utc < until)
    columns = ("p_model", "p_market", "edge_cents", "size_fraction", "event_date", "bracket", "floor", "cap")
    with engine.connect() as conn:
        frame = rows_frame(conn.execute(statement), columns)
    tmax = load_settlements(engine, city, first, last)
    label = settlement_outcomes(frame["bracket"].to_numpy(), frame["floor"].to_numpy(dtype=float),
                                frame["cap"].to_numpy(dtype=float),
                                frame["event_date"].map(tmax).to_numpy(dtype=float)) if len(frame) else np.zeros(0)
    return loop_quality(*(frame[c].to_numpy(dtype=float) for c in ("p_model", "p_market", "edge_cents",
                                                                     "size_fraction")), label)


def _metric_entities(values: dict[str, float], timestamp: int, step: int = 0) -> list[Metric]:
    return [Metric(key, float(value), timestamp, step) for key, value in values.items()]


def _log_metrics(client: MlflowClient, run_id: str, values: dict[str, float], timestamp: int, step: int = 0) -> None:
    entities = _metric_entities(values, timestamp, step)
    for i in range(0, len(entities), 1000):  # MLflow's limit per log_batch call
        client.log_batch(run_id, metrics=entities[i:i + 1000])


# --- 1. realized evaluation of forward windows ------------------------------------------------------------------

def evaluate_version(client: MlflowClient, engine: Engine, version, *, as_of: date, now: datetime,
                     cache: _Cache) -> Evaluation | str:
    """Score one pending version on its settled week and log it; a string says why it still waits."""
    tags = version.tags
    label = f"{version.name} version {version.version} ({tags.get('window', '?')})"
    try:
        first, last = date.fromisoformat(tags["test_start"]), date.fromisoformat(tags["test_end"])
    except (KeyError, ValueError):
        return f"{label}: its test_start/test_end tags are missing or not dates"
    if last >= as_of:
        return f"{label}: trades until {last}, its week has not ended before {as_of}"
    parent = tags.get("parent_run_id")
    config = cache.config(parent)
    open_days, market_days = unsettled_days(engine, config.city, config.bracket, first, last)
    if not market_days:
        return f"{label}: no {config.city}/{config.bracket} markets are stored for {first}..{last}"
    if open_days:
        days = ", ".join(str(d) for d in open_days)
        return (f"{label}: {days} not settled yet (no climate report of {get_city(config.city).station} for "
                f"{'that day' if len(open_days) == 1 else 'those days'})")
    try:
        rows = labelled_rows(engine, config, first, last)
    except DatasetError as exc:
        return f"{label}: {exc}"
    if rows.empty:
        return f"{label}: no labelled rows in {first}..{last}"
    model_id = f"{version.name}/{version.version}"
    scored = score_test_rows(cache.model(model_id), rows, feature_columns(config.feature_set, config.bracket))
    loop = loop_view(engine, model_id, get_city(config.city), first, last)

    # The window run gets what training logs for a tested window, plus the live loop's view of its week.
    stamp = _ms(now)
    logged = client.get_run(version.run_id).data.params
    params = {"n_test": str(len(rows)), "n_test_locked": str(int(rows["locked"].sum()))}
    fresh = [Param(k, v) for k, v in params.items() if k not in logged]  # params are immutable once logged
    if fresh:
        client.log_batch(version.run_id, params=fresh)
    _log_metrics(client, version.run_id, scored.metrics | loop, stamp)
    with tempfile.TemporaryDirectory() as tmp:
        write_test_artifacts(Path(tmp), scored.predictions, scored.curves, f"{config.city}/{config.bracket}",
                             tags.get("window", ""))
        client.log_artifacts(version.run_id, tmp)
    if parent:
        update_parent_summary(client, version.name, parent, config, {version.run_id: scored.predictions}, stamp)

    checks = realized_checks(scored.metrics, config.acceptance)
    failing = [c.name for c in checks if not c.passed]
    verdict = "fail" if failing else "pass"
    for key, value in ((EVALUATED_AT_TAG, now.isoformat()), (VERDICT_TAG, verdict), (FAILING_TAG, ";".join(failing)),
                       (EVALUATION_TAG, EVALUATION_DONE)):  # done last: a pass killed before it runs again
        client.set_model_version_tag(version.name, version.version, key, value)
    return Evaluation(version.name, str(version.version), tags.get("window", ""), first, last, len(rows),
                      {k: scored.metrics[k] for k in KEY_METRICS}, loop, verdict,
                      [c.line() for c in checks if not c.passed])


def update_parent_summary(client: MlflowClient, name: str, parent_run_id: str, config: TrainConfig,
                          fresh_predictions: dict[str, pd.DataFrame], timestamp: int) -> dict[str, float]:
    """Recompute a training run's summary over its windows (``runner.windows_summary``, as training does) from
    their logged metrics and test predictions; ``fresh_predictions`` (window run id -> predictions) are the
    ones just scored, the others are read back from their ``test_predictions.csv``."""
    siblings = sorted((v for v in all_versions(client, name) if v.tags.get("parent_run_id") == parent_run_id),
                      key=lambda v: int(v.version))
    window_metrics, predictions = [], []
    with tempfile.TemporaryDirectory() as downloads:
        for sibling in siblings:
            run_id = sibling.run_id
            # loop_* describe the live loop's trading, not the model: training's summary has no such means
            window_metrics.append({k: v for k, v in client.get_run(run_id).data.metrics.items()
                                   if not k.startswith("loop_")})
            if run_id in fresh_predictions:
                predictions.append(fresh_predictions[run_id])
            elif any(a.path == "test_predictions.csv" for a in client.list_artifacts(run_id)):
                path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="test_predictions.csv",
                                                           dst_path=str(Path(downloads) / run_id))
                predictions.append(pd.read_csv(path))
    with tempfile.TemporaryDirectory() as tmp:
        summary = windows_summary(window_metrics, predictions, f"{config.city}/{config.bracket}", Path(tmp),
                                  config.acceptance)
        if any(Path(tmp).iterdir()):
            client.log_artifacts(parent_run_id, tmp)
    # MLflow shows a metric's point of the highest step: each update is the next step of the run's summary
    # (training logged step 0), so it wins even when ``now`` is a simulated time before training's own clock.
    revision = 1 + max((m.step for m in client.get_metric_history(parent_run_id, "n_windows")), default=-1)
    _log_metrics(client, parent_run_id, summary, timestamp, revision)
    return summary


# --- 2. drift of the Production families ------------------------------------------------------------------------

def _newest_member(members: list[VersionFacts]) -> VersionFacts:
    return max(members, key=lambda f: (f.test_end, int(f.version)))


def family_drift(client: MlflowClient, engine: Engine, name: str, versions: list, members: list[VersionFacts],
                 config: TrainConfig, *, as_of: date, cache: _Cache) -> tuple[FamilyDrift, pd.DataFrame]:
    """Rolling quality of the family's Production ``members`` over the settled days of the monitoring span,
    each day scored by the version that trades it; also the pooled predictions (with ``version``)."""
    lifecycle = config.lifecycle
    city = get_city(config.city)
    first, last = as_of - timedelta(days=lifecycle.monitor_days), as_of - timedelta(days=1)
    notes: list[str] = []
    trading: dict[date, VersionFacts] = {}
    for day in sorted(load_settlements(engine, city, first, last).index):
        try:
            trading[day] = resolve(members, day, city=config.city, bracket=config.bracket, stage=STAGE).facts
        except NoModelError:
            continue  # before the family's first Production window: nothing traded that day
    by_version: dict[str, list[date]] = {}
    for day, f in trading.items():
        by_version.setdefault(f.version, []).append(day)
    parents = {str(v.version): v.tags.get("parent_run_id") for v in versions}

    # One load per distinct way of building rows (normally one for the whole family), then per version its days.
    groups: dict[tuple, list[str]] = {}
    for version in by_version:
        try:
            vconfig = cache.config(parents.get(version))
        except MonitorError as exc:
            notes.append(f"{name} version {version}: {exc}; its days are left out")
            continue
        f = next(m for m in members if m.version == version)
        key = (f.feature_set, vconfig.vc_for(config.city).max_obs_age_minutes, vconfig.lock_margin_f,
               vconfig.sample_every_minutes)
        groups.setdefault(key, []).append(version)
    scored: list[pd.DataFrame] = []
    for (feature_set, _, _, _), group in groups.items():
        days = [d for v in group for d in by_version[v]]
        vconfig = cache.config(parents[group[0]])
        try:
            rows = labelled_rows(engine, vconfig, min(days), max(days))  # its feature_set is the tag's
        except DatasetError as exc:
            notes.append(f"{name}: {exc}")
            continue
        features = feature_columns(feature_set, config.bracket)
        for version in group:
            mine = rows[rows["event_date"].isin(set(by_version[version]))]
            if mine.empty:
                continue
            try:
                model = cache.model(f"{name}/{version}")
            except MonitorError as exc:
                notes.append(f"{name} version {version}: {exc}; its days are left out")
                continue
            scored.append(score_test_rows(model, mine, features).predictions.assign(version=version))
    predictions = pd.concat(scored, ignore_index=True) if scored else pd.DataFrame(
        columns=["event_date", "label", "p_model", "p_market", "locked", "version"])
    quality = rolling_quality(predictions["label"].to_numpy(dtype=float), predictions["p_model"].to_numpy(dtype=float),
                              predictions["p_market"].to_numpy(dtype=float), predictions["locked"].to_numpy(dtype=bool),
                              predictions["event_date"].to_numpy())
    scored_days = sorted(set(predictions["event_date"]))
    span = (scored_days[0], scored_days[-1]) if scored_days else None
    verdict: DriftVerdict = drift_breaches(quality, lifecycle.drift, name=name, span=span)
    days = {d: f"{trading[d].version} ({trading[d].window})" for d in scored_days}
    return FamilyDrift(name, span, quality, verdict.breaches, notes + verdict.notes, days, logged=False), predictions


def _monitor_run(client: MlflowClient, name: str, config: TrainConfig, now: datetime) -> str:
    """The family's one run in the kwx-monitoring experiment, created on its first pass."""
    experiment_id = tracking.ensure_experiment(MONITOR_EXPERIMENT)
    found = client.search_runs([experiment_id], filter_string=f"tags.`kwx.kind` = '{MONITOR_KIND}' and "
                                                              f"tags.`kwx.model_name` = '{name}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        return found[0].info.run_id
    note = (f"Realized quality of {name}'s Production versions over the settled days of the monitoring span "
            "(lifecycle.monitor_days), one step per `kwx monitor` day (step = days since 1970-01-01); drift/<day>.json "
            "holds each day's numbers, the versions that traded and any breach.")
    run = client.create_run(experiment_id, start_time=_ms(now), run_name=f"monitor {name}", tags={
        "kwx.kind": MONITOR_KIND, "kwx.model_name": name, "kwx.city": config.city, "kwx.bracket": config.bracket,
        "mlflow.note.content": note, **runs.process_tags()})
    return run.info.run_id


def log_drift(client: MlflowClient, family: FamilyDrift, config: TrainConfig, *, as_of: date, now: datetime) -> bool:
    """One point per metric at step ``as_of`` (days since the epoch) in the family's monitoring run, and the
    day's JSON; False, logging nothing, when that step is already there (a second pass of the same day)."""
    run_id = _monitor_run(client, family.name, config, now)
    step = (as_of - date(1970, 1, 1)).days
    if any(m.step == step for m in client.get_metric_history(run_id, "drift_breaches")):
        return False
    thresholds = config.lifecycle.drift
    document = {
        "as_of": as_of.isoformat(), "model": family.name,
        "span": [d.isoformat() for d in family.span] if family.span else None,
        "quality": {k: None if math.isnan(v) else v for k, v in family.quality.items()},
        "thresholds": thresholds.model_dump(mode="json") | {"monitor_days": config.lifecycle.monitor_days},
        "trading": {d.isoformat(): v for d, v in family.trading.items()},
        "breaches": family.breaches, "notes": family.notes,
    }
    client.log_text(run_id, json.dumps(document, indent=2), f"drift/{as_of.isoformat()}.json")
    values = family.quality | {"drift_breaches": float(len(family.breaches)), "drift_max_ece": thresholds.max_ece,
                               "drift_max_brier": thresholds.max_brier,
                               "drift_min_brier_skill": thresholds.min_brier_skill}
    # drift_breaches goes last: its point at this step is what marks the day as logged
    _log_metrics(client, run_id, {k: v for k, v in values.items() if k != "drift_breaches"},
                 _ms(datetime.combine(as_of, time(0), tzinfo=UTC)), step)
    _log_metrics(client, run_id, {"drift_breaches": values["drift_breaches"]},
                 _ms(datetime.combine(as_of, time(0), tzinfo=UTC)), step)
    client.set_terminated(run_id, "FINISHED", end_time=_ms(now))
    return True


# --- 3. withdrawal ----------------------------------------------------------------------------------------------

def _sync_alias(client: MlflowClient, name: str) -> str | None:
    """The production alias on the newest remaining Production member, or gone when none is left."""
    versions, records = registry_state(client, name)
    members = stage_members([facts(v) for v in versions], records, STAGE)
    if members:
        newest = _newest_member(members)
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, newest.version)
        return newest.version
    if PRODUCTION_ALIAS in client.get_registered_model(name).aliases:
        client.delete_registered_model_alias(name, PRODUCTION_ALIAS)
    return None


def withdraw(client: MlflowClient, name: str, versions: list, members: list[VersionFacts], config: TrainConfig,
             breaches: list[str], *, as_of: date, now: datetime) -> str | None:
    """Archive the Production version that trades ``as_of``; a line saying what now trades, or None when
    nothing was withdrawn (none trades as_of, or this day's withdrawal already happened)."""
    day = as_of.isoformat()
    if any(v.tags.get(WITHDRAWN_AS_OF_TAG) == day and v.current_stage == "Archived" for v in versions):
        _sync_alias(client, name)  # finishes a pass killed between archiving and the alias
        return None
    # One withdrawal per alarm: until the rolling span has moved past the days that raised it, the version the
    # family fell back to is scored on those same days and would be withdrawn in turn, and the next, until
    # nothing trades. The alarm keeps sounding (exit 1) for the operator meanwhile.
    since = as_of - timedelta(days=config.lifecycle.monitor_days)
    earlier = sorted(v.tags[WITHDRAWN_AS_OF_TAG] for v in versions
                     if since.isoformat() < v.tags.get(WITHDRAWN_AS_OF_TAG, "") < day)
    if earlier:
        log.warning("%s: drift alarm on %s, no further withdrawal: version(s) withdrawn on %s and the rolling span "
                    "still holds the days that raised it", name, day, ", ".join(earlier))
        return None
    try:
        target = resolve(members, as_of, city=config.city, bracket=config.bracket, stage=STAGE).facts
    except NoModelError:
        return None
    reason = "; ".join(breaches)[:TAG_VALUE_LIMIT]
    for key, value in ((WITHDRAWN_AS_OF_TAG, day), (WITHDRAWN_AT_TAG, now.isoformat()),
                       (WITHDRAWN_REASON_TAG, reason)):
        client.set_model_version_tag(name, target.version, key, value)
    with warnings.catch_warnings():
        # MLflow 3 warns that stages are deprecated; kwx trades by stage (see registry.promotion).
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, target.version, "Archived")
    alias = _sync_alias(client, name)
    remaining = [m for m in members if m.version != target.version]
    try:
        fallback = resolve(remaining, as_of, city=config.city, bracket=config.bracket, stage=STAGE)
        after = (f"{as_of} now resolves to version {fallback.facts.version} ({fallback.facts.window}"
                 + (f", stale by {fallback.stale_days} day(s))" if fallback.stale_days else ")"))
    except NoModelError:
        after = f"no Production version can trade {as_of} any more"
    moved = f"@{PRODUCTION_ALIAS} -> version {alias}" if alias else f"@{PRODUCTION_ALIAS} removed"
    return (f"{name} version {target.version} ({target.window}) archived after {len(breaches)} drift breach(es); "
            f"{after}; {moved}")


# --- the pass ---------------------------------------------------------------------------------------------------

def monitor(client: MlflowClient, engine: Engine, *, as_of: date, now: datetime, city: str | None = None,
            bracket: str | None = None, on_step: Callable[[str], None] | None = None) -> MonitorReport:
    """One monitoring pass at climate day ``as_of`` (``now``: the instant recorded in tags and run times):
    realized evaluation of pending forward windows, then drift (and withdrawal) of every Production family,
    or only of ``model_name(city, bracket)``. Running it again for the same ``as_of`` changes nothing."""
    if (city is None) != (bracket is None):
        raise ValueError("give both city and bracket, or neither to monitor every registered kwx model")
    names = [model_name(city, bracket)] if city else registered_families(client)
    report = MonitorReport(as_of)
    cache = _Cache()
    step = on_step or (lambda _: None)
    for name in names:
        pending = sorted((v for v in all_versions(client, name) if v.tags.get(EVALUATION_TAG) == EVALUATION_PENDING),
                         key=lambda v: int(v.version))
        for version in pending:
            step(f"evaluating {name} version {version.version}")
            try:
                outcome = evaluate_version(client, engine, version, as_of=as_of, now=now, cache=cache)
            except MonitorError as exc:
                outcome = f"{name} version {version.version} ({version.tags.get('window', '?')}): {exc}"
            if isinstance(outcome, str):
                report.waiting.append(outcome)
            else:
                report.evaluated.append(outcome)
    for name in names:
        versions, records = registry_state(client, name)
        members = stage_members([facts(v) for v in versions], records, STAGE)
        if not members:
            continue
        step(f"drift of {name}")
        by_number = {str(v.version): v for v in versions}
        newest = max(members, key=lambda f: int(f.version))
        try:
            # the lifecycle settings of the family's newest Production version's training run
            config = cache.config(by_number[newest.version].tags.get("parent_run_id"))
        except MonitorError as exc:
            report.waiting.append(f"drift of {name}: {exc}")
            continue
        family, _ = family_drift(client, engine, name, versions, members, config, as_of=as_of, cache=cache)
        if family.breaches and config.lifecycle.auto_withdraw:
            line = withdraw(client, name, versions, members, config, family.breaches, as_of=as_of, now=now)
            if line:
                report.withdrawn.append(line)
        family.logged = log_drift(client, family, config, as_of=as_of, now=now)
        report.drift.append(family)
        report.alarms += family.breaches
    return report
