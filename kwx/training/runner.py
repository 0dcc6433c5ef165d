"""The walk-forward training run: data → window plan → per-window search and fit → MLflow.

The only training module that logs to MLflow (``serving`` is the logged model's format). Windows train in
worker processes; the parent logs each finished window as a nested run and registers its model as a new
version.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import logging
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy.exc
import yaml
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunInfo, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.types import Schema
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)
from mlflow.utils.time import get_current_time_millis
from sqlalchemy import Engine, make_url

from kwx import runs, tracking
from kwx.config import AcceptanceGates, TrainConfig
from kwx.data.dataset import DatasetError, load_dataset, require_markets_near
from kwx.domain.features import UnknownFeatureSetError, feature_columns
from kwx.domain.metrics import pooled_evidence, pooled_metrics, pooled_reliability
from kwx.domain.windows import Window, plan_windows
from kwx.plots import reliability_diagram
from kwx.registry.versions import (
    EVALUATION_DONE,
    EVALUATION_PENDING,
    EVALUATION_TAG,
    FORWARD,
    ORIGIN_TAG,
    WALK_FORWARD,
    model_name,
    register_window_version,
)
from kwx.secrets import redact
from kwx.training import serving
from kwx.training.pool import results_in_order, train_in_worker, window_slice, worker_pool
from kwx.training.search import make_storage
from kwx.training.walkforward import (
    WindowPlan,
    WindowResult,
    data_fingerprint,
    plan,
    sample_rows,
)

REPO_DIR = Path(__file__).resolve().parents[2]
# Launching-run tag: the training (parent) runs it started, comma-separated; the parent's tag names it back.
TRAINING_RUNS_TAG = "kwx.training_run_ids"
LAUNCHED_BY_TAG = "kwx.launched_by_run_id"
FORWARD_AS_OF_TAG = "kwx.forward_as_of"  # a forward retrain's parent: the first day its window trades
DATABASE_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb", "mssql", "oracle")
# A window metric scored on rows, by prefix, and the rows' dataset context: the test week's scores (model and
# market) and the out-of-fold scores on the training rows. The rest (search counts, coefficients) score no rows.
SCORE_PREFIXES = {"testing": ("test_", "market_"), "training": ("cv_",)}
log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A training request that cannot produce any window: the message lists each window's reason."""


# What ``prepare`` raises on bad input (a city or date range without data, an unknown feature set, no
# window that can train), always before any MLflow run exists.
PREPARE_ERRORS = (DatasetError, UnknownFeatureSetError, TrainingError)


@dataclass
class TrainSummary:
    parent_run_id: str
    experiment_id: str
    model_name: str
    versions: dict[str, str]  # window name -> registered version
    skipped: dict[str, str]  # window name -> reason
    window_metrics: dict[str, dict[str, float]]
    timings: dict[str, float] = field(default_factory=dict)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def source_tags() -> dict[str, str]:
    """MLflow's own provenance tags, as `mlflow run` sets them: the checkout and commit kwx runs from, or the
    installed kwx version when there is no checkout (a wheel)."""
    commit = git_commit()
    if commit == "unknown":
        return {MLFLOW_SOURCE_NAME: f"kwx=={importlib.metadata.version('kwx')}", MLFLOW_SOURCE_TYPE: "LOCAL"}
    return {MLFLOW_SOURCE_NAME: REPO_DIR.as_uri(), MLFLOW_SOURCE_TYPE: "LOCAL", MLFLOW_GIT_COMMIT: commit}


class DatabaseDatasetSource(DatasetSource):
    """The database kwx read a window's rows from, by its SQLAlchemy URL (password masked).

    Registered below so MLflow can name it back from a logged dataset (``mlflow.data.get_source``).
    """

    def __init__(self, url: str):
        self.url = url

    @staticmethod
    def _get_source_type() -> str:
        return "database"

    def load(self):
        raise MlflowException(f"{self.url} holds the markets, not this frame: kwx rebuilds a window's rows from "
                              "its training run's config.yaml (`kwx train --config`)")

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        try:
            return make_url(raw_source).get_backend_name() in DATABASE_BACKENDS
        except (sqlalchemy.exc.ArgumentError, TypeError, ValueError):
            return False

    @classmethod
    def _resolve(cls, raw_source: str) -> DatabaseDatasetSource:
        return cls(raw_source)

    def to_dict(self) -> dict[str, str]:
        return {"url": self.url}

    @classmethod
    def from_dict(cls, source_dict: dict) -> DatabaseDatasetSource:
        return cls(source_dict["url"])


