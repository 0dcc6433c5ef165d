"""The ``kwx`` command line: thin commands that parse, load config and call one function each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kwx import __version__
from kwx.config import CONFIG_KINDS, ConfigError, load_config
from kwx.data import migrations
from kwx.data.db import database_url, redact

app = typer.Typer(
    help="kwx: Kalshi daily-high-temperature models — data, walk-forward training in MLflow, "
    "gated promotion and real-time signals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate model and real-time configs.", no_args_is_help=True)
db_app = typer.Typer(help="Create and migrate the kwx database (alembic).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DbUrlOption = Annotated[
    str | None,
    typer.Option("--db-url", help="SQLAlchemy URL; default $KWX_DATABASE_URL or sqlite:///kwx.db", show_default=False),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
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
    migrations.upgrade(db_url, revision)
    console.print(f"database {redact(database_url(db_url))} at revision {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops every kwx table).")] = "-1",
    db_url: DbUrlOption = None,
) -> None:
    """Migrate the database down (default: one revision)."""
    migrations.downgrade(db_url, revision)
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


@app.command()
def demo(db_url: DbUrlOption = None) -> None:
    """Run the main job end to end on the embedded default (SQLite in the working directory)."""
    url = database_url(db_url)
    console.rule("[bold]kwx demo")
    console.print(f"1. database: {redact(url)}")
    migrations.upgrade(url)
    console.print(f"   migrated to {migrations.head_revision()}")
