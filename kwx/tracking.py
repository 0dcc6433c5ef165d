"""MLflow setup in one explicit step: tracking URI, reachability, experiments, model logging settings."""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from sqlalchemy import make_url

# MLflow 3's own default backend; the ./mlruns file store is no longer accepted for tracking.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
LOCAL_ARTIFACTS_DIR = "mlartifacts"
# Where a database-backed store keeps the artifacts of experiments kwx creates, instead of ./mlartifacts
# (`kwx simulate` keeps its whole MLflow store inside its workspace).
ARTIFACTS_DIR_ENV = "KWX_ARTIFACTS_DIR"
TRACKING_SERVER_SCHEMES = ("http://", "https://", "databricks")
log = logging.getLogger(__name__)


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking store does not answer; nothing has been logged."""


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure(explicit: str | None = None) -> str:
    """Point MLflow at the tracking store and check it answers before anything is logged."""
    uri = tracking_uri(explicit)
    # Artifact progress bars would interleave with kwx's own rich output in logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    check_reachable(uri)
    use_write_ahead_log(uri)
    return uri


def use_write_ahead_log(uri: str) -> None:
    """Switch a SQLite tracking store to SQLite's write-ahead log, which the file keeps from then on.

    MLflow commits a dozen times for each model it logs. In its default rollback journal each commit syncs the
    disk several times, in the write-ahead log once, equally durable: a training run's logging is spent
    waiting for the disk otherwise. Readers (`mlflow ui`) no longer wait for a writer either. A store that
    cannot switch (a read-only file, a network filesystem) keeps its journal: nothing depends on the switch.
    The log is written back into the file when the process exits (``_checkpoint_at_exit``).
    """
    url = make_url(uri)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    try:
        with closing(sqlite3.connect(url.database, timeout=5)) as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error as exc:
        log.debug("MLflow store %s keeps its journal: %s", url.database, exc)
        return
    if mode != "wal":
        log.debug("MLflow store %s keeps its %s journal", url.database, mode)
        return
    _checkpoint_at_exit(os.path.abspath(url.database))


_checkpointed_at_exit: set[str] = set()


def _checkpoint_at_exit(path: str) -> None:
    """Write the store's log back into its file when this process exits. MLflow holds its connections to the end,
    so SQLite never does it on their close: the last runs would stay in mlflow.db-wal beside the file, and a
    copy of mlflow.db alone would miss them."""
    if path not in _checkpointed_at_exit:
        _checkpointed_at_exit.add(path)
        atexit.register(checkpoint_write_ahead_log, path)


def checkpoint_write_ahead_log(path: str) -> None:
    """Everything in the SQLite database's write-ahead log written into the file, and the log emptied."""
    try:
        with closing(sqlite3.connect(path, timeout=5)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:  # the next opener replays the log: nothing is lost
        log.debug("MLflow store %s keeps its log beside it: %s", path, exc)


@contextmanager
def _fail_fast_http():
    """A dead server should fail in seconds, not after MLflow's default minutes of retries."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_reachable(uri: str) -> None:
    try:
        with _fail_fast_http():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingUnavailableError(
            f"MLflow tracking store {uri} is unreachable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None


def flat_params(values: dict, prefix: str = "") -> dict[str, str]:
    """Nested config values as MLflow params: dotted keys, string values cut to 500 characters."""
    params: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        params |= flat_params(value, name) if isinstance(value, dict) else {name: str(value)[:500]}
    return params


def ensure_experiment(name: str) -> str:
    """Experiment id by name, created if needed; database stores used directly keep artifacts in ./mlartifacts
    (or $KWX_ARTIFACTS_DIR).

    A tracking server picks the location itself (its ``--artifacts-destination``, proxied), so clients need
    no S3 credentials; a database URI (sqlite, postgresql, ...) would otherwise default to ./mlruns.
    """
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    uri = mlflow.get_tracking_uri()
    artifact_location = None
    if not uri.startswith(TRACKING_SERVER_SCHEMES):
        directory = os.environ.get(ARTIFACTS_DIR_ENV) or Path.cwd() / LOCAL_ARTIFACTS_DIR
        artifact_location = Path(directory).resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)
