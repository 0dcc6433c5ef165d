"""Execution records on SQLite and PostgreSQL: the migration, orders and fills, positions and P&L from them, the
kill switch, and the `kwx rt` views over them.

The book (paper mode unless said), valued at AS_OF = 2025-11-29 18:00 UTC:

* 2025-11-28, settled: 10 YES of B33.5 at 40¢ (fills of 6 and 4, fees 10¢ + 0¢), YES paid 100¢
  -> realized 1000 - 400 = +600¢; 5 NO of B35.5 at 70¢ (fee 7¢), settled NO (YES 0¢) -> 500 - 350 = +150¢.
  Day: realized +750¢, fees 17¢, P&L +733¢.
* 2025-11-29, open: 4 YES of B35.5 bought at 30¢ (fee 6¢), 2 sold at 45¢ (fee 2¢), 6 more resting at 30¢;
  the newest candle with both quotes at or before AS_OF has bid 40 / ask 44 -> mid 42¢.
  Realized 2 x (45 - 30) = +30¢, held 2 at cost 60¢ worth 84¢ -> MTM +24¢, fees 8¢, P&L +46¢.
  A NO buy of 3 at 20¢ in B37.5 is pending.
* One live order and fill, which no paper view shows.

Sources: o1 was placed on an open signal row of its market and o2 on a locked one (the rule had decided
B35.5), so the 28th's P&L is open (model) +590¢ + locked (rule) +143¢. o3 and o4 have no signal row: open,
although their market's signals locked later that day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from kwx.cli import app
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.store import upsert_frame
from kwx.execution import records

AS_OF = datetime(2025, 11, 29, 18, tzinfo=UTC)
EXECUTION_TABLES = {"orders", "fills", "execution_control"}
SETTLED_YES, SETTLED_NO = "KXHIGHCHI-25NOV28-B33.5", "KXHIGHCHI-25NOV28-B35.5"
OPEN_MARKET, PENDING_MARKET = "KXHIGHCHI-25NOV29-B35.5", "KXHIGHCHI-25NOV29-B37.5"
runner = CliRunner()


def _market(ticker: str, day: date, result: str | None, settlement: float | None) -> dict:
    close = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC) + timedelta(hours=6)
    return {"ticker": ticker, "event_ticker": ticker.rsplit("-", 1)[0], "series_ticker": "KXHIGHCHI",
            "city": "chicago", "event_date": day, "strike_type": "between", "open_time": close - timedelta(days=2),
            "close_time": close, "result": result, "settlement_value": settlement}


def _order(cid: str, ticker: str, side: str, action: str, price: float, count: int, filled: int, status: str,
           created: datetime, mode: str = "paper") -> dict:
    return {"client_order_id": cid, "exchange_order_id": None if mode == "paper" else f"x-{cid}", "mode": mode,
            "environment": "paper" if mode == "paper" else "demo", "market_ticker": ticker, "side": side,
            "action": action, "limit_price_cents": price, "count": count, "filled_count": filled,
            "remaining_count": 0 if status == "filled" else count - filled, "post_only": True, "status": status,
            "created_at": created, "updated_at": created, "cancelled_at": None, "reason": "edge 3.1c",
            "signal_ts_utc": created}


def _fill(fid: str, cid: str, ticker: str, side: str, action: str, price: float, count: int, fee: float,
          ts: datetime, mode: str = "paper") -> dict:
    return {"fill_id": fid, "client_order_id": cid, "market_ticker": ticker, "side": side, "action": action,
            "price_cents": price, "count": count, "fee_cents": fee, "liquidity": "maker" if fee == 0 else "taker",
            "ts_utc": ts, "mode": mode}


def _book(engine) -> None:
    day1, day2 = date(2025, 11, 28), date(2025, 11, 29)
    t1, t2 = datetime(2025, 11, 28, 15, tzinfo=UTC), datetime(2025, 11, 29, 15, tzinfo=UTC)
    markets = pd.DataFrame([_market(SETTLED_YES, day1, "yes", 100.0), _market(SETTLED_NO, day1, "no", 0.0),
                            _market(OPEN_MARKET, day2, None, None), _market(PENDING_MARKET, day2, None, None)])
    at = int(AS_OF.timestamp())
    candles = pd.DataFrame({"market_ticker": OPEN_MARKET, "end_period_ts": [at - 3600, at - 60, at + 1800],
                            "yes_bid_close": [40.0, None, 60.0], "yes_ask_close": [44.0, 50.0, 62.0]})
    orders = pd.DataFrame([
        _order("o1", SETTLED_YES, "yes", "buy", 40, 10, 10, "filled", t1),
        _order("o2", SETTLED_NO, "no", "buy", 70, 5, 5, "filled", t1 + timedelta(minutes=1)),
        _order("o3", OPEN_MARKET, "yes", "buy", 30, 10, 4, "resting", t2),
        _order("o4", OPEN_MARKET, "yes", "sell", 45, 2, 2, "filled", t2 + timedelta(minutes=30)),
        _order("o5", PENDING_MARKET, "no", "buy", 20, 3, 0, "pending", t2 + timedelta(minutes=40)),
        _order("l1", OPEN_MARKET, "no", "buy", 50, 7, 7, "filled", t2, mode="live"),
    ])
    fills = pd.DataFrame([
        _fill("f1", "o1", SETTLED_YES, "yes", "buy", 40, 6, 10, t1 + timedelta(seconds=5)),
        _fill("f2", "o1", SETTLED_YES, "yes", "buy", 40, 4, 0, t1 + timedelta(seconds=9)),
        _fill("f3", "o2", SETTLED_NO, "no", "buy", 70, 5, 7, t1 + timedelta(minutes=2)),
        _fill("f4", "o3", OPEN_MARKET, "yes", "buy", 30, 4, 6, t2 + timedelta(minutes=5)),
        _fill("f5", "o4", OPEN_MARKET, "yes", "sell", 45, 2, 2, t2 + timedelta(minutes=31)),
        _fill("lf1", "l1", OPEN_MARKET, "no", "buy", 50, 7, 9, t2 + timedelta(minutes=1), mode="live"),
    ])
    signals = pd.DataFrame([_signal(SETTLED_YES, t1, locked=False), _signal(SETTLED_NO, t1 + timedelta(minutes=1),
                                                                         locked=True),
                            _signal(SETTLED_NO, t1, locked=False),  # the minute before the rule decided it
                            _signal(OPEN_MARKET, t2 + timedelta(hours=1), locked=True)])
    with engine.begin() as conn:
        upsert_frame(conn, "markets", markets)
        upsert_frame(conn, "candles", candles)
        upsert_frame(conn, "rt_signals", signals)
        records.save_orders(conn, orders)
        records.save_fills(conn, fills)


def _signal(ticker: str, ts: datetime, *, locked: bool) -> dict:
    return {"ts_utc": ts, "market_ticker": ticker, "city": "chicago", "bracket": "between", "locked": locked}


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_migration_creates_and_drops_the_execution_tables(db_url):
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    insp = inspect(engine)
    assert _tables(engine) >= EXECUTION_TABLES
    assert {ix["name"] for ix in insp.get_indexes("orders")} >= {
        "idx_orders_status", "idx_orders_market_ticker", "idx_orders_created_at"}
    assert {ix["name"] for ix in insp.get_indexes("fills")} >= {
        "idx_fills_client_order_id", "idx_fills_market_ticker", "idx_fills_ts_utc"}
    assert [uq["column_names"] for uq in insp.get_unique_constraints("orders")] == [["exchange_order_id"]]
    assert {(fk["referred_table"], tuple(fk["referred_columns"])) for fk in insp.get_foreign_keys("fills")} == {
        ("orders", ("client_order_id",)), ("markets", ("ticker",))}
    migrations.downgrade(db_url, "a7e3b9c2d5f1")
    assert not EXECUTION_TABLES & _tables(engine)
    migrations.upgrade(db_url)
    assert _tables(engine) >= EXECUTION_TABLES and migrations.is_at_head(db_url)
    engine.dispose()


def test_orders_and_fills_round_trip_and_a_fill_is_stored_once(engine):
    _book(engine)
    paper = records.orders(engine, "paper")
    assert paper["client_order_id"].tolist() == ["o1", "o2", "o3", "o4", "o5"]
    o3 = paper.set_index("client_order_id").loc["o3"]
    assert (o3.status, o3.filled_count, o3.remaining_count, bool(o3.post_only), o3.city) == (
        "resting", 4, 6, True, "chicago")
    assert o3.created_at == datetime(2025, 11, 29, 15, tzinfo=UTC) and pd.isna(o3.cancelled_at)
    assert records.open_orders(engine, "paper")["client_order_id"].tolist() == ["o3", "o5"]
    assert records.orders(engine, "paper", since=datetime(2025, 11, 29, tzinfo=UTC))["client_order_id"].tolist() == [
        "o3", "o4", "o5"]
    assert records.orders(engine, "live")["exchange_order_id"].tolist() == ["x-l1"]
    assert records.latest_environment(engine, "live") == "demo"

    # A status change sends only what changed; the rest of the row stays. An unknown order matches nothing.
    cancelled = datetime(2025, 11, 29, 17, tzinfo=UTC)
    change = pd.DataFrame([{"client_order_id": "o5", "status": "cancelled", "remaining_count": 0,
                            "updated_at": cancelled, "cancelled_at": cancelled, "reason": None}])
    with engine.begin() as conn:
        assert records.update_orders(conn, change) == 1
        assert records.update_orders(conn, change.assign(client_order_id="o404")) == 0
    o5 = records.orders(engine, "paper").set_index("client_order_id").loc["o5"]
    assert (o5.status, o5["count"], o5.remaining_count, o5.cancelled_at) == ("cancelled", 3, 0, cancelled)
    assert pd.isna(o5.reason)
    with engine.begin() as conn:  # a long reason keeps its first 200 characters rather than failing the write
        records.update_orders(conn, pd.DataFrame([{"client_order_id": "o4", "reason": "x" * 300}]))
    assert records.orders(engine, "paper").set_index("client_order_id").loc["o4", "reason"] == "x" * 200
    with engine.begin() as conn, pytest.raises(records.RecordError, match="status: 'done'"):
        records.update_orders(conn, change.assign(status="done"))
    # Replacing a whole order is an upsert.
    with engine.begin() as conn:
        records.save_orders(conn, records.orders(engine, "paper").drop(columns="city").iloc[[2]].assign(
            filled_count=5, remaining_count=5))
    assert records.orders(engine, "paper").set_index("client_order_id").loc["o3", "filled_count"] == 5

    # The exchange reports f4 again (and twice within one batch): stored once, its first version kept.
    again = records.fills(engine, "paper").iloc[[3]].assign(count=99)
    with engine.begin() as conn:
        records.save_fills(conn, pd.concat([again, again]))
    stored = records.fills(engine, "paper")
    assert stored["fill_id"].tolist() == ["f1", "f2", "f3", "f4", "f5"]
    assert stored.set_index("fill_id").loc["f4", "count"] == 4


def test_bad_values_are_refused_with_their_names(engine):
    _book(engine)
    bad = records.orders(engine, "paper").drop(columns="city").iloc[[0]].assign(status="canceled")
    with engine.begin() as conn, pytest.raises(records.RecordError, match=r"orders\.status: 'canceled'"):
        records.save_orders(conn, bad)
    fill = records.fills(engine, "paper").iloc[[0]].assign(fill_id="f9", client_order_id="nope")
    with engine.begin() as conn, pytest.raises(IntegrityError):  # a fill of an unknown order
        records.save_fills(conn, fill)
    with pytest.raises(records.RecordError, match="unknown execution mode 'signals'"):
        records.orders(engine, "signals")


def test_positions_and_pnl_of_settled_and_open_markets(engine):
    _book(engine)
    held = records.positions(engine, "paper", AS_OF).set_index(["market_ticker", "side"])
    yes = held.loc[(SETTLED_YES, "yes")]
    assert (yes.contracts, yes.avg_cost_cents, yes.cost_cents, yes.fees_cents) == (10, 40, 400, 10)
    assert yes.settled and (yes.payout_cents, yes.realized_cents, yes.pnl_cents) == (1000, 600, 590)
    no = held.loc[(SETTLED_NO, "no")]
    assert no.settled and (no.payout_cents, no.realized_cents, no.pnl_cents) == (500, 150, 143)
    open_ = held.loc[(OPEN_MARKET, "yes")]
    assert (open_.contracts, open_.cost_cents, open_.mark_cents, open_.market_value_cents) == (2, 60, 42, 84)
    assert not open_.settled and (open_.realized_cents, open_.unrealized_cents, open_.fees_cents) == (30, 24, 8)
    assert open_.pnl_cents == 46 and open_.event_date == date(2025, 11, 29) and open_.city == "chicago"
    assert (OPEN_MARKET, "no") not in held.index  # the live fill is not a paper position
    # each order's source is its own signal row's: o2's was locked; o3's and o4's have none
    assert held["source"].to_dict() == {(SETTLED_YES, "yes"): "open", (SETTLED_NO, "no"): "locked",
                                        (OPEN_MARKET, "yes"): "open"}
    assert records.fills(engine, "paper", with_source=True).set_index("fill_id")["source"].to_dict() == {
        "f1": "open", "f2": "open", "f3": "locked", "f4": "open", "f5": "open"}
    assert "source" not in records.fills(engine, "paper").columns

    day1 = records.daily_pnl(engine, "paper", date(2025, 11, 28), as_of=AS_OF)
    assert (day1.realized_cents, day1.unrealized_cents, day1.fees_cents, day1.pnl_cents) == (750, 0, 17, 733)
    assert day1.by_source[["realized_cents", "fees_cents", "pnl_cents", "positions"]].to_dict("index") == {
        "open": {"realized_cents": 600, "fees_cents": 10, "pnl_cents": 590, "positions": 1},
        "locked": {"realized_cents": 150, "fees_cents": 7, "pnl_cents": 143, "positions": 1}}
    day2 = records.daily_pnl(engine, "paper", date(2025, 11, 29), "chicago", as_of=AS_OF)
    assert (day2.realized_cents, day2.unrealized_cents, day2.fees_cents, day2.pnl_cents) == (30, 24, 8, 46)
    assert records.daily_pnl(engine, "paper", date(2025, 11, 29), "nyc", as_of=AS_OF).positions.empty
    by_day = records.pnl_by_day(engine, "paper", as_of=AS_OF)
    assert by_day["pnl_cents"].tolist() == [733, 46]
    assert by_day["open_pnl_cents"].tolist() == [590, 46] and by_day["locked_pnl_cents"].tolist() == [143, 0]

    # Before the 28th's markets closed they are marked, not settled: no candle, so unmarked.
    early = records.daily_pnl(engine, "paper", date(2025, 11, 28), as_of=datetime(2025, 11, 28, 20, tzinfo=UTC))
    assert early.unmarked == 2 and early.realized_cents == 0 and early.pnl_cents == -17

    exposure = records.exposure(engine, "paper", as_of=AS_OF).set_index("side")
    assert exposure.loc["yes"].tolist() == ["chicago", 1, 180.0, 2, 60.0, 240.0]  # o3's 6 x 30c resting + held cost
    assert exposure.loc["no"].tolist() == ["chicago", 1, 60.0, 0, 0.0, 60.0]  # o5 pending
    assert records.exposure(engine, "live", as_of=AS_OF)["exposure_cents"].tolist() == [350.0]


def test_a_halt_survives_a_restart_and_resume_clears_it(db_url):
    migrations.upgrade(db_url)
    now = datetime(2025, 11, 29, 12, tzinfo=UTC)
    first = make_engine(db_url)
    assert not records.halt_state(first, "live").halted
    records.halt(first, "live", reason="exchange outage", by="cli:ops", now=now, cancel_all=True)
    first.dispose()

    restarted = make_engine(db_url)  # a new process: only the database remembers
    state = records.halt_state(restarted, "live")
    assert (state.halted, state.reason, state.since, state.source, state.cancel_all_requested, state.changed_by) == (
        True, "exchange outage", now, "database", True, "cli:ops")
    assert not records.halt_state(restarted, "paper").halted  # one switch per mode
    # halting again without --cancel-all keeps the pending request; a request made after the loop read it stays
    records.halt(restarted, "live", reason="still out", by="cli:ops", now=now + timedelta(minutes=5))
    assert not records.clear_cancel_all(restarted, "live", read_at=now)
    assert records.clear_cancel_all(restarted, "live", read_at=now + timedelta(minutes=5))
    assert not records.halt_state(restarted, "live").cancel_all_requested
    resumed = records.resume(restarted, "live", by="cli:ops", now=now + timedelta(hours=1))
    assert not resumed.halted and resumed.since == now + timedelta(hours=1)
    restarted.dispose()


def test_a_halt_file_halts_and_resume_leaves_it_halted(sqlite_url, tmp_path):
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    halt_file = tmp_path / "HALT"
    halt_file.write_text("desk says stop\nsecond line ignored\n")
    state = records.halt_state(engine, "paper", halt_file)
    assert (state.halted, state.source, state.reason) == (True, "file", "desk says stop")
    assert "halt file" in state.describe()
    still = records.resume(engine, "paper", by="cli:ops", now=AS_OF, halt_file=halt_file)
    assert still.halted and still.source == "file"  # resume clears the database, never the file
    halt_file.write_text("")
    assert records.halt_state(engine, "paper", halt_file).reason == f"halt file {halt_file} exists"
    halt_file.unlink()
    assert not records.halt_state(engine, "paper", halt_file).halted
    engine.dispose()


def test_the_daily_loss_limit_trips_the_halt(sqlite_url):
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    _book(engine)
    day = date(2025, 11, 29)
    with engine.begin() as conn:  # the open market's quote drops to a 5c mid: 2 held at 30c -> MTM -50c
        upsert_frame(conn, "candles", pd.DataFrame({"market_ticker": [OPEN_MARKET],
                                                    "end_period_ts": [int(AS_OF.timestamp()) - 10],
                                                    "yes_bid_close": [4.0], "yes_ask_close": [6.0]}))
    assert records.daily_pnl(engine, "paper", day, as_of=AS_OF).pnl_cents == 30 - 50 - 8
    assert records.trip_daily_loss_limit(engine, "paper", day=day, max_loss_dollars=0.5, now=AS_OF) is None
    tripped = records.trip_daily_loss_limit(engine, "paper", day=day, max_loss_dollars=0.2, now=AS_OF)
    assert tripped.halted and tripped.reason.startswith("daily loss limit: 2025-11-29 P&L -0.28 $")
    records.halt(engine, "paper", reason="operator", by="cli:ops", now=AS_OF)
    assert records.trip_daily_loss_limit(engine, "paper", day=day, max_loss_dollars=0.2, now=AS_OF) is None
    assert records.halt_state(engine, "paper").reason == "operator"  # never overwritten
    engine.dispose()


def _cli(*args: str):
    return runner.invoke(app, ["rt", *args])


def test_cli_views_halt_and_resume(engine, db_url):
    _book(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO rt_ticks (ts_utc, mode, markets, signals, skips, latency_ms) "
                          "VALUES ('2025-11-29 17:59:00', 'live', 4, 1, '{}', 12.0)"))
    db = ("--db-url", db_url)
    orders = _cli("orders", "--open", *db)
    assert orders.exit_code == 0, orders.output
    assert "o3" in orders.output and "o5" in orders.output and "o1" not in orders.output
    live = _cli("orders", "--mode", "live", *db)
    assert "l1" in live.output and "environment demo" in live.output
    assert "no paper orders" in _cli("orders", "--since", "2030-01-01", *db).output

    pnl = _cli("pnl", "--day", "2025-11-28", *db)
    assert pnl.exit_code == 0, pnl.output
    assert ("realized $+7.50, MTM $+0.00, fees $0.17, total $+7.33 = open (model) $+5.90 + locked (rule) $+1.43"
            in pnl.output)
    rows = [line for line in pnl.output.splitlines() if line.startswith("│ 2025-11-28")]
    assert [("│ open " in row, "│ locked " in row) for row in rows] == [(True, False), (False, True)]  # yes, then no
    days = _cli("pnl", *db)
    assert days.exit_code == 0 and "2025-11-28" in days.output and "2025-11-29" in days.output
    assert "open (model)" in days.output and "locked (rule)" in days.output
    # the 29th is marked at its newest mid (61c) by now
    assert "total $+8.17 = open (model) $+6.74 + locked (rule) $+1.43" in days.output
    positions = _cli("positions", "--all", *db)
    assert positions.exit_code == 0 and SETTLED_YES in positions.output and "100 settled" in positions.output
    assert SETTLED_YES not in _cli("positions", *db).output  # settled: not open

    halted = _cli("halt", "--reason", "drill", "--cancel-all", *db)
    assert halted.exit_code == 0, halted.output
    assert "paper: HALTED" in halted.output and "drill" in halted.output and "cancel-all" in halted.output
    status = _cli("status", *db)
    assert status.exit_code == 0, status.output
    assert "execution: mode signals (orders and halt below: paper), environment paper" in status.output
    assert "paper: HALTED" in status.output
    assert "exposure (paper): 2 open orders, $2.40 notional; 2 contracts held" in status.output
    resumed = _cli("resume", *db)
    assert resumed.exit_code == 0 and "paper: trading (not halted)" in resumed.output


def test_cli_halt_file_from_the_config_and_bad_input(sqlite_url, tmp_path):
    migrations.upgrade(sqlite_url)
    config = tmp_path / "rt.yaml"
    config.write_text("markets:\n  - {city: chicago, bracket: between}\n"
                      f"execution:\n  mode: live\n  halt_file: {tmp_path / 'HALT'}\n")
    (tmp_path / "HALT").write_text("maintenance window\n")
    db = ("--db-url", sqlite_url, "--config", str(config))
    resumed = _cli("resume", *db)
    assert resumed.exit_code == 1
    assert "live: database halt cleared" in resumed.output and "still halted: halt file" in resumed.output
    status = _cli("status", *db)
    assert status.exit_code == 1 and "no ticks recorded yet" in status.output  # its exit codes are kept
    assert "live: HALTED" in status.output and "maintenance window" in status.output
    bad_mode = _cli("orders", "--mode", "signals", "--db-url", sqlite_url)
    assert bad_mode.exit_code == 2 and "known modes: paper, live" in bad_mode.output
    assert _cli("pnl", "--day", "2025-13-01", "--db-url", sqlite_url).exit_code == 2
    assert "no paper positions in markets of 2025-11-28" in _cli("pnl", "--day", "2025-11-28", "--db-url",
                                                                   sqlite_url).output
    missing = _cli("orders", "--config", str(tmp_path / "nope.yaml"), "--db-url", sqlite_url)
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    # The health check reports on the loop even when the default config is broken; the other views refuse it.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "rt.yaml").write_text("markets: []\n")
    broken = _cli("status", "--db-url", sqlite_url)
    assert broken.exit_code == 1 and "warning:" in broken.output and "paper: trading" in broken.output
    assert _cli("orders", "--db-url", sqlite_url).exit_code == 2


@pytest.mark.parametrize("command", ["halt", "resume", "orders", "positions", "pnl", "status"])
def test_every_rt_command_has_help(command):
    result = _cli(command, "--help")
    assert result.exit_code == 0 and "--db-url" in result.output and "--config" in result.output


def test_the_demos_replayed_day_splits_its_fills_and_pnl_by_source(sqlite_url, monkeypatch, capsys):
    from kwx.cli import demo

    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    _book(engine)
    engine.dispose()
    monkeypatch.setattr(demo, "REPLAY_DAY", "2025-11-28")
    demo._print_paper_day(demo.demo_config("rt.yaml"), url=sqlite_url)
    out = capsys.readouterr().out
    assert "fills: 5, 21 contracts (open (model): 4, 16 contracts; locked (rule): 1, 5 contracts)" in out
    assert "total $+7.33 = open (model) $+5.90 + locked (rule) $+1.43" in out
