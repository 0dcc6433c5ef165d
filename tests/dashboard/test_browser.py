"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright) over a replayed
paper day. Skipped without Chromium locally; in CI (`CI` set) a missing browser fails, and `.ci/run`
installs it first."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import text

from kwx.clock import SimulatedClock
from kwx.dashboard.app import create_app
from kwx.data.db import make_engine
from kwx.execution import records
from kwx.registry.versions import model_name
from tests.dashboard.conftest import DAY, board_for, newest_tick, serving, sqlite_copy

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = os.environ.get("KWX_CHROMIUM", "/usr/bin/chromium")
# Where the page's screenshots go: a temp folder, or docs/ when regenerating the pictures README and the docs site show.
SCREENSHOT_DIR_ENV = "DASHBOARD_SCREENSHOT_DIR"
TOKEN = "browser-token-0123456789abcdef"
# The browser sits in Tokyo, the markets in Chicago: the page must show the settlement's clock, not the browser's.
BROWSER_ZONE = "Asia/Tokyo"
CST = timedelta(hours=-6)  # Chicago's standard time, the climate day's clock all year (July included)
REFRESH_WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KWX_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI requires it")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id=BROWSER_ZONE)
    page = context.new_page()
    page.problems = []  # console errors and requests that leave the dashboard's own address
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.screenshots = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)
    yield page
    context.close()


def _open(page, base: str) -> None:
    page.on("request", lambda r: r.url.startswith(base) or page.problems.append(f"off-site request: {r.url}"))
    page.goto(base)
    _wait_refreshes(page, 1)


def _wait_refreshes(page, count: int) -> None:
    page.wait_for_function(f"window.kwx && window.kwx.refreshCount >= {count}", timeout=REFRESH_WAIT_MS)


def _latest_signals(db: str) -> pd.DataFrame:
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            return pd.read_sql(text(
                "SELECT s.market_ticker, s.p_model, s.edge_cents, s.side FROM rt_signals s "
                "JOIN (SELECT market_ticker, max(ts_utc) AS ts FROM rt_signals GROUP BY market_ticker) n "
                "ON n.market_ticker = s.market_ticker AND n.ts = s.ts_utc "
                "JOIN markets m ON m.ticker = s.market_ticker WHERE m.event_date = :day"), conn, params={"day": DAY})
    finally:
        engine.dispose()


def _day_markets(db: str) -> list[str]:
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            return [t for (t,) in conn.execute(text(
                "SELECT ticker FROM markets WHERE city = 'chicago' AND event_date = :day"), {"day": DAY})]
    finally:
        engine.dispose()


def _banner_kinds(page) -> list[str]:
    return page.eval_on_selector_all("#banners .banner", "els => els.map(e => e.dataset.kind)")


def test_the_page_shows_the_ladder_signals_and_health_of_the_replayed_day(replayed, page):
    clock = SimulatedClock(newest_tick(replayed["db"]) + timedelta(seconds=10))
    board = board_for(replayed["db"], replayed["tracking_uri"], clock=clock, max_age_seconds=60)
    with serving(create_app(board, token=None)) as base:
        _open(page, base)
        markets = _day_markets(replayed["db"])
        charts = page.eval_on_selector_all(".ladder-chart", "els => els.map(e => e.dataset.ticker)")
        assert sorted(charts) == sorted(markets)
        series = page.evaluate("Object.fromEntries(Object.entries(window.kwx.charts).map("
                               "([t, c]) => [t, c.series.map(s => s.label)]))")
        assert set(series) == set(markets)
        assert all(labels == ["Time", "model", "blend", "bid", "ask", "mid"] or len(labels) == 6
                   for labels in series.values())

        expected = _latest_signals(replayed["db"]).set_index("market_ticker").sort_index()
        cells = page.eval_on_selector_all(
            "#signals-table tbody tr",
            "rows => rows.map(r => [r.dataset.ticker, ...[...r.cells].map(c => c.dataset.value)])")
        header = page.eval_on_selector_all("#signals-table thead th", "ths => ths.map(t => t.dataset.column "
                                           "|| t.textContent.replace(/[▲▼↑↓\\s]/g, ''))")
        shown = pd.DataFrame([c[1:] for c in cells], columns=header, index=[c[0] for c in cells]).sort_index()
        assert list(shown.index) == list(expected.index) and len(shown) > 0
        assert shown["p_model"].map(_json_number).tolist() == pytest.approx(expected["p_model"].tolist())
        assert shown["edge_cents"].map(_json_number).tolist() == pytest.approx(expected["edge_cents"].tolist())
        assert _banner_kinds(page) == []
        assert "replay" in page.inner_text("#health")
        # the day's P&L beside its two sources, which sum to it
        figures = dict(page.eval_on_selector_all(
            "#pnl .fig", "els => els.map(e => [e.dataset.key, [e.querySelector('.k').textContent, "
            "e.querySelector('.v').dataset.value]])"))
        assert figures["source-open"][0] == "open (model)" and figures["source-locked"][0] == "locked (rule)"
        assert _json_number(figures["source-open"][1]) + _json_number(figures["source-locked"][1]) == pytest.approx(
            _json_number(figures["total_cents"][1]))
        assert "source" in page.eval_on_selector_all("#fills-table thead th", "ths => ths.map(t => t.dataset.column "
                                                     "|| t.textContent)")
        page.screenshot(path=str(page.screenshots / "dashboard.png"), full_page=True)

        # Sorting by a column reorders the rows; filtering by bracket hides the others.
        page.click("#signals-table thead th[data-column='edge_cents']")
        edges = [_json_number(v) for v in page.eval_on_selector_all(
            "#signals-table tbody tr", "rows => rows.map(r => r.cells[" + str(header.index("edge_cents")) +
            "].dataset.value)")]
        assert edges in (sorted(edges), sorted(edges, reverse=True))
        options = page.eval_on_selector_all("#signals-bracket option", "os => os.map(o => o.value)")
        assert options[1:] == ["between"]  # "all", then the brackets the rows have
        page.select_option("#signals-bracket", "between")
        assert page.eval_on_selector_all("#signals-table tbody tr", "rows => rows.length") == len(expected)

        # The clock moves on and no tick comes: the red banner appears without a reload.
        assert page.inner_text("#halt-pill-top") == page.inner_text("#halt-pill") == "trading"
        clock.advance(timedelta(minutes=5))
        page.wait_for_selector("#banners .banner[data-kind=stale_tick]", timeout=REFRESH_WAIT_MS)
        # the badges agree with the banner: nothing trades on a stale loop
        assert page.inner_text("#halt-pill-top") == page.inner_text("#halt-pill") == "stale"
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.problems == []