register_dataset_source(DatabaseDatasetSource)


class WindowRows(Dataset):
    """A window's train or test rows as MLflow logs them: kwx's digest, the source, the run's schema and the count,
    never the rows. The worker that trained on the rows fingerprinted and counted them (``WindowResult.rows``);
    the run infers the schema once for every window (``rows_schema``). Its ``to_dict`` is a ``PandasDataset``'s
    of the rows' model columns and label."""

    def __init__(self, *, name: str, digest: str, source: DatasetSource, schema: Schema, num_rows: int):
        super().__init__(source=source, name=name, digest=digest)
        self._schema, self._num_rows = schema, num_rows

    def _compute_digest(self) -> str:
        return self.digest  # always given

    @property
    def schema(self) -> Schema:
        return self._schema

    @property
    def profile(self) -> dict[str, int]:
        return {"num_rows": self._num_rows, "num_elements": self._num_rows * len(self._schema.input_names())}

    def to_dict(self) -> dict[str, str]:
        return super().to_dict() | {"schema": json.dumps({"mlflow_colspec": self._schema.to_dict()}),
                                    "profile": json.dumps(self.profile)}


def rows_schema(frame: pd.DataFrame, features: list[str]) -> Schema:
    """The schema of a run's model columns and label, as MLflow infers it from all the run's rows: a column is
    optional when any row misses it, so each window's rows are described truly, if a little loosely.

    MLflow looks for a missing value one value at a time in Python (0.6 s for a run's rows). A column's type
    comes from its dtype and its optionality from whether any value is missing, so two rows say the same: the
    first row, and the first row missing what any row misses."""
    columns = frame[[*features, "label"]]
    first = columns.iloc[:1]
    missing = columns.isna().any().to_numpy()
    return infer_signature(pd.concat([first, first.mask(np.broadcast_to(missing, first.shape))],
                                     ignore_index=True)).inputs


def window_datasets(result: WindowResult, label: str, source: str, schema: Schema) -> list[tuple[WindowRows, str]]:
    """A window's train and test rows as MLflow datasets with their context; the digest is kwx's fingerprint.

    Only the model's columns and the label: MLflow logs their schema (``schema``, the run's) and row count, never
    the rows. A forward window has no test rows yet.
    """
    return [(WindowRows(name=f"{label}-{result.window.name}-{part}", digest=digest,
                        source=DatabaseDatasetSource(source), schema=schema, num_rows=num_rows), context)
            for part, context in (("train", "training"), ("test", "testing")) if part in result.rows
            for digest, num_rows in [result.rows[part]]]


def link_launching_run(client: MlflowClient, launched_run_id: str, parent_run_id: str) -> None:
    """The run `mlflow run` created logs nothing itself: it names and links the training runs it started."""
    tags = client.get_run(launched_run_id).data.tags
    run_ids = [r for r in tags.get(TRAINING_RUNS_TAG, "").split(",") if r] + [parent_run_id]
    lines = []
    for run_id in run_ids:
        info = client.get_run(run_id).info
        experiment = client.get_experiment(info.experiment_id).name
        lines.append(f"- [{info.run_name}](#/experiments/{info.experiment_id}/runs/{run_id}) (run {run_id}) in "
                     f"experiment {experiment}")
    note = ("This run only launched kwx training, which logs to an experiment of its own (kwx-{city}-{bracket} "
            "unless `kwx train --experiment` names another), whatever experiment launched it. Its parent run holds "
            "the config, the summary metrics and one nested run per window:\n\n" + "\n".join(lines))
    client.set_tag(launched_run_id, TRAINING_RUNS_TAG, ",".join(run_ids))
    client.set_tag(launched_run_id, MLFLOW_RUN_NOTE, note)


def search_study_prefix(config: TrainConfig) -> str:
    """Per-window Optuna studies are named ``{prefix}-{window}``; `kwx search-worker` joins the same names."""
    return f"{model_name(config.city, config.bracket)}-{config.fingerprint()}"


