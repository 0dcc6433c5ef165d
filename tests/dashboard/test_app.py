"""The dashboard's endpoints over a replayed paper day: what they answer, what they refuse, what they never do
(write, leak a credential, hang on a dead database)."""

from __future__ import annotations

import shutil
import socket
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient
from typer.testing import CliRunner

from kwx.cli import app
from kwx.clock import SimulatedClock
from kwx.dashboard import queries, views
from kwx.dashboard.app import SESSION_COOKIE, create_app, session_value
from kwx.data import migrations
from kwx.data.db import make_engine, make_read_only_engine
from kwx.data.demo import load_demo
from kwx.data.store import upsert_frame
from kwx.domain.positions import source_totals
from kwx.execution import records
from tests.dashboard.conftest import DAY, board_for, newest_tick, sqlite_copy

pytestmark = pytest.mark.integration
TOKEN = "dashboard-token-0123456789"


@pytest.fixture(scope="module")
def client(replayed):
    board = board_for(replayed["db"], replayed["tracking_uri"], ui_url="http://mlflow.example:5000/")
    with TestClient(create_app(board, token=None)) as http:
        yield http
    board.engine.dispose()


def _db_frame(db: str, sql: str, **params) -> pd.DataFrame:
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            return pd.read_sql(text(sql), conn, params=params)
    finally:
        engine.dispose()


def test_state_names_the_replayed_day_and_its_health(client, replayed):
    state = client.get("/api/state").json()
    assert state["day"] == DAY.isoformat()  # the climate day of the newest tick
    assert state["days"] == [(DAY + timedelta(days=1)).isoformat(), DAY.isoformat()]  # tomorrow opened today
    assert state["cities"] == ["chicago"] and state["refresh_seconds"] == 2
    # numbers for machines, the page formats: the settlement's clock, standard time in July too
    assert state["home_city"] == "chicago" and state["clocks"] == {
        "chicago": {"zone": "CST", "utc_offset_seconds": -21600, "label": "CST (UTC−6)"}}
    health = state["health"]
    assert health["mode"] == "paper-replay" and health["stale"] is False and health["age_seconds"] == pytest.approx(10)
    assert health["ticks_last_hour"] == 12  # 5-minute ticks: the hour up to the newest tick
    assert 0 < health["latency_p50_ms"] <= health["latency_p99_ms"]
    assert state["banners"] == [] and state["execution"] == {"mode": "paper", "halted": False,
                                                               "halt_text": "paper: trading (not halted)"}
    # the newest forecast public by the newest tick, as the loop saw it
    newest_tick = int(pd.Timestamp(health["newest_tick"]).timestamp())
    published = _db_frame(replayed["db"], "SELECT max(available_ts) AS ts FROM forecasts WHERE city = 'chicago' "
                          "AND available_ts <= :t", t=newest_tick)["ts"].iloc[0]
    (forecast,) = state["forecasts"]
    assert forecast["city"] == "chicago" and forecast["models"]
    assert forecast["age_hours"] == pytest.approx((newest_tick - published) / 3600, abs=0.01)


def test_signals_are_each_markets_newest_row(client, replayed):
    body = client.get("/api/signals", params={"day": DAY.isoformat()}).json()
    expected = _db_frame(replayed["db"], "SELECT s.market_ticker, s.p_model, s.edge_cents, s.side, s.skip_reason "
                         "FROM rt_signals s JOIN (SELECT market_ticker, max(ts_utc) AS ts FROM rt_signals "
                         "GROUP BY market_ticker) n ON n.market_ticker = s.market_ticker AND n.ts = s.ts_utc "
                         "JOIN markets m ON m.ticker = s.market_ticker WHERE m.event_date = :day", day=DAY)
    rows = pd.DataFrame(body["rows"], columns=body["columns"]).set_index("ticker").sort_index()
    expected = expected.set_index("market_ticker").sort_index()
    assert list(rows.index) == list(expected.index) and len(rows) > 0
    pd.testing.assert_series_equal(rows["p_model"], expected["p_model"], check_names=False)
    pd.testing.assert_series_equal(rows["edge_cents"], expected["edge_cents"], check_names=False)
    assert (rows["bracket"] == "between").all() and rows["label"].str.endswith("°").all()
    only = client.get("/api/signals", params={"day": DAY.isoformat(), "bracket": "greater"}).json()
    assert only["rows"] == []
    both = client.get("/api/signals", params={"day": DAY.isoformat(), "city": "chicago", "bracket": "between"})
    assert both.json()["rows"] == body["rows"]


