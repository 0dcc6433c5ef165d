"""The ``kwx`` command line: thin commands that parse, load config and call one function each."""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import click
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from kwx import __version__
from kwx.config import CONFIG_KINDS, ConfigError, MatrixConfig, load_config, load_yaml
from kwx.data import migrations
from kwx.data.db import database_url
from kwx.data.demo import DEFAULT_MARKET_SKILL
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F
from kwx.secrets import configure_logging, redact

# Where the --db-url callback leaves the database a command uses, for the error line of a failure.
_DATABASE_META_KEY = "kwx.database_url"


class _KwxGroup(TyperGroup):
    """Runs every command inside one mapping of database and disk failures (unreachable, read-only, full) to
    an error line and exit 2, wherever in the command they happen."""

    def invoke(self, ctx: click.Context):
        from kwx.data.db import DATABASE_FAILURES, database_problem

        try:
            return super().invoke(ctx)
        except DATABASE_FAILURES as exc:
            problem = database_problem(exc, ctx.meta.get(_DATABASE_META_KEY))
            if problem is None:
                raise
            raise fail(problem) from None


app = typer.Typer(
    cls=_KwxGroup,
    help="kwx: Kalshi daily-high-temperature models — data, walk-forward training in MLflow, "
    "gated promotion and real-time signals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate model and real-time configs.", no_args_is_help=True)
