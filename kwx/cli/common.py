"""What every command group shares: the app, its consoles, `fail`, progress, and the option types."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand, TyperGroup

from kwx import __version__
from kwx.config import ConfigError, load_config
from kwx.data import migrations
from kwx.data.db import database_url
from kwx.secrets import redact

# Where the --db-url callback leaves the database a command uses, for the error line of a failure.
_DATABASE_META_KEY = "kwx.database_url"

# The rt config `serve-rt` and `backtest` read unless given --config: the user's, relative to the working
# directory (`kwx init` writes the sample there), never a file inside the installed package.
RT_CONFIG = Path("configs") / "rt.yaml"


def _flag_help(param: click.Parameter) -> click.Parameter:
    """typer's rich help prints a boolean flag as `--dry-run <bool>`, as if it took a value; an empty metavar
    leaves its type column blank, as click's plain help does."""
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    return param


class _FlagsAsFlags:
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        # All of them, --help and typer's completion options included, however they were added.
        return [_flag_help(param) for param in super().get_params(ctx)]


class KwxCommand(_FlagsAsFlags, TyperCommand):
    """A kwx command: its boolean flags read as flags in --help."""


class KwxGroup(_FlagsAsFlags, TyperGroup):
    """A kwx command group: its boolean flags read as flags in --help."""


class _RootGroup(KwxGroup):
    """Runs every command inside one mapping of database and disk failures (unreachable, read-only, full), and of
    stored fee data kwx cannot price, to an error line and exit 2, wherever in the command they happen."""

    def invoke(self, ctx: click.Context):
        from kwx.data.db import DATABASE_FAILURES, database_problem
        from kwx.domain.fees import UnpricedFeeError

        try:
            return super().invoke(ctx)
        except UnpricedFeeError as exc:
            raise fail(str(exc)) from None
        except DATABASE_FAILURES as exc:
            problem = database_problem(exc, ctx.meta.get(_DATABASE_META_KEY))
            if problem is None:
                raise
            raise fail(problem) from None


class KwxTyper(typer.Typer):
    """A Typer whose groups and commands show boolean flags as flags in --help."""

    def __init__(self, *, cls: type[TyperGroup] = KwxGroup, **kwargs):
        super().__init__(cls=cls, no_args_is_help=True, **kwargs)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] = KwxCommand, **kwargs):
        return super().command(name, cls=cls, **kwargs)


app = KwxTyper(
    cls=_RootGroup,
    help="kwx: Kalshi daily-high-temperature models — data, walk-forward training in MLflow, "
    "gated promotion and real-time signals.",
    pretty_exceptions_enable=False,
)

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


_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def _tracking_uri(ctx: typer.Context, value: str | None) -> str | None:
    """--tracking-uri: $MLFLOW_TRACKING_URI for this command, so MLflow, kwx.tracking and the worker processes a
    command starts all read the same store; the previous value is restored when the command ends."""
    if value is not None:
        saved = os.environ.get(_TRACKING_URI_ENV)
        os.environ[_TRACKING_URI_ENV] = value
        ctx.call_on_close(lambda: _restore_env(_TRACKING_URI_ENV, saved))
    return value


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


TrackingUriOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db",
                 show_default=False, callback=_tracking_uri),
]


def _known_city(value: str) -> str:
    """A known city key, checked before it reaches a query or an MLflow filter."""
    from kwx.cities import get_city

    try:
        get_city(value)
    except ValueError as exc:
        raise fail(f"--city: {exc}") from None
    return value


def _city_key(value: str | None) -> str | None:
    return None if value is None else _known_city(value)


def _bracket_name(value: str | None) -> str | None:
    from kwx.domain.markets import BRACKETS

    if value is not None and value not in BRACKETS:
        raise fail(f"--bracket: unknown bracket {value!r}; known brackets: {', '.join(BRACKETS)}")
    return value


def _stage_name(value: str | None) -> str | None:
    """--stage: Staging or Production (any case), returned as the registry spells it."""
    from kwx.registry.promotion import STAGES, canonical_stage

    if value is None:
        return None
    canonical = canonical_stage(value)
    if canonical is None:
        raise fail(f"--stage: unknown stage {value!r}; known stages: {', '.join(STAGES)}")
    return canonical


def progress(transient: bool = False) -> Progress | LineProgress:
    """A bar on a terminal; in a log or a pipe, where a bar shows nothing until it ends, plain lines instead."""
    if not console.is_terminal:
        return LineProgress(transient)
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err_console, transient=transient,
    )


