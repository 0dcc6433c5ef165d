"""No secret reaches a log line, an error message, the database or the MLflow store."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from kwx.cli import app
from kwx.data import migrations
from kwx.data.demo import generate_city
from kwx.secrets import MASK, SECRET_QUERY_PARAMS, RedactingFilter, configure_logging, mask_url, redact, snippet
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


# Database URLs are read with SQLAlchemy's own grammar: a password runs from the user's ':' to the '@' before the
# host, whatever it holds ('/', ':', '#', '?', '%', unicode); a raw '@' (SQLAlchemy cuts at the first) is masked
# up to the last one before the query; a URL SQLAlchemy cannot parse is masked up to its last '@'.
@pytest.mark.parametrize(("raw", "expected"), [
    ("cannot reach database postgresql+psycopg2://u:pa/ss@127.0.0.1:1/x: connection refused",
     f"cannot reach database postgresql+psycopg2://u:{MASK}@127.0.0.1:1/x: connection refused"),
    ("'postgresql://kwx:a:b#c?d/e%zz@db:5432/kwx?sslmode=require'",
     f"'postgresql://kwx:{MASK}@db:5432/kwx?sslmode=require'"),
    ("postgresql://kwx:pässwörd@db/kwx", f"postgresql://kwx:{MASK}@db/kwx"),
    ("postgresql://kwx:p@ss@db/kwx", f"postgresql://kwx:{MASK}@db/kwx"),
    ("postgresql://kwx:p@/ss@db:5432/kwx?sslmode=require", f"postgresql://kwx:{MASK}@db:5432/kwx?sslmode=require"),
    ("postgresql://kwx:pa/ss@db:notaport/kwx", f"postgresql://kwx:{MASK}@db:notaport/kwx"),
    ("postgresql://kwx@db/kwx?sslmode=require&password=a%2Fb#c&application_name=x",
     f"postgresql://kwx@db/kwx?sslmode=require&password={MASK}&application_name=x"),
    ('{"url": "postgresql://db/kwx?password=p4ss", "n": 1}',
     f'{{"url": "postgresql://db/kwx?password={MASK}", "n": 1}}'),
    ("sqlite:////var/lib/kwx/kwx.db at revision head", "sqlite:////var/lib/kwx/kwx.db at revision head"),
])
def test_database_url_passwords_of_any_characters_are_masked_in_text(raw, expected):
    assert redact(raw) == expected


def test_a_whole_url_is_masked_even_with_blanks_in_its_password():
    assert mask_url("postgresql+psycopg2://u:pa ss/w@db:5432/kwx") == f"postgresql+psycopg2://u:{MASK}@db:5432/kwx"
    assert mask_url("sqlite:///kwx.db") == "sqlite:///kwx.db"


# Passwords as a user writes them: any character percent-encoded, or raw wherever SQLAlchemy reads it back intact.
# The markers around each make a coincidental match with the rest of the line impossible.
_PASSWORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=24).map(
    lambda middle: f"Pw{middle}Zz")
_DB = "postgresql+psycopg2"


def _raw_url(password: str, host: str = "db:5432") -> str:
    return f"{_DB}://kwx:{password}@{host}/kwx"


def _read_back_intact(url: str, password: str) -> bool:
    """Whether SQLAlchemy reads ``url``'s password as written (a raw ``@:`` can leave it no port it parses)."""
    try:
        return make_url(url).password == password
    except ValueError:
        return False


@settings(max_examples=300, deadline=None)
@given(password=_PASSWORDS, encoded=st.booleans(), param=st.sampled_from(SECRET_QUERY_PARAMS))
@example(password="Pw/@:%#?Zz", encoded=True, param="password")
@example(password="Pwpa/ss:#?%Zz", encoded=False, param="key")
@example(password="Pw pa/ss\u00e9\u4e2dZz", encoded=False, param="token")
@example(password="Pw@:Zz", encoded=False, param="key")  # SQLAlchemy reads a port out of it and fails
def test_no_password_survives_redact_or_mask_url(password, encoded, param):
    url = (f"{_DB}://kwx:{quote(password, safe='')}@db:5432/kwx?sslmode=require&{param}={quote_plus(password)}"
           if encoded else _raw_url(password))
    assume(encoded or _read_back_intact(url, password))  # raw only where SQLAlchemy reads it back intact
    whole = mask_url(url)
    assert password not in whole and quote(password, safe="") not in whole and f"kwx:{MASK}@db:5432/kwx" in whole
    if encoded or not re.search(r"\s", password):  # in free text a URL ends at a blank, so it must be encoded
        line = redact(f"error: cannot reach database {url}: connection refused")
        assert password not in line and quote(password, safe="") not in line and quote_plus(password) not in line
        assert line.startswith(f"error: cannot reach database {_DB}://kwx:{MASK}@db:5432/kwx")


