"""`kwx db`: create and migrate the kwx database."""

from __future__ import annotations

from typing import Annotated

import typer

from kwx.cli.common import DbUrlOption, KwxTyper, console, fail
from kwx.data import migrations
from kwx.data.db import database_url
from kwx.secrets import mask_url

db_app = KwxTyper(help="Create and migrate the kwx database (alembic).")


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
    console.print(f"database {mask_url(database_url(db_url))} at revision {revision}")


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
    console.print(f"database {mask_url(database_url(db_url))} downgraded to {revision}")


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
    console.print(f"{mask_url(database_url(db_url))}: revision {current or '(none)'} ({state})")