def _json_number(value: str | None) -> float | None:
    return None if value in (None, "", "null") else float(value)


def test_an_archived_model_shows_the_stale_model_banner(replayed, page, tmp_path):
    tracking_uri = sqlite_copy(replayed["tracking_uri"], tmp_path / "mlflow.db")
    board = board_for(replayed["db"], tracking_uri)
    with serving(create_app(board, token=None)) as base:
        _open(page, base)
        assert _banner_kinds(page) == []
        client = MlflowClient(tracking_uri)
        name = model_name("chicago", "between")
        trading = page.eval_on_selector_all("#models-table tbody tr", "rows => rows.map(r => r.innerText)")
        version = next(v for v in client.search_model_versions(f"name = '{name}'")
                       if v.current_stage == "Production" and v.tags["test_start"] <= DAY.isoformat()
                       <= v.tags["test_end"])
        assert any(version.tags["window"] in row for row in trading)
        with warnings.catch_warnings():  # MLflow 3 deprecates stages; kwx trades by stage (registry.promotion)
            warnings.simplefilter("ignore", FutureWarning)
            client.transition_model_version_stage(name, version.version, "Archived")
        page.wait_for_selector("#banners .banner[data-kind=stale_model]", timeout=REFRESH_WAIT_MS)
        assert "past its test period" in page.inner_text("#banners")
        page.screenshot(path=str(page.screenshots / "dashboard-stale-model.png"))
    assert page.problems == []


def test_a_database_outage_shows_a_banner_and_the_page_recovers(replayed, page, tmp_path):
    db = sqlite_copy(replayed["db"], tmp_path / "kwx.db")
    board = board_for(db, replayed["tracking_uri"])
    with serving(create_app(board, token=None)) as base:
        _open(page, base)
        shutil.move(tmp_path / "kwx.db", tmp_path / "away.db")
        page.wait_for_selector("#banners .banner[data-kind=database]", timeout=REFRESH_WAIT_MS)
        assert "unable to open database file" in page.inner_text("#banners")
        shutil.move(tmp_path / "away.db", tmp_path / "kwx.db")
        page.wait_for_selector("#banners .banner[data-kind=database]", state="detached", timeout=REFRESH_WAIT_MS)
    # the failed requests (503) are logged by the browser; nothing else may be
    assert [p for p in page.problems if "503" not in p] == []


def test_off_loopback_the_token_is_asked_once_and_enforced(replayed, page, tmp_path):
    env = {**os.environ, "KWX_DASHBOARD_TOKEN": TOKEN, "MLFLOW_TRACKING_URI": replayed["tracking_uri"]}
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\ntick_seconds: 2\n")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "kwx"), "dashboard", "--host", "0.0.0.0", "--port", "0",
         "--config", str(config), "--db-url", replayed["db"]],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        assert "token required" in line, line + (server.stdout.read() if server.poll() is not None else "")
        port = int(line.split("http://0.0.0.0:")[1].split("/")[0])
        base = f"http://127.0.0.1:{port}/"
        import httpx

        assert httpx.get(base + "api/state").status_code == 401
        assert httpx.get(base + "api/state", headers={"X-KWX-Token": TOKEN}).status_code == 200
        page.goto(base)
        assert page.url.endswith("/login")
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        assert "Wrong token" in page.inner_text("body")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        _wait_refreshes(page, 1)
        assert page.eval_on_selector_all(".ladder-chart", "els => els.length") > 0
        assert TOKEN not in page.content()
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0]
    assert TOKEN not in output and "Traceback" not in output


