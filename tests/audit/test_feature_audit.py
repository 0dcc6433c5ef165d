"""`kwx audit features` on a tiny training run in a temporary MLflow store."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from kwx.cli import app
from kwx.domain.features import feature_columns
from tests.conftest import small_training_run

pytestmark = pytest.mark.integration
cli = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # A run of its own: the audit logs artifacts to it and reads "the latest run" of chicago/between. It reads
    # forecasts, so the audit rebuilds their features from the stored runs as training saw them.
    with small_training_run(tmp_path_factory.mktemp("audit-features"), "elasticnet_forecast") as run:
        yield run


def test_audit_features_of_the_latest_run(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["tracking_uri"])
    result = cli.invoke(app, ["audit", "features", "--city", "chicago", "--bracket", "between", "--repeats", "2",
                              "--db-url", trained["db"]])
    assert result.exit_code == 0, result.output
    run_id = trained["run_id"]
    assert run_id in result.output and "sign stability" in result.output

    out = tmp_path / "feature_audit" / "chicago_between" / run_id
    document = json.loads((out / "feature_audit.json").read_text())
    features = feature_columns("elasticnet_forecast", "between")
    assert {"forecast_logit_ahead", "forecast_logit_late", "p_forecast", "fc_ens_in_bracket"} <= set(features)
    assert set(document["features"]) == set(features)
    assert document["windows"] == trained["windows"] and len(trained["windows"]) >= 2
    assert document["permutation_importance"]["repeats"] == 2
    for stats in document["features"].values():
        assert 0 <= stats["sign_stability"] <= 1 and 0 <= stats["nonzero_fraction"] <= 1
        assert {"coef_mean", "coef_std", "sign_flips", "importance_mean", "importance_std",
                "importance_rank"} <= set(stats)
        assert stats["importance_std"] >= 0
    # The model uses some features on the test weeks: shuffling them costs log loss.
    assert max(s["importance_mean"] for s in document["features"].values()) > 0
    for window in document["per_window"]:
        # The test rows rebuilt from the database are the ones training scored.
        assert window["test_rows"] == window["n_test_logged"] > 0
        assert window["test_log_loss"] == pytest.approx(window["test_log_loss_logged"], rel=1e-9)
        assert set(window["coefficients"]) == set(window["importance_mean"]) == set(features)
    for name in ("coefficients.png", "permutation_importance.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {a.path for a in MlflowClient(trained["tracking_uri"]).list_artifacts(run_id, "feature_audit")}
    assert logged == {"feature_audit/feature_audit.json", "feature_audit/coefficients.png",
                      "feature_audit/permutation_importance.png"}


def test_audit_features_needs_a_run(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["tracking_uri"])
    result = cli.invoke(app, ["audit", "features", "--db-url", trained["db"]])
    assert result.exit_code == 2 and "--run-id" in result.output
