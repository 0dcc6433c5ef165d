"""Benchmark: the dashboard's JSON endpoints over real HTTP, on a full day of seven cities' signals.

    .venv/bin/python bench/dashboard.py [--requests 50] [--day 2025-07-20] [--days 1] [--orders 300]
                                        [--postgres | --db-url URL] [--keep] [--analyze | --no-analyze] [--profile]
                                        [--listener cli|create_server] [--no-gc-freeze]

Builds a migrated database (SQLite in a temporary directory; ``--postgres`` creates a fresh PostgreSQL database
``kwx_bench_<hex>`` on 127.0.0.1 and drops it afterwards; ``--db-url`` uses an empty one you give) with demo data
for all seven cities around ``--day``, then writes what a loop over all seven cities x three brackets leaves
behind for that day: one ``rt_signals`` row per 9 s tick and open market (markets open the morning before
their day, so a tick covers that day's and the next day's markets), one ``rt_ticks`` row per tick (9,600 a
day), and ``--orders`` paper orders with their fills. ``--days N`` writes N such days ending on ``--day``
(history the indexes must skip). MLflow points at an empty temporary store, so ``/api/models`` answers "no
model" for each of the 21 families (the registry is still asked).

Then serves the real app (``create_app``) on uvicorn in a background thread on a free port, over the
dashboard's read-only engine and a simulated clock 5 s after the last tick, and requests each endpoint with
httpx: a warm-up round (every city for ladder and calibration; its slowest request is the "cold" column),
then ``--requests`` timed requests per endpoint (ladder and calibration cycle through the seven cities).
Prints p50 / p95 / max and the response size per endpoint, and the page's full refresh: all six requests at
once, and as dashboard.js issues them (api/state, then the other five at once). ``--profile`` adds a
server-side breakdown per endpoint (database reads, view shaping, registry, JSON encoding) from
sequential requests.

``--listener cli`` (the default) binds as ``kwx dashboard`` does (``kwx.cli.dashboard.tcp_listener``);
``--listener create_server`` binds with ``socket.create_server``, whose protocol number 0 keeps asyncio from
setting TCP_NODELAY on accepted connections: every response (headers, then body) then waits ~40 ms for the
client's delayed ACK.

The full garbage collections during the measurement are counted with their pauses: the process holds MLflow,
SQLAlchemy and pandas (as ``kwx dashboard`` does), so a full collection stalls whichever request triggers it;
``gc.freeze()`` is called once the app is built, as ``kwx dashboard`` does; ``--no-gc-freeze`` shows the
difference.

PostgreSQL tables are ANALYZEd after the load (autovacuum would have done so on a loop's database), SQLite
ones are not (nothing in kwx runs ANALYZE); ``--analyze`` / ``--no-analyze`` overrides either.

Target: p95 < 200 ms for every data endpoint.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

TICK_SECONDS = 9
BRACKETS = ("between", "greater", "less")
TARGET_MS = 200.0
PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
ENDPOINTS = ("state", "ladder", "signals", "models", "execution", "calibration")
# What a loop's gates say, roughly in the proportions a loop over demo data writes them (None: it trades).
SKIPS = {None: 0.30, "edge below tau_open_cents": 0.42, "spread wider than max_spread_cents": 0.14,
         "no two-sided quote": 0.06, "stale quote: newest candle older than max_quote_age_seconds": 0.05,
         "no fresh weather observation": 0.03}
DATA_SKIPS = ("no two-sided quote", "no fresh weather observation")  # no model asked, no price
EPOCH = pd.Timestamp(0, tz="UTC")


# --- the database ------------------------------------------------------------------------------------

class Database:
    """Where the benchmark's data lives: a temporary SQLite file, a fresh PostgreSQL database or a given URL."""

    def __init__(self, args, root: Path):
        self.created: str | None = None
        self.admin_url = args.pg_admin_url
        if args.postgres:
            from sqlalchemy.engine import make_url

            self.created = f"kwx_bench_{uuid.uuid4().hex[:8]}"
            self._admin(f"CREATE DATABASE {self.created}")
            self.url = make_url(self.admin_url).set(database=self.created).render_as_string(hide_password=False)
        else:
            self.url = args.db_url or f"sqlite:///{root / 'kwx.db'}"
        self.backend = self.url.split(":", 1)[0].split("+", 1)[0]

    def size_text(self, engine) -> str:
        if self.backend == "sqlite":
            path = Path(self.url.removeprefix("sqlite:///"))
            return f"{path.stat().st_size / 1e6:,.0f} MB SQLite file"
        with engine.connect() as conn:
            size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
        return f"{size / 1e6:,.0f} MB PostgreSQL database"

    def drop(self) -> None:
        if self.created is not None:
            self._admin(f"DROP DATABASE IF EXISTS {self.created} WITH (FORCE)")

    def _admin(self, sql: str) -> None:
        """One statement on the admin connection (CREATE/DROP DATABASE cannot run in a transaction)."""
        from sqlalchemy import create_engine

        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            admin.dispose()


