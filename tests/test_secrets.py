"""No secret reaches a log line, an error message, the database or the MLflow store."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from kwx.cli import app
from kwx.data import migrations
from kwx.data.demo import generate_city
from kwx.secrets import MASK, RedactingFilter, configure_logging, redact, snippet
from tests.conftest import small_training_run
from tests.data.fake_http import OFFLINE_FORECASTS, FakeApi, Reply
from tests.data.test_kalshi import serve_kalshi
from tests.data.test_visual_crossing import timeline_json

SENTINEL = "SENTINEL-kwx-secret-12345"
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c2v3b4n5m6\n-----END PRIVATE KEY-----\n")


# --- the rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("GET http://h/stn:KMDW/a/b?unitGroup=us&key=abc123&x=1", f"GET http://h/stn:KMDW/a/b?unitGroup=us&key={MASK}&x=1"),
    ("https://h/p?apiKey=zz;token=q#frag", f"https://h/p?apiKey={MASK};token={MASK}#frag"),
    ("postgresql+psycopg2://kwx:p%40ss@db:5432/kwx", f"postgresql+psycopg2://kwx:{MASK}@db:5432/kwx"),
    ("sqlite:///kwx.db and http://127.0.0.1:8080/x@y", "sqlite:///kwx.db and http://127.0.0.1:8080/x@y"),
    ("--set key=value stays", "--set key=value stays"),
])
def test_secret_query_parameters_and_url_passwords_are_masked(raw, expected):
    assert redact(raw) == expected


def test_secret_values_from_the_environment_are_masked_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("VC_API_KEY", SENTINEL)
    monkeypatch.setenv("KALSHI_PRIVATE_KEY", PEM)
    body = f"No account for API key '{SENTINEL}' ({PEM!r})"
    masked = redact(body)
    assert SENTINEL not in masked and "MIIEvQIBADANBgkqhkiG9w0B" not in masked and "q1w2e3r4" not in masked
    assert redact("request sent with k3y", extra=["k3y-passed-in"]) == "request sent with k3y"
    assert redact("request sent with k3y-passed-in", extra=["k3y-passed-in"]) == f"request sent with {MASK}"
    long = snippet(f"<html>\n  {SENTINEL}\n" + "x" * 500)
    assert long.startswith(f"<html> {MASK} xxx") and len(long) == 120 and "\n" not in long


def test_every_handler_kwx_configures_redacts_messages_and_tracebacks(monkeypatch):
    monkeypatch.setenv("VC_API_KEY", SENTINEL)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    root.addHandler(handler)
    try:
        configure_logging(logging.INFO)
        assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in root.handlers)
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        log = logging.getLogger("kwx.test_secrets")
        log.warning("GET %s", f"http://h/x?key={SENTINEL}&unitGroup=us")
        log.warning("key %s and %s", SENTINEL)  # noqa: PLE1206 - arguments that do not fit are still masked
        try:
            raise RuntimeError(f"rejected {SENTINEL}")
        except RuntimeError:
            log.exception("fetch failed")
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    output = stream.getvalue()
    assert SENTINEL not in output
    assert f"key={MASK}&unitGroup=us" in output and f"RuntimeError: rejected {MASK}" in output


# --- the sweep: live loop, ingest and training with a sentinel key ---------------------------------

def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _tables_holding(url: str, secret: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [name for name in inspect(conn).get_table_names()
                    if any(secret in str(row) for row in conn.execute(text(f'SELECT * FROM "{name}"')))]
    finally:
        engine.dispose()


@pytest.mark.integration
def test_a_sentinel_key_reaches_no_output_log_table_or_artifact(promoted, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VC_API_KEY", SENTINEL)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    runner = CliRunner()
    outputs = []
    today = datetime.now(UTC).date()
    demo = generate_city("chicago", today, today + timedelta(days=1), seed=5)
    live_db, ingest_db = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'ingest.db'}"
    migrations.upgrade(live_db)
    migrations.upgrade(ingest_db)

    def echo_the_key(query):  # a 401 page that quotes the key it was sent, as some APIs do
        return Reply(raw=f"<h1>401</h1> No account found with API key {query.get('key')}".encode(), status=401)

    with FakeApi() as api:
        serve_kalshi(api, demo, page_size=100)
        first, last = today - timedelta(days=1), today
        weather = f"/stn:KMDW/{first}/{last}"
        config = tmp_path / "live.yaml"
        config.write_text(f"markets: [{{city: chicago, bracket: between}}]\nkalshi_base_url: {api.url}\n"
                          f"vc_base_url: {api.url}\n{OFFLINE_FORECASTS.format(url=api.url)}")
        live = ["serve-rt", "--config", str(config), "--once", "--db-url", live_db]
        # (a) live ticks: the key refused, then accepted
        api.handlers[weather] = echo_the_key
        refused = runner.invoke(app, live)
        api.handlers[weather] = lambda q: Reply(timeline_json(demo.weather_minutes, first, last))
        accepted = runner.invoke(app, live)
        # (b) ingest: the key refused, then accepted
        vc = ["ingest", "vc", "--city", "chicago", "--start", str(today), "--end", str(today), "--base-url", api.url,
              "--db-url", ingest_db]
        chunk = f"/stn:KMDW/{today - timedelta(days=1)}/{today + timedelta(days=1)}"
        api.handlers[chunk] = echo_the_key
        ingest_refused = runner.invoke(app, vc)
        api.handlers[chunk] = lambda q: Reply(timeline_json(demo.weather_minutes, today - timedelta(days=1),
                                                            today + timedelta(days=1)))
        ingest_accepted = runner.invoke(app, vc)
        assert any(query.get("key") == SENTINEL for _path, query in api.requests)  # the key was really sent
    assert (refused.exit_code, accepted.exit_code, ingest_refused.exit_code, ingest_accepted.exit_code) == (
        1, 0, 2, 0), [r.output for r in (refused, accepted, ingest_refused, ingest_accepted)]
    assert "Visual Crossing rejected the API key" in refused.output + ingest_refused.output
    outputs += [r.output for r in (refused, accepted, ingest_refused, ingest_accepted)]
    # (c) a tiny training run with the key in its environment
    (tmp_path / "train").mkdir()
    with small_training_run(tmp_path / "train") as trained:
        assert trained["windows"]
    captured = capfd.readouterr()
    outputs += [captured.out, captured.err]
    records = [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert any(r.startswith('{"tick"') for r in records)  # the sweep saw the loop's logs
    assert [o for o in outputs if SENTINEL in o] == []
    assert [r for r in records if SENTINEL in r] == []
    for db in (live_db, ingest_db, f"sqlite:///{tmp_path / 'train' / 'kwx.db'}",
               f"sqlite:///{tmp_path / 'train' / 'mlflow.db'}", promoted["tracking_uri"]):
        assert _tables_holding(db, SENTINEL) == [], db
    live = create_engine(live_db)
    with live.connect() as conn:  # the refused tick did store the reason, masked
        assert conn.execute(text("SELECT count(*) FROM rt_signals WHERE skip_reason LIKE "
                                 "'%rejected the API key%'")).scalar_one() > 0
    live.dispose()
    assert _files_holding(tmp_path, SENTINEL) == []
    assert _files_holding(Path(promoted["tracking_uri"].removeprefix("sqlite:///")).parent, SENTINEL) == []
