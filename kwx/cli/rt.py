"""`kwx serve-rt` and `kwx rt`: the real-time signal loop, live or replayed, and its status."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import (
    RT_CONFIG,
    DbUrlOption,
    KwxTyper,
    TrackingUriOption,
    _tracking_or_fail,
    app,
    console,
    fail,
    load_or_fail,
    open_engine,
    progress,
)
from kwx.secrets import configure_logging

rt_app = KwxTyper(help="Real-time loop status.")



def _replay_speed(value: str) -> str:
    """--speed: 'max' or a positive, finite multiple of real time."""
    try:
        multiple = float(value) if value != "max" else 1.0
    except ValueError:
        multiple = math.nan
    if not (math.isfinite(multiple) and multiple > 0):
        raise fail(f"--speed must be 'max' or a positive, finite multiple of real time (e.g. 60), got {value!r}")
    return value


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
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """The real-time signal loop (dry run: signals are written to rt_signals, no orders are placed)."""
    import logging

    from kwx.config import RtConfig
    from kwx.rt import replay as replay_mod

    cfg = load_or_fail(config, RtConfig)
    if replay is None:
        _serve_live(cfg, db_url, max_ticks=1 if once else max_ticks, top=top)
        return
    configure_logging(logging.WARNING)
    client = _tracking_or_fail()
    engine = open_engine(db_url)
    try:
        # transient: a replay that cannot start leaves its one error line, not an empty bar above it
        with progress(transient=True) as bar:
            task = bar.add_task(f"replay {replay:%Y-%m-%d}", total=None)
            result = replay_mod.replay_day(
                cfg, engine, client, replay.date(), speed=None if speed == "max" else float(speed),
                max_ticks=max_ticks, on_tick=lambda tick, _s: bar.update(task, advance=1,
                                                                         description=f"{tick['ts_utc']:%H:%M:%S}"))
    except replay_mod.ReplayError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(f"replayed {result.ticks:,} ticks of {replay:%Y-%m-%d} in {result.seconds:.1f} s "
                  f"({result.simulated_minutes_per_second:,.0f} simulated minutes/s); "
                  f"{result.rows:,} signal rows, {result.sized:,} with a position size")
    _print_signals(result.strongest.head(top), f"strongest signals of {replay:%Y-%m-%d}")


def _serve_live(cfg, db_url: str | None, *, max_ticks: int | None, top: int) -> None:
    import logging

    from kwx.data.clients.kalshi import KalshiClient
    from kwx.data.clients.visual_crossing import MissingApiKeyError, VisualCrossingClient, api_key_from_env
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
    try:
        run = serve_live(cfg, engine, client, kalshi=KalshiClient(cfg.kalshi_base_url), vc=vc, max_ticks=max_ticks,
                         stop=stop, on_tick=lambda tick, result: last.update(signals=result.signals))
    except BufferFullError as exc:
        raise fail(str(exc)) from None
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
    for column in ("time (UTC)", "market", "side", "p_model", "p_market", "p_blend", "edge ¢", "size", "window"):
        table.add_column(column)
    for r in frame.itertuples():
        side = r.side if isinstance(r.side, str) and r.side else "-"  # a missing side reads back as None or NaN
        table.add_row(f"{r.ts_utc:%H:%M:%S}", r.market_ticker, side, f"{r.p_model:.3f}", f"{r.p_market:.3f}",
                      f"{r.p_blend:.3f}", f"{r.edge_cents:.1f}", f"{r.size_fraction:.3f}", str(r.wf_window))
    console.print(table)


# `rt status` looks this far back for outages (about 2.5 hours of 9 s ticks), beyond the rows it lists.
OUTAGE_WINDOW_TICKS = 1000


@rt_app.command("status")
def rt_status(last: Annotated[int, typer.Option(help="How many ticks to show.", min=1)] = 10,
              max_age: Annotated[float | None, typer.Option(
                  help="Exit 1 unless the newest live tick is at most this many seconds old (a container "
                  "health check).", min=0)] = None,
              db_url: DbUrlOption = None) -> None:
    """The last ticks of the loop: markets, signals, skips by reason, latency; then its recent outages."""
    from datetime import UTC

    from rich.table import Table
    from sqlalchemy import func, select

    from kwx.data.schema import RtTick
    from kwx.rt.outages import TickRecord, outage_lines

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(RtTick).order_by(RtTick.ts_utc.desc()).limit(last)).all()
            newest_live = conn.execute(select(func.max(RtTick.ts_utc)).where(RtTick.mode == "live")).scalar()
            recent = conn.execute(select(RtTick.ts_utc, RtTick.mode, RtTick.skips).order_by(RtTick.ts_utc.desc())
                                  .limit(max(last, OUTAGE_WINDOW_TICKS))).all()
    finally:
        engine.dispose()
    if not rows:
        raise fail("no ticks recorded yet: run `kwx serve-rt`", code=1)
    table = Table(title="last ticks")
    for column in ("tick (UTC)", "mode", "markets", "signals", "latency ms", "skips"):
        table.add_column(column)
    for tick in rows:
        table.add_row(f"{tick.ts_utc:%Y-%m-%d %H:%M:%S}", tick.mode, str(tick.markets), str(tick.signals),
                      f"{tick.latency_ms:.1f}", tick.skips)
    console.print(table)
    outages = outage_lines([TickRecord(*r) for r in recent])
    if outages:
        console.print(f"outages in the newest {len(recent):,} ticks:", highlight=False)
        for line in outages:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
    if max_age is not None:
        if newest_live is None:
            raise fail("no live tick recorded yet", code=1)
        age = (datetime.now(UTC) - newest_live).total_seconds()
        if age > max_age:
            raise fail(f"newest live tick is {age:.0f} s old (--max-age {max_age:g})", code=1)