class LineProgress:
    """The part of rich's Progress the commands use, as one plain stdout line per finished step (window, config,
    city, market, day). A transient bar only shows that a single step is under way, so it prints nothing."""

    def __init__(self, transient: bool = False):
        self._quiet = transient
        self._tasks: list[dict] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def add_task(self, description: str, total: float | None = None) -> int:
        self._tasks.append({"description": description, "total": total, "completed": 0})
        return len(self._tasks) - 1

    def update(self, task: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, description: str | None = None) -> None:
        state = self._tasks[task]
        before = state["completed"]
        for key, value in (("total", total), ("description", description), ("completed", completed)):
            if value is not None:
                state[key] = value
        state["completed"] += advance or 0
        if state["completed"] > before and not self._quiet:
            of = "" if state["total"] is None else f"/{state['total']:g}"
            console.print(f"{state['description']} [{state['completed']:g}{of}]", markup=False, highlight=False)


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


_MLFLOW_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"


def _mlflow_logging(ctx: typer.Context, verbose: bool) -> None:
    """MLflow logs INFO lines to stderr, between kwx's own output: only its warnings and errors show unless
    --verbose. MLflow reads $MLFLOW_LOGGING_LEVEL when it is imported (in this process or a worker it starts), so
    the level goes there, and onto its logger in case it is already imported; both are restored when the command
    ends. A level the user set in $MLFLOW_LOGGING_LEVEL is left as it is."""
    import logging

    saved_env = os.environ.get(_MLFLOW_LEVEL_ENV)
    level = saved_env or ("INFO" if verbose else "WARNING")
    logger = logging.getLogger("mlflow")
    saved_level = logger.level
    os.environ[_MLFLOW_LEVEL_ENV] = level
    logger.setLevel(level.upper())

    def restore() -> None:
        _restore_env(_MLFLOW_LEVEL_ENV, saved_env)
        logger.setLevel(saved_level)

    ctx.call_on_close(restore)


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show MLflow's INFO lines (tracking store set-up, run and model links); "
        "without it only its warnings and errors show. $MLFLOW_LOGGING_LEVEL, when set, decides instead.")] = False,
) -> None:
    """kwx command line."""
    _mlflow_logging(ctx, verbose)


def _parse_cities(value: str) -> list[str]:
    """Comma-separated city keys, or 'all'."""
    from kwx.cities import CITIES

    cities = [c.strip() for c in value.split(",") if c.strip()]
    if not cities:
        raise fail("--city: give at least one city")
    if "all" in cities:
        return list(CITIES)
    return [_known_city(city) for city in dict.fromkeys(cities)]


def _city_keys(values: list[str] | None) -> list[str] | None:
    return _parse_cities(",".join(values)) if values else None


def http_url_option(param: typer.CallbackParam, value: str | None) -> str | None:
    """An API base URL option: http(s) with a host, else one line naming the option (not five failed requests)."""
    from kwx.config import check_http_url

    if value is None:
        return None
    try:
        return check_http_url(value)
    except ValueError as exc:
        raise fail(f"--{param.name.replace('_', '-')}: {exc}; got {value!r}") from None


def _cities(city: list[str] | None, cities: list[str] | None) -> list[str] | None:
    """The cities of --city and its hidden alias --cities together, or None when neither was given."""
    merged = [*(city or []), *(cities or [])]
    return list(dict.fromkeys(merged)) or None


def _check_range(start: datetime, end: datetime) -> None:
    if end < start:
        raise fail(f"--end ({end:%Y-%m-%d}) is before --start ({start:%Y-%m-%d})")


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


def load_or_fail(path: Path, model, overrides: dict | None = None):
    """A config, or its problems as one error line; a missing file says where the sample configs come from."""
    try:
        return load_config(path, model, overrides=overrides)
    except ConfigError as exc:
        hint = "" if path.exists() else " (`kwx init` writes the sample configs into ./configs)"
        raise fail(f"{exc}{hint}") from None


# The one type of every --city and --bracket option: a name is checked (and an unknown one named) before it reaches
# a query, an MLflow filter or a registered model's name.
RunIdOption = Annotated[str | None, typer.Option(help="Training (parent) run id.")]
CityOption = Annotated[str | None, typer.Option("--city", help="City key, e.g. chicago.", callback=_city_key)]
CitiesOption = Annotated[list[str] | None, typer.Option(
    "--city", help="City key; repeat it or comma-separate keys ('all': every city).", callback=_city_keys,
    show_default=False)]
# `--cities` was these commands' name for --city: still accepted, no longer advertised.
CitiesAliasOption = Annotated[list[str] | None, typer.Option(
    "--cities", help="The former name of --city, still accepted.", hidden=True, callback=_city_keys)]
BracketOption = Annotated[str | None, typer.Option("--bracket", help="between, greater or less.",
                                                   callback=_bracket_name)]
