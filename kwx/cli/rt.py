"""`kwx serve-rt` and `kwx rt`: the real-time signal loop, live or replayed, and its status; the execution
records (orders, positions, P&L) and the kill switch (halt, resume)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kwx.cli.common import (
    RT_CONFIG,
    DbUrlOption,
    KwxTyper,
    TrackingUriOption,
    _tracking_or_fail,
    app,
    console,
    err_console,
    fail,
    load_or_fail,
    open_engine,
    progress,
)
from kwx.secrets import configure_logging

if TYPE_CHECKING:
    import pandas as pd

rt_app = KwxTyper(help="Real-time loop status; orders, positions and P&L; the kill switch (halt, resume).")


def _replay_speed(value: str) -> str:
    """--speed: 'max' or a positive, finite multiple of real time."""
    try:
        multiple = float(value) if value != "max" else 1.0
    except ValueError:
        multiple = math.nan
    if not (math.isfinite(multiple) and multiple > 0):
        raise fail(f"--speed must be 'max' or a positive, finite multiple of real time (e.g. 60), got {value!r}")
    return value


ENVIRONMENTS = ("demo", "prod")


def _environment_name(value: str) -> str:
    """--env: demo or prod."""
    if value not in ENVIRONMENTS:
        raise fail(f"--env must be one of {', '.join(ENVIRONMENTS)}, got {value!r}")
    return value


def _trading_target(execution, environment: str, confirm_production: bool, *, replay: bool) -> str:
    """The start line: mode and, for live, the environment and the trading URL it uses (and where that came from:
    $KWX_KALSHI_TRADE_URL, then execution.trade_api_url, then the --env's). Refuses (exit 2) production without the
    confirmation flag, Kalshi's production host without --env prod, a trading URL that is no http(s) URL, a live
    replay, and live mode without usable keys (naming the variable, never a value)."""
    from kwx.execution.kalshi_trade import (
        CredentialsError,
        KalshiCredentials,
        ProductionNotConfirmed,
        environment_url,
        trade_url,
    )
    from kwx.secrets import mask_url

    try:
        environment_url(environment, confirm_production)
    except ProductionNotConfirmed:
        raise fail("--env prod trades real money: add --confirm-production "
                   "(alias --i-understand-this-trades-real-money) to run against production") from None
    if execution.mode == "signals":
        return "mode signals (dry run: no orders)"
    if execution.mode == "paper":
        return "mode paper (simulated fills, no order reaches an exchange)"
    if replay:
        raise fail("execution.mode live cannot be replayed: a replay trades paper or writes signals only "
                   "(set execution.mode to paper or signals)")
    try:  # a production host without --env prod, or a $KWX_KALSHI_TRADE_URL that is no URL: the message names it
        url, where = trade_url(environment, confirm_production, execution.trade_api_url)
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:  # read here, before any database or tracking store opens; the loop reads them again to trade
        KalshiCredentials.from_env()
    except CredentialsError as exc:
        raise fail(f"execution.mode live: {exc}") from None
    money = ": REAL MONEY" if environment == "prod" else ""
    shown = mask_url(url) + (f", from {where}" if where else "")
    return f"mode live, environment {environment} ({shown}){money}"


@app.command("serve-rt")
def serve_rt(
    config: Annotated[Path, typer.Option("--config", "-c", help="rt config YAML.")] = RT_CONFIG,
    replay: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="Replay a stored trading day on a simulated clock instead of trading live.")] = None,
    speed: Annotated[str, typer.Option(help="Replay speed: 'max', or a multiple of real time (e.g. 60).",
                                       callback=_replay_speed)] = "max",
    max_ticks: Annotated[int | None, typer.Option(help="Stop after this many ticks.", min=1)] = None,
    once: Annotated[bool, typer.Option("--once", help="Live: run a single tick and exit.")] = False,
    top: Annotated[int, typer.Option(help="Rows in the closing table of strongest signals.")] = 10,
    env: Annotated[str, typer.Option(
        "--env", help="Kalshi environment live mode trades in: demo, or prod (real money; needs "
        "--confirm-production).", callback=_environment_name)] = "demo",
    confirm_production: Annotated[bool, typer.Option(
        "--confirm-production", help="Required with --env prod: live orders on Kalshi's production exchange spend "
        "real money (alias --i-understand-this-trades-real-money).")] = False,
    real_money: Annotated[bool, typer.Option("--i-understand-this-trades-real-money", hidden=True)] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="rt config override key=value (dotted keys), e.g. execution.mode=paper.")] = None,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """The real-time loop. execution.mode in the config decides what it does with the signals: signals (a dry
    run: rt_signals only), paper (simulated orders and fills) or live (orders on Kalshi, demo unless --env prod).
    Ctrl-C or SIGTERM finishes the tick in flight, writes every tick run and exits 0, live or replaying (a paper
    replay run again goes on from there)."""
    import logging

    from kwx.cli.train import _parse_overrides
    from kwx.config import RtConfig
    from kwx.rt import replay as replay_mod
    from kwx.rt.loop import StopFlag

    cfg = load_or_fail(config, RtConfig, _parse_overrides(set_ or []))
    confirm_production = confirm_production or real_money
    target = _trading_target(cfg.execution, env, confirm_production, replay=replay is not None)
    if replay is None:
        _serve_live(cfg, db_url, max_ticks=1 if once else max_ticks, top=top, target=target, environment=env,
                    confirm_production=confirm_production)
        return
    configure_logging(logging.WARNING)
    client = _tracking_or_fail()
    engine = open_engine(db_url)
    try:
        # transient: a replay that cannot start leaves its one error line, not an empty bar above it
        # Ctrl-C or SIGTERM: the tick in flight finishes and every tick run is written
        with progress(transient=True) as bar, StopFlag().installed() as stop:
            task = bar.add_task(f"replay {replay:%Y-%m-%d}", total=None)
            result = replay_mod.replay_day(
                cfg, engine, client, replay.date(), speed=None if speed == "max" else float(speed),
                max_ticks=max_ticks, stop=stop,
                on_tick=lambda tick, _s: bar.update(task, advance=1, description=f"{tick['ts_utc']:%H:%M:%S}"))
    except replay_mod.ReplayError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    if result.resumed_after:
        console.print(f"went on after the {result.resumed_after:,} ticks of {replay:%Y-%m-%d} an earlier paper "
                      "replay stored", highlight=False)
    if result.stopped:
        again = "; the same command goes on from there" if cfg.execution.mode == "paper" else ""
        console.print(f"stopped: {result.ticks:,} ticks of {replay:%Y-%m-%d} run and written{again}", highlight=False)
    console.print(f"replayed {result.ticks:,} ticks of {replay:%Y-%m-%d} in {result.seconds:.1f} s "
                  f"({result.simulated_minutes_per_second:,.0f} simulated minutes/s); "
                  f"{result.rows:,} signal rows, {result.sized:,} with a position size; {target}", highlight=False)
    _print_signals(result.strongest.head(top), f"strongest signals of {replay:%Y-%m-%d}")


def _forecaster(cfg, engine):
    """Open-Meteo's current runs for the live loop (no key needed); None when the config polls no model."""
    from kwx.data.clients.open_meteo import OpenMeteoClient
    from kwx.data.ingestion import LiveForecastPoller

    if not cfg.forecast_models and not cfg.forecast_ensemble_models:
        return None
    client = OpenMeteoClient(cfg.forecast_base_url, cfg.forecast_ensemble_base_url)
    return LiveForecastPoller(engine, client, list(cfg.forecast_models), list(cfg.forecast_ensemble_models))


def _serve_live(cfg, db_url: str | None, *, max_ticks: int | None, top: int, target: str, environment: str,
                confirm_production: bool) -> None:
    import logging

    from kwx.data.clients.kalshi import KalshiClient
    from kwx.data.clients.visual_crossing import MissingApiKeyError, VisualCrossingClient, api_key_from_env
    from kwx.execution.kalshi_trade import CredentialsError, ProductionNotConfirmed
    from kwx.execution.live import LiveStartError
    from kwx.rt.live import serve_live
    from kwx.rt.loop import BufferFullError, StopFlag

    try:
        vc = VisualCrossingClient(api_key_from_env(), cfg.vc_base_url)
    except MissingApiKeyError as exc:
        raise fail(str(exc)) from None
    configure_logging(logging.INFO)
    client = _tracking_or_fail()
    engine = open_engine(db_url)
    stop = StopFlag()
    stop.install()
    last = {}
    console.print(target, highlight=False)
    try:
        run = serve_live(cfg, engine, client, kalshi=KalshiClient(cfg.kalshi_base_url), vc=vc,
                         forecaster=_forecaster(cfg, engine), max_ticks=max_ticks,
                         stop=stop, on_tick=lambda tick, result: last.update(signals=result.signals),
                         environment=environment, confirm_production=confirm_production)
    except BufferFullError as exc:
        raise fail(str(exc)) from None
    except (CredentialsError, ProductionNotConfirmed, LiveStartError) as exc:
        raise fail(f"execution.mode live: {exc}") from None
    finally:
        engine.dispose()
    if "signals" in last:
        latest = last["signals"].dropna(subset=["p_blend"]).sort_values("edge_cents", ascending=False)
        _print_signals(latest.head(top), "last tick")
    # A refused key does not fix itself, and a last tick that could not read the database wrote no signal:
    # a run (or a `--once` check) ending either way must not look healthy.
    problems = [*run.rejected.values(), *([run.unreadable] if run.unreadable else [])]
    if problems:
        raise fail("; ".join(problems), code=1)


def _print_signals(frame, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("time (UTC)", no_wrap=True, min_width=len("00:00:00"))
    _add_ticker_column(table, frame)
    for column in ("side", "p_model", "p_market", "p_blend", "edge ¢", "size", "window"):
        table.add_column(column)
    for r in frame.itertuples():
        side = r.side if isinstance(r.side, str) and r.side else "-"  # a missing side reads back as None or NaN
        table.add_row(f"{r.ts_utc:%H:%M:%S}", r.market_ticker, side, f"{r.p_model:.3f}", f"{r.p_market:.3f}",
                      f"{r.p_blend:.3f}", f"{r.edge_cents:.1f}", f"{r.size_fraction:.3f}", str(r.wf_window))
    console.print(table)


def _add_ticker_column(table, frame) -> None:
    """The market column: every ticker whole, however narrow the terminal (the other columns give way, or the table
    runs wider than the terminal), since a ticker cut to `KXHIGHCHI-25SEP15-…` hides its bracket. ``frame`` may be
    empty without columns (a replay that had nothing left to run)."""
    tickers = frame.get("market_ticker", ())
    table.add_column("market", no_wrap=True, min_width=max(map(len, tickers), default=None))


# --- execution records: options and helpers the rt commands share ------------------------------------

RtConfigOption = Annotated[Path, typer.Option(
    "--config", "-c", help="rt config YAML, for execution.mode and execution.halt_file (defaults apply when the "
    "default file is missing).")]


def _mode_name(value: str | None) -> str | None:
    from kwx.execution.records import MODES

    if value is not None and value not in MODES:
        raise fail(f"--mode: unknown execution mode {value!r}; known modes: {', '.join(MODES)}")
    return value


ModeOption = Annotated[str | None, typer.Option(
    "--mode", help="paper or live records; default the rt config's execution.mode when it is paper or live, "
    "else paper.", show_default=False, callback=_mode_name)]


def _execution_params(config: Path, *, lenient: bool = False):
    """The rt config's execution section: defaults when the default config file is missing; ``lenient`` (the
    health check) also falls back to defaults, with a warning, when the default file does not validate."""
    from kwx.config import ConfigError, ExecutionParams, RtConfig, load_config

    if config == RT_CONFIG and not config.exists():
        return ExecutionParams()
    if lenient and config == RT_CONFIG:
        try:
            return load_config(config, RtConfig).execution
        except ConfigError as exc:
            err_console.print(f"[yellow]warning:[/] {exc}; execution defaults shown", highlight=False)
            return ExecutionParams()
    return load_or_fail(config, RtConfig).execution


def _order_mode(mode: str | None, execution) -> str:
    return mode or (execution.mode if execution.mode in ("paper", "live") else "paper")


def _halt_file(execution) -> Path | None:
    return Path(execution.halt_file) if execution.halt_file else None


def _operator() -> str:
    """Who changed the halt state, for the record: the login name where the system knows one."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a container user without a passwd entry or $USER
        return "cli"


def _dollars(cents: float | None, signed: bool = False) -> str:
    if cents is None or math.isnan(cents):
        return "-"
    return f"{cents / 100:+,.2f}" if signed else f"{cents / 100:,.2f}"


def _cents(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:g}"


@dataclass(frozen=True)
class _ExecutionSummary:
    """What `rt status` adds about execution: the configured mode, the mode whose records it shows, that mode's
    environment, halt state and exposure."""

    configured: str
    mode: str
    environment: str | None
    state: object
    exposure: object

    @classmethod
    def read(cls, engine, execution) -> _ExecutionSummary:
        from kwx.execution import records

        mode = _order_mode(None, execution)
        return cls(execution.mode, mode, records.latest_environment(engine, mode),
                   records.halt_state(engine, mode, _halt_file(execution)), records.exposure(engine, mode))

    def print(self) -> None:
        from rich.table import Table

        orders = f" (orders and halt below: {self.mode})" if self.configured != self.mode else ""
        console.print(f"execution: mode {self.configured}{orders}, environment {self.environment or '-'}",
                      highlight=False)
        console.print(f"halt: {self.state.describe()}", highlight=False, soft_wrap=True)
        frame = self.exposure
        total = frame.drop(columns=["city", "side"]).sum()
        console.print(f"exposure ({self.mode}): {int(total['open_orders'])} open orders, "
                      f"${_dollars(total['open_notional_cents'])} notional; {int(total['contracts'])} contracts held, "
                      f"cost ${_dollars(total['position_cost_cents'])}; total ${_dollars(total['exposure_cents'])}",
                      highlight=False)
        if len(frame):
            table = Table(title=f"exposure by city and side ({self.mode}, $)")
            for column in ("city", "side", "open orders", "notional", "contracts", "cost", "exposure"):
                table.add_column(column)
            for r in frame.itertuples():
                table.add_row(r.city, r.side, str(r.open_orders), _dollars(r.open_notional_cents), str(r.contracts),
                              _dollars(r.position_cost_cents), _dollars(r.exposure_cents))
            console.print(table)


# `rt status` looks this far back for outages (about 2.5 hours of 9 s ticks), beyond the rows it lists.
OUTAGE_WINDOW_TICKS = 1000


@rt_app.command("status")
def rt_status(last: Annotated[int, typer.Option(help="How many ticks to show.", min=1)] = 10,
              max_age: Annotated[float | None, typer.Option(
                  help="Exit 1 unless the newest live tick is at most this many seconds old (a container "
                  "health check).", min=0)] = None,
              config: RtConfigOption = RT_CONFIG,
              db_url: DbUrlOption = None) -> None:
    """The last ticks of the loop: markets, signals, skips by reason, latency; then its recent outages; then
    execution: mode, environment, halt state and exposure."""
    from datetime import UTC

    from rich.table import Table
    from sqlalchemy import func, select

    from kwx.data.forecasts import newest_forecasts
    from kwx.data.schema import RtTick
    from kwx.rt.outages import TickRecord, outage_lines

    # A health check keeps reporting on the loop when the default config is missing or broken.
    execution = _execution_params(config, lenient=True)
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(RtTick).order_by(RtTick.ts_utc.desc()).limit(last)).all()
            newest_live = conn.execute(select(func.max(RtTick.ts_utc)).where(RtTick.mode == "live")).scalar()
            recent = conn.execute(select(RtTick.ts_utc, RtTick.mode, RtTick.skips).order_by(RtTick.ts_utc.desc())
                                  .limit(max(last, OUTAGE_WINDOW_TICKS))).all()
        summary = _ExecutionSummary.read(engine, execution)
        forecasts = newest_forecasts(engine, int(rows[0].ts_utc.timestamp())) if rows else None
    finally:
        engine.dispose()
    if not rows:
        summary.print()
        raise fail("no ticks recorded yet: run `kwx serve-rt`", code=1)
    table = Table(title="last ticks")
    for column in ("tick (UTC)", "mode", "markets", "signals", "latency ms", "skips"):
        table.add_column(column)
    for tick in rows:
        table.add_row(f"{tick.ts_utc:%Y-%m-%d %H:%M:%S}", tick.mode, str(tick.markets), str(tick.signals),
                      f"{tick.latency_ms:.1f}", tick.skips)
    console.print(table)
    for line in forecast_age_lines(forecasts, rows[0].ts_utc):
        console.print(line, highlight=False)
    outages = outage_lines([TickRecord(*r) for r in recent])
    if outages:
        console.print(f"outages in the newest {len(recent):,} ticks:", highlight=False)
        for line in outages:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
    summary.print()
    if max_age is not None:
        if newest_live is None:
            raise fail("no live tick recorded yet", code=1)
        age = (datetime.now(UTC) - newest_live).total_seconds()
        if age > max_age:
            raise fail(f"newest live tick is {age:.0f} s old (--max-age {max_age:g})", code=1)


def forecast_age_lines(newest: pd.DataFrame, tick: datetime) -> list[str]:
    """One line per city: its newest stored forecast public by the newest tick, how old it was then (a
    replay's clock, not the wall's) and the models published then."""
    if newest.empty:
        return ["forecasts: none public by the newest tick (forecast feature sets skip every market: "
                "`kwx ingest forecasts`)"]
    lines = []
    for row in newest.itertuples(index=False):
        public = datetime.fromtimestamp(int(row.available_ts), UTC)
        age = (tick - public).total_seconds() / 3600
        lines.append(f"forecasts {row.city}: newest public {public:%Y-%m-%d %H:%M} UTC, {age:.1f} h old at the "
                     f"newest tick ({row.models})")
    return lines


@rt_app.command("halt")
def rt_halt(reason: Annotated[str | None, typer.Option(help="Why, for the record and `kwx rt status`.")] = None,
            cancel_all: Annotated[bool, typer.Option(
                "--cancel-all", help="Also cancel every resting order at the loop's next tick.")] = False,
            mode: ModeOption = None,
            config: RtConfigOption = RT_CONFIG,
            db_url: DbUrlOption = None) -> None:
    """Stop new orders from the loop's next tick on, until `kwx rt resume`; the halt survives restarts."""
    from datetime import UTC

    from kwx.execution import records

    execution = _execution_params(config)
    chosen = _order_mode(mode, execution)
    engine = open_engine(db_url)
    try:
        state = records.halt(engine, chosen, reason=reason, by=_operator(), now=datetime.now(UTC),
                             cancel_all=cancel_all, halt_file=_halt_file(execution))
    finally:
        engine.dispose()
    console.print(state.describe(), highlight=False, soft_wrap=True)
    if cancel_all:
        console.print("cancel-all requested: the loop cancels every resting order at its next tick", highlight=False)


@rt_app.command("resume")
def rt_resume(mode: ModeOption = None,
              config: RtConfigOption = RT_CONFIG,
              db_url: DbUrlOption = None) -> None:
    """Clear the halt `kwx rt halt` (or the daily loss limit) set. A halt file still halts until it is removed:
    then the command says so and exits 1."""
    from datetime import UTC

    from kwx.execution import records

    execution = _execution_params(config)
    chosen = _order_mode(mode, execution)
    engine = open_engine(db_url)
    try:
        state = records.resume(engine, chosen, by=_operator(), now=datetime.now(UTC), halt_file=_halt_file(execution))
    finally:
        engine.dispose()
    if state.halted:
        console.print(f"{chosen}: database halt cleared", highlight=False)
        raise fail(f"still halted: halt file {state.halt_file} exists (remove it to resume): {state.reason}", code=1)
    console.print(state.describe(), highlight=False)


@rt_app.command("orders")
def rt_orders(open_only: Annotated[bool, typer.Option(
                  "--open", help="Only orders that may still trade: pending, resting or of unknown outcome.")] = False,
              since: Annotated[datetime | None, typer.Option(
                  formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Only orders created at or after this UTC "
                  "day or time.")] = None,
              mode: ModeOption = None,
              config: RtConfigOption = RT_CONFIG,
              db_url: DbUrlOption = None) -> None:
    """The orders of a mode, oldest first: market, side, action, limit, counts, status and reason."""
    from datetime import UTC

    from rich.table import Table

    from kwx.execution import records

    chosen = _order_mode(mode, _execution_params(config))
    engine = open_engine(db_url)
    try:
        frame = records.orders(engine, chosen, open_only=open_only, since=since.replace(tzinfo=UTC) if since else None)
    finally:
        engine.dispose()
    if frame.empty:
        console.print(f"no {'open ' if open_only else ''}{chosen} orders", highlight=False)
        return
    environments = ", ".join(frame["environment"].unique())
    table = Table(title=f"{'open ' if open_only else ''}{chosen} orders (environment {environments})")
    # times and tickers stay whole; a long reason wraps instead
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("order id")
    _add_ticker_column(table, frame)
    for column in ("side", "action", "limit ¢", "filled", "left", "post", "status", "reason"):
        table.add_column(column)
    for r in frame.itertuples():
        table.add_row(f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.client_order_id, r.market_ticker, r.side, r.action,
                      _cents(r.limit_price_cents), f"{r.filled_count}/{r.count}", str(r.remaining_count),
                      "yes" if r.post_only else "no", r.status, r.reason if isinstance(r.reason, str) else "")
    console.print(table)


@rt_app.command("positions")
def rt_positions(show_all: Annotated[bool, typer.Option(
                     "--all", help="Also settled and closed positions (default: contracts held in open markets).")
                 ] = False,
                 mode: ModeOption = None,
                 config: RtConfigOption = RT_CONFIG,
                 db_url: DbUrlOption = None) -> None:
    """Positions from the fills, one per market, side and source (open: the model priced the order's signal;
    locked: the settlement rule had decided it): contracts, average cost, fees, and the mark at the mid (or the
    settlement)."""
    from datetime import UTC

    from kwx.execution import records

    chosen = _order_mode(mode, _execution_params(config))
    engine = open_engine(db_url)
    try:
        frame = records.positions(engine, chosen, datetime.now(UTC))
    finally:
        engine.dispose()
    if not show_all:
        frame = frame[~frame["settled"] & (frame["contracts"] != 0)]
    if frame.empty:
        console.print(f"no {'' if show_all else 'open '}{chosen} positions", highlight=False)
        return
    _print_positions(frame, f"{chosen} positions" if show_all else f"open {chosen} positions")


def _print_positions(frame, title: str) -> None:
    from rich.table import Table

    table = Table(title=f"{title} ($ unless ¢)")
    table.add_column("event day", no_wrap=True)  # headers wrap; days and tickers not
    _add_ticker_column(table, frame)
    for column in ("side", "source", "contracts", "avg ¢", "cost", "fees", "mark ¢", "value", "realized", "MTM",
                   "P&L"):
        table.add_column(column)
    for r in frame.itertuples():
        mark = f"{_cents(r.mark_cents)} settled" if r.settled else _cents(r.mark_cents)
        table.add_row(str(r.event_date), r.market_ticker, r.side, r.source, str(r.contracts), _cents(r.avg_cost_cents),
                      _dollars(r.cost_cents), _dollars(r.fees_cents), mark, _dollars(r.market_value_cents),
                      _dollars(r.realized_cents, signed=True), _dollars(r.unrealized_cents, signed=True),
                      _dollars(r.pnl_cents, signed=True))
    console.print(table)


@rt_app.command("pnl")
def rt_pnl(day: Annotated[datetime | None, typer.Option(
               formats=["%Y-%m-%d"], help="One climate day (the markets' event date), position by position; "
               "default: every day, one row each.")] = None,
           mode: ModeOption = None,
           config: RtConfigOption = RT_CONFIG,
           db_url: DbUrlOption = None) -> None:
    """Realized and mark-to-market (at the mid) P&L with fees shown: total = realized + MTM - fees, split by
    source: open (model) for fills of orders placed on rows the model priced, locked (rule) for rows the
    settlement rule had already decided (an order without its signal row counts as open)."""
    from datetime import UTC

    from rich.table import Table

    from kwx.domain.positions import SOURCE_LABELS, SOURCES
    from kwx.execution import records

    chosen = _order_mode(mode, _execution_params(config))
    now = datetime.now(UTC)
    engine = open_engine(db_url)
    try:
        if day is not None:
            result = records.daily_pnl(engine, chosen, day.date(), as_of=now)
        else:
            days = records.pnl_by_day(engine, chosen, as_of=now)
    finally:
        engine.dispose()
    if day is not None:
        if result.positions.empty:
            console.print(f"no {chosen} positions in markets of {day:%Y-%m-%d}", highlight=False)
            return
        _print_positions(result.positions, f"{chosen} positions of {day:%Y-%m-%d}")
        totals = (result.realized_cents, result.unrealized_cents, result.fees_cents, result.pnl_cents,
                  result.unmarked)
        parts = result.by_source["pnl_cents"].to_dict()
    else:
        if days.empty:
            console.print(f"no {chosen} fills yet", highlight=False)
            return
        table = Table(title=f"{chosen} P&L by climate day ($)")
        for column in ("event day", "positions", "realized", "MTM", "fees", "total",
                       *(SOURCE_LABELS[source] for source in SOURCES)):
            table.add_column(column)
        for r in days.itertuples():
            table.add_row(str(r.event_date), str(r.positions), _dollars(r.realized_cents, signed=True),
                          _dollars(r.unrealized_cents, signed=True), _dollars(r.fees_cents),
                          _dollars(r.pnl_cents, signed=True),
                          *(_dollars(getattr(r, f"{source}_pnl_cents"), signed=True) for source in SOURCES))
        console.print(table)
        sums = days[["realized_cents", "unrealized_cents", "fees_cents", "pnl_cents", "unmarked"]].sum()
        totals = (*sums.iloc[:4], int(sums["unmarked"]))
        parts = {source: days[f"{source}_pnl_cents"].sum() for source in SOURCES}
    realized, mtm, fees, total, unmarked = totals
    split = " + ".join(f"{SOURCE_LABELS[source]} ${_dollars(parts[source], signed=True)}" for source in SOURCES)
    console.print(f"realized ${_dollars(realized, signed=True)}, MTM ${_dollars(mtm, signed=True)}, "
                  f"fees ${_dollars(fees)}, total ${_dollars(total, signed=True)} = {split}", highlight=False)
    if unmarked:
        console.print(f"{unmarked} position(s) without a quote are left out of MTM", highlight=False)
