"""`kwx audit`: time alignment of the data, the lock margin it needs, feature stability of a training run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import (
    RT_CONFIG,
    BracketOption,
    CitiesAliasOption,
    CitiesOption,
    CityOption,
    DbUrlOption,
    KwxTyper,
    RunIdOption,
    TrackingUriOption,
    _check_range,
    _cities,
    _training_run,
    console,
    fail,
    load_or_fail,
    open_engine,
    progress,
)
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F

audit_app = KwxTyper(help="Audits: time alignment of the data (LST), the lock margin it needs, feature stability "
                     "of a training run.")

StartOption = Annotated[datetime | None, typer.Option(
    formats=["%Y-%m-%d"], help="First climate day (default: each city's first event day).", show_default=False)]
EndOption = Annotated[datetime | None, typer.Option(
    formats=["%Y-%m-%d"], help="Last climate day (default: each city's last event day).", show_default=False)]


@audit_app.command("time")
def audit_time(
    city: CitiesOption = None,
    cities: CitiesAliasOption = None,
    start: StartOption = None,
    end: EndOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Directory for time_alignment.json (default: audit_reports).", show_default=False)] = None,
    max_gap_minutes: Annotated[int, typer.Option(
        help="Flag weather gaps (consecutive observations further apart) longer than this.", min=1)] = 30,
    close_tolerance_minutes: Annotated[int, typer.Option(
        help="Allowed difference between a market's close_time and the end of its climate day.", min=0)] = 0,
    lock_margin_f: Annotated[float, typer.Option(
        help="The lock margin (°F) to check against the observed maximum's excess over the settlement.",
        min=0, max=5)] = DEFAULT_LOCK_MARGIN_F,
    db_url: DbUrlOption = None,
) -> None:
    """Show that climate days, candles, market close times and weather line up in local standard time,
    and measure how far the observed daily maximum runs above the settlement (the lock margin it needs),
    for --city (default: every city with markets).

    Exit 0 when clean, 1 when anything is flagged (DST transition days are informational).
    """
    from datetime import timedelta

    from kwx.audit.time_alignment import AUDIT_ROOT, city_table, run_audit

    city_list = _cities(city, cities)
    if start and end:
        _check_range(start, end)
    engine = open_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task("time alignment", total=len(city_list) if city_list else None)
            audit = run_audit(engine, city_list, start.date() if start else None, end.date() if end else None,
                              max_gap=timedelta(minutes=max_gap_minutes),
                              close_tolerance=timedelta(minutes=close_tolerance_minutes),
                              lock_margin_f=lock_margin_f, out=out or AUDIT_ROOT,
                              on_city=lambda city: bar.update(task, advance=1, description=f"audited {city}"))
    except LookupError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    for document in audit.cities.values():
        console.print(city_table(document))
    for skipped, reason in audit.skipped.items():
        console.print(f"[yellow]skipped[/] {skipped}: {reason}", highlight=False)
    for flag in audit.flags:
        console.print(f"[red]FLAG[/] {flag}", highlight=False)
    verdict = "[green]ALIGNED" if audit.passed else f"[red]{len(audit.flags)} FLAG(S)"
    console.print(f"{verdict}[/] time alignment audit written to {audit.path}", highlight=False)
    if not audit.passed:
        raise typer.Exit(1)


def _current_margin(margin: float | None, config: Path) -> tuple[float, str]:
    """The lock margin to judge and where it came from: --margin, else the rt config's, else the default when
    the default config file is missing."""
    if margin is not None:
        return margin, "--margin"
    if config == RT_CONFIG and not config.exists():
        return DEFAULT_LOCK_MARGIN_F, f"kwx default; no {RT_CONFIG}"
    from kwx.config import RtConfig

    return load_or_fail(config, RtConfig).lock_margin_f, str(config)


@audit_app.command("lock-margin")
def audit_lock_margin(
    city: CitiesOption = None,
    cities: CitiesAliasOption = None,
    start: StartOption = None,
    end: EndOption = None,
    margin: Annotated[float | None, typer.Option(
        help="The lock margin (°F) to judge (default: the rt config's lock_margin_f).", min=0, max=5,
        show_default=False)] = None,
    config: Annotated[Path, typer.Option(
        "--config", "-c", help="rt config whose lock_margin_f is judged (kwx's default when the default file is "
        "missing).")] = RT_CONFIG,
    margin_step: Annotated[float, typer.Option(
        help="Spacing (°F) of the margins 0..5 the recommendation is chosen from.", min=0.01, max=1)] = 0.1,
    out: Annotated[Path | None, typer.Option(
        help="Directory for lock_margin.json (default: audit_reports).", show_default=False)] = None,
    db_url: DbUrlOption = None,
) -> None:
    """Measure how far the stored observations' climate-day (LST) maximum runs above and below the settled high,
    the days the current lock margin misjudged or locked late, and recommend lock_margin_f: the smallest margin
    on the grid that misjudged no stored day, for --city (default: every city with markets).

    Exit 0 when the current margin misjudged no day, 1 when it did (a lock would have traded a "certain"
    outcome that lost), 2 on bad input or no data.
    """
    from kwx.audit.lock_margin import AUDIT_ROOT, city_lines, run_audit, summary_table

    city_list = _cities(city, cities)
    if start and end:
        _check_range(start, end)
    margin_f, source = _current_margin(margin, config)
    engine = open_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task("lock margin", total=len(city_list) if city_list else None)
            audit = run_audit(engine, city_list, start.date() if start else None, end.date() if end else None,
                              margin_f=margin_f, margin_source=source, step_f=margin_step, out=out or AUDIT_ROOT,
                              on_city=lambda city: bar.update(task, advance=1, description=f"studied {city}"))
    except LookupError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(summary_table(audit))
    for document in audit.cities.values():
        for line in city_lines(document):
            console.print(line, highlight=False)
    for skipped, reason in audit.skipped.items():
        console.print(f"[yellow]skipped[/] {skipped}: {reason}", highlight=False)
    verdict = "[green]SAFE" if audit.passed else "[red]UNSAFE"
    console.print(f"{verdict}[/] lock margin audit written to {audit.path}", highlight=False)
    if not audit.passed:
        raise typer.Exit(1)


@audit_app.command("features")
def audit_features(
    run_id: RunIdOption = None, city: CityOption = None, bracket: BracketOption = None,
    repeats: Annotated[int, typer.Option(help="Permutation repeats per feature and window.", min=1)] = 5,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Coefficient sign/size stability and permutation importance of every feature across a run's windows."""
    from mlflow.exceptions import MlflowException
    from rich.table import Table

    from kwx.audit.features import build_feature_audit

    with _training_run(run_id, city, bracket, db_url) as (client, run, engine):
        try:
            with progress() as bar:
                task = bar.add_task("feature audit", total=None)
                result = build_feature_audit(
                    client, engine, run, repeats=repeats,
                    on_window=lambda name, done, total: bar.update(task, completed=done, total=total,
                                                                   description=name))
        except (LookupError, ValueError, MlflowException) as exc:
            raise fail(str(exc)) from None
    doc = result.document
    table = Table(title=f"{doc['model']} run {run}: {doc['n_windows']} windows, permutation importance on test weeks "
                        f"(Δ log loss, {repeats} repeats)")
    for column in ("feature", "coef mean ± std", "non-zero", "sign stability", "flips", "importance mean ± std"):
        table.add_column(column, justify="left" if column == "feature" else "right")
    for feature, r in result.summary.iterrows():
        table.add_row(feature, f"{r.coef_mean:+.3f} ± {r.coef_std:.3f}", f"{r.nonzero_fraction:.0%}",
                      f"{r.sign_stability:.0%}", "[red]yes" if r.sign_flips else "no",
                      f"{r.importance_mean:.4f} ± {r.importance_std:.4f}")
    console.print(table)
    flips = doc["sign_flip_features"]
    console.print(f"sign flips across windows: {', '.join(flips) if flips else 'none'}", highlight=False)
    console.print(f"feature audit written to {result.directory} and logged to run {run} under feature_audit/",
                  highlight=False)
