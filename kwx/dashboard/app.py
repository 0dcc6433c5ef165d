"""The dashboard's Starlette application: the page, its static assets and six read-only JSON endpoints.

Why Starlette: it is already installed with MLflow (its server stack), it is a small, maintained ASGI toolkit
that runs plain functions in a thread pool (the database reads are synchronous SQLAlchemy), and a page of
server-sent JSON plus a vendored chart library needs nothing heavier: no build step, no CDN.

Errors never carry a traceback or a credential to the page: a database that does not answer is a 503 with
one redacted line (the page shows it in a banner and keeps polling), a bad parameter a 400 naming it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

import pandas as pd
from mlflow.exceptions import MlflowException
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kwx.cities import City, get_city
from kwx.clock import Clock
from kwx.config import RtConfig
from kwx.dashboard import queries, views
from kwx.dashboard.registry import RegistryView
from kwx.data.db import DATABASE_FAILURES, database_problem
from kwx.data.forecasts import newest_forecasts
from kwx.domain.markets import BRACKETS, climate_day, climate_day_bounds
from kwx.execution import records
from kwx.secrets import redact

log = logging.getLogger(__name__)

TOKEN_ENV = "KWX_DASHBOARD_TOKEN"
TOKEN_HEADER = "x-kwx-token"
SESSION_COOKIE = "kwx_dashboard"
MIN_TOKEN_CHARS = 16
# The newest orders and fills of the day the page lists; positions and P&L always cover all of them.
RECORD_ROWS = 200
STATIC = resources.files("kwx.dashboard") / "static"


class BadRequest(ValueError):
    """A query parameter the page (or a hand-written URL) got wrong: a 400 naming it."""


def known_city(text: str) -> str:
    try:
        return get_city(text).key
    except ValueError:
        raise BadRequest(f"city {text!r} is not a known city") from None


def known_bracket(text: str) -> str:
    if text not in BRACKETS:
        raise BadRequest(f"bracket {text!r} is not a known bracket ({', '.join(BRACKETS)})")
    return text


class RegistryUnavailable(RuntimeError):
    """The model registry did not answer (tracking server down, its database unreachable): one redacted line."""


@dataclass
class Dashboard:
    """What the endpoints read: the loop's database (read-only engine), the registry, the rt config the loop
    runs with (families, stage, tick interval, execution mode, halt file) and the clock."""

    engine: Engine
    registry: RegistryView
    config: RtConfig
    clock: Clock
    max_age_seconds: float
    database: str  # the redacted URL, for error lines

    def __post_init__(self):
        self._registry_lock = threading.Lock()  # the registry cache is shared by the thread-pool endpoints
        self._usual_highs: dict[tuple[str, date], pd.DataFrame] = {}  # past days' observations never change

    @property
    def home_city(self) -> City:
        """The first configured city: its clock names the default day and times the banners."""
        return get_city(self.config.markets[0].city)

    def observations(self, city: City, day: date) -> pd.DataFrame:
        key = (city.key, day)
        if key not in self._usual_highs:
            self._usual_highs[key] = queries.observations_before(self.engine, city.station,
                                                                 climate_day_bounds(day, city)[0])
        return self._usual_highs[key]

    @property
    def families(self) -> list[tuple[str, str]]:
        return [(m.city, m.bracket) for m in self.config.markets]

    def day(self, request: Request) -> date:
        """The ``day`` parameter; by default the climate day (of the first configured city) of the newest tick:
        today while the loop runs, the replayed day after a replay; today's without any tick."""
        text = request.query_params.get("day")
        if text:
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise BadRequest(f"day must be a date YYYY-MM-DD, got {text!r}") from None
        newest = queries.newest_tick_time(self.engine) or self.clock.now()
        return climate_day(newest, self.home_city)

    def city(self, request: Request) -> str:
        return known_city(request.query_params.get("city", self.config.markets[0].city))

    def models(self, day: date) -> list[views.ModelRow]:
        return self._ask_registry(lambda: self.registry.models(day, self.families))

    def calibration(self, city: str) -> dict:
        return self._ask_registry(lambda: self.registry.calibration([f for f in self.families if f[0] == city]))

    def _ask_registry(self, read):
        # Whatever a registry read raises (REST errors, its own database's errors) is the registry's failure,
        # never blamed on the kwx database.
        with self._registry_lock:
            try:
                return read()
            except Exception as exc:
                text = exc.message if isinstance(exc, MlflowException) else f"{type(exc).__name__}: {exc}"
                raise RegistryUnavailable(redact(f"model registry: {text.strip().splitlines()[0][:300]}")) from None

    def execution_mode(self) -> str | None:
        mode = self.config.execution.mode
        return mode if mode in records.MODES else queries.newest_order_mode(self.engine)

    def halt(self, mode: str | None) -> records.HaltState | None:
        halt_file = Path(self.config.execution.halt_file) if self.config.execution.halt_file else None
        return records.halt_state(self.engine, mode, halt_file) if mode else None


