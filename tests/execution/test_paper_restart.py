"""Paper replays across restarts: killed at any tick and rerun, or run twice, they write what one clean run writes.

Apart from tests/execution/test_paper.py so that `make test`'s workers replay these days beside the others (each
file stays on one worker)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import text

from kwx.config import RtConfig
from kwx.rt.replay import replay_day
from tests.conftest import clear_rt_records
from tests.execution.test_paper import DAY, PAPER

pytestmark = pytest.mark.integration

KWX = Path(sys.executable).with_name("kwx")
DIGESTED = {"orders": "client_order_id", "fills": "fill_id", "rt_signals": "ts_utc, market_ticker",
            "rt_ticks": "ts_utc, mode"}
STEP_SECONDS, TICKS_OFF_MINUTE = 45, 1_800  # off the minutes, most of a day
# how long a tick took to compute is the one wall-clock measurement among these columns
WALL_CLOCK = {"rt_ticks": ["latency_ms"]}


def _tables(engine) -> dict[str, pd.DataFrame]:
    """The four tables a paper replay writes, in key order, with times as UTC instants (both databases alike)."""
    out = {}
    with engine.connect() as conn:
        for table, key in DIGESTED.items():
            frame = pd.read_sql(text(f"SELECT * FROM {table} ORDER BY {key}"), conn)
            frame = frame.drop(columns=WALL_CLOCK.get(table, []))
            for column in ("ts_utc", "created_at", "updated_at", "cancelled_at", "signal_ts_utc"):
                if column in frame.columns:
                    frame[column] = pd.to_datetime(frame[column], utc=True)
            out[table] = frame.astype(object).where(frame.notna(), None)
    return out


def _digest(tables: dict[str, pd.DataFrame]) -> str:
    text_rows = "\n".join(f"{name}:{frame.to_csv(index=False)}" for name, frame in tables.items())
    return hashlib.sha256(text_rows.encode()).hexdigest()[:16]


def _ticks_written(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM rt_ticks")).scalar()


def _serve_replay(tmp_path: Path, url: str, tracking_uri: str, engine, *, kill_at: int | None) -> None:
    """`kwx serve-rt --replay DAY` in paper mode in a subprocess: SIGKILLed once ``kill_at`` ticks are stored,
    or run to its end."""
    config = tmp_path / "rt.yaml"
    config.write_text(yaml.safe_dump(PAPER))
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    command = [str(KWX), "serve-rt", "--config", str(config), "--replay", DAY.isoformat(), "--db-url", url]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        if kill_at is None:
            assert serve.wait(timeout=600) == 0, log.read_text()
            return
        deadline = time.monotonic() + 600
        while _ticks_written(engine) < kill_at:
            assert serve.poll() is None, f"the replay ended before {kill_at} ticks were stored:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{kill_at} ticks not stored within 600 s"
            time.sleep(0.05)
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
        serve.wait(timeout=10)


@pytest.mark.long(seconds=105)
def test_a_paper_replay_killed_and_rerun_or_run_twice_writes_what_one_clean_run_writes(promoted, market_db,
                                                                                        tmp_path):
    engine, client = market_db, promoted["client"]
    url = engine.url.render_as_string(hide_password=False)
    replay_day(RtConfig.model_validate(PAPER), engine, client, DAY)
    clean = _tables(engine)
    assert len(clean["fills"]) > 0 and len(clean["orders"]) > len(clean["fills"]) // 2, "the day must trade"
    ticks = len(clean["rt_ticks"])

    clear_rt_records(engine)
    for kill_at in (ticks // 4, ticks * 3 // 5):  # killed at ~25 %, then the rerun at ~60 %, then run to its end
        _serve_replay(tmp_path, url, promoted["tracking_uri"], engine, kill_at=kill_at)
        assert _ticks_written(engine) < ticks, "killed before the day's end"
    _serve_replay(tmp_path, url, promoted["tracking_uri"], engine, kill_at=None)
    resumed = _tables(engine)
    _serve_replay(tmp_path, url, promoted["tracking_uri"], engine, kill_at=None)  # the finished day once more
    repeated = _tables(engine)

    digests = {"clean": _digest(clean), "killed and rerun": _digest(resumed), "repeated": _digest(repeated)}
    print(f"{engine.dialect.name}: {len(clean['orders'])} orders, {len(clean['fills'])} fills, {ticks} ticks; "
          f"digests {digests}")
    for name, tables in (("killed and rerun", resumed), ("repeated", repeated)):
        for table, frame in clean.items():
            pd.testing.assert_frame_equal(tables[table], frame, obj=f"{name}: {table}")


def test_a_paper_replay_stopped_at_any_tick_goes_on_as_one_run_at_ticks_apart_from_minutes(promoted):
    """At ticks off the candles' minutes an order fills only from candles that began after its price was set:
    the resumed broker must know when that was, and it is in no record (a fill moves ``updated_at``)."""
    engine, client = promoted["engine"], promoted["client"]
    config = RtConfig.model_validate({**PAPER, "tick_seconds": STEP_SECONDS})
    clear_rt_records(engine)
    replay_day(config, engine, client, DAY, max_ticks=TICKS_OFF_MINUTE)
    clean = _tables(engine)
    assert len(clean["fills"]) > 0, "the window must trade for the comparison to mean anything"
    # stopped just before and just after ticks that fill a resting order: the resumed broker sizes and times
    # the fills of the orders resting across the stop
    first = clean["rt_ticks"]["ts_utc"].min()
    maker = clean["fills"].loc[clean["fills"]["liquidity"] == "maker", "ts_utc"]
    filling = sorted({-(-(ts - first) // pd.Timedelta(seconds=STEP_SECONDS)) for ts in maker})
    stops = sorted({stop for tick in filling[:4] for stop in (tick, tick + 1)})
    assert len(stops) >= 4, "the window must fill resting orders for the comparison to mean anything"
    clear_rt_records(engine)
    done = 0
    for stop in [*stops, TICKS_OFF_MINUTE]:
        assert replay_day(config, engine, client, DAY, max_ticks=stop - done).resumed_after == done
        done = stop
    for table, frame in clean.items():
        pd.testing.assert_frame_equal(_tables(engine)[table], frame, obj=table)
