"""End-to-end walk-forward training into a temporary MLflow store (never the user's)."""

from __future__ import annotations

import gc
import json
import multiprocessing
import time
from datetime import date

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from kwx.audit.features import load_window_model
from kwx.config import TrainConfig
from kwx.data.dataset import DatasetError, load_dataset
from kwx.data.db import make_engine
from kwx.domain.features import feature_columns
from kwx.registry import versions
from kwx.registry.versions import LEGACY_MODEL_DESCRIPTION, model_description
from kwx.tracking import TrackingUnavailableError
from kwx.training import runner
from kwx.training.walkforward import train_test_rows
from tests.conftest import demo_database

pytestmark = pytest.mark.integration

CONFIG = {"city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
          "test_days": 4, "step_days": 4, "trials": 3, "cv_splits": 3, "seed": 5}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    return demo_database(tmp_path_factory.mktemp("db"), ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)


@pytest.fixture
def engine(demo_db):
    engine = make_engine(demo_db)
    yield engine
    engine.dispose()


def _runs(client: MlflowClient, experiment_id: str):
    return client.search_runs([experiment_id])


@pytest.mark.parametrize("workers", [1, 2])
def test_trains_one_run_and_version_per_window(engine, tracking, workers):
    config = TrainConfig.model_validate(CONFIG)
    summary = runner.train(config, engine, workers=workers)
    assert list(summary.versions) == ["win_20250701_20250716", "win_20250705_20250720", "win_20250709_20250724"]
    assert list(summary.versions.values()) == ["1", "2", "3"]  # numbered in window order
    runs = _runs(tracking, summary.experiment_id)
    parent = next(r for r in runs if r.info.run_id == summary.parent_run_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.parent_run_id]
    assert len(runs) == 4 and len(children) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    for key in ("mean_test_log_loss", "std_test_log_loss", "mean_test_ece", "mean_market_brier", "n_windows"):
        assert key in parent.data.metrics
    assert parent.data.tags["kwx.data_fingerprint"] and parent.data.params["trials"] == "3"
    # logging and the pooled evaluation are timed apart, each a part of the wall, and logged on the parent
    t = summary.timings
    assert t["mlflow_seconds"] > 0 and t["summary_seconds"] > 0
    assert t["mlflow_seconds"] + t["summary_seconds"] < t["wall_seconds"]
    assert t["mlflow_fraction"] == pytest.approx(t["mlflow_seconds"] / t["wall_seconds"])
    assert parent.data.metrics["timing_summary_seconds"] == pytest.approx(t["summary_seconds"])
    for child in children:
        metrics, params = child.data.metrics, child.data.params
        for key in ("test_log_loss", "test_brier", "test_ece", "test_mce", "test_auc", "nonzero_coefs",
                    "market_log_loss", "market_brier", "market_ece"):
            assert np.isfinite(metrics[key]), key
        for key in ("C", "l1_ratio", "penalty", "class_weight", "train_start", "test_end", "n_train", "n_test",
                    "calibration_method"):
            assert key in params
        artifacts = {a.path for a in tracking.list_artifacts(child.info.run_id)}
        assert {"test_predictions.csv", "optuna_trials.csv", "reliability.png"} <= artifacts

    version = tracking.get_model_version("kwx-chicago-between", "2")
    assert version.tags["window"] == "win_20250705_20250720"
    assert version.description.startswith("Window win_20250705_20250720: trained on 2025-07-05 to 2025-07-16")
    assert tracking.get_registered_model("kwx-chicago-between").description == model_description("chicago",
                                                                                                 "between")
    assert (version.tags["test_start"], version.tags["test_end"]) == ("2025-07-17", "2025-07-20")
    assert version.tags["city"] == "chicago" and version.tags["bracket"] == "between"
    assert version.tags["config_hash"] == config.fingerprint()

    model = mlflow.pyfunc.load_model("models:/kwx-chicago-between/2")
    frame = load_dataset(engine, "chicago", "between", date(2025, 7, 17), date(2025, 7, 18))
    served = model.predict(frame[feature_columns("elasticnet_relative", "between")])
    assert list(served.columns) == ["p_yes"] and len(served) == len(frame)
    assert ((served["p_yes"] >= 0) & (served["p_yes"] <= 1)).all()