def validate_storage(spec: str | None, tracking_uri: str) -> None:
    """Open the Optuna storage once here, before any MLflow run: a bad one would fail every window later."""
    if spec and spec.split("?")[0] == tracking_uri.split("?", maxsplit=1)[0]:
        raise TrainingError("the Optuna storage must not be MLflow's tracking database (their schemas collide)")
    try:
        make_storage(spec)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"Optuna storage {spec!r} cannot be opened: {reason} (give journal:PATH or a "
                            "database URL such as postgresql+psycopg2://user@host/optuna)") from None


def labelled_rows(engine: Engine, config: TrainConfig, first: date, last: date) -> pd.DataFrame:
    """The settled, sampled dataset rows of [first, last] as ``config`` trains and tests on them: what training,
    `kwx monitor` and `kwx simulate` all score."""
    frame = load_dataset(engine, config.city, config.bracket, first, last, config.feature_set,
                         max_obs_age_minutes=config.vc_for(config.city).max_obs_age_minutes,
                         lock_margin_f=config.lock_margin_f, max_forecast_age_hours=config.max_forecast_age_hours)
    rows = sample_rows(frame[frame["label"].notna()], config.sample_every_minutes).reset_index(drop=True)
    # the dataset stores features as float32; models fit, score and log float64 columns as they always have
    return rows.astype({c: float for c in rows.columns if rows[c].dtype == "float32"})


def require_inputs(config: TrainConfig, engine: Engine) -> None:
    """The quick check that ``config`` names stored markets (``require_markets_near``): bad input fails here, in
    one query, before anything is loaded or started."""
    require_markets_near(engine, config.city, config.bracket, config.start, config.end,
                         margin_days=config.train_days + config.test_days)


def prepare(config: TrainConfig, engine: Engine, *, windows: list[Window] | None = None
            ) -> tuple[pd.DataFrame, list[str], list[WindowPlan]]:
    """Everything that can fail on bad input, before any MLflow run exists; ``windows`` replaces the config's
    walk-forward plan (a forward window)."""
    features = feature_columns(config.feature_set, config.bracket)
    require_inputs(config, engine)
    frame = labelled_rows(engine, config, config.start, config.end)
    plans = plan(config, frame, windows=windows)
    if not any(p.usable for p in plans):
        reasons = "; ".join(f"{p.window.name}: {p.skip_reason}" for p in plans) or "no window fits start..end"
        raise TrainingError(f"no window of {config.city}/{config.bracket} can train: {reasons}")
    return frame, features, plans