def test_ladder_has_every_market_of_the_event_on_a_minute_grid(client, replayed):
    body = client.get("/api/ladder", params={"city": "chicago", "day": DAY.isoformat()}).json()
    markets = _db_frame(replayed["db"], "SELECT ticker, strike_type, result FROM markets "
                        "WHERE city = 'chicago' AND event_date = :day", day=DAY)
    assert sorted(m["ticker"] for m in body["markets"]) == sorted(markets["ticker"])
    kinds = [m["strike_type"] for m in body["markets"]]
    assert kinds[0] == "less" and kinds[-1] == "greater" and set(kinds[1:-1]) == {"between"}
    floors = [m["floor"] for m in body["markets"] if m["strike_type"] == "between"]
    assert floors == sorted(floors)
    for ticker, series in body["series"].items():
        assert set(series) == {"t", "model", "blend", "bid", "ask", "mid"}
        assert all(len(values) == len(series["t"]) for values in series.values())
        assert series["t"] == sorted(series["t"]) and all(t % views.LADDER_STEP_SECONDS == 0 for t in series["t"])
        assert all(v is None or 0 <= v <= 1 for name in ("bid", "ask", "mid", "model") for v in series[name])
        traded = body["markets"][[m["ticker"] for m in body["markets"]].index(ticker)]["strike_type"] == "between"
        assert any(v is not None for v in series["model"]) == traded
    winner = markets.loc[markets["result"] == "yes", "ticker"]
    assert body["settlement"]["winner"] == (winner.iloc[0] if len(winner) else None)
    assert body["settlement"]["tmax_f"] is not None
    locked = [m for m in body["markets"] if m["locked_at"]]
    assert locked and all(m["locked_outcome"] in ("yes", "no") for m in locked)
    # the axis: the climate day 00:00 to 24:00 CST, the markets' close, the usual high in the afternoon
    start = int(datetime(2025, 7, 18, 6, tzinfo=UTC).timestamp())
    closes = pd.to_datetime(_db_frame(replayed["db"], "SELECT max(close_time) AS t FROM markets WHERE city = 'chicago' "
                                      "AND event_date = :day", day=DAY)["t"], utc=True)
    assert body["clock"]["utc_offset_seconds"] == -21600
    assert body["axis"]["day_start"] == start and body["axis"]["day_end"] == start + 86400
    assert body["axis"]["close"] == int(closes.iloc[0].timestamp())
    assert start + 12 * 3600 <= body["axis"]["usual_high"] <= start + 18 * 3600


def test_models_name_the_trading_version_with_its_mlflow_link(client, replayed):
    body = client.get("/api/models", params={"day": DAY.isoformat()}).json()
    (row,) = [dict(zip(body["columns"], r, strict=True)) for r in body["rows"]]
    assert row["city"] == "chicago" and row["stage"] == "Production" and row["stale_days"] == 0
    assert row["test_start"] <= DAY.isoformat() <= row["test_end"] and row["problem"] is None
    assert body["links"][0].startswith("http://mlflow.example:5000/#/experiments/")
    assert body["links"][0].endswith(f"/runs/{row['run_id']}")
    later = client.get("/api/models", params={"day": "2025-07-27"}).json()
    assert dict(zip(later["columns"], later["rows"][0], strict=True))["stale_days"] == 3


