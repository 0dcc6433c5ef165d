"""`kwx report`, `kwx promote` and `kwx models`: a training run's acceptance, its promotion, the registry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape

from kwx.cli.common import (
    BracketOption,
    CityOption,
    DbUrlOption,
    KwxTyper,
    RunIdOption,
    TrackingUriOption,
    _stage_name,
    _tracking_or_fail,
    _training_run,
    app,
    console,
    err_console,
    fail,
)

models_app = KwxTyper(help="Registered window models: list and resolve by date.")


@app.command()
def report(run_id: RunIdOption = None, city: CityOption = None, bracket: BracketOption = None,
           db_url: DbUrlOption = None, tracking_uri: TrackingUriOption = None) -> None:
    """Write the acceptance report of a training run and log it to the run.

    Exit 0 when the verdict is PASS, 1 when it is FAIL (every check is printed, failing ones in red),
    2 on bad input (no such run, tracking store or database unavailable).
    """
    from kwx.report import build_report

    with _training_run(run_id, city, bracket, db_url) as (client, run, engine):
        try:
            result = build_report(client, engine, run)
        except (LookupError, ValueError) as exc:
            raise fail(str(exc)) from None
    for check in result.checks:
        console.print(("[green]" if check.passed else "[red]") + escape(check.line()), highlight=False)
    verdict = "[green]PASS" if result.passed else "[red]FAIL"
    console.print(f"{verdict}[/] acceptance report written to {result.directory} and logged to run {run}")
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def promote(
    run_id: RunIdOption = None, city: CityOption = None, bracket: BracketOption = None,
    stage: Annotated[str, typer.Option(help="Staging or Production.", callback=_stage_name)] = "Production",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the gates and show what would move.")] = False,
    keep_existing: Annotated[bool, typer.Option(
        "--keep-existing", help="Do not archive overlapping versions already in the stage.")] = False,
    reason: Annotated[str, typer.Option(help="Why: recorded as a version tag.")] = "",
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Promote every window version of a training run to a stage, only if the acceptance gates hold.

    Exit 0 when promoted (with --dry-run: when it would be), 1 when refused (each failing gate is printed),
    2 on bad input (unknown stage, not a training run, tracking store or database unavailable).
    """
    from kwx.clock import SystemClock
    from kwx.registry.promotion import PromotionRefused
    from kwx.registry.promotion import promote as do_promote
    from kwx.report import infrastructure_checks

    with _training_run(run_id, city, bracket, db_url) as (client, run, engine):
        try:
            result = do_promote(client, run, stage, now=SystemClock().now(), dry_run=dry_run,
                                infrastructure=infrastructure_checks(engine, client, run),
                                archive_existing=not keep_existing, reason=reason)
        except PromotionRefused as exc:
            err_console.print(f"[bold red]promotion of run {run} to {stage} refused:[/]", highlight=False)
            for check in exc.failing:
                err_console.print(f"  - {escape(check.line())}", highlight=False)
            raise typer.Exit(1) from None
        except ValueError as exc:
            raise fail(str(exc)) from None
    for check in result.checks:  # the numbers it passed on, as `kwx report` and the lifecycle policy print them
        console.print(f"[green]{escape(check.line())}", highlight=False)
    verb = "would promote" if result.dry_run else "promoted"
    console.print(f"{verb} {result.name} versions {', '.join(result.promoted)} of run {run} to {result.stage}"
                  + (f"; archived {', '.join(result.archived)}" if result.archived else ""))
    for note in result.notes:
        console.print(note)


@models_app.command("list")
def models_list(
    city: CityOption = None,
    bracket: BracketOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Every registered kwx model, one row each; with --city and --bracket, that model's versions with their
    windows, stages, aliases and key test metrics."""
    from rich.table import Table

    from kwx.registry.versions import all_versions, model_name

    if (city is None) != (bracket is None):
        raise fail("give both --city and --bracket, or neither to summarise every model")
    client = _tracking_or_fail()
    if city is None:
        _print_model_overviews(client)
        return
    name = model_name(city, bracket)
    versions = sorted(all_versions(client, name), key=lambda v: int(v.version))
    if not versions:
        raise fail(f"no registered versions of {name}: run `kwx train` first")
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(f"@{alias}")
    table = Table(title=name)
    for column in ("version", "window", "test period", "stage", "aliases", "log loss", "market", "ece", "promoted"):
        table.add_column(column)
    for v in versions:
        metrics = client.get_run(v.run_id).data.metrics

        def metric(key: str, m=metrics) -> str:
            return f"{m[key]:.4f}" if key in m else ""

        table.add_row(str(v.version), v.tags.get("window", ""), f"{v.tags.get('test_start')}..{v.tags.get('test_end')}",
                      v.current_stage, " ".join(aliases.get(str(v.version), [])), metric("test_log_loss"),
                      metric("market_log_loss"), metric("test_ece"), v.tags.get("promoted_at", "")[:19])
    console.print(table)


def _print_model_overviews(client) -> None:
    from rich.table import Table

    from kwx.registry.versions import model_overviews

    overviews = model_overviews(client)
    if not overviews:
        raise fail("no registered kwx models: run `kwx train` first")
    table = Table(title="registered kwx models (metrics: newest training run, mean over its windows)")
    for column in ("model", "versions", "windows", "stages", "aliases", "newest run", "log loss", "market", "ece"):
        table.add_column(column)
    for o in overviews:
        def metric(key: str, m=o.metrics) -> str:
            return f"{m[key]:.4f}" if key in m else ""

        table.add_row(o.name, str(o.versions), str(o.windows), " ".join(f"{s}:{n}" for s, n in o.stages.items()),
                      " ".join(o.aliases), (o.newest_run_id or "")[:12], metric("mean_test_log_loss"),
                      metric("mean_market_log_loss"), metric("mean_test_ece"))
    console.print(table)


@models_app.command("resolve")
def models_resolve(
    city: CityOption,
    bracket: BracketOption,
    date_: Annotated[datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="Trading (climate) day.")],
    stage: Annotated[str, typer.Option(help="Registry stage to trade.", callback=_stage_name)] = "Production",
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Which window's model trades a date, and why; exit 1 when none can, or its model does not load."""
    from kwx.registry.cache import RegistryCache
    from kwx.registry.resolution import NoModelError
    from kwx.rt.engine import ModelUnavailable

    client = _tracking_or_fail()
    cache = RegistryCache(client)
    try:
        choice = cache.resolve(city, bracket, date_.date(), stage)
    except NoModelError as exc:
        raise fail(str(exc), code=1) from None
    f = choice.facts
    stale = f", stale by {choice.stale_days} day(s)" if choice.stale_days else ""
    console.print(f"{city}/{bracket} on {date_:%Y-%m-%d} ({stage}): {f.name} version {f.version}, {f.window}"
                  f"{stale}\n  why: {choice.reason}")
    if choice.stale_days:
        err_console.print(f"[bold yellow]warning:[/] {f.window} was never tested on {date_:%Y-%m-%d} (its test "
                          f"period ended {choice.stale_days} day(s) earlier): retrain and promote", highlight=False)
    try:
        cache.model(f)  # resolving is not enough: the loop skips the markets of a model that does not load
    except ModelUnavailable as exc:
        raise fail(f"{exc}: its markets are skipped", code=1) from None
