"""`kwx serve-rt --once` against local fake Kalshi and Visual Crossing servers."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import RtConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import generate_city
from kwx.data.fees import stored_fee_changes
from kwx.data.schema import Market, RtSignal, RtTick
from kwx.domain.fees import SeriesFee
from kwx.domain.signals import FeeSchedule, best_side
from tests.data.fake_http import OFFLINE_FORECASTS, FakeApi, Reply
from tests.data.test_kalshi import series_json, serve_fees, serve_kalshi
from tests.data.test_visual_crossing import timeline_json

pytestmark = pytest.mark.integration


def _live_day(promoted, tmp_path, monkeypatch):
    """Today's and tomorrow's chicago demo markets, an empty migrated SQLite store, the promoted model's
    tracking store and a VC key: what every live test starts from."""
    today = datetime.now(UTC).date()
    demo = generate_city("chicago", today, today + timedelta(days=1), seed=5)
    db = f"sqlite:///{tmp_path / 'live.db'}"
    migrations.upgrade(db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    monkeypatch.setenv("VC_API_KEY", "k3y")
    return today, demo, db


def _serve_once(api: FakeApi, demo, today, tmp_path, db: str):
    """`kwx serve-rt --once` with chicago/between against ``api`` serving Kalshi and the station's weather."""
    first, last = today - timedelta(days=1), today
    api.handlers[f"/stn:KMDW/{first}/{last}"] = lambda q: Reply(timeline_json(demo.weather_minutes, first, last))
    config = tmp_path / "live.yaml"
    config.write_text(f"markets: [{{city: chicago, bracket: between}}]\nkalshi_base_url: {api.url}\n"
                      f"vc_base_url: {api.url}\n{OFFLINE_FORECASTS.format(url=api.url)}")
    return CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", db])


def test_once_writes_one_tick_and_names_what_failed(promoted, tmp_path, monkeypatch):
    today, demo, db = _live_day(promoted, tmp_path, monkeypatch)
    open_now = demo.markets[(demo.markets["open_time"] <= pd.Timestamp.now(tz="UTC"))]
    broken, refused = sorted(open_now.loc[open_now["strike_type"] == "between", "ticker"])[:2]
    with FakeApi() as api:
        serve_kalshi(api, demo, page_size=100)
        api.handlers[f"/series/KXHIGHCHI/markets/{broken}/candlesticks"] = lambda q: Reply(
            {"candlesticks": [{"end_period_ts": "soon"}]})
        api.handlers[f"/series/KXHIGHCHI/markets/{refused}/candlesticks"] = lambda q: Reply({"error": "no"}, 404)
        first, last = today - timedelta(days=1), today
        api.scripts[f"/stn:KMDW/{first}/{last}"] = [Reply({}, status=429, headers={"Retry-After": "0"})]
        result = _serve_once(api, demo, today, tmp_path, db)
    assert result.exit_code == 0, result.output
    engine = make_engine(db)
    with engine.connect() as conn:
        signals = pd.read_sql(select(RtSignal), conn)
        markets = pd.read_sql(select(Market.ticker), conn)
    engine.dispose()
    assert set(markets["ticker"]) >= set(open_now["ticker"])  # the live source upserted the markets
    assert signals["ts_utc"].nunique() == 1  # one tick
    between_open = set(open_now.loc[open_now["strike_type"] == "between", "ticker"])
    assert set(signals["market_ticker"]) == between_open
    reasons = signals.set_index("market_ticker")["skip_reason"]
    assert f"{broken}: candlesticks[0].end_period_ts: 'soon'" in reasons[broken]  # rejected whole, named
    assert "HTTP 404" in reasons[refused]
    modelled = signals.dropna(subset=["p_model"])
    assert set(modelled["market_ticker"]) == between_open - {broken, refused}  # the others carried on
    assert modelled["model_id"].str.startswith("kwx-chicago-between/").all()