def test_execution_shows_the_days_paper_records(client, replayed):
    body = client.get("/api/execution", params={"day": DAY.isoformat()}).json()
    engine = make_engine(replayed["db"])
    try:
        held = records.positions(engine, "paper", newest_tick(replayed["db"]) + timedelta(seconds=10))
    finally:
        engine.dispose()
    day = "JOIN markets m ON m.ticker = r.market_ticker WHERE m.event_date = :day"
    orders = _db_frame(replayed["db"], f"SELECT r.status FROM orders r {day}", day=DAY)
    fills = _db_frame(replayed["db"], f"SELECT r.count FROM fills r {day}", day=DAY)
    held = held[held["event_date"] == DAY]
    assert body["mode"] == "paper" and body["halted"] is False
    assert len(body["orders"]["rows"]) == min(len(orders), 200) and len(body["fills"]["rows"]) == len(fills) > 0
    assert len(body["positions"]["rows"]) == len(held) > 0
    assert body["pnl"]["total_cents"] == pytest.approx(
        held["realized_cents"].sum() + held["unrealized_cents"].fillna(0).sum() - held["fees_cents"].sum())
    # the total split by source: the model's open rows and the rule's locked rows, each from its fills' signals
    split = body["pnl"]["by_source"]
    assert [split[s]["label"] for s in ("open", "locked")] == ["open (model)", "locked (rule)"]
    for key in ("realized_cents", "unrealized_cents", "fees_cents", "total_cents"):
        assert split["open"][key] + split["locked"][key] == pytest.approx(body["pnl"][key]), key
    assert split["open"]["fills"] + split["locked"]["fills"] == len(fills)
    assert split["open"]["contracts"] + split["locked"]["contracts"] == fills["count"].sum()
    placed_on = _db_frame(replayed["db"], "SELECT f.fill_id, coalesce(s.locked, 0) AS locked FROM fills f "
                          "JOIN orders o ON o.client_order_id = f.client_order_id JOIN markets m ON m.ticker = "
                          "f.market_ticker LEFT JOIN rt_signals s ON s.market_ticker = o.market_ticker AND "
                          "s.ts_utc = o.signal_ts_utc WHERE m.event_date = :day", day=DAY)
    assert split["locked"]["fills"] == placed_on["locked"].astype(bool).sum()
    shown = [dict(zip(body["fills"]["columns"], r, strict=True)) for r in body["fills"]["rows"]]
    assert {r["source"] for r in shown} <= {"open", "locked"} and "source" in body["positions"]["columns"]
    assert [split[s]["total_cents"] for s in ("open", "locked")] == pytest.approx(
        source_totals(held)["pnl_cents"].tolist())


def test_calibration_charts_each_evaluated_window(client, replayed):
    (family,) = client.get("/api/calibration", params={"city": "chicago"}).json()["families"]
    assert family["bracket"] == "between" and len(family["t"]) >= 1
    assert set(family["series"]) == {"ECE (week)", "Brier (week)", "market Brier (week)"}


@pytest.mark.parametrize(("path", "params", "fragment"), [
    ("/api/ladder", {"day": "18/07/2025"}, "day must be a date YYYY-MM-DD"),
    ("/api/ladder", {"city": "gotham"}, "city 'gotham' is not a known city"),
    ("/api/signals", {"city": "gotham"}, "city 'gotham' is not a known city"),
    ("/api/signals", {"bracket": "middle"}, "bracket 'middle' is not a known bracket (between, greater, less)"),
    ("/api/calibration", {"city": "gotham"}, "city 'gotham' is not a known city"),
])
def test_bad_parameters_are_a_400_naming_them(client, path, params, fragment):
    answer = client.get(path, params=params)
    assert answer.status_code == 400 and fragment in answer.json()["error"]


def test_the_dashboards_engine_cannot_write(replayed):
    engine = make_read_only_engine(replayed["db"])
    try:
        with pytest.raises(OperationalError, match=r"readonly|read-only|query_only"), engine.begin() as conn:
            conn.execute(text("DELETE FROM rt_ticks"))
    finally:
        engine.dispose()