def train(
    config: TrainConfig, engine: Engine, *, workers: int = 1, optuna_storage_spec: str | None = None,
    experiment: str | None = None, config_text: str | None = None,
    on_window_done: Callable[[str, WindowResult], None] | None = None,
    prepared: tuple[pd.DataFrame, list[str], list[WindowPlan]] | None = None, executor: Executor | None = None,
    launched_run_id: str | None = None, forward_as_of: date | None = None,
) -> TrainSummary:
    """Train every usable window; ``prepared`` is ``prepare(config, engine)`` when the caller already ran it,
    ``executor`` a process pool of ``workers`` the caller shares across several configs, ``launched_run_id``
    the run `mlflow run` created (default: MLFLOW_RUN_ID). ``forward_as_of``: the run trains the forward
    window trading from that day (``kwx.lifecycle.retrain``), whose test week is still ahead."""
    started, started_at = time.perf_counter(), time.time()
    with ExitStack() as stack:
        if executor is None and workers > 1:
            if prepared is None:
                require_inputs(config, engine)  # bad input starts no process
                windows = len(plan_windows(config.start, config.end, config.train_days, config.test_days,
                                           config.step_days))
            else:
                windows = sum(p.usable for p in prepared[2])
            if windows > 1:
                # Started before the dataset is built: the fork server takes seconds to import kwx, which would
                # otherwise hold up the first window (measured: 4.6 s of a 54 s 2-worker run on 2 cores).
                executor = stack.enter_context(worker_pool(min(workers, windows)))
        frame, features, plans = prepared or prepare(config, engine)
        validate_storage(optuna_storage_spec, tracking.tracking_uri())
        usable = [p for p in plans if p.usable]
        study_prefix = search_study_prefix(config)
        jobs = [(window_slice(frame, p), features, config, p, optuna_storage_spec, study_prefix) for p in usable]
        # Handed to the workers before MLflow is touched: the store's check (a new store's tables take a second),
        # its experiment, the parent run and its setup logging (2.4 s of a 16 s 2-worker run) no longer hold them
        # up. An unreachable store still fails at once: the pool stops its workers on the way out. Yielded in
        # window order, so version numbers follow time.
        window_results = results_in_order(train_in_worker, jobs, workers, executor)
        tracking.configure()
        name = model_name(config.city, config.bracket)
        client = MlflowClient()
        # `mlflow run` hands over its run in MLFLOW_RUN_ID, in whatever experiment launched it (Default without
        # --experiment-name). Training never logs into it, so it always lands in its own experiment; taken out of the
        # environment as mlflow.start_run itself would, so the parent below is a new run.
        launched = launched_run_id or os.environ.pop("MLFLOW_RUN_ID", None)
        experiment_id = tracking.ensure_experiment(experiment or name)
        # Runs a killed `kwx train` of this host left RUNNING; only provably dead ones, other hosts' are left alone.
        for verdict in runs.clean(client, [experiment_id], other_hosts_hours=None):
            if verdict.dead:
                log.warning(verdict.line())
        skipped = {p.window.name: p.skip_reason for p in plans if not p.usable}
        logging_seconds = 0.0
        results: dict[str, WindowResult] = {}
        versions: dict[str, str] = {}

        provenance = source_tags()
        if forward_as_of is None:
            note = (f"Walk-forward training of {config.city}/{config.bracket} ({config.feature_set} features, config "
                    f"{config.fingerprint()}): {len(usable)} of {len(plans)} planned windows, each trained on "
                    f"{config.train_days} days and tested on the next {config.test_days}, every {config.step_days} "
                    f"days from {config.start} to {config.end}. Each window is a nested run and a version of {name}.")
        else:
            note = (f"Forward retrain of {config.city}/{config.bracket} as of {forward_as_of} ({config.feature_set} "
                    f"features, config {config.fingerprint()}): one window trained on the {config.train_days} days "
                    f"before it, to trade the next {config.test_days}. Its nested run holds the cross-validated "
                    f"scores; `kwx monitor` adds the realized test-week scores once the week has settled.")
        launch_tags = {}
        forward_tags = {} if forward_as_of is None else {FORWARD_AS_OF_TAG: forward_as_of.isoformat()}
        if launched:
            # The launch's own source tags say how training was started (the MLproject entry point, its commit).
            provenance |= {k: v for k, v in client.get_run(launched).data.tags.items()
                           if k.startswith(("mlflow.source.", "mlflow.project."))}
            note += f" Launched by `mlflow run` run {launched}."
            launch_tags = {LAUNCHED_BY_TAG: launched}
        stack.enter_context(_heap_spared_by_the_collector())
        # The process tags come with the run's creation: a run killed a moment later can still be judged dead. It
        # starts when training did: its windows were handed out (and may have started) before MLflow was touched.
        run_name = f"train {config.city}/{config.bracket}"
        created = client.create_run(experiment_id, start_time=round(started_at * 1000), run_name=run_name,
                                    tags=resolve_tags({"kwx.kind": "train", **runs.process_tags(), **provenance,
                                                       **launch_tags, **forward_tags, MLFLOW_RUN_NOTE: note}))
        parent = stack.enter_context(mlflow.start_run(run_id=created.info.run_id, run_name=run_name))
        if launched:
            link_launching_run(client, launched, parent.info.run_id)
        window_provenance = {k: v for k, v in parent.data.tags.items()
                             if k == MLFLOW_USER or k.startswith(("mlflow.source.", "mlflow.project."))}
        data_source = redact(engine.url.render_as_string(hide_password=True))
        t = time.perf_counter()
        model_logging = serving.RunModelLogging()
        schema = rows_schema(frame, features)
        fingerprint = data_fingerprint(frame)
        params = tracking.flat_params(config.model_dump(mode="json")) | {
            "n_windows_planned": len(plans), "n_windows_usable": len(usable), "workers": workers,
            "n_rows": len(frame), "features": ",".join(features)}
        tags = {"kwx.city": config.city, "kwx.bracket": config.bracket, "kwx.config_hash": config.fingerprint(),
                "kwx.data_fingerprint": fingerprint, "kwx.git_commit": git_commit(), "kwx.model_name": name}
        client.log_batch(parent.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        # config.yaml is the effective config (overrides applied, defaults filled): what promotion re-reads.
        mlflow.log_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), "config.yaml")
        if config_text is not None:
            mlflow.log_text(config_text, "config_source.yaml")
        mlflow.log_dict([{"window": p.window.name, "train_start": str(p.window.train_start),
                          "train_end": str(p.window.train_end), "test_start": str(p.window.test_start),
                          "test_end": str(p.window.test_end), "n_train": p.n_train, "n_test": p.n_test,
                          "skip_reason": p.skip_reason} for p in plans], "window_plan.json")
        logging_seconds += time.perf_counter() - t

        def log_window(result: WindowResult) -> None:
            nonlocal logging_seconds
            t = time.perf_counter()
            datasets = window_datasets(result, f"{config.city}-{config.bracket}", data_source, schema)
            versions[result.window.name] = _log_window(
                client, result, config, name, experiment_id, parent.info.run_id, datasets=datasets,
                provenance=window_provenance, model_logging=model_logging, forward=forward_as_of is not None,
                model_described=bool(versions))
            logging_seconds += time.perf_counter() - t
            results[result.window.name] = result
            if on_window_done is not None:
                on_window_done(result.window.name, result)

        for result in window_results:
            log_window(result)

        window_metrics = {w: results[w].metrics for w in sorted(results)}
        with tempfile.TemporaryDirectory() as tmp:
            # The pooled evaluation (bootstrap intervals, reliability curves and their diagram) is the run's, not
            # MLflow's: timed apart from logging, as a window's own plots are drawn in its worker.
            t = time.perf_counter()
            summary_metrics = windows_summary(list(window_metrics.values()),
                                              [results[w].predictions for w in sorted(results)],
                                              f"{config.city}/{config.bracket}", Path(tmp), config.acceptance)
            summary_seconds = time.perf_counter() - t
            t = time.perf_counter()
            if any(Path(tmp).iterdir()):
                mlflow.log_artifacts(tmp)
        mlflow.log_metrics(summary_metrics)
        mlflow.log_dict({"skipped": skipped, "versions": versions}, "windows.json")
        logging_seconds += time.perf_counter() - t
        total = time.perf_counter() - started
        fits = sum(r.metrics["search_fits"] for r in results.values())
        paths = fits / config.search.C_path_points
        timings = {"wall_seconds": total, "mlflow_seconds": logging_seconds,
                   "mlflow_fraction": logging_seconds / total, "summary_seconds": summary_seconds, "fits": fits,
                   "paths": paths, "search_seconds": sum(r.timings["search_seconds"] for r in results.values())}
        timings["seconds_per_path"] = timings["search_seconds"] / max(paths, 1)
        mlflow.log_metrics({f"timing_{k}": v for k, v in timings.items()})
        return TrainSummary(parent.info.run_id, experiment_id, name, versions, skipped, window_metrics, timings)


