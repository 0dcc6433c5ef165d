"""`kwx dashboard`: the operator's read-only web page (kwx.dashboard)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import (
    RT_CONFIG,
    DbUrlOption,
    TrackingUriOption,
    app,
    console,
    fail,
    load_or_fail,
)

UI_URL_ENV = "KWX_MLFLOW_UI_URL"
# The tick-age alarm, unless --max-age says otherwise: five missed ticks, and never under two minutes.
MIN_DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_AGE_TICKS = 120.0, 5


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcp_listener(host: str, port: int) -> socket.socket:
    """A listening socket whose protocol is IPPROTO_TCP. ``socket.create_server`` leaves it 0, and asyncio only
    sets TCP_NODELAY on accepted sockets of protocol IPPROTO_TCP: without it every response waits ~40 ms for the
    client's delayed ACK (bench/dashboard.py measures both)."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                             socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener


def dashboard_token(host: str) -> str | None:
    """$KWX_DASHBOARD_TOKEN, required off loopback: a dashboard other machines can reach shows positions and
    P&L, so it never starts there without one."""
    from kwx.dashboard.app import MIN_TOKEN_CHARS, TOKEN_ENV
    from kwx.secrets import register_secret

    token = os.environ.get(TOKEN_ENV) or None
    if token is None:
        if not is_loopback(host):
            raise fail(f"--host {host} makes the dashboard reachable from other machines: set {TOKEN_ENV} to a "
                       f"secret of at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 16`), or bind "
                       "127.0.0.1")
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise fail(f"{TOKEN_ENV} is {len(token)} characters long; use at least {MIN_TOKEN_CHARS}")
    if token.startswith("change-me"):
        raise fail(f"{TOKEN_ENV} is still the .env.example placeholder: set a secret of your own")
    register_secret(token)
    return token


def mlflow_ui_url(option: str | None) -> str | None:
    """--mlflow-ui-url, else $KWX_MLFLOW_UI_URL: the page links each model to its run there, so anything but an
    http(s) URL with a host (a ``javascript:`` URL would run in the operator's browser) is refused."""
    from kwx.config import check_http_url

    source, url = ("--mlflow-ui-url", option) if option else (f"${UI_URL_ENV}", os.environ.get(UI_URL_ENV))
    if not url:
        return None
    try:
        return check_http_url(url)
    except ValueError as exc:
        raise fail(f"{source}: {exc}; got {url!r}") from None


def _registry_client():
    """An MLflow client that fails a request in seconds (a page must not hang on a dead tracking server); an
    unreachable registry at start is a warning, since the page shows the outage and recovers."""
    from mlflow.tracking import MlflowClient

    from kwx import tracking

    # the user's own settings win; MLflow's defaults retry for minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        # MLflow would create an empty store there: a read-only page must not, and would show no model
        raise fail(f"no MLflow store at {uri}: pass --tracking-uri (or set MLFLOW_TRACKING_URI) to the registry "
                   "the loop trades from")
    try:
        tracking.configure(uri)
    except tracking.TrackingUnavailableError as exc:
        console.print(f"[yellow]warning:[/] {exc}; serving anyway", highlight=False)
    return MlflowClient()


@app.command("dashboard")
def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs $KWX_DASHBOARD_TOKEN.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).", min=0, max=65535)] = 8050,
    max_age: Annotated[float | None, typer.Option(
        help="Red banner when the newest tick is older than this many seconds (default: 5 ticks, at least 120).",
        min=1)] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="The rt config the loop runs with: its markets, "
                                         "stage, tick interval, execution mode and halt file.")] = RT_CONFIG,
    ui_url: Annotated[str | None, typer.Option(
        "--mlflow-ui-url", help=f"Address of the MLflow UI, an http(s) URL, to link each model to its run "
        f"(default ${UI_URL_ENV}).")] = None,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Serve the operator's read-only web page: today's ladders, latest signals, the model trading each market,
    loop health, orders, fills, positions, P&L, halt state and realized calibration. It refreshes itself every
    tick; it never writes to the database or the registry."""
    import gc
    import logging

    import uvicorn

    from kwx.clock import SystemClock
    from kwx.config import RtConfig
    from kwx.dashboard.app import Dashboard, create_app
    from kwx.dashboard.registry import RegistryView
    from kwx.data import migrations
    from kwx.data.db import DATABASE_FAILURES, DatabaseUrlError, database_problem, database_url, make_read_only_engine
    from kwx.secrets import configure_logging, redact

    ui_url = mlflow_ui_url(ui_url)
    cfg = load_or_fail(config, RtConfig)
    token = dashboard_token(host)
    url = database_url(db_url)
    sqlite_path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_path is not None and not Path(sqlite_path).exists():
        # a wrong path far more often than an outage; a read-only reader would only ever show errors
        raise fail(f"no database at {sqlite_path}: pass --db-url (or set KWX_DATABASE_URL) to the loop's database, "
                   "or create one with `kwx db upgrade`")
    try:
        engine = make_read_only_engine(url)
    except DatabaseUrlError as exc:
        raise fail(str(exc)) from None
    try:
        migrations.require_head(engine)
    except migrations.SchemaNotReadyError as exc:
        raise fail(str(exc)) from None
    except DATABASE_FAILURES as exc:  # the page shows the outage and recovers when the database is back
        console.print(f"[yellow]warning:[/] {database_problem(exc, url) or redact(str(exc))}; serving anyway",
                      highlight=False)
    client = _registry_client()
    max_age = max_age or max(MIN_DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_AGE_TICKS * cfg.tick_seconds)
    clock = SystemClock()
    registry = RegistryView(client, clock, stage=cfg.stage, ui_url=ui_url,
                            refresh_seconds=cfg.model_refresh_seconds, max_stale_days=cfg.max_stale_days)
    board = Dashboard(engine, registry, cfg, clock, max_age, redact(f"database {url}"))
    try:
        listener = tcp_listener(host, port)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    console.print(f"kwx dashboard on http://{shown}:{bound}/ ({redact(url)}, read-only; "
                  f"{'token required' if token else 'loopback only, no token'}); Ctrl-C stops it", highlight=False)
    configure_logging(logging.WARNING)
    server = uvicorn.Server(uvicorn.Config(create_app(board, token=token), log_level="warning", access_log=False))
    # What is loaded now (libraries, config, engine, registry) lives as long as the server: a permanent GC
    # generation keeps full collections from rescanning it (bench/dashboard.py: 250-325 ms pauses without).
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        engine.dispose()
