"""Registering a window's version: the registered model's description is read only when not already known."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from kwx.registry.versions import LEGACY_MODEL_DESCRIPTION, model_description, register_window_version

NAME = "kwx-chicago-between"
TAGS = {"city": "chicago", "bracket": "between", "window": "win_20250701_20250716", "train_start": "2025-07-01",
        "train_end": "2025-07-12", "test_start": "2025-07-13", "test_end": "2025-07-16",
        "feature_set": "elasticnet_relative", "config_hash": "abc"}


def _register(client: MlflowClient, **kwargs):
    """A new version of NAME from a new logged model, in the store's default experiment."""
    run = client.create_run("0")
    model = client.create_logged_model("0", name=TAGS["window"], source_run_id=run.info.run_id)
    return register_window_version(client, NAME, f"models:/{model.model_id}", run.info.run_id, TAGS,
                                   model_id=model.model_id, **kwargs)


@pytest.mark.parametrize("existing", [None, LEGACY_MODEL_DESCRIPTION, "", "the desk's own notes"])
def test_the_first_registration_describes_the_model_unless_a_user_did(tracking, existing):
    if existing is not None:
        tracking.create_registered_model(NAME, description=existing)
    version = _register(tracking)
    expected = "the desk's own notes" if existing == "the desk's own notes" else model_description("chicago",
                                                                                                   "between")
    assert tracking.get_registered_model(NAME).description == expected
    assert int(version.version) == 1


def test_a_described_model_is_not_read_again(tracking, monkeypatch):
    _register(tracking)
    tracking.update_registered_model(NAME, description="changed since")

    def unread(self, name):
        raise AssertionError("read again")

    monkeypatch.setattr(MlflowClient, "get_registered_model", unread)
    version = _register(tracking, described=True)
    monkeypatch.undo()
    assert int(version.version) == 2 and version.tags["window"] == TAGS["window"]
    assert tracking.get_registered_model(NAME).description == "changed since"