@contextmanager
def _heap_spared_by_the_collector() -> Iterator[None]:
    """The run's rows, its modules and whatever else exists when it starts live as long as the run: frozen out of
    the cyclic collector's scans (``gc.freeze``, as the rt loop does), a full collection of that heap costs
    0.25-0.6 s, about once a run, landing in whatever the main process was doing, most often a window's logging.
    Unfrozen when the run ends; a process that froze its heap itself keeps its own policy."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def windows_summary(window_metrics: list[dict[str, float]], predictions: list[pd.DataFrame], label: str,
                    out: Path, acceptance: AcceptanceGates) -> dict[str, float]:
    """A training (parent) run's summary metrics over its windows, as training logs them and `kwx monitor`
    brings them up to date once a forward window's week is scored: ``mean_*``/``std_*`` of every window
    metric (windows without it skipped), ``n_windows``, ``n_test_rows``, the windows whose own ECE the gates
    read (``acceptance.min_window_ece_days``) and, when any window has test predictions, the ``pooled_*``
    metrics of all of them with their bootstrap intervals, whose reliability curves are written into ``out``
    (reliability_pooled.json and .png) for the caller to log."""
    table = pd.DataFrame(window_metrics)
    summary = {}
    for column in table.columns:
        summary[f"mean_{column}"] = float(table[column].mean())
        summary[f"std_{column}"] = float(table[column].std(ddof=0))
    tested = [p for p in predictions if len(p)]
    summary |= {"n_windows": float(len(window_metrics)), "n_test_rows": float(sum(len(p) for p in tested))}
    summary |= gated_window_ece(window_metrics, acceptance.min_window_ece_days)
    if tested:  # a forward run has none until `kwx monitor` scores its week
        pooled = pd.concat(tested, ignore_index=True)
        curves = {name: rel.as_dict() for name, rel in pooled_reliability(pooled).items()}
        (out / "reliability_pooled.json").write_text(json.dumps(curves))
        reliability_diagram(curves, out / "reliability_pooled.png",
                            f"{label} all test weeks pooled (unlocked rows the market quotes)")
        summary |= pooled_metrics(pooled)
        summary |= pooled_evidence(pooled, resamples=acceptance.bootstrap_resamples,
                                   level=acceptance.confidence_level, seed=acceptance.bootstrap_seed)
    return summary


def gated_window_ece(window_metrics: list[dict[str, float]], min_days: int) -> dict[str, float]:
    """``n_windows_ece_gated``: windows whose unlocked test rows span at least ``min_days`` climate days, and
    ``max_gated_window_unlocked_ece``, the worst ECE among them (NaN when none qualifies)."""
    gated = [m["test_unlocked_ece"] for m in window_metrics
             if m.get("test_unlocked_days", 0) >= min_days and not math.isnan(m.get("test_unlocked_ece", math.nan))]
    return {"n_windows_ece_gated": float(len(gated)),
            "max_gated_window_unlocked_ece": max(gated) if gated else float("nan")}


def logged_model_description(result: WindowResult, config: TrainConfig, name: str, forward: bool) -> str:
    """What the logged model's page says it is: what it predicts from which features, for which market and days."""
    window = result.window
    trades = "will trade" if forward else "was tested on and may trade"
    return (f"P(YES): the probability that Kalshi's {config.city} {config.bracket} daily-high-temperature market "
            f"settles YES, as a `p_yes` column. Window {window.name} of {name}: trained on {window.train_start} to "
            f"{window.train_end}, {trades} {window.test_start} to {window.test_end}. Input: the "
            f"{config.feature_set} features {', '.join(result.input_example.columns)}, one double column each "
            "(null where unobserved, imputed as in training).")