# --- endpoints ---------------------------------------------------------------------------------------

def state(board: Dashboard, request: Request) -> dict:
    day = board.day(request)
    days = queries.signal_days(board.engine)
    now = board.clock.now()
    health = views.tick_health(queries.recent_ticks(board.engine), now, board.max_age_seconds)
    markets = queries.day_markets(board.engine, day)
    mode = board.execution_mode()
    halt = board.halt(mode)
    halted = halt.describe() if halt is not None and halt.halted else None
    try:  # a registry outage is one banner; the loop's health still shows
        models, registry_problem = board.models(day), None
    except RegistryUnavailable as exc:
        models, registry_problem = [], str(exc)
    # forecasts as the loop saw them at its newest tick (a replay's clock), else as of now
    as_of = health.newest_tick or now
    forecasts = views.forecast_ages(newest_forecasts(board.engine, int(as_of.timestamp())), as_of)
    cities = sorted(markets["city"].unique().tolist()) or sorted({c for c, _ in board.families})
    return {"now": views.iso(now), "day": day.isoformat(), "days": [d.isoformat() for d in days],
            "forecasts": forecasts, "cities": cities,
            # each city's settlement clock; banners and the header use the first configured city's
            "clocks": {c: views.city_clock(get_city(c)) for c in {*cities, board.home_city.key}},
            "home_city": board.home_city.key,
            "refresh_seconds": board.config.tick_seconds, "health": health.as_json(),
            "banners": views.banners(health, models, max_stale_days=board.config.max_stale_days, halted=halted,
                                     city=board.home_city, registry_problem=registry_problem),
            "execution": {"mode": mode, "halted": bool(halted),
                          "halt_text": halt.describe() if halt else "no execution records (signals mode)"}}


def ladder(board: Dashboard, request: Request) -> dict:
    day, city = board.day(request), board.city(request)
    markets = queries.day_markets(board.engine, day, city)
    signals, candles = queries.ladder_rows(board.engine, markets["ticker"].tolist())
    place = get_city(city)
    close = pd.to_datetime(markets["close_time"], utc=True).max() if len(markets) else None
    return {"city": city, "day": day.isoformat(), "clock": views.city_clock(place),
            "axis": views.day_axis(place, day, None if close is None else close.to_pydatetime(),
                                   board.observations(place, day)),
            **views.ladder(markets, signals, candles)}


def signals(board: Dashboard, request: Request) -> dict:
    day = board.day(request)
    markets = queries.day_markets(board.engine, day)
    # optional filters: absent or empty shows every market of the day; a value no market could have is a typo
    if city := request.query_params.get("city"):
        markets = markets[markets["city"] == known_city(city)]
    if bracket := request.query_params.get("bracket"):
        markets = markets[markets["strike_type"] == known_bracket(bracket)]
    labels = dict(zip(markets["ticker"], (views.bracket_label(*m) for m in markets[
        ["strike_type", "floor_strike", "cap_strike"]].itertuples(index=False)), strict=True))
    return views.latest_signals(queries.latest_signals(board.engine, markets["ticker"].tolist()), labels)


def models(board: Dashboard, request: Request) -> dict:
    return views.models_table(board.models(board.day(request)))


def execution(board: Dashboard, request: Request) -> dict:
    day = board.day(request)
    mode = board.execution_mode()
    if mode is None:
        empty = views.table(pd.DataFrame())
        return {"mode": None, "halted": False, "halt_text": "no execution records (signals mode)", "pnl": None,
                "positions": empty, "orders": empty, "fills": empty}
    halt = board.halt(mode)
    day_pnl = records.daily_pnl(board.engine, mode, day, as_of=board.clock.now())
    held = day_pnl.positions
    orders = records.orders(board.engine, mode, event_date=day).tail(RECORD_ROWS).iloc[::-1]
    day_fills = records.fills(board.engine, mode, event_date=day, with_source=True)
    fills = day_fills.tail(RECORD_ROWS).iloc[::-1]
    return {
        "mode": mode, "halted": halt.halted, "halt_text": halt.describe(),
        "pnl": {"realized_cents": day_pnl.realized_cents, "unrealized_cents": day_pnl.unrealized_cents,
                "fees_cents": day_pnl.fees_cents, "total_cents": day_pnl.pnl_cents, "unmarked": day_pnl.unmarked,
                "by_source": views.pnl_split(day_pnl.by_source, day_fills)},
        "positions": views.table(held, [c for c in POSITION_VIEW if c in held.columns]),
        "orders": views.table(orders, ORDER_VIEW), "fills": views.table(fills, FILL_VIEW)}