def test_a_rejected_weather_key_is_named_per_market_in_the_tick_log_and_status_and_fails_once(
        promoted, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="kwx.rt")
    today, demo, db = _live_day(promoted, tmp_path, monkeypatch)
    first, last = today - timedelta(days=1), today
    weather_path = f"/stn:KMDW/{first}/{last}"
    with FakeApi() as api:
        serve_kalshi(api, demo, page_size=100)
        api.handlers[weather_path] = lambda q: Reply({"message": "No account found with API key"}, status=401)
        config = tmp_path / "live.yaml"
        config.write_text(f"markets: [{{city: chicago, bracket: between}}]\nkalshi_base_url: {api.url}\n"
                          f"vc_base_url: {api.url}\n{OFFLINE_FORECASTS.format(url=api.url)}")
        result = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", db])
        assert api.count(weather_path) == 1  # a rejected key is not retried
    rejected = f"KMDW weather {first}..{last}: Visual Crossing rejected the API key (VC_API_KEY) (HTTP 401)"
    assert result.exit_code == 1, result.output
    assert f"error: {rejected}" in result.output
    engine = make_engine(db)
    with engine.connect() as conn:
        signals = pd.read_sql(select(RtSignal), conn)
        skips = json.loads(conn.execute(select(RtTick.skips)).scalar_one())
    engine.dispose()
    assert len(signals) and signals["skip_reason"].str.startswith(f"data fetch failed: {rejected}").all()
    assert [reason for reason in skips if rejected in reason] and sum(skips.values()) == len(signals)
    tick_log = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith('{"tick"')]
    assert any(rejected in reason for reason in tick_log[0]["skips"])
    status = CliRunner().invoke(app, ["rt", "status", "--db-url", db])
    skips_column = " ".join(line.split("│")[-2].strip() for line in status.output.splitlines() if "│" in line)
    assert status.exit_code == 0 and rejected in skips_column  # the table wraps the reason over lines


def _live_config(tmp_path, api, **fields) -> Path:
    config = tmp_path / "live.yaml"
    extra = "".join(f"{key}: {value}\n" for key, value in fields.items())
    config.write_text(f"markets: [{{city: chicago, bracket: between}}]\nkalshi_base_url: {api.url}\n"
                      f"vc_base_url: {api.url}\n{OFFLINE_FORECASTS.format(url=api.url)}{extra}")
    return config


def _serve_chicago(api, demo, today, weather=None):
    serve_kalshi(api, demo, page_size=100)
    first, last = today - timedelta(days=1), today
    api.handlers[f"/stn:KMDW/{first}/{last}"] = weather or (lambda q: Reply(timeline_json(demo.weather_minutes,
                                                                                          first, last)))
    return f"KMDW weather {first}..{last}"


def test_a_hung_weather_server_costs_a_tick_its_deadline_not_more(promoted, tmp_path, monkeypatch):
    today, demo, db = _live_day(promoted, tmp_path, monkeypatch)
    hang = 12.0  # longer than the deadline, shorter than one request's own 15 s timeout
    with FakeApi() as api:
        weather = _serve_chicago(api, demo, today, weather=lambda q: Reply({}, delay=hang))
        config = _live_config(tmp_path, api, tick_seconds=4, fetch_deadline_fraction=0.5)
        result = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", db])
    assert result.exit_code == 0, result.output
    engine = make_engine(db)
    with engine.connect() as conn:
        signals = pd.read_sql(select(RtSignal), conn)
        latency_ms = conn.execute(select(RtTick.latency_ms)).scalar_one()
    engine.dispose()
    # The 2 s deadline bounds the fetches; the slack is the rest of a first tick (loading the model).
    assert latency_ms < (2 + 1.5) * 1000
    late = f"data fetch failed: {weather}: did not answer within the tick deadline (2 s)"
    assert len(signals) and (signals["skip_reason"] == late).all()  # every market the weather feeds