def _cells(page, table: str, column: str) -> list[tuple[str, str, str | None]]:
    """(text, data-value, title) of ``column``'s cells in ``table``."""
    return page.evaluate("""([table, column]) => {
        const t = document.getElementById(table);
        const i = [...t.querySelectorAll("thead th")].findIndex((th) => th.dataset.col === column);
        return [...t.querySelectorAll("tbody tr")].map((r) => [r.cells[i].textContent, r.cells[i].dataset.value,
                                                                r.cells[i].title || null]);
    }""", [table, column])


def _cst(utc_iso: str) -> str:
    return (datetime.fromisoformat(utc_iso).astimezone(UTC) + CST).strftime("%m-%d %H:%M")


def test_times_are_chicago_standard_time_in_a_tokyo_browser(replayed, page):
    board = board_for(replayed["db"], replayed["tracking_uri"])
    with serving(create_app(board, token=None)) as base:
        _open(page, base)
        assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == BROWSER_ZONE
        assert page.inner_text("#clock-zone") == "CST (UTC−6)"
        fills = _cells(page, "fills-table", "ts_utc")
        assert fills
        # headings say the clock and the units their cells are shown in
        headings = page.eval_on_selector_all("#fills-table thead th", "ths => ths.map(t => [t.dataset.column, "
                                             "t.textContent])")
        assert ["ts_utc", "time (CST)"] in headings and ["price_cents", "price ¢"] in headings
        assert ["fee_cents", "fee $"] in headings
        for text, value, title in fills:  # e.g. a fill at 20:50 UTC shows as 14:50, UTC on hover
            utc = json.loads(value)
            assert text == _cst(utc) and title == f"{datetime.fromisoformat(utc):%Y-%m-%d %H:%M:%S} UTC"
        assert all(text == _cst(json.loads(value)) for text, value, _ in _cells(page, "orders-table", "created_at"))
        # the replay's clock is its newest tick, on the city's clock
        tick = newest_tick(replayed["db"])
        assert page.inner_text("#server-now") == f"replay {_cst(tick.isoformat())}"
        assert page.get_attribute("#health-kv dd[data-key=newest_tick]", "title") == f"{tick:%Y-%m-%d %H:%M:%S} UTC"
        # the ladder's axis is the climate day, 00:00 to 24:00 CST, with the close and the usual high marked
        start = int(datetime(2025, 7, 18, 6, tzinfo=UTC).timestamp())
        axis = page.evaluate("""(start) => { const u = Object.values(window.kwx.charts)[0];
            return [u.scales.x.min, u.scales.x.max, u.axes[0].values(u, [start, start + 4 * 3600, start + 15 * 3600,
                                                                         start + 86400])]; }""", start)
        assert axis == [start, start + 86400, ["00:00", "04:00", "15:00", "24:00"]]
        assert re.fullmatch(r"locked NO from \d\d:\d\d", page.inner_text(".ladder-chart .badge.locked-no"))
    assert page.problems == []


def test_prices_are_whole_cents_money_dollars_and_counts_whole(replayed, page):
    board = board_for(replayed["db"], replayed["tracking_uri"])
    with serving(create_app(board, token=None)) as base:
        _open(page, base)
        price, money, count = re.compile(r"\d+¢"), re.compile(r"−?\$\d+\.\d\d"), re.compile(r"\d+")
        for table, column, shape in [("fills-table", "price_cents", price), ("fills-table", "fee_cents", money),
                                     ("fills-table", "count", count), ("orders-table", "limit_price_cents", price),
                                     ("orders-table", "filled_count", count), ("positions-table", "cost_cents", money),
                                     ("positions-table", "avg_cost_cents", price),
                                     ("positions-table", "contracts", count), ("signals-table", "p_model", price),
                                     ("signals-table", "edge_cents", re.compile(r"−?\d+¢"))]:
            cells = _cells(page, table, column)
            assert cells and all(shape.fullmatch(text) for text, _, _ in cells), (table, column, cells[:3])
        # the ladder's read-out quotes in cents too
        assert re.search(r"bid\d+¢", page.inner_text(".ladder-chart .readout"))
    assert page.problems == []


def test_a_halted_loop_says_halted_in_the_badges_and_the_banner(replayed, page, tmp_path):
    db = sqlite_copy(replayed["db"], tmp_path / "kwx.db")
    writer = make_engine(db)
    records.halt(writer, "paper", reason="operator: fat finger", by="test", now=newest_tick(db))
    writer.dispose()
    board = board_for(db, replayed["tracking_uri"])
    with serving(create_app(board, token=None)) as base:
        _open(page, base)
        assert _banner_kinds(page) == ["halted"]
        assert page.inner_text("#halt-pill-top") == page.inner_text("#halt-pill") == "halted"
    assert page.problems == []
