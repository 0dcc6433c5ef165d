"""Shared fixtures: every test gets its own database and never touches a user's kwx.db or MLflow store."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import mlflow
import pytest
from hypothesis import HealthCheck, settings
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as mlflow_tracking_utils
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kwx.config import TrainConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.registry.promotion import promote
from kwx.report import infrastructure_checks
from kwx.training import runner

# Deadlines flake on a loaded 2-core CI box; correctness, not speed, is what property tests check.
settings.register_profile("kwx", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("kwx"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "kwx")

PG_URL_ENV = "KWX_TEST_PG_URL"
# The tests' few-day training windows cannot be expected to beat the demo market, nor show a calibration
# their handful of days can pin down; tests that promote such runs switch the market and calibration gates off
# (tests/registry/test_gates.py holds those gates to account).
LENIENT_MARKET_GATES = {"min_brier_skill": -1.0, "min_log_loss_skill": -1.0, "min_windows_beating_market": 0.0,
                        "min_calibration_slope": 1e-3, "max_calibration_slope": 10.0,
                        "max_abs_calibration_intercept": 5.0}
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def pytest_collection_modifyitems(config, items):
    """Files with tests marked ``long`` start first, the longest first (``long(seconds=...)``: the file's time on a
    2-core machine), so the parallel workers of `make test` do not all finish and then wait on one of them. Each
    file's tests keep their order (`make test` keeps a file on one worker, in the collection's file order)."""
    seconds: dict[object, float] = {}
    for item in items:
        if (marker := item.get_closest_marker("long")) is not None:
            seconds[item.path] = max(seconds.get(item.path, 0), marker.kwargs.get("seconds", 60))
    items.sort(key=lambda item: -seconds.get(item.path, 0))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's environment or writes into the working directory."""
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "KWX_", "VC_API_KEY", "KALSHI_")) and name != PG_URL_ENV:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _admin_url() -> str:
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The PostgreSQL server, or a skip (locally) / failure (CI) saying why it is missing."""
    url = _admin_url()
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {make_url(url).render_as_string()} ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI requires it (set {PG_URL_ENV} or start the server)")
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url(postgres_admin_url) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"kwx_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'kwx-test.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration])])
def db_url(request) -> str:
    """The same test against SQLite and against PostgreSQL (optuna's storage-contract habit)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(db_url):
    """A migrated engine on ``db_url`` (SQLite and PostgreSQL), disposed afterwards."""
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def demo_database(directory: Path, cities: list[str], start: date, end: date, seed: int) -> str:
    """A migrated SQLite database in ``directory`` holding demo data for ``cities``; returns its URL."""
    url = f"sqlite:///{directory / 'kwx.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    load_demo(engine, cities, start, end, seed=seed)
    engine.dispose()
    return url


@contextmanager
def small_training_run(root: Path, feature_set: str = "elasticnet_relative") -> Iterator[dict]:
    """Chicago demo data 2025-07-01..24 (seed 2) and a quick walk-forward run (three windows testing
    2025-07-13..24) in SQLite stores under ``root``; MLflow points at that store until the block ends."""
    db = demo_database(root, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    engine = make_engine(db)
    mp = pytest.MonkeyPatch()
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    # only the training runs in root: a session-long chdir would be where every later test's monkeypatch returns,
    # and relative paths between tests (kwx.db, mlflow.db) would then name this shared store
    with contextlib.chdir(root):
        summary = runner.train(TrainConfig.model_validate({
            "city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
            "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3, "feature_set": feature_set,
            "acceptance": {"min_windows": 1, "max_ece": 0.5, **LENIENT_MARKET_GATES}}), engine)
    try:
        yield {"engine": engine, "client": MlflowClient(tracking_uri), "db": db, "tracking_uri": tracking_uri,
               "run_id": summary.parent_run_id, "windows": sorted(summary.versions)}
    finally:
        engine.dispose()
        mp.undo()
        mlflow.set_tracking_uri(None)


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A client of a fresh MLflow store in the test's temp directory, which MLflow uses until the test ends, as its
    global URI too (as ``kwx.tracking.configure`` sets it), so nothing an earlier test left there can outrank it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@pytest.fixture(autouse=True)
def _promoted_registry_is_mlflows(request):
    """Tests on the promoted run load its models through MLflow's global registry URI (``models:/`` paths, as
    serve-rt does after configuring it), which any earlier test of the same worker may have pointed elsewhere:
    point it at the promoted store for the test, whatever ran before."""
    if "promoted" not in request.fixturenames:
        yield
        return
    with mlflow_pointed_at(request.getfixturevalue("promoted")["tracking_uri"]):
        yield


@contextmanager
def mlflow_pointed_at(uri: str) -> Iterator[None]:
    """MLflow's global tracking and registry URI is ``uri`` inside the block, whatever it was before and after: what
    a module-scoped fixture on the promoted run needs, being set up before any test's autouse fixture."""
    # The raw setting, not get_tracking_uri(): that resolves the environment and MLflow's default, and restoring
    # the resolved value would leave a global URI set, which outranks the MLFLOW_TRACKING_URI a later test sets
    # (MLflow's registry store looks logged models up through the global one).
    saved_global = mlflow_tracking_utils._tracking_uri
    saved_environment = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_global)
        if saved_environment is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_environment


RT_RECORD_TABLES = ("fills", "orders", "execution_control", "rt_signals", "rt_ticks")


def clear_rt_records(engine) -> None:
    """Empty what the loop writes: the session's shared stores hold whatever earlier tests replayed or traded."""
    with engine.begin() as conn:
        for table in RT_RECORD_TABLES:
            conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def promoted(tmp_path_factory):
    """The small training run promoted to Production, shared by the rt and backtest tests."""
    with small_training_run(tmp_path_factory.mktemp("rt")) as trained:
        client = trained["client"]
        promote(client, trained["run_id"], "Production", now=datetime(2025, 7, 25, tzinfo=UTC),
                infrastructure=infrastructure_checks(trained["engine"], client, trained["run_id"]))
        yield trained
