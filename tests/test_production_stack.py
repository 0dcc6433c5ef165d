"""The docker-compose stack's pieces on loopback, without Docker.

A real `mlflow server` process with a fresh PostgreSQL database as its backend store and an S3 bucket
(moto's S3 server) as its artifact destination; kwx trains, reports, promotes and resolves through it
exactly as it does against the compose stack (MLFLOW_TRACKING_URI=http://...).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import boto3
import httpx
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import make_url

from kwx.config import TrainConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.registry.cache import RegistryCache
from kwx.registry.promotion import promote
from kwx.report import build_report, infrastructure_checks
from kwx.training import runner
from tests.conftest import LENIENT_MARKET_GATES

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

BUCKET = "kwx-mlflow"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "kwx-test", "AWS_SECRET_ACCESS_KEY": "kwx-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}
CONFIG = {"city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
          "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3,
          "acceptance": {"min_windows": 1, "max_ece": 0.5, "max_brier": 0.5, **LENIENT_MARKET_GATES}}
SERVER_START_SECONDS = 90


@dataclass
class Stack:
    tracking_uri: str
    s3: object  # boto3 S3 client on the moto server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def stack(postgres_url, tmp_path, monkeypatch) -> Iterator[Stack]:
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    host, port = s3_server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=BUCKET)
    mlflow_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= CREDENTIALS | {"MLFLOW_S3_ENDPOINT_URL": endpoint, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = tmp_path / "mlflow-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1",
             # The driver stays explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not psycopg2.
             "--backend-store-uri", make_url(postgres_url).render_as_string(hide_password=False),
             "--artifacts-destination", f"s3://{BUCKET}/mlartifacts"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        _wait_healthy(server, tracking_uri, log)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        yield Stack(tracking_uri, s3)
    finally:
        mlflow.set_tracking_uri(None)
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
        s3_server.stop()


def test_train_report_promote_resolve_through_the_tracking_server(stack, tmp_path):
    data_url = f"sqlite:///{tmp_path / 'kwx.db'}"
    migrations.upgrade(data_url)
    engine = make_engine(data_url)
    try:
        load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
        config = TrainConfig.model_validate(CONFIG)
        summary = runner.train(config, engine)
        client = MlflowClient(stack.tracking_uri)
        report = build_report(client, engine, summary.parent_run_id, root=tmp_path / "reports")
        promotion = promote(client, summary.parent_run_id, "Production", now=datetime(2025, 7, 25, tzinfo=UTC),
                            infrastructure=infrastructure_checks(engine, client, summary.parent_run_id),
                            reason="loopback stack test", actor="ci")
        choice = RegistryCache(client).load_model_for_date("chicago", "between", date(2025, 7, 18))
        frame, features, _ = runner.prepare(config, engine)
    finally:
        engine.dispose()

    assert len(summary.versions) == 3 and report.passed
    # Without a local artifact location the server picks its proxied destination: clients need no S3 keys.
    experiment = client.get_experiment(summary.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")

    keys = [obj["Key"] for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for obj in page.get("Contents", [])]
    assert all(key.startswith("mlartifacts/") for key in keys)
    for child in (r for r in client.search_runs([summary.experiment_id]) if r.info.run_id != summary.parent_run_id):
        run_keys = {key.rsplit("/", 1)[-1] for key in keys if f"/{child.info.run_id}/" in key}
        assert {"optuna_trials.csv", "test_predictions.csv", "reliability.png"} <= run_keys, child.info.run_name
    model_files = [key for key in keys if key.endswith("/MLmodel")]
    assert len(model_files) == 3  # one logged model per window, stored in the bucket
    assert any(key.endswith("acceptance_report/06_summary_report.md") for key in keys)

    versions = client.search_model_versions(f"name='{summary.model_name}'")
    assert sorted(v.version for v in versions) == sorted(promotion.promoted) == ["1", "2", "3"]
    for v in versions:
        assert v.current_stage == "Production"
        assert v.tags["promoted_by"] == "ci" and v.tags["promotion_reason"] == "loopback stack test"
        assert v.tags["parent_run_id"] == summary.parent_run_id and v.tags["city"] == "chicago"
    newest = client.get_model_version_by_alias(summary.model_name, "production")
    assert newest.tags["window"] == "win_20250709_20250724"

    model, window, metadata = choice
    assert window == "win_20250705_20250720" and metadata["stale_days"] == 0
    assert metadata["run_id"] == next(v.run_id for v in versions if v.tags["window"] == window)
    rows = frame[frame["event_date"] == date(2025, 7, 18)]
    p = model.predict_proba(rows[features])[:, 1]
    assert len(p) == len(rows) > 0 and np.all((p >= 0) & (p <= 1))