def test_once_exits_1_when_its_tick_cannot_read_the_database(promoted, tmp_path, monkeypatch):
    from kwx.data.dataset import load_markets

    today, demo, db = _live_day(promoted, tmp_path, monkeypatch)
    # The market read goes to a server that refuses connections; the signal writes still land.
    dead = create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    monkeypatch.setattr("kwx.rt.sources.load_markets", lambda _engine, *args: load_markets(dead, *args))
    with FakeApi() as api:
        _serve_chicago(api, demo, today)
        config = _live_config(tmp_path, api, tick_seconds=2)
        result = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", db])
    assert result.exit_code == 1, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("error: database unavailable: connection to server at"), result.output
    engine = make_engine(db)
    with engine.connect() as conn:
        skips = json.loads(conn.execute(select(RtTick.skips)).scalar_one())
    engine.dispose()
    assert skips == {error.removeprefix("error: "): 0}  # the tick is recorded, skipped with the reason


@pytest.mark.postgres
def test_the_live_loop_outlives_a_database_outage_and_loses_no_tick(promoted, postgres_url, postgres_admin_url,
                                                                     monkeypatch):
    from kwx.clock import SimulatedClock
    from kwx.config import RtConfig
    from kwx.data.clients.http import JsonHttp
    from kwx.data.clients.kalshi import KalshiClient
    from kwx.data.clients.visual_crossing import VisualCrossingClient
    from kwx.rt.live import serve_live

    today = datetime.now(UTC).date()
    demo = generate_city("chicago", today, today + timedelta(days=1), seed=5)
    migrations.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    name = engine.url.database
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")

    def connections(allowed: bool) -> None:
        # What an operator's failover or a restart looks like to the loop: new connections are refused
        # and every open one is cut.
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
                             {"db": name})

    outage = range(3, 8)  # ticks 3..7 (0-based) run while the database refuses connections
    ticks = 12
    seen = []

    def on_tick(tick, result):
        seen.append((tick["ts_utc"], result.skips))
        if len(seen) == outage.start:
            connections(False)
        elif len(seen) == outage.stop:
            connections(True)

    started = time.perf_counter()
    try:
        with FakeApi() as api:
            _serve_chicago(api, demo, today)
            config = RtConfig.model_validate({
                "markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 2,
                "fetch_deadline_fraction": 0.9, "kalshi_base_url": api.url, "vc_base_url": api.url})
            run = serve_live(config, engine, promoted["client"],
                             kalshi=KalshiClient(api.url, http=JsonHttp(api.url, per_second=0)),
                             vc=VisualCrossingClient("k3y", api.url, http=JsonHttp(api.url, per_second=0)),
                             clock=SimulatedClock(datetime.now(UTC)), max_ticks=ticks, on_tick=on_tick)
    finally:
        connections(True)
        admin.dispose()
    elapsed = time.perf_counter() - started
    assert len(seen) == ticks and run.unreadable is None and not run.writer.pending  # alive, caught up
    for i, (_ts, skips) in enumerate(seen):
        unavailable = [reason for reason in skips if reason.startswith("database unavailable: ")]
        assert bool(unavailable) == (i in outage), (i, skips)
    with engine.connect() as conn:
        stored = pd.read_sql(select(RtTick).order_by(RtTick.ts_utc), conn)
        signals = pd.read_sql(select(RtSignal), conn)
    engine.dispose()
    # every tick written once, the outage's ones after it, each with a row per market it counted
    assert len(stored) == ticks and stored["ts_utc"].is_unique
    assert [json.loads(s) for s in stored["skips"]] == [skips for _ts, skips in seen]
    assert len(signals) == stored["markets"].sum() > 0
    assert not signals.duplicated(["ts_utc", "market_ticker"]).any()
    during = signals["ts_utc"].isin(pd.to_datetime([seen[i][0] for i in outage], utc=True).floor("s"))
    assert during.sum() and signals.loc[during, "skip_reason"].str.startswith("database unavailable: ").all()
    assert not signals.loc[~during, "skip_reason"].fillna("").str.startswith("database unavailable").any()
    # each outage tick waited a bounded time (a read and a write, a quarter tick each), never minutes
    assert elapsed < 45
    status = CliRunner().invoke(app, ["rt", "status", "--db-url", postgres_url])
    assert status.exit_code == 0, status.output
    assert re.search(r"live: database unavailable \S+ \S+ → \S+ \S+ UTC, 5 ticks skipped", status.output)