def read_markets(engine) -> pd.DataFrame:
    from sqlalchemy import select

    from kwx.data.schema import Market

    columns = ["ticker", "city", "strike_type", "event_date", "open_time", "close_time", "result"]
    with engine.connect() as conn:
        rows = conn.execute(select(*(Market.__table__.c[c] for c in columns))).all()
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for column in ("open_time", "close_time"):  # Unix seconds, whatever resolution pandas picks
        frame[column] = (pd.to_datetime(frame[column], utc=True) - EPOCH) // pd.Timedelta(seconds=1)
    return frame.sort_values(["city", "event_date", "ticker"]).reset_index(drop=True)


def signal_frame(markets: pd.DataFrame, ticks: np.ndarray, rng: np.random.Generator) -> tuple[pd.DataFrame,
                                                                                               np.ndarray]:
    """One rt_signals row per tick (Unix seconds) and market open at it (open_time <= tick < close_time), in
    tick order as the loop writes them; also each row's tick index."""
    from scipy.special import expit

    from kwx.registry.versions import model_name

    first = np.searchsorted(ticks, markets["open_time"].to_numpy(), "left")
    stop = np.searchsorted(ticks, markets["close_time"].to_numpy(), "left")
    counts = np.maximum(stop - first, 0)
    markets, first, counts = markets[counts > 0].reset_index(drop=True), first[counts > 0], counts[counts > 0]
    n = int(counts.sum())
    m = np.repeat(np.arange(len(markets)), counts)  # market-major: a random walk per market
    begins = np.cumsum(counts) - counts
    t = np.repeat(first, counts) + np.arange(n) - np.repeat(begins, counts)

    steps = rng.normal(0, 0.03, n)
    walk = np.cumsum(steps)
    walk -= np.repeat(walk[begins] - steps[begins], counts)
    base = rng.normal(-1.0, 1.5, len(markets))
    p_market = np.clip(expit(base[m] + walk), 0.01, 0.99)
    p_model = np.clip(expit(base[m] + walk + rng.normal(0, 0.25, len(markets))[m] + rng.normal(0, 0.05, n)),
                      0.001, 0.999)
    minutes = (markets["close_time"].to_numpy()[m] - ticks[t]) / 60
    locked = (m % 3 == 0) & (minutes < 240)  # a third of the markets decided in their last four hours
    p_model = np.where(locked, (markets["result"].to_numpy()[m] == "yes").astype(float), p_model)
    p_blend = 0.7 * p_model + 0.3 * p_market
    spread = rng.integers(1, 7, n).astype(float)

    names = list(SKIPS)
    reason = np.asarray(names, dtype=object)[rng.choice(len(names), n, p=list(SKIPS.values()))]
    reason[minutes < 5] = "closing: inside min_minutes_to_close"
    unpriced = np.isin(reason, DATA_SKIPS)
    p_model = np.where(unpriced & ~locked, np.nan, p_model)
    p_market = np.where(unpriced, np.nan, p_market)
    p_blend = np.where(unpriced, np.nan, p_blend)
    edge = np.abs(p_blend - p_market) * 100 - spread / 2
    trades = pd.isna(reason)
    kelly = np.where(trades, rng.uniform(0.005, 0.08, n), 0.0)
    cities, brackets = markets["city"].to_numpy()[m], markets["strike_type"].to_numpy()[m]
    family = pd.Series(cities + "/" + brackets)
    model_id = np.where(unpriced, None, family.map(
        {f: f"{model_name(*f.split('/'))}/7" for f in family.unique()}).to_numpy(dtype=object))
    frame = pd.DataFrame({
        "ts_utc": pd.to_datetime(ticks[t], unit="s", utc=True), "market_ticker": markets["ticker"].to_numpy()[m],
        "city": cities, "bracket": brackets, "p_model": p_model, "p_market": p_market, "p_blend": p_blend,
        "edge_cents": np.round(edge, 2), "kelly_fraction": kelly, "size_fraction": kelly / 4,
        "spread_cents": spread, "minutes_to_close": minutes, "model_id": model_id,
        "wf_window": np.where(unpriced, None, "w2025-07-14"),
        "side": np.where(trades, np.where(p_blend >= p_market, "yes", "no"), None).astype(object),
        "skip_reason": reason, "locked": locked,
    })
    order = np.lexsort((m, t))  # tick by tick, as the loop inserts them
    return frame.iloc[order].reset_index(drop=True), t[order]


