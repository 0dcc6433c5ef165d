"""kwx.tracking_layout (the source of docs/reference/mlflow.md) lists every key kwx really logs: read back from the
MLflow store of a real training run, its promotion and a backtest with a blend grid.

Marked integration: it needs the session's ``promoted`` training run (about 25 s the first time a worker builds
it; the rt and backtest tests share it) and runs a small backtest (a few seconds)."""

from __future__ import annotations

from datetime import date

import pytest

from kwx import tracking_layout as layout
from kwx.backtest.runner import run_backtest
from kwx.config import RtConfig

pytestmark = pytest.mark.integration


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return files


def _unlisted(client, run, expected: layout.RunLayout) -> dict[str, list[str]]:
    data = run.data
    logged = {"tags": data.tags, "params": data.params, "metrics": data.metrics,
              "artifacts": _artifacts(client, run.info.run_id)}
    found = {part: layout.unlisted(keys, getattr(expected, part)) for part, keys in logged.items()}
    return {part: keys for part, keys in found.items() if keys}


def _children(client, run):
    return client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")


def test_a_training_run_its_windows_and_its_promotion_log_only_listed_keys(promoted):
    client = promoted["client"]
    parent = client.get_run(promoted["run_id"])
    assert parent.data.tags["kwx.kind"] == layout.TRAIN.kind
    assert _unlisted(client, parent, layout.TRAIN) == {}
    windows = _children(client, parent)
    assert len(windows) == len(promoted["windows"])
    for window in windows:
        assert window.data.tags["kwx.kind"] == layout.WINDOW.kind
        assert _unlisted(client, window, layout.WINDOW) == {}
    assert layout.unlisted([client.get_experiment(parent.info.experiment_id).name], layout.EXPERIMENTS) == []

    model = client.get_registered_model(parent.data.tags["kwx.model_name"])
    assert layout.unlisted([model.name], (layout.REGISTERED_MODEL,)) == []
    assert layout.unlisted(model.aliases, layout.ALIASES) == []
    assert model.tags and layout.unlisted(model.tags, layout.MODEL_TAGS) == []
    versions = client.search_model_versions(f"name = '{model.name}'")
    assert layout.unlisted({key for v in versions for key in v.tags}, layout.VERSION_TAGS) == []


def test_a_backtest_and_its_grid_runs_log_only_listed_keys(promoted, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    client = promoted["client"]
    run = run_backtest(RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}]}),
                       promoted["engine"], [("chicago", "between")], date(2025, 7, 13), date(2025, 7, 24),
                       grid=[0.5, 0.7])
    parent = client.get_run(run.run_id)
    assert _unlisted(client, parent, layout.BACKTEST) == {}
    assert layout.unlisted([client.get_experiment(parent.info.experiment_id).name], layout.EXPERIMENTS) == []
    children = _children(client, parent)
    assert len(children) == 2
    for child in children:
        assert _unlisted(client, child, layout.BACKTEST_WEIGHT) == {}


def test_an_unlisted_key_is_found():
    assert layout.unlisted(["mean_test_brier", "pooled_brier_skill_low", "w3_test_brier"], layout.TRAIN.metrics) \
        == ["w3_test_brier"]
    assert layout.unlisted(["risk.kelly_alpha", "vc_features.chicago.minute_features", "risk.nope"],
                           layout.TRAIN.params) == ["risk.nope"]
    assert layout.unlisted(["acceptance_report/report.md", "model.pkl"], layout.TRAIN.artifacts) == ["model.pkl"]
