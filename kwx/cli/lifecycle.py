"""`kwx retrain` (a config's forward window, promoted by the lifecycle policy) and `kwx simulate` (a season)."""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kwx.cli.common import (
    RT_CONFIG,
    DbUrlOption,
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
from kwx.cli.rt import _replay_speed
from kwx.cli.train import _parse_overrides, _training_errors
from kwx.config import TrainConfig, sample_configs_dir
from kwx.data import migrations
from kwx.secrets import mask_url, redact

AsOfOption = Annotated[datetime | None, typer.Option(
    "--as-of", formats=["%Y-%m-%d"],
    help="First climate day the window trades (default: today's climate day for the config's city).")]


@app.command()
def retrain(
    config: Annotated[Path, typer.Option("--config", "-c", help="Model config YAML (configs/...).")],
    as_of: AsOfOption = None,
    promote: Annotated[bool, typer.Option(
        "--promote", help="Apply the config's lifecycle policy and promote the window to Production if it "
        "passes.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the training days and show the window; train nothing.")] = False,
    trials: Annotated[int | None, typer.Option(help="Override the config's Optuna trials.", min=1)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value (dotted keys).")] = None,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Train the forward window that trades the coming test_days from --as-of, on the train_days settled
    climate days before it: one parent run, one window run and the next registered version, tagged
    evaluation=pending until `kwx monitor` scores its week. Re-running for the same day and config reports the
    version it already registered.

    Exit 0 when trained (or found), and with --promote when promoted; 1 when --promote refused it (each
    failing check is printed and recorded on the version); 2 on bad input (unsettled or too few training days,
    one label class, unreachable stores).
    """
    from kwx.cities import get_city
    from kwx.clock import SystemClock
    from kwx.domain.markets import climate_day
    from kwx.lifecycle.retrain import RetrainError
    from kwx.lifecycle.retrain import retrain as do_retrain

    overrides = _parse_overrides(set_ or [])
    if trials is not None:
        overrides["trials"] = trials
    cfg = load_or_fail(config, TrainConfig, overrides)
    now = SystemClock().now()
    day = as_of.date() if as_of is not None else climate_day(now, get_city(cfg.city))
    engine = open_engine(db_url)
    client = None if dry_run else _tracking_or_fail()
    try:
        with progress(transient=True) as bar:
            bar.add_task(f"retraining {cfg.city}/{cfg.bracket} as of {day}", total=None)
            outcome = do_retrain(cfg, engine, as_of=day, now=now, promote=promote, dry_run=dry_run,
                                 config_text=config.read_text(), client=client)
    except (RetrainError, *_training_errors()) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    for line in outcome.lines():
        style = "[red]" if line.lstrip().startswith("FAIL") else ""
        (err_console if style else console).print(f"{style}{escape(line)}", highlight=False)
    if promote and outcome.refused and not dry_run:
        raise typer.Exit(1)


@app.command()
def simulate(
    config: Annotated[Path, typer.Option("--config", "-c", help="Model config YAML (configs/...).")],
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First simulated (traded) day.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last simulated day.")],
    speed: Annotated[str, typer.Option(help="Replay speed of each day: 'max', or a multiple of real time.",
                                       callback=_replay_speed)] = "max",
    rt_config: Annotated[Path, typer.Option("--rt-config", help="rt config the days are traded with.")] = RT_CONFIG,
    tick_seconds: Annotated[float | None, typer.Option(
        help="Override the rt config's tick: a coarser tick replays a day faster.", min=0.5)] = None,
    trials: Annotated[int | None, typer.Option(help="Override the config's Optuna trials.", min=1)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value (dotted keys).")] = None,
    workdir: Annotated[Path | None, typer.Option(
        help="Workspace (database, MLflow store, artifacts); default simulations/{city}-{bracket}-{start}-{end}.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing workspace.")] = False,
    workspace_db_url: Annotated[str | None, typer.Option(
        help="An empty database for the simulation instead of the workspace's SQLite file.")] = None,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """A season on a simulated clock: each day the previous day settles, the weekly retrain (--promote) and the
    daily monitor run at the config's local times, then the day is replayed through serve-rt's code. Ends with
    one row per week: window traded, stale days, realized scores model vs market, signals, drift alarms.

    The source database (--db-url) is only read: the simulation copies the config's markets into its own
    workspace and releases their settlements day by day, and logs to the workspace's MLflow store (or
    --tracking-uri), so it never promotes anything in your registry.
    """
    import shutil

    from kwx.config import RtConfig
    from kwx.data.db import DatabaseUrlError, check_url, make_engine
    from kwx.lifecycle.simulate import SimulationError
    from kwx.lifecycle.simulate import simulate as run_simulation
    from kwx.tracking import ARTIFACTS_DIR_ENV

    overrides = _parse_overrides(set_ or [])
    if trials is not None:
        overrides["trials"] = trials
    cfg = load_or_fail(config, TrainConfig, overrides)
    rt_path = rt_config if rt_config != RT_CONFIG or rt_config.exists() else sample_configs_dir() / "rt.yaml"
    rt_cfg = load_or_fail(rt_path, RtConfig, {"tick_seconds": tick_seconds} if tick_seconds else None)
    first, last = start.date(), end.date()
    if last < first:
        raise fail(f"--end ({last}) is before --start ({first})")
    if workspace_db_url is not None:
        try:
            check_url(workspace_db_url)  # what every --db-url gets, before anything is created
        except DatabaseUrlError as exc:
            raise fail(f"--workspace-db-url: {exc}") from None
    directory = (workdir or Path("simulations") / f"{cfg.city}-{cfg.bracket}-{first}-{last}").resolve()
    if directory.exists() and not directory.is_dir():
        raise fail(f"--workdir: workspace {directory} is not a directory")
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise fail(f"workspace {directory} exists: pass --overwrite to replace it, or --workdir")
        shutil.rmtree(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--workdir: cannot create workspace {directory}: {exc.strerror or exc}") from None
    workspace_url = workspace_db_url or f"sqlite:///{directory / 'kwx.db'}"
    migrations.upgrade(workspace_url)
    source = open_engine(db_url)
    workspace = make_engine(workspace_url)
    if _has_markets(workspace):
        raise fail(f"the workspace database {redact(workspace_url)} already holds markets: give an empty one")
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", ARTIFACTS_DIR_ENV)}
    if tracking_uri is None:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{directory / 'mlflow.db'}"
    os.environ[ARTIFACTS_DIR_ENV] = str(directory / "mlartifacts")
    console.print(f"simulating {cfg.city}/{cfg.bracket} {first}..{last} in {directory} (retrain every "
                  f"{cfg.lifecycle.retrain_weekday} {cfg.lifecycle.retrain_time}, monitor daily "
                  f"{cfg.lifecycle.monitor_time}, {rt_cfg.tick_seconds:g} s ticks)")
    try:
        with progress() as bar:
            task = bar.add_task("simulated days", total=(last - first).days + 1)

            def day_done(record) -> None:
                stale = f", stale {record.stale_days} d" if record.stale_days else ""
                bar.update(task, advance=1, description=f"{record.day}: {record.window}{stale}, "
                                                        f"{record.sized} sized signals")

            result = run_simulation(cfg, rt_cfg, source, workspace, start=first, end=last,
                                    speed=None if speed == "max" else float(speed), on_day=day_done,
                                    config_text=config.read_text())
    except (SimulationError, *_training_errors()) as exc:
        raise fail(str(exc)) from None
    finally:
        source.dispose()
        workspace.dispose()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _print_weeks(result)


def _has_markets(engine) -> bool:
    from sqlalchemy import select

    from kwx.data.schema import Market

    with engine.connect() as conn:
        return conn.execute(select(Market.ticker).limit(1)).first() is not None


def _print_weeks(result) -> None:
    import pandas as pd
    from rich.table import Table

    table = Table(title="simulated season, one row per week: realized scores on quoted rows, model/market")
    for column in ("week", "window(s) traded", "stale", "log loss", "Brier", "ECE", "signals", "sized", "alarms",
                   "withdrawn"):
        table.add_column(column, overflow="fold")

    def pair(row, key: str) -> str:
        model, market = row[f"model_{key}"], row[f"market_{key}"]
        return "-" if math.isnan(model) else f"{model:.4f}/{market:.4f}"  # NaN: no settled quoted row

    for row in result.weeks.to_dict("records"):
        stale = row["max_stale_days"]
        first, last = row["week"].split("..")
        table.add_row(f"{first[5:]}..{last[5:]}", row["windows"].replace(", ", "\n"),
                      "-" if pd.isna(stale) else str(int(stale)), pair(row, "log_loss"), pair(row, "brier"),
                      pair(row, "ece"), f"{row['signals']:,}", f"{row['sized']:,}", str(row["drift_alarms"]),
                      row["withdrawn"] or "-")
    console.print(table)
    alarms = [f"{r.day}: {line}" for r in result.days for line in r.alarms]
    for line in alarms:
        err_console.print(f"[yellow]drift alarm[/] {line}", highlight=False)
    tracking = mask_url(result.tracking_uri)
    console.print(f"simulation run {result.run_id} in {tracking} (workspace database "
                  f"{mask_url(result.database_url)}); browse it with: mlflow ui --backend-store-uri {tracking}")