def test_a_token_guards_every_endpoint_but_sign_in(replayed):
    board = board_for(replayed["db"], replayed["tracking_uri"])
    with TestClient(create_app(board, token=TOKEN), follow_redirects=False) as http:
        assert http.get("/api/state").status_code == 401
        assert http.get("/").headers["location"] == "login"
        assert http.get("/api/state", headers={"X-KWX-Token": "wrong-token-0123456789"}).status_code == 401
        assert http.get("/api/state", headers={"X-KWX-Token": TOKEN}).status_code == 200
        assert http.get("/api/state", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert http.post("/login", data={"token": "nope"}).status_code == 401
        signed_in = http.post("/login", data={"token": TOKEN})
        assert signed_in.status_code == 303 and TOKEN not in signed_in.headers["set-cookie"]
        assert http.cookies[SESSION_COOKIE] == session_value(TOKEN)
        assert http.get("/api/state").status_code == 200 and http.get("/").status_code == 200
    board.engine.dispose()


def test_a_database_file_that_goes_away_is_a_503_until_it_returns(replayed, tmp_path):
    db = sqlite_copy(replayed["db"], tmp_path / "kwx.db")
    board = board_for(db, replayed["tracking_uri"])
    with TestClient(create_app(board, token=None)) as http:
        assert http.get("/api/signals").status_code == 200
        shutil.move(tmp_path / "kwx.db", tmp_path / "away.db")
        down = http.get("/api/signals")
        assert down.status_code == 503 and "unable to open database file" in down.json()["error"]
        assert not (tmp_path / "kwx.db").exists()  # read-only: no empty database created in its place
        shutil.move(tmp_path / "away.db", tmp_path / "kwx.db")
        assert http.get("/api/signals").status_code == 200
    board.engine.dispose()


@pytest.mark.postgres
def test_a_postgres_outage_is_a_redacted_503_and_the_dashboard_recovers(replayed, postgres_url, postgres_admin_url):
    sentinel = "Sentinel-Pg-Password-7f3a"
    migrations.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    load_demo(engine, ["chicago"], DAY, DAY, seed=2)
    engine.dispose()
    with_password = make_url(postgres_url).set(password=sentinel).render_as_string(hide_password=False)
    board = board_for(with_password, replayed["tracking_uri"], clock=SimulatedClock(newest_tick(replayed["db"])))
    name = make_url(postgres_url).database
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with TestClient(create_app(board, token=None)) as http:
            assert http.get("/api/state").status_code == 200
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})
            answers = [http.get(f"/api/{endpoint}") for endpoint in ("state", "signals", "ladder", "execution")]
            assert {a.status_code for a in answers} == {503}
            assert all(sentinel not in a.text and a.json()["error"].startswith("database (test): ") for a in answers)
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            assert http.get("/api/state").status_code == 200
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        board.engine.dispose()


@pytest.mark.parametrize(("host", "token", "fragment"), [
    ("0.0.0.0", None, "makes the dashboard reachable from other machines: set KWX_DASHBOARD_TOKEN"),
    ("192.0.2.7", None, "set KWX_DASHBOARD_TOKEN"),
    ("0.0.0.0", "short", "KWX_DASHBOARD_TOKEN is 5 characters long; use at least 16"),
    ("0.0.0.0", "change-me-dashboard-token", "KWX_DASHBOARD_TOKEN is still the .env.example placeholder"),
])
def test_off_loopback_the_dashboard_needs_a_real_token_before_it_listens(tmp_path, monkeypatch, host, token,
                                                                        fragment):
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\n")
    if token:
        monkeypatch.setenv("KWX_DASHBOARD_TOKEN", token)
    done = CliRunner().invoke(app, ["dashboard", "--host", host, "--config", str(config)])
    assert done.exit_code == 2 and fragment in " ".join(done.output.split())


def test_a_port_in_use_is_one_line(tmp_path, replayed):
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\n")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = CliRunner().invoke(app, ["dashboard", "--port", str(port), "--config", str(config), "--db-url",
                                        replayed["db"], "--tracking-uri", replayed["tracking_uri"]])
    assert done.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in done.output
    assert "Traceback" not in done.output


def test_a_missing_database_file_is_not_created(tmp_path):
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\n")
    missing = tmp_path / "nothing-here.db"
    done = CliRunner().invoke(app, ["dashboard", "--port", "0", "--config", str(config), "--db-url",
                                    f"sqlite:///{missing}"])
    assert done.exit_code == 2 and "nothing-here.db" in done.output and "kwx db upgrade" in done.output
    assert not missing.exists()


def test_a_missing_mlflow_store_is_not_created(tmp_path, replayed):
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\n")
    missing = tmp_path / "no-mlflow.db"
    done = CliRunner().invoke(app, ["dashboard", "--port", "0", "--config", str(config), "--db-url", replayed["db"],
                                    "--tracking-uri", f"sqlite:///{missing}"])
    assert done.exit_code == 2 and "no MLflow store at" in done.output and not missing.exists()


