"""`kwx retrain`: the forward window of a config, trained and (with --promote) promoted by the lifecycle policy."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import (
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
from kwx.cli.train import _parse_overrides, _training_errors
from kwx.config import TrainConfig

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
        (err_console if style else console).print(f"{style}{line}", highlight=False)
    if promote and outcome.refused and not dry_run:
        raise typer.Exit(1)
