"""`kwx rt status --max-age`: the serve-rt container's health check."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session
from typer.testing import CliRunner

from kwx.cli import app
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.schema import RtTick


def _tick(ts: datetime, mode: str) -> RtTick:
    return RtTick(ts_utc=ts, mode=mode, markets=4, signals=1, skips="{}", latency_ms=12.0)


def test_max_age_checks_the_newest_live_tick_only(sqlite_url):
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    cli = CliRunner()

    def status(max_age: str):
        return cli.invoke(app, ["rt", "status", "--db-url", sqlite_url, "--max-age", max_age])

    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(_tick(now + timedelta(days=1), "replay"))  # a replayed day never makes the loop look alive
        session.commit()
    result = status("60")
    assert result.exit_code == 1 and "no live tick recorded yet" in result.output
    with Session(engine) as session:
        session.add(_tick(now - timedelta(seconds=300), "live"))
        session.commit()
    engine.dispose()
    stale = status("60")
    assert stale.exit_code == 1 and re.search(r"newest live tick is 30\d s old \(--max-age 60\)", stale.output)
    fresh = status("3600")
    assert fresh.exit_code == 0 and "live" in fresh.output
