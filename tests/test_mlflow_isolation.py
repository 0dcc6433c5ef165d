"""The tests' own MLflow pointing leaves nothing behind: a global tracking URI left set by one test outranks the
MLFLOW_TRACKING_URI of the next, whose registrations then look their logged models up in another store."""

from __future__ import annotations

import mlflow
import pytest

from tests.conftest import mlflow_pointed_at


@pytest.mark.parametrize("before", ["unset", "environment", "global"])
def test_pointing_mlflow_for_a_block_restores_exactly_what_was_there(tmp_path, monkeypatch, before):
    earlier = f"sqlite:///{tmp_path / 'earlier.db'}"
    mlflow.set_tracking_uri(None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if before == "environment":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", earlier)
    elif before == "global":
        mlflow.set_tracking_uri(earlier)
    try:
        with mlflow_pointed_at(f"sqlite:///{tmp_path / 'promoted.db'}"):
            assert mlflow.get_tracking_uri().endswith("promoted.db")
        if before == "global":
            assert mlflow.get_tracking_uri() == earlier
        else:
            # nothing global is left: a later test's environment is what MLflow follows
            later = f"sqlite:///{tmp_path / 'later.db'}"
            monkeypatch.setenv("MLFLOW_TRACKING_URI", later)
            assert mlflow.get_tracking_uri() == later
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture
def global_uri_left_behind(tmp_path):
    """What an earlier test of the same worker could leave: MLflow's global URI on a store of its own."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'left-behind.db'}")
    yield
    mlflow.set_tracking_uri(None)


def test_the_tracking_fixture_wins_over_a_global_uri_left_behind(global_uri_left_behind, tracking):
    tracking.create_registered_model("kwx-isolation")
    run = tracking.create_run("0")
    model = tracking.create_logged_model("0", name="w", source_run_id=run.info.run_id)
    # the registry store finds the logged model through MLflow's global URI, not the client's
    version = tracking.create_model_version("kwx-isolation", f"models:/{model.model_id}", run.info.run_id,
                                            model_id=model.model_id)
    assert int(version.version) == 1
