"""`kwx monitor`: realized scores of forward windows once their week settles, and the drift alarm."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

import typer

from kwx.cli.common import (
    BracketOption,
    CityOption,
    DbUrlOption,
    TrackingUriOption,
    _tracking_or_fail,
    app,
    console,
    err_console,
    fail,
    open_engine,
    progress,
)


@app.command()
def monitor(
    as_of: Annotated[datetime | None, typer.Option(
        "--as-of", formats=["%Y-%m-%d"], show_default=False,
        help="Climate day of the pass: weeks ending before it are scored, drift covers the lifecycle.monitor_days "
             "before it. Default: today's climate day of --city, or today's UTC date without one.")] = None,
    city: CityOption = None,
    bracket: BracketOption = None,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Score settled forward windows and check the Production families for drift.

    Every version tagged evaluation=pending (a forward window of `kwx retrain`) whose week ended before --as-of
    and has settled is scored on it as training scores a test week; its run, its training run's summary and its
    version tags (evaluation=done, realized_verdict) are updated. Then each family with Production versions is
    scored over its recent settled days and held to lifecycle.drift; the numbers are charted, one step per day,
    in the kwx-monitoring experiment. With lifecycle.auto_withdraw a drifting version is archived. Running it
    twice for one day changes nothing the second time.

    Exit 0 without drift alarm, 1 with one (one line per breach), 2 on bad input (only one of --city and
    --bracket, tracking store or database unavailable).
    """
    from mlflow.exceptions import MlflowException
    from rich.table import Table

    from kwx.cities import get_city
    from kwx.clock import SystemClock
    from kwx.domain.markets import climate_day
    from kwx.lifecycle.monitor import monitor as run_monitor

    if (city is None) != (bracket is None):
        raise fail("give both --city and --bracket, or neither to monitor every registered kwx model")
    now = SystemClock().now()
    # a city's trading day is its climate day (local standard time); across cities, the UTC date
    default_day = climate_day(now, get_city(city)) if city else now.date()
    day = as_of.date() if as_of is not None else default_day
    client = _tracking_or_fail()
    engine = open_engine(db_url)
    try:
        with progress(transient=True) as bar:
            task = bar.add_task(f"monitoring as of {day}", total=None)
            report = run_monitor(client, engine, as_of=day, now=now, city=city, bracket=bracket,
                                 on_step=lambda step: bar.update(task, description=step))
    except MlflowException as exc:
        raise fail(f"MLflow: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                   ) from None
    finally:
        engine.dispose()

    def number(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    console.print(f"kwx monitor as of {day}", highlight=False)
    if report.evaluated:
        table = Table(title="realized test weeks of forward windows")
        for column in ("model", "version", "window", "test week", "rows", "unlocked ECE", "unlocked Brier",
                       "Brier skill", "loop sized", "verdict"):
            table.add_column(column)
        for e in report.evaluated:
            table.add_row(e.name, e.version, e.window, f"{e.test_start}..{e.test_end}", str(e.rows),
                          number(e.metrics["test_unlocked_ece"]), number(e.metrics["test_unlocked_brier"]),
                          number(e.metrics["test_brier_skill"]), str(int(e.loop["loop_sized_signals"])),
                          "[green]pass[/]" if e.verdict == "pass" else "[red]fail[/]")
        console.print(table)
        for e in report.evaluated:
            for line in e.failing:
                console.print(f"  {e.name} version {e.version}: {line}", highlight=False, markup=False)
    for line in report.waiting:
        console.print(f"[yellow]waiting:[/] {line}", highlight=False)
    if report.drift:
        table = Table(title="drift: rolling realized quality of the Production families")
        for column in ("model", "settled days", "days", "rows", "ECE", "Brier", "market Brier", "Brier skill",
                       "breaches", "logged"):
            table.add_column(column)
        for f in report.drift:
            q = f.quality
            table.add_row(f.name, f"{f.span[0]}..{f.span[1]}" if f.span else "-", str(int(q["rolling_days"])),
                          str(int(q["rolling_rows"])), number(q["rolling_ece"]), number(q["rolling_brier"]),
                          number(q["rolling_market_brier"]), number(q["rolling_brier_skill"]),
                          f"[red]{len(f.breaches)}[/]" if f.breaches else "0",
                          "yes" if f.logged else "already")
        console.print(table)
        for f in report.drift:
            for note in f.notes:
                console.print(f"  note: {note}", highlight=False, markup=False)
    if not (report.evaluated or report.waiting or report.drift):
        console.print("nothing to evaluate and no Production family to watch")
    for line in report.withdrawn:
        console.print(f"[bold yellow]withdrawn:[/] {line}", highlight=False)
    for line in report.alarms:
        err_console.print(f"[bold red]drift alarm:[/] {line}", highlight=False)
    if report.alarms:
        raise typer.Exit(1)