def calibration(board: Dashboard, request: Request) -> dict:
    return board.calibration(board.city(request))


POSITION_VIEW = ["city", "market_ticker", "side", "source", "contracts", "avg_cost_cents", "cost_cents", "fees_cents",
                 "mark_cents", "realized_cents", "unrealized_cents", "settled"]
ORDER_VIEW = ["created_at", "city", "market_ticker", "side", "action", "limit_price_cents", "count", "filled_count",
              "status", "reason"]
FILL_VIEW = ["ts_utc", "market_ticker", "side", "source", "action", "price_cents", "count", "fee_cents", "liquidity"]


ENDPOINTS = {"state": state, "ladder": ladder, "signals": signals, "models": models, "execution": execution,
             "calibration": calibration}


# --- the application -------------------------------------------------------------------------------

def session_value(token: str) -> str:
    """The cookie a correct token earns: derived from the token, so the cookie jar never holds the token."""
    return hmac.new(token.encode(), b"kwx-dashboard-session", hashlib.sha256).hexdigest()


def _authorised(request: Request, token: str) -> bool:
    offered = request.headers.get(TOKEN_HEADER) or ""
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        offered = offered or bearer[7:].strip()
    if offered and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def _problem(board: Dashboard, error: BaseException) -> str:
    line = database_problem(error, None) or f"database failed: {str(error).splitlines()[0] if str(error) else ''}"
    return redact(f"{board.database}: {line}")


def _json_endpoint(board: Dashboard, name: str):
    handler = ENDPOINTS[name]

    def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(handler(board, request))
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except (*DATABASE_FAILURES, SQLAlchemyError) as exc:
            return JSONResponse({"error": _problem(board, exc)}, status_code=503)
        except RegistryUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        except Exception as exc:  # the page shows one line; the log keeps the detail, redacted
            log.exception("dashboard endpoint %s failed", name)
            return JSONResponse({"error": redact(f"{name} failed: {type(exc).__name__}: {exc}")}, status_code=500)

    return endpoint


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kwx dashboard: sign in</title>
<link rel="stylesheet" href="static/dashboard.css"><link rel="icon" href="static/favicon.svg"></head>
<body class="login">
<form method="post" action="login" class="login-form"><h1>kwx dashboard</h1>
<p>This dashboard is reachable beyond this machine; enter the token it was started with
(<code>KWX_DASHBOARD_TOKEN</code>).</p>{error}
<input type="password" name="token" id="token" autocomplete="current-password" autofocus required>
<button type="submit">Open</button></form></body></html>"""


def create_app(board: Dashboard, *, token: str | None) -> Starlette:
    """The dashboard over ``board``; with ``token``, every request but the sign-in page and the static assets
    needs it (header ``X-KWX-Token`` or ``Authorization: Bearer``, or the cookie the sign-in page sets)."""

    def index(request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    def login(request: Request) -> Response:
        return HTMLResponse(LOGIN_PAGE.format(error=""))

    async def login_submit(request: Request) -> Response:
        # the form body is parsed by hand: Starlette's form parser needs python-multipart, a dependency for one field
        offered = parse_qs((await request.body()).decode(errors="replace")).get("token", [""])[0]
        if token is None or not hmac.compare_digest(offered.encode(), token.encode()):
            return HTMLResponse(LOGIN_PAGE.format(error='<p class="login-error">Wrong token.</p>'), status_code=401)
        response = RedirectResponse("./", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="strict")
        return response

    def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [Route("/", index), Route("/login", login), Route("/login", login_submit, methods=["POST"]),
              Route("/healthz", healthz), Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
              *(Route(f"/api/{name}", _json_endpoint(board, name)) for name in ENDPOINTS)]
    if token is None:
        return Starlette(routes=routes)
    open_paths = ("/login", "/static/", "/healthz")

    async def require_token(request: Request, call_next) -> Response:
        if request.url.path.startswith(open_paths) or _authorised(request, token):
            return await call_next(request)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "this dashboard needs its token: sign in at /login"}, status_code=401)
        return RedirectResponse("login", status_code=303)

    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=require_token)])