def window_metrics(metrics: dict[str, float], datasets: list[tuple[WindowRows, str]], run_id: str,
                   model_id: str) -> list[Metric]:
    """A window's metrics as one batch, all of its model's: the scores (``SCORE_PREFIXES``) also name the rows
    they were measured on, so MLflow shows them with the model's training or test dataset."""
    scored_rows = {context: dataset for dataset, context in datasets}
    timestamp = get_current_time_millis()

    def rows_of(key: str) -> WindowRows | None:
        return next((scored_rows[context] for context, prefixes in SCORE_PREFIXES.items()
                     if context in scored_rows and key.startswith(prefixes)), None)

    return [Metric(key, value, timestamp, 0, run_id=run_id, model_id=model_id,
                   dataset_name=rows.name if rows is not None else None,
                   dataset_digest=rows.digest if rows is not None else None)
            for key, value in metrics.items() for rows in [rows_of(key)]]


def _log_window(client: MlflowClient, result: WindowResult, config: TrainConfig, name: str, experiment_id: str,
                parent_run_id: str, *, datasets: list[tuple[WindowRows, str]], provenance: dict[str, str],
                model_logging: serving.RunModelLogging, forward: bool = False, model_described: bool = False) -> str:
    """``model_described``: the registered model exists with its description (``register_window_version``)."""
    window = result.window
    tested = (f"trades {window.test_start} to {window.test_end}, scored by `kwx monitor` once those days settle"
              if forward else f"tested on {window.test_start} to {window.test_end} ({result.params['n_test']} rows)")
    note = (f"Window {window.name} of {config.city}/{config.bracket}: trained on {window.train_start} to "
            f"{window.train_end} ({result.params['n_train']} rows), {tested}. Its model {window.name} is a version "
            f"of {name}.")
    run_tags = {"kwx.kind": "window", "kwx.window": window.name, "kwx.parent_run_id": parent_run_id,
                MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NOTE: note, **provenance,
                **runs.process_tags()}
    # Created with the worker's wall-clock start (start_run cannot take one): the run's duration is training time.
    run = client.create_run(experiment_id, start_time=round(result.timings["started_at"] * 1000), tags=run_tags,
                            run_name=window.name).info
    run_id = run.run_id
    # Logged by run id, never made the active run: mlflow.start_run and end_run would read the run back, mark it
    # RUNNING again and end it at a time replaced below, four store calls a window for nothing. A failure still
    # ends the run FAILED, as leaving an active run would.
    try:
        version = _log_window_run(client, run, result, config, name, parent_run_id, datasets=datasets,
                                  model_logging=model_logging, forward=forward, model_described=model_described)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, end_time=round(result.timings["finished_at"] * 1000))
    return version