def test_the_live_loop_polls_forecasts_and_status_shows_their_age(promoted, tmp_path, monkeypatch):
    """The loop stores the current runs (every ensemble member) it polls from Open-Meteo, at most one city a tick
    and no sooner than forecast_refresh_seconds; `kwx rt status` names the newest and its age."""
    from kwx.data.schema import Forecast
    from tests.data.test_open_meteo import RUN_AVAILABLE, serve

    today, demo, db = _live_day(promoted, tmp_path, monkeypatch)
    with FakeApi() as api:
        _serve_chicago(api, demo, today)
        serve(api)
        config = _live_config(tmp_path, api, forecast_models="[gfs_seamless]", forecast_ensemble_models="[gfs025]")
        first = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", db])
        polled = sum(1 for path, _query in api.requests if path in ("/v1/forecast", "/v1/ensemble"))
        second = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", db])
        polled_again = sum(1 for path, _query in api.requests if path in ("/v1/forecast", "/v1/ensemble"))
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert (polled, polled_again) == (2, 4)  # one request per model and tick; a new process polls anew
    engine = make_engine(db)
    with engine.connect() as conn:
        stored = pd.read_sql(select(Forecast), conn)
    engine.dispose()
    assert set(stored["model"]) == {"gfs_seamless", "ncep_gefs025"} and (stored["source"] == "open-meteo").all()
    assert stored.loc[stored["ensemble"], "member"].nunique() == 31
    assert (stored["available_ts"] >= RUN_AVAILABLE).all()
    status = CliRunner().invoke(app, ["rt", "status", "--db-url", db])
    assert re.search(r"forecasts chicago: newest public 2025-07-02 \d\d:\d\d UTC, [\d.]+ h old at the newest tick",
                     status.output), status.output


def test_the_live_loop_prices_with_the_series_fee_it_reads_from_the_exchange(promoted, tmp_path, monkeypatch):
    today, demo, db = _live_day(promoted, tmp_path, monkeypatch)
    with FakeApi() as api:
        serve_kalshi(api, demo, page_size=100)
        serve_fees(api, series_json(fee_multiplier=2))  # twice the general schedule: taker rate 0.14
        result = _serve_once(api, demo, today, tmp_path, db)
    assert result.exit_code == 0, result.output
    engine = make_engine(db)
    with engine.connect() as conn:
        signals = pd.read_sql(select(RtSignal), conn).dropna(subset=["p_model"])
    (stored,) = stored_fee_changes(engine)  # what the loop read at start, stamped with when it read it
    assert (stored.series, stored.fee) == ("KXHIGHCHI", SeriesFee("quadratic", 2.0))
    assert abs(stored.effective_ts - time.time()) < 600
    engine.dispose()
    mid, spread = 100 * signals["p_market"].to_numpy(), signals["spread_cents"].to_numpy()
    risk = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}]}).risk

    def edges(fees: FeeSchedule):
        return best_side(signals["p_blend"].to_numpy(), mid - spread / 2, mid + spread / 2, risk, fees).edge_cents

    assert len(signals) > 0
    np.testing.assert_allclose(signals["edge_cents"], edges(FeeSchedule(0.14, 0.0)), atol=1e-9)
    assert (signals["edge_cents"].to_numpy() < edges(FeeSchedule(0.07, 0.0))).all()  # not the general schedule