db_app = typer.Typer(help="Create and migrate the kwx database (alembic).", no_args_is_help=True)
data_app = typer.Typer(help="Demo data, coverage summary.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
ingest_app = typer.Typer(help="Fetch real data: Kalshi markets/candles/settlements, Visual Crossing weather.",
                         no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
rt_app = typer.Typer(help="Real-time loop status.", no_args_is_help=True)
app.add_typer(rt_app, name="rt")
models_app = typer.Typer(help="Registered window models: list and resolve by date.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
audit_app = typer.Typer(help="Audits: time alignment of the data (LST), feature stability of a training run.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")
runs_app = typer.Typer(help="MLflow runs kwx started: end those whose process died.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

# Logs and pipes get 140 columns rather than rich's 80, so tables stay readable in CI output.
_PIPE_WIDTH = None if sys.stdout.isatty() else 140
console = Console(soft_wrap=True, width=_PIPE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

def _checked_db_url(ctx: typer.Context, value: str | None) -> str | None:
    """--db-url (or $KWX_DATABASE_URL): a URL of a supported database whose driver is installed."""
    from kwx.data.db import DATABASE_URL_ENV, DatabaseUrlError, check_url

    url = database_url(value)
    try:
        check_url(url)
    except DatabaseUrlError as exc:
        raise fail(f"{'--db-url' if value else '$' + DATABASE_URL_ENV}: {exc}") from None
    ctx.meta[_DATABASE_META_KEY] = url
    return value


DbUrlOption = Annotated[
    str | None,
    typer.Option("--db-url", help="SQLAlchemy URL; default $KWX_DATABASE_URL or sqlite:///kwx.db", show_default=False,
                 callback=_checked_db_url),
]


def _city_key(value: str | None) -> str | None:
    """--city: a known city key, checked before it reaches a query or an MLflow filter."""
    from kwx.cities import get_city

    if value is not None:
        try:
            get_city(value)
        except ValueError as exc:
            raise fail(f"--city: {exc}") from None
    return value


def _bracket_name(value: str | None) -> str | None:
    from kwx.domain.markets import BRACKETS

    if value is not None and value not in BRACKETS:
        raise fail(f"--bracket: unknown bracket {value!r}; known brackets: {', '.join(BRACKETS)}")
    return value


def _stage_name(value: str | None) -> str | None:
    """--stage: Staging or Production (any case), returned as the registry spells it."""
    stages = ("Staging", "Production")
    if value is None:
        return None
    canonical = {s.lower(): s for s in stages}.get(value.lower())
    if canonical is None:
        raise fail(f"--stage: unknown stage {value!r}; known stages: {', '.join(stages)}")
    return canonical


def progress(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err_console, transient=transient,
    )


def open_engine(db_url: str | None):
    """An engine on a database at the migration head, or a clear error and exit."""
    from kwx.data.db import make_engine

    engine = make_engine(db_url)
    try:
        migrations.require_head(engine)
    except migrations.SchemaNotReadyError as exc:
        engine.dispose()
        raise fail(str(exc)) from None
    return engine


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {redact(message)}", highlight=False)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"kwx {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """kwx command line."""


@config_app.command("validate")
def config_validate(
    path: Annotated[Path, typer.Argument(help="YAML config file.")],
    kind: Annotated[str, typer.Option(help=f"Config kind: {', '.join(CONFIG_KINDS)}.")] = "train",
) -> None:
    """Validate a config: one OK line, or every failing field with the rule it broke."""
    if kind not in CONFIG_KINDS:
        raise fail(f"unknown config kind {kind!r}; expected one of {', '.join(CONFIG_KINDS)}")
    try:
        cfg = load_config(path, CONFIG_KINDS[kind])
        if isinstance(cfg, MatrixConfig):  # its member configs are files of their own: validate them too
            cfg.load_members()
    except ConfigError as exc:
        err_console.print(f"[bold red]invalid config[/] {exc.source}:", highlight=False)
        for problem in exc.problems:
            err_console.print(f"  - {problem}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]OK[/] {path}: {cfg.summary()}", highlight=False)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    db_url: DbUrlOption = None,
) -> None:
    """Migrate the database up to a revision (default: head), creating it if needed."""
    try:
        migrations.upgrade(db_url, revision)
    except migrations.MigrationError as exc:
        raise fail(str(exc)) from None
    console.print(f"database {redact(database_url(db_url))} at revision {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops every kwx table).")] = "-1",
    db_url: DbUrlOption = None,
) -> None:
    """Migrate the database down (default: one revision)."""
    try:
        migrations.downgrade(db_url, revision)
    except migrations.MigrationError as exc:
        raise fail(str(exc)) from None
    console.print(f"database {redact(database_url(db_url))} downgraded to {revision}")


@db_app.command("current")
def db_current(db_url: DbUrlOption = None) -> None:
    """Show the database's revision and whether it is at head."""
    from kwx.data.db import make_engine

    engine = make_engine(db_url)
    try:
        current = migrations.current_revision(engine)
    finally:
        engine.dispose()
    head = migrations.head_revision()
    state = "at head" if current == head else f"behind head {head}: run `kwx db upgrade`"
    console.print(f"{redact(database_url(db_url))}: revision {current or '(none)'} ({state})")


def _parse_cities(value: str) -> list[str]:
    from kwx.cities import CITIES, get_city

    if value.strip() == "all":
        return list(CITIES)
    cities = [c.strip() for c in value.split(",") if c.strip()]
    if not cities:
        raise typer.BadParameter("give at least one city")
    for city in cities:
        try:
            get_city(city)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return cities


DEMO_START = "2025-05-01"
DEMO_END = "2025-11-15"
MarketSkillOption = Annotated[float, typer.Option(
    "--market-skill", help="How informed the demo market is, 0..1: 0 = it lags the weather (day bias, slow noise, "
    "inflated uncertainty), 1 = it prices with exactly what a well-informed forecaster knows. Only the quotes change.")]


@data_app.command("demo")
def data_demo(
    cities: Annotated[str, typer.Option(help="Comma-separated city keys, or 'all'.")] = "chicago",
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First event day.")] = DEMO_START,
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last event day.")] = DEMO_END,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.", min=0, max=2**32 - 1)] = 42,
    market_skill: MarketSkillOption = DEFAULT_MARKET_SKILL,
    db_url: DbUrlOption = None,
) -> None:
    """Generate realistic demo markets, candles, weather and settlements, and upsert them (idempotent)."""
    from kwx.data.db import make_engine
    from kwx.data.demo import check_market_skill, load_demo

    city_list = _parse_cities(cities)
    _check_range(start, end)
    try:
        check_market_skill(market_skill, "--market-skill")
    except ValueError as exc:
        raise fail(str(exc)) from None
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task("demo data", total=len(city_list))

            def done(city: str, written: dict[str, int]) -> None:
                bar.update(task, advance=1, description=f"{city}: {written['candles']:,} candles")

            totals = load_demo(engine, city_list, start.date(), end.date(), seed, market_skill=market_skill,
                               on_city_done=done)
    finally:
        engine.dispose()
    console.print(
        f"demo data for {', '.join(city_list)} {start:%Y-%m-%d}..{end:%Y-%m-%d} (seed {seed}, "
        f"market skill {market_skill:g}): "
        + ", ".join(f"{n:,} {table}" for table, n in totals.items())
    )


@data_app.command("summary")
def data_summary(db_url: DbUrlOption = None) -> None:
    """Per-city counts and date coverage of markets, candles, weather and settlements."""
    from rich.table import Table

    from kwx.data.store import coverage_summary

    engine = open_engine(db_url)
    try:
        summary = coverage_summary(engine)
    finally:
        engine.dispose()
    if summary.empty:
        raise fail(f"no data in {redact(database_url(db_url))}: run `kwx data demo` or `kwx ingest ...`")
    table = Table(title=f"kwx data in {redact(database_url(db_url))}")
    for column in ("city", "markets", "candles", "event days", "settled", "weather obs", "weather (UTC)"):
        table.add_column(column, justify="left" if column in ("city", "event days", "weather (UTC)") else "right")

    def span(first, last) -> str:
        return "" if pd.isna(first) else f"{pd.Timestamp(first):%Y-%m-%d}..{pd.Timestamp(last):%Y-%m-%d}"

    for row in summary.itertuples(index=False):
        table.add_row(row.city, f"{row.markets:,}", f"{row.candles:,}", span(row.first_event, row.last_event),
                      f"{row.settled_days:,}", f"{row.weather_obs:,}", span(row.weather_from, row.weather_to))
    console.print(table)


def _parse_overrides(values: list[str]) -> dict[str, object]:
    """key=value pairs (repeatable or comma-separated); values are YAML, so numbers stay numbers."""
    import yaml

    overrides = {}
    for item in (part for value in values for part in value.split(",") if part.strip()):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"override {item!r} is not key=value")
        try:
            overrides[key.strip()] = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise fail(f"--set {item!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})"
                       ) from None
    return overrides


