"""Paper trading: the live loop's orders and fills are the backtest's, restarts and halts included."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sqlalchemy import text

from kwx.backtest.data import load_period
from kwx.backtest.engine import simulate
from kwx.backtest.models import ModelSource, OutOfSampleResolver
from kwx.config import RtConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.execution import records
from kwx.registry.cache import RegistryCache
from kwx.rt.replay import replay_day

pytestmark = pytest.mark.integration
DAY = date(2025, 7, 18)
# minute ticks, as the backtest decides; limits that do not bind, so the two see the same markets
PAPER = {"markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 60,
         "execution": {"mode": "paper", "max_open_orders": 100, "max_position_contracts": 100_000,
                       "max_daily_loss_dollars": 1_000_000}}


def _clear(engine):
    with engine.begin() as conn:
        for table in ("fills", "orders", "execution_control", "rt_signals", "rt_ticks"):
            conn.execute(text(f"DELETE FROM {table}"))


def _paper_fills(engine, event_date: date) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(text(
            "SELECT f.market_ticker, f.side, f.price_cents, f.count, f.fee_cents, f.liquidity, f.ts_utc "
            "FROM fills f JOIN markets m ON m.ticker = f.market_ticker WHERE m.event_date = :day"), conn,
            params={"day": event_date})
    frame["fill_ts"] = (pd.to_datetime(frame["ts_utc"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        seconds=1)
    return frame.drop(columns="ts_utc")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def market_db(request, promoted):
    """The promoted model's demo markets: its own SQLite database, or the same demo data in a fresh PostgreSQL
    one (the models come from the same registry either way)."""
    if request.param == "sqlite":
        _clear(promoted["engine"])
        yield promoted["engine"]
        return
    url = request.getfixturevalue("postgres_url")
    migrations.upgrade(url)
    engine = make_engine(url)
    load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)  # small_training_run's data
    yield engine
    engine.dispose()


def test_a_paper_replay_trades_exactly_what_the_backtest_trades(promoted, market_db):
    engine, client = market_db, promoted["client"]
    config = RtConfig.model_validate(PAPER)
    # the day's markets open the day before: both days replayed, a restart of the broker in between
    for day in (date(2025, 7, 17), DAY):
        replay_day(config, engine, client, day)
    paper = _paper_fills(engine, DAY)
    resolver = OutOfSampleResolver([ModelSource.from_run(client, "chicago", "between", promoted["run_id"])],
                                   RegistryCache(client))
    period = load_period(engine, [("chicago", "between")], DAY, DAY, resolver)
    backtest = simulate(period, config).fills
    assert len(backtest) > 0, "the day must trade for the comparison to mean anything"
    key = ["market_ticker", "side", "fill_ts", "liquidity"]
    ours = backtest.rename(columns={"contracts": "count"})[[*key, "price_cents", "count", "fee_cents"]]
    joined = ours.merge(paper, on=key, how="outer", suffixes=("_backtest", "_paper"), indicator=True)
    assert (joined["_merge"] == "both").all(), joined[joined["_merge"] != "both"].head(10)
    for column in ("price_cents", "count", "fee_cents"):
        np.testing.assert_allclose(joined[f"{column}_paper"], joined[f"{column}_backtest"], err_msg=column)
    orders = records.orders(engine, "paper")
    assert set(orders["status"]) <= {"resting", "cancelled", "filled"} and len(orders) >= len(paper)

    # Each paper fill's source (the locked flag of the signal its order was placed on) is the backtest's flag of
    # the decision row it traded on: the minute before a maker fill, a taker fill's own. Every fill of both days,
    # the next day's markets (open from the afternoon before) included.
    markets = load_period(engine, [("chicago", "between")], date(2025, 7, 17), DAY + timedelta(days=1), resolver)
    flags = markets.rows[["market_ticker", "tick_ts"]].assign(locked=markets.inputs.locked)
    sourced = records.fills(engine, "paper", with_source=True)
    fill_ts = (sourced["ts_utc"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    sourced["tick_ts"] = fill_ts - np.where(sourced["liquidity"] == "maker", 60, 0)
    decided = sourced.merge(flags, on=["market_ticker", "tick_ts"])
    assert len(decided) == len(sourced) > len(paper)
    assert (decided["source"] == np.where(decided["locked"], "locked", "open")).all()


def test_a_halt_cancels_the_resting_orders_and_places_none(promoted):
    engine, client = promoted["engine"], promoted["client"]
    _clear(engine)
    config = RtConfig.model_validate(PAPER)
    now = datetime(2025, 7, 18, 6, tzinfo=UTC)
    records.halt(engine, "paper", reason="test: operator halt", by="pytest", now=now, cancel_all=True)
    replay_day(config, engine, client, DAY, max_ticks=600)
    assert records.orders(engine, "paper").empty and records.fills(engine, "paper").empty
    records.resume(engine, "paper", by="pytest", now=now)
    replay_day(config, engine, client, DAY, max_ticks=600)
    assert not records.orders(engine, "paper").empty


# --- restarts: a replay killed at any tick and run again, or run twice, leaves what one clean run leaves --------

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


@pytest.mark.long
def test_a_paper_replay_killed_and_rerun_or_run_twice_writes_what_one_clean_run_writes(promoted, market_db,
                                                                                        tmp_path):
    engine, client = market_db, promoted["client"]
    url = engine.url.render_as_string(hide_password=False)
    replay_day(RtConfig.model_validate(PAPER), engine, client, DAY)
    clean = _tables(engine)
    assert len(clean["fills"]) > 0 and len(clean["orders"]) > len(clean["fills"]) // 2, "the day must trade"
    ticks = len(clean["rt_ticks"])

    _clear(engine)
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
    _clear(engine)
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
    _clear(engine)
    done = 0
    for stop in [*stops, TICKS_OFF_MINUTE]:
        assert replay_day(config, engine, client, DAY, max_ticks=stop - done).resumed_after == done
        done = stop
    for table, frame in clean.items():
        pd.testing.assert_frame_equal(_tables(engine)[table], frame, obj=table)
