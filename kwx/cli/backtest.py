"""`kwx backtest`: maker-first backtest of trained or promoted models through the live signal path."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import (
    RT_CONFIG,
    BracketOption,
    CityOption,
    DbUrlOption,
    TrackingUriOption,
    _require_training_run,
    _stage_name,
    _tracking_or_fail,
    app,
    console,
    fail,
    load_or_fail,
    open_engine,
    progress,
)


@app.command()
def backtest(
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First event (settlement) day.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last event (settlement) day.")],
    city: CityOption = None,
    bracket: BracketOption = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="rt config: blend, risk, fees, execution.")
                      ] = RT_CONFIG,
    run_id: Annotated[str | None, typer.Option(
        help="Training run whose windows trade (default: the latest finished run of each city/bracket).")] = None,
    stage: Annotated[str | None, typer.Option(help="Trade the versions in this registry stage instead.",
                                              callback=_stage_name)] = None,
    blend_grid: Annotated[str | None, typer.Option(
        help="Blend weights START:STOP:STEP, one child run each (e.g. 0.5:0.8:0.05); the best one trades.")] = None,
    metric: Annotated[str, typer.Option(help="How the grid picks the best weight, on open rows (the model's "
                                             "trades; locked rows trade alike at every weight): daily_sharpe, "
                                             "total_pnl, roi_on_capital or hit_rate.")] = "daily_sharpe",
    write_rt_config: Annotated[bool, typer.Option(
        "--write-rt-config", help="Write the grid's best blend weight back into --config.")] = False,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Maker-first backtest over history through the live signal path, with baselines; logged to MLflow.

    --city with --bracket backtests that one model; without them, every market of the rt config.
    """
    from kwx.backtest.runner import BacktestError, parse_grid, run_backtest
    from kwx.config import RtConfig, write_top_level_value
    from kwx.data.dataset import DatasetError

    cfg = load_or_fail(config, RtConfig)
    try:
        grid = parse_grid(blend_grid) if blend_grid else None
    except BacktestError as exc:
        raise fail(f"--blend-grid: {exc}") from None
    if (city is None) != (bracket is None):
        raise fail("give --city and --bracket together (or neither, for every market of the rt config)")
    if write_rt_config and not grid:
        raise fail("--write-rt-config needs --blend-grid: there is no best weight to write")
    pairs = [(city, bracket)] if city else [(m.city, m.bracket) for m in cfg.markets]
    client = _tracking_or_fail()
    if run_id:
        _require_training_run(client, run_id)
    engine = open_engine(db_url)
    try:
        with progress(transient=True) as bar:
            task = bar.add_task("backtest", total=None)
            run = run_backtest(cfg, engine, pairs, start.date(), end.date(), run_id=run_id, stage=stage, grid=grid,
                               metric=metric, on_step=lambda text: bar.update(task, description=text))
    except (BacktestError, DatasetError, LookupError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    _print_backtest(run)
    if write_rt_config:
        write_top_level_value(config, "blend_weight", run.best_weight, RtConfig)
        console.print(f"wrote blend_weight: {run.best_weight} to {config}")


# The summary figures the table shows for each strategy's total and each source's part (``source_key``).
_FIGURES = ("total_pnl", "roi_on_capital", "daily_sharpe", "max_drawdown", "hit_rate", "fees_paid", "n_fills",
            "n_positions")


def _cells(figures: dict[str, float], fill_rate: float | None) -> list[str]:
    f = figures
    return [f"{f['total_pnl']:,.2f}", f"{f['roi_on_capital']:.2%}", f"{f['daily_sharpe']:.3f}",
            f"{f['max_drawdown']:,.2f}", f"{f['hit_rate']:.1%}", "-" if fill_rate is None else f"{fill_rate:.1%}",
            f"{f['fees_paid']:,.2f}", f"{f['n_fills']:,.0f}", f"{f['n_positions']:,.0f}"]


def _print_backtest(run) -> None:
    from rich.table import Table

    from kwx.domain.performance import source_key
    from kwx.domain.positions import SOURCE_LABELS, SOURCES

    table = Table(title=f"backtest: models from {'; '.join(run.sources)}")
    for column in ("strategy", "rows", "PnL $", "ROI", "daily Sharpe", "max DD $", "hit rate", "fill rate", "fees $",
                   "fills", "positions"):
        table.add_column(column)
    rows = [(f"blend w={r.blend_weight:.2f}", r) for r in run.grid] if run.grid else [
        (f"blend w={run.strategy.blend_weight:.2f}", run.strategy)]
    rows += [(f"{name.replace('_', ' ')} (w={r.blend_weight:g})", r) for name, r in run.baselines.items()]
    for label, r in rows:
        s = r.summary
        best = " *" if run.grid and r is run.strategy else ""
        # each source's part, then the total they sum to (fill rate is per posted order: the total's only)
        for k, source in enumerate(SOURCES):
            part = {figure: s[source_key(source, figure)] for figure in _FIGURES}
            table.add_row(label + best if k == 0 else "", SOURCE_LABELS[source], *_cells(part, None))
        table.add_row("", "total", *_cells(s, s["fill_rate"]), end_section=True, style="bold")
    console.print(table)
    console.print(f"rows: {SOURCE_LABELS['open']} = fills on rows the model priced; {SOURCE_LABELS['locked']} = "
                  "fills on rows the settlement rule had already decided from the day's observed maximum. Their "
                  "PnL, fees and fills sum to the total; a position with fills of both counts in each.",
                  highlight=False)
    # The Sharpe figures above are per traded day: say how many days traded and why the rest were skipped.
    console.print(run.strategy.coverage.line(), highlight=False)
    console.print(f"fees: {run.fees}", highlight=False, markup=False)
    if run.demo_data:
        console.print("[yellow]note:[/] these are `kwx data demo` markets, quoted by a simulated market of chosen "
                      "skill: their P&L and ROI say nothing about a real market.", highlight=False)
    if run.grid:
        console.print(f"best blend weight by {run.metric} on open rows ({run.ranked_by}): {run.best_weight:g} "
                      "(marked *)", highlight=False)
    t = run.timings
    console.print(f"{t['decision_rows']:,.0f} minute × market decisions; load {t['load_seconds']:.1f} s, "
                  f"trade {t['simulate_seconds']:.1f} s, MLflow {t['log_seconds']:.1f} s; "
                  f"run {run.run_id} in experiment {run.experiment_id}")