def test_bad_input_fails_before_any_run(engine, tracking):
    no_data = TrainConfig.model_validate({**CONFIG, "start": "2024-01-01", "end": "2024-02-01"})
    with pytest.raises(DatasetError, match="no chicago/between markets"):
        runner.train(no_data, engine)
    no_city = TrainConfig.model_validate({**CONFIG, "city": "miami"})
    with pytest.raises(DatasetError, match="no miami/between markets"):
        runner.train(no_city, engine)
    too_short = TrainConfig.model_validate({**CONFIG, "cv_splits": 20})
    with pytest.raises(runner.TrainingError, match="fewer than cv_splits=20"):
        runner.train(too_short, engine)
    assert tracking.search_experiments(filter_string="name = 'kwx-chicago-between'") == []


def test_workers_start_while_the_dataset_builds_and_train_while_mlflow_is_set_up(engine, tracking, monkeypatch):
    events = []
    worker_pool, labelled_rows, results_in_order = runner.worker_pool, runner.labelled_rows, runner.results_in_order
    ensure_experiment = runner.tracking.ensure_experiment

    def starting(workers):
        events.append(("pool", workers))
        return worker_pool(workers)

    def building(*args, **kwargs):
        events.append(("dataset",))
        return labelled_rows(*args, **kwargs)

    def handing_out(fn, jobs, workers, executor):
        results = results_in_order(fn, jobs, workers, executor)
        events.append(("windows handed out", sum(item.fn is fn for item in executor._pending_work_items.values())))
        return results

    def creating(*args, **kwargs):
        events.append(("experiment",))
        return ensure_experiment(*args, **kwargs)

    monkeypatch.setattr(runner, "worker_pool", starting)
    monkeypatch.setattr(runner, "labelled_rows", building)
    monkeypatch.setattr(runner, "results_in_order", handing_out)
    monkeypatch.setattr(runner.tracking, "ensure_experiment", creating)
    with pytest.raises(DatasetError, match="no miami/between markets"):
        runner.train(TrainConfig.model_validate({**CONFIG, "city": "miami"}), engine, workers=2)
    assert events == []  # the quick check failed first: no process was started for nothing
    summary = runner.train(TrainConfig.model_validate(CONFIG), engine, workers=4)
    # as many processes as the config's 3 windows, started first; the windows reach them before MLflow is touched
    assert events[:3] == [("pool", 3), ("dataset",), ("windows handed out", 3)]
    assert events[3:] == [("experiment",)] and len(summary.versions) == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_unreachable_tracking_server_fails_fast(engine, monkeypatch, workers):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        runner.train(TrainConfig.model_validate(CONFIG), engine, workers=workers)
    # with 2 workers the windows were handed out first: the workers were stopped, not waited for
    assert multiprocessing.active_children() == []
    assert time.monotonic() - started < 20


def test_the_collector_spares_the_run_s_heap_while_it_logs_and_only_then(engine, tracking):
    """A full collection of the loaded rows cost 0.25-0.6 s inside a window's logging: the heap a run starts with
    is frozen while it trains and logs, unfrozen after, and a process that froze its own heap keeps it frozen."""
    gc.unfreeze()  # a process that froze nothing (an rt loop test before this one, in this worker, may have)
    frozen_while_logging = []
    runner.train(TrainConfig.model_validate(CONFIG), engine,
                 on_window_done=lambda name, result: frozen_while_logging.append(gc.get_freeze_count()))
    assert frozen_while_logging and min(frozen_while_logging) > 0  # every window
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the rt loop's policy, say
    try:
        runner.train(TrainConfig.model_validate(CONFIG), engine, experiment="kwx-frozen-caller")
        assert gc.get_freeze_count() > 0  # not unfrozen by the run (objects freed since leave the count)
    finally:
        gc.unfreeze()


def test_failure_midway_marks_runs_failed(engine, tracking, monkeypatch):
    calls = {"n": 0}
    real = runner._log_window

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_log_window", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        runner.train(TrainConfig.model_validate(CONFIG), engine)
    experiment = tracking.get_experiment_by_name("kwx-chicago-between")
    statuses = [r.info.status for r in _runs(tracking, experiment.experiment_id)]
    assert "RUNNING" not in statuses and "FAILED" in statuses