@settings(max_examples=25, deadline=None)
@given(password=_PASSWORDS, encoded=st.booleans())
@example(password="Pwpa/ssZz", encoded=False)
@example(password="Pw@:Zz", encoded=False)  # SQLAlchemy reads a port out of it and fails
def test_no_password_reaches_the_error_line_of_a_failed_connection(password, encoded):
    url = _raw_url(quote(password, safe="") if encoded else password, host="127.0.0.1:1")  # closed port: fails fast
    assume(_read_back_intact(url, password))  # raw only where SQLAlchemy reads it back as this password
    result = CliRunner().invoke(app, ["db", "current", "--db-url", url])
    assert result.exit_code == 2, result.output
    assert f"cannot reach database {_DB}://kwx:{MASK}@127.0.0.1:1/kwx" in " ".join(result.output.split())
    assert password not in result.output and quote(password, safe="") not in result.output


@pytest.mark.parametrize(("password", "hidden"), [
    ("pa/ss", "pa/ss"),
    # SQLAlchemy cuts at the first '@' and the driver quotes the rest as the host it cannot resolve.
    ("Pw@Secret1", "Secret1"),
])
def test_a_password_is_not_printed_by_db_current(password, hidden):
    result = CliRunner().invoke(app, ["db", "current", "--db-url", f"{_DB}://u:{password}@127.0.0.1:1/x"])
    assert result.exit_code == 2 and f"u:{MASK}@127.0.0.1:1/x" in result.output
    assert hidden not in result.output, result.output


@pytest.mark.postgres
def test_a_sentinel_password_reaches_no_output_of_the_commands_that_print_the_database(postgres_url):
    sentinel = "Sentinel/Pg:Pass#word?7f3a"  # trust authentication accepts any password, so the commands succeed
    server = make_url(postgres_url)
    url = f"{server.drivername}://{server.username}:{sentinel}@{server.host}:{server.port}/{server.database}"
    assert make_url(url).password == sentinel  # written raw, as SQLAlchemy accepts it
    closed = url.replace(f"@{server.host}:{server.port}/", "@127.0.0.1:1/")
    runner = CliRunner()
    commands = [["db", "upgrade"], ["db", "current"], ["data", "summary"], ["db", "downgrade", "base"]]
    results = [runner.invoke(app, [*command, "--db-url", url]) for command in commands]
    failed = [runner.invoke(app, [*command, "--db-url", closed]) for command in commands]
    assert [r.exit_code for r in results] == [0, 0, 2, 0], [r.output for r in results]
    assert "no data in postgresql" in results[2].output
    assert {r.exit_code for r in failed} == {2} and all("cannot reach database" in r.output for r in failed)
    outputs = [r.output for r in results + failed]
    assert all(MASK in o for o in outputs), outputs
    assert [o for o in outputs if sentinel in o or quote(sentinel, safe="") in o or "Pass" in o] == []


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
    # grep in a child process: reading a -wal or -shm file here would drop the POSIX locks this process's open
    # SQLite connections hold on it (closing any descriptor of a file releases them all), and the next other process
    # to close that database would think itself the last and delete its WAL under them ("disk I/O error").
    found = subprocess.run(["grep", "-rlF", "--binary-files=text", "--", secret, str(root)], capture_output=True,
                           text=True, check=False)
    assert found.returncode in (0, 1), found.stderr  # 1: no file holds it
    return found.stdout.splitlines()


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
    with tempfile.TemporaryDirectory() as canary:  # the sweep finds a planted copy, nested and among binary bytes
        planted = Path(canary) / "artifacts" / "blob.bin"
        planted.parent.mkdir()
        planted.write_bytes(b"\0\xff" + SENTINEL.encode() + b"\0")
        assert _files_holding(Path(canary), SENTINEL) == [str(planted)]
    assert _files_holding(tmp_path, SENTINEL) == []
    assert _files_holding(Path(promoted["tracking_uri"].removeprefix("sqlite:///")).parent, SENTINEL) == []
