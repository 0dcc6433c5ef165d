"""A replayed paper-trading day for the dashboard: copies of the promoted run's database and registry (so the
page, and the tests that provoke it, never disturb the shared stores), the day replayed into the copy."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from mlflow.tracking import MlflowClient
from sqlalchemy import text

from kwx.cli.dashboard import tcp_listener
from kwx.clock import SimulatedClock, SystemClock
from kwx.config import RtConfig
from kwx.dashboard.app import Dashboard
from kwx.dashboard.registry import RegistryView
from kwx.data.db import make_engine, make_read_only_engine
from kwx.rt.replay import replay_day
from tests.conftest import clear_rt_records

DAY = date(2025, 7, 18)
# Registry answers and the page's refresh both follow the config: short here so a provoked change shows fast.
RT = {"markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 2, "model_refresh_seconds": 1,
      "execution": {"mode": "paper", "max_open_orders": 100, "max_position_contracts": 100_000,
                    "max_daily_loss_dollars": 1_000_000}}
REPLAY_TICK_SECONDS = 300


def sqlite_copy(source_url: str, target: Path) -> str:
    """A consistent copy of a (WAL-mode) SQLite database, through SQLite's backup API."""
    source = sqlite3.connect(source_url.removeprefix("sqlite:///"))
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return f"sqlite:///{target}"


@pytest.fixture(scope="session")
def replayed(promoted, tmp_path_factory) -> dict:
    """Chicago 2025-07-18 replayed in paper mode at 5-minute ticks into a copy of the promoted stores."""
    root = tmp_path_factory.mktemp("dashboard")
    db = sqlite_copy(promoted["db"], root / "kwx.db")
    tracking_uri = sqlite_copy(promoted["tracking_uri"], root / "mlflow.db")
    engine = make_engine(db)
    clear_rt_records(engine)
    client = MlflowClient(tracking_uri)
    config = RtConfig.model_validate({**RT, "tick_seconds": REPLAY_TICK_SECONDS})
    replay_day(config, engine, client, DAY)
    engine.dispose()
    return {"db": db, "tracking_uri": tracking_uri, "root": root}


def newest_tick(db: str) -> datetime:
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            value = conn.execute(text("SELECT max(ts_utc) FROM rt_ticks")).scalar()
    finally:
        engine.dispose()
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def board_for(db: str, tracking_uri: str, *, clock=None, max_age_seconds: float = 60, ui_url: str | None = None,
              **overrides) -> Dashboard:
    """A Dashboard over ``db`` whose clock stands 10 s after the newest tick unless given."""
    config = RtConfig.model_validate({**RT, **overrides})
    clock = clock or SimulatedClock(newest_tick(db) + timedelta(seconds=10))
    # the registry's answers age in real time, as in a replay: the simulated clock only stands in for "now"
    registry = RegistryView(MlflowClient(tracking_uri), SystemClock(), stage=config.stage, ui_url=ui_url,
                            refresh_seconds=config.model_refresh_seconds, max_stale_days=config.max_stale_days)
    return Dashboard(make_read_only_engine(db), registry, config, clock, max_age_seconds, "database (test)")


@contextmanager
def serving(app, host: str = "127.0.0.1") -> Iterator[str]:
    """``app`` on uvicorn in a thread, on a free port of ``host``; yields its base URL."""
    listener = tcp_listener(host, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