def test_a_registry_outage_is_a_banner_and_the_loops_health_still_shows(replayed, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.create_server(("127.0.0.1", 0)) as closed:  # a tracking server that is not there
        port = closed.getsockname()[1]
    board = board_for(replayed["db"], f"http://127.0.0.1:{port}")
    with TestClient(create_app(board, token=None)) as http:
        state = http.get("/api/state")
        assert state.status_code == 200 and state.json()["health"]["newest_tick"] is not None
        (banner,) = state.json()["banners"]
        assert banner["kind"] == "registry" and banner["text"].startswith("model registry: ")
        models = http.get("/api/models")
        assert models.status_code == 503 and models.json()["error"].startswith("model registry: ")
    board.engine.dispose()


def test_a_halt_is_a_banner_and_the_execution_panel_says_so(replayed, tmp_path):
    db = sqlite_copy(replayed["db"], tmp_path / "kwx.db")
    writer = make_engine(db)
    records.halt(writer, "paper", reason="operator: fat finger", by="test", now=newest_tick(db))
    writer.dispose()
    board = board_for(db, replayed["tracking_uri"])
    with TestClient(create_app(board, token=None)) as http:
        (banner,) = http.get("/api/state").json()["banners"]
        assert banner["kind"] == "halted" and "fat finger" in banner["text"]
        execution = http.get("/api/execution", params={"day": DAY.isoformat()}).json()
        assert execution["halted"] is True and "HALTED" in execution["halt_text"]
    board.engine.dispose()


def test_the_listener_is_tcp_so_responses_are_not_held_by_delayed_acks():
    """asyncio sets TCP_NODELAY only on sockets of protocol IPPROTO_TCP; socket.create_server's are 0."""
    from kwx.cli.dashboard import tcp_listener

    with tcp_listener("127.0.0.1", 0) as listener:
        assert listener.proto == socket.IPPROTO_TCP
        with socket.create_connection(listener.getsockname()[:2]), listener.accept()[0] as accepted:
            assert accepted.proto == socket.IPPROTO_TCP


def test_the_ladder_reads_each_buckets_last_tick_only_and_draws_the_same_as_from_every_row(db_url):
    """And each market's newest row is its row at the last tick, on SQLite and PostgreSQL alike."""
    url = db_url
    migrations.upgrade(url)
    engine = make_engine(url)
    load_demo(engine, ["chicago"], DAY, DAY, seed=3)
    markets = queries.day_markets(engine, DAY, "chicago")
    tickers = markets["ticker"].tolist()[:3]
    start = pd.Timestamp(f"{DAY} 15:00", tz="UTC")
    ticks = pd.date_range(start, periods=200, freq="9s")  # 30 minutes of 9 s ticks
    rng = np.random.default_rng(0)
    signals = pd.DataFrame({"ts_utc": np.repeat(ticks, len(tickers)), "market_ticker": tickers * len(ticks),
                            "city": "chicago", "bracket": "between", "p_model": rng.uniform(size=len(ticks) * 3),
                            "p_blend": rng.uniform(size=len(ticks) * 3), "locked": False})
    with engine.begin() as conn:
        upsert_frame(conn, "rt_signals", signals)
        upsert_frame(conn, "rt_ticks", pd.DataFrame({"ts_utc": ticks, "mode": "live", "markets": 3, "signals": 0,
                                                     "skips": "{}", "latency_ms": 1.0}))
    reader = make_read_only_engine(url)
    read, candles = queries.ladder_rows(reader, tickers)
    # 200 ticks of 9 s span 15:00:00..15:29:51: one row per bucket and market
    assert len(read) == 30 * 60 // views.LADDER_STEP_SECONDS * 3
    chosen = markets[markets["ticker"].isin(tickers)]
    assert views.ladder(chosen, read, candles) == views.ladder(chosen, signals, candles)
    newest = queries.latest_signals(reader, [*tickers, "KX-NO-SIGNALS"]).sort_values("market_ticker")
    expected = signals[signals["ts_utc"] == ticks[-1]].sort_values("market_ticker")
    assert newest["market_ticker"].tolist() == expected["market_ticker"].tolist()
    assert (newest["ts_utc"] == ticks[-1]).all() and newest["p_model"].tolist() == expected["p_model"].tolist()
    reader.dispose()
    engine.dispose()