def test_failure_inside_a_window_s_logging_ends_its_run_failed(engine, tracking, monkeypatch):
    """Window runs are logged by id, never made active: one whose logging fails is still ended FAILED, as an
    active run's context would end it, and the versions before it stay."""
    real = runner.register_window_version

    def full_registry(client, name, model_uri, run_id, tags, **kwargs):
        if tags["window"] == "win_20250705_20250720":
            raise RuntimeError("registry full")
        return real(client, name, model_uri, run_id, tags, **kwargs)

    monkeypatch.setattr(runner, "register_window_version", full_registry)
    with pytest.raises(RuntimeError, match="registry full"):
        runner.train(TrainConfig.model_validate(CONFIG), engine)
    experiment = tracking.get_experiment_by_name("kwx-chicago-between")
    statuses = {r.info.run_name: r.info.status for r in _runs(tracking, experiment.experiment_id)}
    assert statuses == {"train chicago/between": "FAILED", "win_20250701_20250716": "FINISHED",
                        "win_20250705_20250720": "FAILED"}
    assert [int(v.version) for v in tracking.search_model_versions("name = 'kwx-chicago-between'")] == [1]


def test_optuna_storage_must_not_be_mlflows_database(engine, tracking, tmp_path):
    with pytest.raises(runner.TrainingError, match="schemas collide"):
        runner.train(TrainConfig.model_validate(CONFIG), engine,
                     optuna_storage_spec=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_runs_models_and_datasets_carry_provenance(engine, tracking, monkeypatch):
    """Source tags, notes, per-window datasets, window-named models linked to their versions, true run times."""
    config = TrainConfig.model_validate(CONFIG)
    tracking.create_registered_model("kwx-chicago-between", description=LEGACY_MODEL_DESCRIPTION)
    started, described = [], []
    start_run, describe = mlflow.start_run, versions.describe_registered_model
    monkeypatch.setattr(mlflow, "start_run", lambda *a, **k: started.append(k) or start_run(*a, **k))
    monkeypatch.setattr(versions, "describe_registered_model",
                        lambda client, name, text: described.append(name) or describe(client, name, text))
    summary = runner.train(config, engine, workers=2)
    # Only the parent is ever the active run (windows are logged by id), and the registered model is read and
    # described by the first window's registration only, which brings it up to date for the others.
    assert [k["run_name"] for k in started] == ["train chicago/between"]
    assert described == ["kwx-chicago-between"]
    assert tracking.get_registered_model("kwx-chicago-between").description == model_description("chicago",
                                                                                                 "between")
    runs = _runs(tracking, summary.experiment_id)
    parent = next(r for r in runs if r.info.run_id == summary.parent_run_id)
    children = sorted((r for r in runs if r.info.run_id != summary.parent_run_id), key=lambda r: r.info.run_name)
    tags = parent.data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] == runner.REPO_DIR.as_uri()
    assert tags["mlflow.source.git.commit"] == runner.git_commit() != "unknown"
    assert tags["mlflow.note.content"].startswith("Walk-forward training of chicago/between")

    frame, features, _ = runner.prepare(config, engine)
    models = {m.name: m for m in tracking.search_logged_models(experiment_ids=[summary.experiment_id])}
    assert sorted(models) == sorted(summary.versions)
    for child in children:
        window = child.data.tags["kwx.window"]
        assert child.data.tags["mlflow.source.git.commit"] == tags["mlflow.source.git.commit"]
        assert child.data.tags["mlflow.note.content"].startswith(f"Window {window} of chicago/between: trained on")
        inputs = {i.tags[0].value: i.dataset for i in child.inputs.dataset_inputs}
        assert set(inputs) == {"training", "testing"}
        plan = next(p for p in runner.plan(config, frame) if p.window.name == window)
        for context, rows in zip(("training", "testing"), train_test_rows(frame, plan.window), strict=True):
            dataset = inputs[context]
            assert dataset.name == f"chicago-between-{window}-{'train' if context == 'training' else 'test'}"
            assert dataset.digest == runner.data_fingerprint(rows) and dataset.source_type == "database"
            assert json.loads(dataset.source) == {"url": engine.url.render_as_string(hide_password=True)}
            assert json.loads(dataset.profile)["num_rows"] == len(rows)
        version = summary.versions[window]
        assert json.loads(models[window].tags["mlflow.modelVersions"]) == [
            {"name": "kwx-chicago-between", "version": int(version)}]
        # The run spans the worker's training: it ended before its logging registered the version.
        registered = tracking.get_model_version("kwx-chicago-between", version).creation_timestamp
        assert parent.info.start_time < child.info.start_time < child.info.end_time < registered
    # A window run without a version still loads the model it logged, by its window's name.
    tracking.delete_tag(children[0].info.run_id, "kwx.model_version")
    model = load_window_model(tracking.get_run(children[0].info.run_id), "kwx-chicago-between")
    assert model.predict_proba(frame[features].head(3)).shape == (3, 2)