def _load_train_config(config: Path, overrides: dict):
    try:
        return load_config(config, overrides=overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _check_range(start: datetime, end: datetime) -> None:
    if end < start:
        raise fail(f"--end ({end:%Y-%m-%d}) is before --start ({start:%Y-%m-%d})")


def _report_ingest(summary, what: str) -> None:
    console.print(f"{what}: {summary.markets:,} markets, {summary.candles:,} candles, "
                  f"{summary.weather:,} weather rows, {summary.settled_days:,} settled days")
    if summary.failures:
        for failure in summary.failures:
            err_console.print(f"[red]failed:[/] {redact(failure)}", highlight=False)
        raise typer.Exit(1)


@ingest_app.command("kalshi")
def ingest_kalshi_command(
    series: Annotated[str, typer.Option(help="Kalshi series ticker, e.g. KXHIGHCHI.")],
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First event day.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last event day.")],
    base_url: Annotated[str | None, typer.Option(help="API base URL (default: production).")] = None,
    demo_env: Annotated[bool, typer.Option("--demo-env", help="Use Kalshi's demo environment.")] = False,
    db_url: DbUrlOption = None,
) -> None:
    """Markets, 1-minute candles and settlements of a series; re-running the same range changes nothing."""
    from kwx.cities import city_for_series
    from kwx.data.clients.http import FetchError, PayloadError
    from kwx.data.clients.kalshi import DEMO_URL, PRODUCTION_URL, KalshiClient
    from kwx.data.ingestion import ingest_kalshi
    from kwx.rt.clock import SystemClock

    try:
        city_for_series(series)
    except ValueError as exc:
        raise fail(str(exc)) from None
    _check_range(start, end)
    configure_logging()
    client = KalshiClient(base_url or (DEMO_URL if demo_env else PRODUCTION_URL))
    engine = open_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task(f"{series} markets", total=None)

            def step(ticker: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=ticker)

            summary = ingest_kalshi(engine, client, series, start.date(), end.date(), now=SystemClock().now(),
                                    progress=step)
    except (FetchError, PayloadError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
        client.http.close()
    _report_ingest(summary, f"{series} {start:%Y-%m-%d}..{end:%Y-%m-%d}")


@ingest_app.command("vc")
def ingest_vc_command(
    city: Annotated[str, typer.Option(help="City key, e.g. chicago.")],
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First climate day.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last climate day.")],
    base_url: Annotated[str | None, typer.Option(help="Timeline API base URL.")] = None,
    db_url: DbUrlOption = None,
) -> None:
    """Station-locked minute weather from Visual Crossing (key from VC_API_KEY)."""
    from kwx.cities import get_city
    from kwx.data.clients.http import FetchError, PayloadError
    from kwx.data.clients.visual_crossing import BASE_URL, MissingApiKeyError, VisualCrossingClient, api_key_from_env
    from kwx.data.ingestion import ingest_vc

    try:
        get_city(city)
        client = VisualCrossingClient(api_key_from_env(), base_url or BASE_URL)
    except (ValueError, MissingApiKeyError) as exc:
        raise fail(str(exc)) from None
    _check_range(start, end)
    configure_logging()
    engine = open_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task(f"{city} weather", total=None)
            summary = ingest_vc(engine, client, city, start.date(), end.date(),
                                progress=lambda _s, done, total: bar.update(task, completed=done, total=total))
    except (FetchError, PayloadError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
        client.http.close()
    _report_ingest(summary, f"{city} weather {start:%Y-%m-%d}..{end:%Y-%m-%d}")


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Model config YAML (configs/...).")] = None,
    matrix: Annotated[Path | None, typer.Option(
        help="Matrix YAML (configs/matrix.yaml): train each of its configs, one registered model each.")] = None,
    all_configs: Annotated[bool, typer.Option(
        "--all", help="Train every configs/elasticnet_*.yaml (each city × bracket).")] = False,
    skip_missing: Annotated[bool, typer.Option(
        "--skip-missing", help="With --matrix/--all: train the configs that can, report those that cannot.")] = False,
    plan_only: Annotated[bool, typer.Option("--plan", help="Print the windows and row counts; train nothing.")] = False,
    workers: Annotated[int | None, typer.Option(help="Parallel window workers (default: CPU cores).", min=1)] = None,
    trials: Annotated[int | None, typer.Option(help="Override the config's Optuna trials.", min=1)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value (dotted keys).")] = None,
    optuna_storage: Annotated[str | None, typer.Option(
        help="Optuna storage: in-memory by default, journal:PATH, or an RDB URL (postgresql://...) shared by "
        "workers on several hosts.")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default kwx-{city}-{bracket}).")] = None,
    db_url: DbUrlOption = None,
) -> None:
    """Walk-forward training: one MLflow run per window, one registered model version per window
    (--matrix/--all: each config in turn, one parent run and registered model each)."""
    from kwx.training import runner

    overrides = _parse_overrides(set_ or [])
    if trials is not None:
        overrides["trials"] = trials
    if [config is not None, matrix is not None, all_configs].count(True) != 1:
        raise fail("give exactly one of --config, --matrix or --all")
    if config is None:
        _train_matrix(matrix, overrides, plan_only=plan_only, workers=workers, skip_missing=skip_missing,
                      optuna_storage=optuna_storage, experiment=experiment, db_url=db_url)
        return
    if skip_missing:
        raise fail("--skip-missing applies to --matrix and --all")
    cfg = _load_train_config(config, overrides)
    engine = open_engine(db_url)
    try:
        prepared = runner.prepare(cfg, engine)
        if plan_only:
            _print_plan(cfg, *prepared[::2])
            return
        n_workers = workers or runner.default_workers()
        with progress() as bar:
            task = bar.add_task(f"training {cfg.city}/{cfg.bracket}", total=None)

            def done(window: str, result) -> None:
                loss = result.metrics["test_log_loss"]
                bar.update(task, advance=1, description=f"{window}: test log loss {loss:.4f}")

            summary = runner.train(cfg, engine, workers=n_workers, optuna_storage_spec=optuna_storage,
                                   experiment=experiment, config_text=config.read_text(), on_window_done=done,
                                   prepared=prepared)
    except _training_errors() as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    _print_training(summary)


def _training_errors() -> tuple[type[Exception], ...]:
    """Bad input to training, a search worker or a matrix (prepare's errors), an unreachable tracking store, a
    shared study whose other workers never finished: each is one error line and exit 2."""
    from kwx.tracking import TrackingUnavailableError
    from kwx.training.runner import PREPARE_ERRORS
    from kwx.training.search import SearchTimeoutError

    return (*PREPARE_ERRORS, TrackingUnavailableError, SearchTimeoutError)


def _train_matrix(matrix_path: Path | None, overrides: dict, *, plan_only: bool, workers: int | None,
                  skip_missing: bool, optuna_storage: str | None, experiment: str | None,
                  db_url: str | None) -> None:
    """`kwx train --matrix/--all`: prepare every config (one line per failing one), then train them in turn."""
    from kwx.training import matrix, runner

    try:
        members = matrix.load_all(overrides) if matrix_path is None else matrix.load_matrix(matrix_path, overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]invalid matrix[/] {exc.source}:", highlight=False)
        for problem in exc.problems:
            err_console.print(f"  - {problem}", highlight=False)
        raise typer.Exit(2) from None
    engine = open_engine(db_url)
    try:
        with progress(transient=True) as bar:
            task = bar.add_task("preparing", total=len(members))
            entries, failures = matrix.prepare_all(
                members, engine, on_prepared=lambda path: bar.update(task, advance=1, description=path.name))
        for path, reason in failures.items():
            err_console.print(f"[red]cannot train[/] {path.name}: {reason}", highlight=False)
        if failures and not skip_missing:
            raise fail(f"{len(failures)} of {len(members)} configs cannot train, nothing was trained "
                       "(--skip-missing trains the others)")
        if not entries:
            raise fail("no config of the matrix can train")
        if plan_only:
            for entry in entries:
                _print_plan(entry.config, *entry.prepared[::2])
            return
        with progress() as bar:
            configs_task = bar.add_task("configs", total=len(entries))
            windows_task = bar.add_task("windows", total=sum(e.usable_windows for e in entries))

            def start(entry) -> None:
                bar.update(configs_task, completed=entries.index(entry),
                           description=f"training {entry.config.city}/{entry.config.bracket}")

            def done(entry, window: str, result) -> None:
                bar.update(windows_task, advance=1,
                           description=f"{window}: test log loss {result.metrics['test_log_loss']:.4f}")

            results = matrix.train_matrix(entries, engine, workers=workers or runner.default_workers(),
                                          optuna_storage_spec=optuna_storage, experiment=experiment,
                                          on_config_start=start, on_window_done=done)
            bar.update(configs_task, completed=len(entries), description="configs")
    except _training_errors() as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    _print_matrix(results, failures)


def _print_matrix(results, skipped: dict) -> None:
    from rich.table import Table

    table = Table(title=f"trained {len(results)} configs")
    for column in ("config", "model", "windows", "log loss", "market log loss", "ece", "seconds"):
        table.add_column(column)
    for r in (result.row() for result in results):
        table.add_row(r["config"], r["model"], str(r["windows"]), f"{r['test_log_loss']:.4f}",
                      f"{r['market_log_loss']:.4f}", f"{r['test_ece']:.4f}", f"{r['seconds']:.1f}")
    console.print(table)
    for path, reason in skipped.items():
        console.print(f"[yellow]skipped[/] {path.name}: {reason}", highlight=False)
    windows = sum(len(r.summary.versions) for r in results)
    console.print(f"{len(results)} configs, {windows} windows in {sum(r.seconds for r in results):.1f} s")


@app.command("search-worker")
def search_worker(
    config: Annotated[Path, typer.Option("--config", "-c", help="The coordinator's model config YAML.")],
    optuna_storage: Annotated[str, typer.Option(
        help="The coordinator's shared Optuna storage: an RDB URL (postgresql+psycopg2://...) or journal:PATH.")],
    workers: Annotated[int, typer.Option(help="Windows searched in parallel on this host.", min=1)] = 1,
    trials: Annotated[int | None, typer.Option(help="The coordinator's --trials, if it gave one.", min=1)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="The coordinator's overrides key=value.")] = None,
    db_url: DbUrlOption = None,
) -> None:
    """Extra Optuna trials for a `kwx train --optuna-storage URL` run, from this host; logs nothing to MLflow.

    With the coordinator's config, overrides and storage it joins the same per-window studies until each is full.
    """
    from kwx.training.search_worker import run_worker

    overrides = _parse_overrides(set_ or [])
    if trials is not None:
        overrides["trials"] = trials
    cfg = _load_train_config(config, overrides)
    engine = open_engine(db_url)
    try:
        summary = run_worker(cfg, engine, optuna_storage, workers=workers, on_window_done=lambda window, count:
                             console.print(f"{window}: {count} trial(s) run here", highlight=False))
    except _training_errors() as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(f"studies {summary.study_prefix}-*: {sum(summary.trials.values())} trial(s) over "
                  f"{len(summary.trials)} window(s) in {summary.seconds:.1f} s", highlight=False)


def _print_plan(cfg, frame, plans) -> None:
    from rich.table import Table

    table = Table(title=f"{cfg.city}/{cfg.bracket} walk-forward plan ({len(frame):,} sampled rows)")
    for column in ("window", "train", "test", "train rows", "test rows", "status"):
        table.add_column(column)
    for p in plans:
        w = p.window
        table.add_row(w.name, f"{w.train_start}..{w.train_end} ({p.train_days}d)",
                      f"{w.test_start}..{w.test_end} ({p.test_days}d)", f"{p.n_train:,}", f"{p.n_test:,}",
                      "ok" if p.usable else f"skip: {p.skip_reason}")
    console.print(table)


def _print_training(summary) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.model_name}: parent run {summary.parent_run_id}")
    for column in ("window", "version", "log loss", "market log loss", "brier", "ece", "auc"):
        table.add_column(column)
    for window, m in summary.window_metrics.items():
        table.add_row(window, summary.versions[window], f"{m['test_log_loss']:.4f}", f"{m['market_log_loss']:.4f}",
                      f"{m['test_brier']:.4f}", f"{m['test_ece']:.4f}", f"{m['test_auc']:.3f}")
    console.print(table)
    for window, reason in summary.skipped.items():
        console.print(f"[yellow]skipped[/] {window}: {reason}")
    t = summary.timings
    console.print(f"{len(summary.versions)} windows in {t['wall_seconds']:.1f} s "
                  f"({t['seconds_per_fit']:.2f} s per fit, MLflow {100 * t['mlflow_fraction']:.1f} %)")


def _tracking_or_fail():
    from mlflow.tracking import MlflowClient

    from kwx import tracking

    try:
        tracking.configure()
    except tracking.TrackingUnavailableError as exc:
        raise fail(str(exc)) from None
    return MlflowClient()


def _require_training_run(client, run_id: str) -> None:
    """--run-id: an existing kwx training (parent) run of the tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise fail(f"--run-id: no run {run_id!r} in the tracking store {mlflow.get_tracking_uri()}") from None
    if run.data.tags.get("kwx.kind") != "train":
        raise fail(f"--run-id: run {run_id!r} is not a kwx training (parent) run")


def _resolve_run_id(client, run_id: str | None, city: str | None, bracket: str | None) -> str:
    from kwx.report import latest_training_run

    if run_id:
        _require_training_run(client, run_id)
        return run_id
    if not (city and bracket):
        raise fail("give --run-id, or --city and --bracket for the latest training run")
    try:
        return latest_training_run(client, city, bracket)
    except LookupError as exc:
        raise fail(str(exc)) from None


@contextmanager
def _training_run(run_id: str | None, city: str | None, bracket: str | None, db_url: str | None):
    """(MLflow client, the training run's id, an engine at the migration head); the engine is disposed after."""
    client = _tracking_or_fail()
    run = _resolve_run_id(client, run_id, city, bracket)
    engine = open_engine(db_url)
    try:
        yield client, run, engine
    finally:
        engine.dispose()


RunIdOption = Annotated[str | None, typer.Option(help="Training (parent) run id.")]
CityOption = Annotated[str | None, typer.Option(help="City key, e.g. chicago.", callback=_city_key)]
BracketOption = Annotated[str | None, typer.Option(help="between, greater or less.", callback=_bracket_name)]


@app.command()
def report(run_id: RunIdOption = None, city: CityOption = None, bracket: BracketOption = None,
           db_url: DbUrlOption = None) -> None:
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
        console.print(("[green]" if check.passed else "[red]") + check.line(), highlight=False)
    verdict = "[green]PASS" if result.passed else "[red]FAIL"
    console.print(f"{verdict}[/] acceptance report written to {result.directory} and logged to run {run}")
    if not result.passed:
        raise typer.Exit(1)


@runs_app.command("clean")
def runs_clean(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be failed; change nothing.")] = False,
    other_hosts_hours: Annotated[float, typer.Option(
        help="Also fail RUNNING runs of other hosts (or of no recorded host) started more than this many hours "
        "ago: their process cannot be checked from here.", min=0.0)] = 48.0,
) -> None:
    """End as FAILED every RUNNING kwx run whose process is gone: on this host, its recorded pid no longer
    names the process that started it (a killed `kwx train`); on other hosts, it is older than
    --other-hosts-hours. One line per run; exit 0."""
    from kwx import runs

    if not math.isfinite(other_hosts_hours):
        raise fail(f"--other-hosts-hours: must be a finite number of hours, not {other_hosts_hours}")
    verdicts = runs.clean(_tracking_or_fail(), other_hosts_hours=other_hosts_hours, dry_run=dry_run)
    for verdict in verdicts:
        console.print(verdict.line(dry_run), style="red" if verdict.dead else "dim", markup=False, highlight=False)
    if not any(v.dead for v in verdicts):
        console.print("no RUNNING kwx run is dead", highlight=False)


@audit_app.command("time")
def audit_time(
    cities: Annotated[str | None, typer.Option(
        help="Comma-separated city keys (default: every city with markets).", show_default=False)] = None,
    start: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="First climate day (default: each city's first event day).",
        show_default=False)] = None,
    end: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="Last climate day (default: each city's last event day).",
        show_default=False)] = None,
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
    and measure how far the observed daily maximum runs above the settlement (the lock margin it needs).

    Exit 0 when clean, 1 when anything is flagged (DST transition days are informational).
    """
    from datetime import timedelta

    from kwx.audit.time_alignment import AUDIT_ROOT, city_table, run_audit

    city_list = _parse_cities(cities) if cities else None
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
    for city, reason in audit.skipped.items():
        console.print(f"[yellow]skipped[/] {city}: {reason}", highlight=False)
    for flag in audit.flags:
        console.print(f"[red]FLAG[/] {flag}", highlight=False)
    verdict = "[green]ALIGNED" if audit.passed else f"[red]{len(audit.flags)} FLAG(S)"
    console.print(f"{verdict}[/] time alignment audit written to {audit.path}", highlight=False)
    if not audit.passed:
        raise typer.Exit(1)


@audit_app.command("features")
def audit_features(
    run_id: RunIdOption = None, city: CityOption = None, bracket: BracketOption = None,
    repeats: Annotated[int, typer.Option(help="Permutation repeats per feature and window.", min=1)] = 5,
    db_url: DbUrlOption = None,
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


@app.command()
def promote(
    run_id: RunIdOption = None, city: CityOption = None, bracket: BracketOption = None,
    stage: Annotated[str, typer.Option(help="Staging or Production.", callback=_stage_name)] = "Production",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the gates and show what would move.")] = False,
    keep_existing: Annotated[bool, typer.Option(
        "--keep-existing", help="Do not archive overlapping versions already in the stage.")] = False,
    reason: Annotated[str, typer.Option(help="Why: recorded as a version tag.")] = "",
    db_url: DbUrlOption = None,
) -> None:
    """Promote every window version of a training run to a stage, only if the acceptance gates hold.

    Exit 0 when promoted (with --dry-run: when it would be), 1 when refused (each failing gate is printed),
    2 on bad input (unknown stage, not a training run, tracking store or database unavailable).
    """
    from kwx.registry.promotion import PromotionRefused
    from kwx.registry.promotion import promote as do_promote
    from kwx.report import infrastructure_checks
    from kwx.rt.clock import SystemClock

    with _training_run(run_id, city, bracket, db_url) as (client, run, engine):
        try:
            result = do_promote(client, run, stage, now=SystemClock().now(), dry_run=dry_run,
                                infrastructure=infrastructure_checks(engine, client, run),
                                archive_existing=not keep_existing, reason=reason)
        except PromotionRefused as exc:
            err_console.print(f"[bold red]promotion of run {run} to {stage} refused:[/]", highlight=False)
            for check in exc.failing:
                err_console.print(f"  - {check.line()}", highlight=False)
            raise typer.Exit(1) from None
        except ValueError as exc:
            raise fail(str(exc)) from None
    verb = "would promote" if result.dry_run else "promoted"
    console.print(f"{verb} {result.name} versions {', '.join(result.promoted)} of run {run} to {result.stage}"
                  + (f"; archived {', '.join(result.archived)}" if result.archived else ""))
    for note in result.notes:
        console.print(note)


@models_app.command("list")
def models_list(
    city: Annotated[str | None, typer.Option(help="City key (with --bracket: that model's versions).",
                                             callback=_city_key)] = None,
    bracket: Annotated[str | None, typer.Option(help="between, greater or less (with --city).",
                                                callback=_bracket_name)] = None,
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
    city: Annotated[str, typer.Option(help="City key.", callback=_city_key)],
    bracket: Annotated[str, typer.Option(help="between, greater or less.", callback=_bracket_name)],
    date_: Annotated[datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="Trading (climate) day.")],
    stage: Annotated[str, typer.Option(help="Registry stage to trade.", callback=_stage_name)] = "Production",
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


RT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "rt.yaml"


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
) -> None:
    """The real-time signal loop (dry run: signals are written to rt_signals, no orders are placed)."""
    import logging

    from kwx.config import RtConfig
    from kwx.rt import replay as replay_mod

    try:
        cfg = load_config(config, RtConfig)
    except ConfigError as exc:
        raise fail(str(exc)) from None
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


@app.command()
def backtest(
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First event (settlement) day.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last event (settlement) day.")],
    city: Annotated[str | None, typer.Option(help="City key (default: every market of the rt config).",
                                             callback=_city_key)] = None,
    bracket: Annotated[str | None, typer.Option(help="between, greater or less (with --city).",
                                                callback=_bracket_name)] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="rt config: blend, risk, fees, execution.")
                      ] = RT_CONFIG,
    run_id: Annotated[str | None, typer.Option(
        help="Training run whose windows trade (default: the latest finished run of each city/bracket).")] = None,
    stage: Annotated[str | None, typer.Option(help="Trade the versions in this registry stage instead.",
                                              callback=_stage_name)] = None,
    blend_grid: Annotated[str | None, typer.Option(
        help="Blend weights START:STOP:STEP, one child run each (e.g. 0.5:0.8:0.05); the best one trades.")] = None,
    metric: Annotated[str, typer.Option(help="How the grid picks the best weight: daily_sharpe, total_pnl, "
                                             "roi_on_capital or hit_rate.")] = "daily_sharpe",
    write_rt_config: Annotated[bool, typer.Option(
        "--write-rt-config", help="Write the grid's best blend weight back into --config.")] = False,
    db_url: DbUrlOption = None,
) -> None:
    """Maker-first backtest over history through the live signal path, with baselines; logged to MLflow."""
    from kwx.backtest.runner import BacktestError, parse_grid, run_backtest
    from kwx.config import RtConfig, write_top_level_value
    from kwx.data.dataset import DatasetError

    try:
        cfg = load_config(config, RtConfig)
    except ConfigError as exc:
        raise fail(str(exc)) from None
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


def _print_backtest(run) -> None:
    from rich.table import Table

    table = Table(title=f"backtest: models from {'; '.join(run.sources)}")
    for column in ("strategy", "PnL $", "ROI", "daily Sharpe", "max DD $", "hit rate", "fill rate", "fees $",
                   "fills", "positions"):
        table.add_column(column)
    rows = [(f"blend w={r.blend_weight:.2f}", r) for r in run.grid] if run.grid else [
        (f"blend w={run.strategy.blend_weight:.2f}", run.strategy)]
    rows += [(f"{name.replace('_', ' ')} (w={r.blend_weight:g})", r) for name, r in run.baselines.items()]
    for label, r in rows:
        s = r.summary
        best = " *" if run.grid and r is run.strategy else ""
        table.add_row(label + best, f"{s['total_pnl']:,.2f}", f"{s['roi_on_capital']:.2%}", f"{s['daily_sharpe']:.3f}",
                      f"{s['max_drawdown']:,.2f}", f"{s['hit_rate']:.1%}", f"{s['fill_rate']:.1%}",
                      f"{s['fees_paid']:,.2f}", f"{s['n_fills']:,.0f}", f"{s['n_positions']:,.0f}")
    console.print(table)
    if run.demo_data:
        console.print("[yellow]note:[/] these are `kwx data demo` markets, quoted by a simulated market of chosen "
                      "skill: their P&L and ROI say nothing about a real market.", highlight=False)
    if run.grid:
        console.print(f"best blend weight by {run.metric}: {run.best_weight:g} (marked *)")
    t = run.timings
    console.print(f"{t['decision_rows']:,.0f} minute × market decisions; load {t['load_seconds']:.1f} s, "
                  f"trade {t['simulate_seconds']:.1f} s, MLflow {t['log_seconds']:.1f} s; "
                  f"run {run.run_id} in experiment {run.experiment_id}")


DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "elasticnet_chi_between.yaml"


@app.command()
def demo(
    db_url: DbUrlOption = None,
    seed: Annotated[int, typer.Option(help="Demo data seed.", min=0, max=2**32 - 1)] = 42,
    trials: Annotated[int, typer.Option(help="Optuna trials per window (the config says 40).", min=1)] = 20,
    workers: Annotated[int | None, typer.Option(help="Parallel window workers (default: CPU cores).", min=1)] = None,
    market_skill: MarketSkillOption = DEFAULT_MARKET_SKILL,
) -> None:
    """Run the main job end to end on the embedded default: data, training, report, promotion, resolution,
    backtest and a replayed trading day.

    Exit 1 when the trained run fails its acceptance report: promotion, resolution and the replay are then
    skipped (the backtest still runs).
    """
    url = database_url(db_url)
    console.rule("[bold]kwx demo")
    console.print(f"1. database {redact(url)}")
    migrations.upgrade(url)
    console.print(f"   migrated to {migrations.head_revision()}")
    console.rule("2. demo data")
    data_demo(cities="chicago", start=datetime.fromisoformat(DEMO_START), end=datetime.fromisoformat(DEMO_END),
              seed=seed, market_skill=market_skill, db_url=url)
    console.rule(f"3. walk-forward training ({DEMO_CONFIG.name}, {trials} trials per window)")
    train(config=DEMO_CONFIG, plan_only=False, workers=workers, trials=trials, set_=None, optuna_storage=None,
          experiment=None, db_url=url)
    console.rule("4. acceptance report")
    try:
        report(run_id=None, city="chicago", bracket="between", db_url=url)
        accepted = True
    except typer.Exit as exc:
        if exc.exit_code != 1:
            raise
        accepted = False  # a FAIL verdict: the run must not be promoted, but the backtest still says why
    if accepted:
        console.rule("5. promotion to Production")
        promote(run_id=None, city="chicago", bracket="between", stage="Production", dry_run=False,
                keep_existing=False, reason="kwx demo: gates passed", db_url=url)
        models_list(city="chicago", bracket="between")
        console.rule("6. which model trades which day")
        for day in ("2025-09-15", "2025-10-20", "2025-07-01"):
            try:
                models_resolve(city="chicago", bracket="between", date_=datetime.fromisoformat(day),
                               stage="Production")
            except typer.Exit:
                console.print("   (expected: no promoted window covers a day before the first test week)")
    else:
        console.print("[yellow]5-6 skipped:[/] the run failed its acceptance gates (above), so it is not promoted "
                      "and there is no new Production model to resolve.", highlight=False)
    console.rule("7. backtest of the test weeks 2025-07-30..2025-09-23, blend grid 0.5:0.8:0.1 (maker-first)")
    backtest(start=datetime.fromisoformat("2025-07-30"), end=datetime.fromisoformat("2025-09-23"), city="chicago",
             bracket="between", config=RT_CONFIG, run_id=None, stage=None, blend_grid="0.5:0.8:0.1",
             metric="daily_sharpe", write_rt_config=False, db_url=url)
    if not accepted:
        # The replay trades the Production stage, which this run never reached.
        console.print("[yellow]8 skipped:[/] the replay trades Production models; the demo ends with exit 1 "
                      "because its run failed acceptance.", highlight=False)
        raise typer.Exit(1)
    console.rule("8. replayed trading day (serve-rt --replay 2025-09-15, simulated clock, dry run)")
    serve_rt(config=RT_CONFIG, replay=datetime.fromisoformat("2025-09-15"), speed="max", max_ticks=None, top=10,
             db_url=url)