def _log_window_run(client: MlflowClient, run: RunInfo, result: WindowResult, config: TrainConfig, name: str,
                    parent_run_id: str, *, datasets: list[tuple[WindowRows, str]],
                    model_logging: serving.RunModelLogging, forward: bool, model_described: bool) -> str:
    """What a window's run holds, logged into it by id: datasets, files, model, params and metrics, version."""
    window = result.window
    run_id = run.run_id
    params = {key: str(value) for key, value in result.params.items()}
    # as mlflow.log_inputs would log them into the active run
    client.log_inputs(run_id, [DatasetInput(DatasetEntity(**dataset.to_dict()), [InputTag(MLFLOW_DATASET_CONTEXT, c)])
                               for dataset, c in datasets])
    with tempfile.TemporaryDirectory() as tmp:
        for file_name, data in result.artifacts.items():
            (Path(tmp) / file_name).write_bytes(data)
        # into the artifact location the new run reported: client.log_artifacts would read the run back for it
        get_artifact_repository(run.artifact_uri, tracking_uri=client.tracking_uri).log_artifacts(tmp)
    # The model gets the params as an argument, which MLflow would otherwise read back from the run.
    info = model_logging.log_model(result.model, name=window.name, input_example=result.input_example, run_id=run_id,
                                   params=params,
                                   tags={MLFLOW_RUN_NOTE: logged_model_description(result, config, name, forward)})
    # After the model, so every metric names it (the run has none yet for MLflow to copy onto it); the params in
    # the same batch.
    client.log_batch(run_id, metrics=window_metrics(result.metrics, datasets, run_id, info.model_id),
                     params=[Param(key, value) for key, value in params.items()])
    # Registered last, after predictions, trials, plots and model: a window whose process died midway
    # has no version, and its run (never FINISHED) is what `kwx report` and `kwx runs clean` name.
    tags = {"city": config.city, "bracket": config.bracket, "window": window.name,
            "train_start": window.train_start.isoformat(), "train_end": window.train_end.isoformat(),
            "test_start": window.test_start.isoformat(), "test_end": window.test_end.isoformat(),
            "feature_set": config.feature_set, "config_hash": config.fingerprint(),
            "parent_run_id": parent_run_id,
            # a forward window's week is still ahead: `kwx monitor` scores it once it has settled
            ORIGIN_TAG: FORWARD if forward else WALK_FORWARD,
            EVALUATION_TAG: EVALUATION_PENDING if forward else EVALUATION_DONE}
    version = register_window_version(client, name, info.model_uri, run_id, tags, model_id=info.model_id,
                                      described=model_described)
    client.set_tag(run_id, "kwx.model_version", version.version)
    return str(version.version)


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def log_summary(run_id: str, summary: list[dict], artifact_file: str) -> None:
    """A JSON summary on an existing run (the run `mlflow run` launched a matrix in)."""
    MlflowClient().log_dict(run_id, summary, artifact_file)