def tick_frame(ticks: np.ndarray, signals: pd.DataFrame, tick_of_row: np.ndarray,
               rng: np.random.Generator) -> pd.DataFrame:
    """One rt_ticks row per tick: markets, sized signals, skips per reason (JSON text), latency."""
    codes, reasons = pd.factorize(signals["skip_reason"])  # -1: no skip
    skipped = codes >= 0
    counts = np.zeros((len(ticks), len(reasons)), dtype=np.int64)
    np.add.at(counts, (tick_of_row[skipped], codes[skipped]), 1)
    names = list(reasons)
    skips = [json.dumps({names[j]: int(row[j]) for j in np.flatnonzero(row)}) for row in counts]
    sized = (signals["size_fraction"].to_numpy() > 0).astype(np.int64)
    return pd.DataFrame({
        "ts_utc": pd.to_datetime(ticks, unit="s", utc=True), "mode": "live",
        "markets": np.bincount(tick_of_row, minlength=len(ticks)),
        "signals": np.bincount(tick_of_row, weights=sized, minlength=len(ticks)).astype(np.int64),
        "skips": skips, "latency_ms": np.round(rng.lognormal(np.log(35), 0.35, len(ticks)), 2)})


def order_frames(signals: pd.DataFrame, day_tickers: set[str], count: int,
                 rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``count`` paper buy orders placed on sized signals (two thirds in the day's own markets) and their fills."""
    sized = signals[signals["size_fraction"] > 0]
    own = sized["market_ticker"].isin(day_tickers).to_numpy()
    picks = np.concatenate([
        rng.choice(np.flatnonzero(own), min(own.sum(), count * 2 // 3), replace=False),
        rng.choice(np.flatnonzero(~own), min((~own).sum(), count - count * 2 // 3), replace=False)])
    chosen = sized.iloc[np.sort(picks)].reset_index(drop=True)
    n = len(chosen)
    yes = (chosen["side"] == "yes").to_numpy()
    price = np.clip(np.round(100 * np.where(yes, chosen["p_market"], 1 - chosen["p_market"])), 1, 99)
    contracts = rng.integers(1, 40, n)
    status = rng.choice(["filled", "cancelled", "resting", "rejected"], n, p=[0.5, 0.28, 0.17, 0.05])
    partial = np.minimum(rng.integers(0, contracts + 1), contracts)
    filled = np.select([status == "filled", status == "rejected"], [contracts, 0], partial)
    created = chosen["ts_utc"]
    updated = created + pd.to_timedelta(rng.integers(9, 900, n), unit="s")
    ids = [f"bench-{i:06d}" for i in range(n)]
    orders = pd.DataFrame({
        "client_order_id": ids, "exchange_order_id": None, "mode": "paper", "environment": "paper",
        "market_ticker": chosen["market_ticker"], "side": chosen["side"], "action": "buy",
        "limit_price_cents": price, "count": contracts, "filled_count": filled,
        "remaining_count": np.where(status == "resting", contracts - filled, 0), "post_only": True,
        "status": status, "created_at": created, "updated_at": updated,
        "cancelled_at": updated.where(pd.Series(status == "cancelled"), pd.NaT),
        "reason": np.select([status == "cancelled", status == "rejected"],
                            ["edge below tau_open_cents", "paper: exceeds max_position_contracts"], None),
        "signal_ts_utc": created})
    got = filled > 0
    p = price[got] / 100
    fills = pd.DataFrame({
        "fill_id": [f"bench-fill-{i:06d}" for i in range(int(got.sum()))],
        "client_order_id": np.asarray(ids)[got], "market_ticker": chosen["market_ticker"].to_numpy()[got],
        "side": chosen["side"].to_numpy()[got], "action": "buy", "price_cents": price[got],
        "count": filled[got], "fee_cents": np.round(np.ceil(0.0175 * filled[got] * p * (1 - p) * 100), 2),
        "liquidity": "maker", "ts_utc": updated[got].to_numpy(), "mode": "paper"})
    fills["ts_utc"] = pd.to_datetime(fills["ts_utc"], utc=True)
    return orders, fills


def build(db: Database, args) -> dict:
    """Migrate, load demo data, write the signals, ticks, orders and fills; returns the figures to print."""
    from sqlalchemy import text

    from kwx.cities import CITIES, get_city
    from kwx.data import migrations
    from kwx.data.db import make_engine
    from kwx.data.demo import load_demo
    from kwx.data.store import upsert_frame
    from kwx.domain.markets import climate_day_bounds
    from kwx.execution import records

    rng = np.random.default_rng(args.seed)
    cities = sorted(CITIES)
    first_day = args.day - timedelta(days=args.days - 1)
    timings = {}
    started = time.perf_counter()
    migrations.upgrade(db.url)
    engine = make_engine(db.url)
    try:
        demo = load_demo(engine, cities, first_day - timedelta(days=1), args.day + timedelta(days=1), seed=args.seed)
        timings["migrate + demo data"] = time.perf_counter() - started

        lap = time.perf_counter()
        start, _ = climate_day_bounds(first_day, get_city(cities[0]))  # the dashboard's day: the first city's
        ticks = int(start.timestamp()) + TICK_SECONDS * np.arange(args.days * 86400 // TICK_SECONDS, dtype=np.int64)
        markets = read_markets(engine)
        signals, tick_of_row = signal_frame(markets, ticks, rng)
        tick_rows = tick_frame(ticks, signals, tick_of_row, rng)
        day_tickers = set(markets.loc[markets["event_date"] == args.day, "ticker"])
        orders, fills = order_frames(signals[signals["ts_utc"] >= climate_day_bounds(args.day, get_city(
            cities[0]))[0]], day_tickers, args.orders, rng)
        timings["generate signals (numpy)"] = time.perf_counter() - lap

        lap = time.perf_counter()
        with engine.begin() as conn:
            upsert_frame(conn, "rt_signals", signals)
            upsert_frame(conn, "rt_ticks", tick_rows)
        timings["insert signals + ticks"] = time.perf_counter() - lap
        lap = time.perf_counter()
        with engine.begin() as conn:
            records.save_orders(conn, orders)
            records.save_fills(conn, fills)
        timings["insert orders + fills"] = time.perf_counter() - lap
        analyze = args.analyze if args.analyze is not None else db.backend == "postgresql"
        if analyze:
            lap = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
            timings["ANALYZE"] = time.perf_counter() - lap
        timings["total"] = time.perf_counter() - started
        per_tick = np.bincount(tick_of_row, minlength=len(ticks))
        return {"demo": demo, "markets": markets, "signals": len(signals), "ticks": len(ticks),
                "per_tick": per_tick, "signalled_markets": signals["market_ticker"].nunique(),
                "orders": len(orders), "fills": len(fills), "day_orders": int(orders["market_ticker"].isin(
                    day_tickers).sum()), "timings": timings, "analyzed": analyze, "size": db.size_text(engine),
                "last_tick": pd.Timestamp(ticks[-1], unit="s", tz="UTC").to_pydatetime()}
    finally:
        engine.dispose()


# --- the server and the client -----------------------------------------------------------------------

def listener(kind: str) -> socket.socket:
    """A free loopback port. ``cli``: bound as ``kwx dashboard`` binds (``tcp_listener``, an IPPROTO_TCP socket,
    so asyncio sets TCP_NODELAY on the connections it accepts); ``create_server``: ``socket.create_server``,
    whose protocol number 0 keeps asyncio from setting TCP_NODELAY (each response then waits ~40 ms)."""
    if kind == "create_server":
        return socket.create_server(("127.0.0.1", 0))
    from kwx.cli.dashboard import tcp_listener

    return tcp_listener("127.0.0.1", 0)


class Served:
    """The app on uvicorn in a background thread, listening on ``sock``."""

    def __init__(self, app, sock: socket.socket):
        import uvicorn

        self.socket = sock
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


class Collections:
    """The full (generation 2) garbage collections in this process, server and client alike, and their pauses."""

    def __init__(self):
        self.pauses: list[float] = []
        self._started: dict[int, float] = {}
        gc.callbacks.append(self._seen)

    def _seen(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started[threading.get_ident()] = time.perf_counter()
        elif threading.get_ident() in self._started:
            self.pauses.append((time.perf_counter() - self._started.pop(threading.get_ident())) * 1000)

    def text(self) -> str:
        if not self.pauses:
            return "none"
        pauses = self.pauses
        return f"{len(pauses)}, pauses median {statistics.median(pauses):.0f} ms, max {max(pauses):.0f} ms"


class FirstOnly(logging.Filter):
    """Each distinct log message once: a failing endpoint logs its traceback once, not once per request."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def dashboard(url: str, root: Path, now: datetime):
    from mlflow.tracking import MlflowClient

    from kwx.cities import CITIES
    from kwx.clock import SimulatedClock
    from kwx.config import RtConfig
    from kwx.dashboard.app import Dashboard
    from kwx.dashboard.registry import RegistryView
    from kwx.data.db import make_read_only_engine, redact

    config = RtConfig.model_validate({"markets": [{"city": c, "bracket": b} for c in sorted(CITIES) for b in BRACKETS],
                                      "tick_seconds": TICK_SECONDS, "execution": {"mode": "paper"}})
    clock = SimulatedClock(now)
    registry = RegistryView(MlflowClient(f"sqlite:///{root / 'mlflow.db'}"), clock, stage=config.stage, ui_url=None,
                            refresh_seconds=config.model_refresh_seconds, max_stale_days=config.max_stale_days)
    return Dashboard(make_read_only_engine(url), registry, config, clock, 5 * TICK_SECONDS,
                     redact(f"database {url}"))


def requests_for(name: str, day: date, cities: list[str]) -> list[dict]:
    """The query parameters the page sends, one set per request in turn (ladder/calibration: each city)."""
    if name in ("ladder", "calibration"):
        return [{"city": c, **({"day": day.isoformat()} if name == "ladder" else {})} for c in cities]
    return [{} if name == "state" else {"day": day.isoformat()}]


ERRORS: dict[str, int] = defaultdict(int)  # non-200 answers per endpoint (the first one is printed)


def get(client, name: str, params: dict) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.get(f"/api/{name}", params=params)
    ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        if not ERRORS[name]:
            print(f"  !! /api/{name} {params} answered {response.status_code}: {response.text[:300]}")
        ERRORS[name] += 1
    return ms, len(response.content)


def percentiles(values: list[float]) -> tuple[float, float, float]:
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95), float(max(values))


def measure(base: str, day: date, cities: list[str], count: int) -> tuple[dict, dict]:
    import httpx

    results, refresh = {}, {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name in ENDPOINTS:
            variants = requests_for(name, day, cities)
            cold = [get(client, name, params)[0] for params in variants]  # warm-up: each city once
            times, sizes, before = [], [], ERRORS[name]
            for i in range(count):
                ms, size = get(client, name, variants[i % len(variants)])
                times.append(ms)
                sizes.append(size)
            results[name] = {"times": times, "cold": max(cold), "bytes": statistics.median(sizes),
                             "errors": ERRORS[name] - before}

        def page(i: int, pool, state_first: bool) -> float:
            city = cities[i % len(cities)]
            params = {"state": {}, "ladder": {"city": city, "day": day.isoformat()},
                      "signals": {"day": day.isoformat()}, "models": {"day": day.isoformat()},
                      "execution": {"day": day.isoformat()}, "calibration": {"city": city}}
            started = time.perf_counter()
            if state_first:
                get(client, "state", {})
            jobs = [pool.submit(get, client, name, params[name]) for name in ENDPOINTS
                    if not (state_first and name == "state")]
            for job in jobs:
                job.result()
            return (time.perf_counter() - started) * 1000

        with ThreadPoolExecutor(max_workers=len(ENDPOINTS)) as pool:
            for label, state_first in (("refresh: all 6 at once", False),
                                       ("refresh: state, then 5 at once (dashboard.js)", True)):
                page(0, pool, state_first)
                refresh[label] = [page(i, pool, state_first) for i in range(count)]
    return results, refresh


# --- the server-side breakdown ------------------------------------------------------------------------

class Breakdown:
    """Milliseconds per category (and per function) inside the server, for one request at a time."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, owner, attribute: str, category: str) -> None:
        original = getattr(owner, attribute)
        label = f"{category}:{attribute}"

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if self._depth[category]:  # already inside a timed call of this category
                return original(*args, **kwargs)
            self._depth[category] += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                ms = (time.perf_counter() - started) * 1000
                self.spent[category] += ms
                self.spent[label] += ms
                self._depth[category] -= 1

        setattr(owner, attribute, timed)

    def install(self) -> None:
        from starlette.responses import JSONResponse

        from kwx.dashboard import app, queries, views
        from kwx.execution import records

        for name in ("newest_tick_time", "recent_ticks", "signal_days", "day_markets", "ladder_rows",
                     "latest_signals", "newest_order_mode"):
            self.wrap(queries, name, "db")
        for name in ("daily_pnl", "orders", "fills", "halt_state"):
            self.wrap(records, name, "db")
        for name in ("tick_health", "ladder", "latest_signals", "table", "models_table", "banners", "pnl_split"):
            self.wrap(views, name, "views")
        self.wrap(app.Dashboard, "models", "registry")
        self.wrap(app.Dashboard, "calibration", "registry")
        self.wrap(JSONResponse, "render", "json")


def profile(base: str, day: date, cities: list[str], count: int) -> None:
    import httpx

    breakdown = Breakdown()
    breakdown.install()
    print("\nserver-side breakdown (sequential requests, medians in ms; db = query + rows + frame building):")
    print(f"{'endpoint':<12}{'http':>8}{'db':>8}{'views':>8}{'registry':>9}{'json':>8}{'rest':>8}  slowest parts")
    with httpx.Client(base_url=base, timeout=60) as client:
        for name in ENDPOINTS:
            variants = requests_for(name, day, cities)
            rows = []
            for i in range(count):
                breakdown.spent.clear()
                ms, _ = get(client, name, variants[i % len(variants)])
                rows.append({"http": ms, **breakdown.spent})
            frame = pd.DataFrame(rows).fillna(0.0).median()
            main = {k: float(frame.get(k, 0.0)) for k in ("http", "db", "views", "registry", "json")}
            rest = main["http"] - sum(v for k, v in main.items() if k != "http")
            parts = frame[[k for k in frame.index if ":" in k]].sort_values(ascending=False).head(4)
            print(f"{name:<12}" + "".join(f"{main[k]:>{9 if k == 'registry' else 8}.1f}" for k in main)
                  + f"{rest:>8.1f}  " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if v >= 0.05))


# --- main ---------------------------------------------------------------------------------------------

def revision() -> str:
    """The commit measured (and whether the dashboard's code differs from it): the code changes under a bench."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "kwx"], cwd=repo, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return commit + (" with uncommitted changes under kwx/" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint and per refresh kind")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2025, 7, 20))
    parser.add_argument("--days", type=int, default=1, help="days of signals ending on --day")
    parser.add_argument("--orders", type=int, default=300, help="paper orders placed on the signals")
    parser.add_argument("--seed", type=int, default=7)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db-url", help="an empty database to build in (default: SQLite in a temporary directory)")
    where.add_argument("--postgres", action="store_true",
                       help="create a fresh PostgreSQL database via --pg-admin-url, drop it afterwards")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="where --postgres creates its database")
    parser.add_argument("--keep", action="store_true", help="keep the database and the temporary directory")
    parser.add_argument("--analyze", action=argparse.BooleanOptionalAction, default=None,
                        help="ANALYZE after the load (default: on PostgreSQL only)")
    parser.add_argument("--profile", action="store_true", help="also print a server-side time breakdown")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="gc.freeze() once the app is built, as `kwx dashboard` does: start-up objects leave the "
                             "collector's scans (full collections otherwise pause a request for 100-300 ms)")
    parser.add_argument("--listener", choices=["cli", "create_server"], default="cli",
                        help="cli: bind as `kwx dashboard` does (an IPPROTO_TCP socket: TCP_NODELAY); create_server: "
                             "socket.create_server (no TCP_NODELAY: ~40 ms per response)")
    args = parser.parse_args()
    if args.requests < 1 or args.days < 1:
        parser.error("--requests and --days must be at least 1")

    from kwx.cities import CITIES
    from kwx.dashboard.app import create_app
    from kwx.secrets import redact

    root = Path(tempfile.mkdtemp(prefix="kwx-bench-dashboard-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # nothing reaches a user's store
    db = Database(args, root)
    board = None
    try:
        print(f"kwx at {revision()}; building {redact(db.url)} ...", flush=True)
        figures = build(db, args)
        markets, per_tick = figures["markets"], figures["per_tick"]
        day_markets = markets[markets["event_date"] == args.day]
        print(f"data: {len(markets):,} markets stored ({len(day_markets)} on {args.day}, "
              f"{figures['signalled_markets']} with signals), {figures['demo'].get('candles', 0):,} candles; "
              f"{figures['ticks']:,} ticks ({args.days} day(s) at {TICK_SECONDS} s) x open markets per tick "
              f"{per_tick.min()}..{per_tick.max()} (median {np.median(per_tick):.0f}) = "
              f"{figures['signals']:,} rt_signals rows; {figures['orders']} paper orders "
              f"({figures['day_orders']} in {args.day}'s markets), {figures['fills']} fills; {figures['size']}")
        print("build: " + ", ".join(f"{k} {v:.1f} s" for k, v in figures["timings"].items())
              + f" (ANALYZE {'run' if figures['analyzed'] else 'not run'})")

        now = figures["last_tick"] + timedelta(seconds=5)
        board = dashboard(db.url, root, now)
        cities = sorted(CITIES)
        logging.getLogger("kwx.dashboard.app").addFilter(FirstOnly())
        app = create_app(board, token=None)
        gc.collect()
        if args.gc_freeze:
            gc.freeze()
        collections = Collections()
        with Served(app, listener(args.listener)) as served:
            results, refresh = measure(served.base, args.day, cities, args.requests)
            print(f"\n{db.backend}, listener {args.listener}: {args.requests} requests per endpoint over HTTP, "
                  f"day {args.day}, clock {now:%Y-%m-%d %H:%M:%S} UTC")
            print(f"{'endpoint':<48}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'cold ms':>9}{'size kB':>9}{'errors':>8}")
            for name, r in results.items():
                label = f"/api/{name}" + (" (7 cities in turn)" if name in ("ladder", "calibration") else "")
                p50, p95, top = percentiles(r["times"])
                print(f"{label:<48}{p50:>9.1f}{p95:>9.1f}{top:>9.1f}{r['cold']:>9.1f}{r['bytes'] / 1000:>9.1f}"
                      f"{r['errors']:>8}")
            for label, times in refresh.items():
                p50, p95, top = percentiles(times)
                print(f"{label:<48}{p50:>9.1f}{p95:>9.1f}{top:>9.1f}")
            print(f"full (generation 2) garbage collections while measuring: {collections.text()}"
                  + (" (gc frozen after start-up)" if args.gc_freeze else ""))
            if args.profile:
                profile(served.base, args.day, cities, args.requests)
        worst = max(results, key=lambda n: percentiles(results[n]["times"])[1])
        worst_p95 = percentiles(results[worst]["times"])[1]
        failing = {n: r["errors"] for n, r in results.items() if r["errors"]}
        verdict = "yes" if worst_p95 < TARGET_MS and not failing else "no"
        print(f"\np95 of every data endpoint < {TARGET_MS:.0f} ms: {verdict} (worst: /api/{worst} {worst_p95:.0f} ms)"
              + ("; answered errors (their times are the error path): "
                 + ", ".join(f"/api/{n} {k}/{args.requests}" for n, k in failing.items()) if failing else ""))
    finally:
        if board is not None:
            board.engine.dispose()
        if args.keep:
            print(f"kept: {redact(db.url)} and {root}")
        else:
            db.drop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
