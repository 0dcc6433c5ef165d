"""Alembic, driven from code so ``kwx db upgrade`` works from any directory."""

from __future__ import annotations

import re
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

from alembic import command
from kwx.data.db import database_url, make_engine

# "-1", "+2", "head-1", "ae10+2": relative to the database's current revision, known only once connected.
_RELATIVE = re.compile(r"^(.*?)[+-]\d+$")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def migrations_dir() -> Path:
    """The repository's ``alembic/`` (checkout or editable install) or the copy a wheel carries."""
    for candidate in (_PACKAGE_DIR.parent / "alembic", _PACKAGE_DIR / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"alembic migrations not found next to {_PACKAGE_DIR}")


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would choke on a '%' in a URL-encoded password.
    config.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    return config


class MigrationError(ValueError):
    """A revision alembic cannot migrate to; the message lists the known ones."""


def _unknown_revision(revision: str, reason: str) -> MigrationError:
    script = ScriptDirectory(str(migrations_dir()))
    known = ", ".join(["head", "base", *(s.revision for s in script.walk_revisions())])
    return MigrationError(f"cannot migrate to revision {revision!r}: {reason}; known revisions: {known} "
                          "(or relative, e.g. -1)")


def _migrate(step, url: str | None, revision: str) -> None:
    config = alembic_config(url)
    anchor = match.group(1) if (match := _RELATIVE.match(revision)) else revision
    # An absolute revision is checked before connecting, so a typo never creates a database file.
    if anchor:
        try:
            ScriptDirectory.from_config(config).get_revisions(anchor)
        except CommandError as exc:
            raise _unknown_revision(revision, str(exc)) from None
    try:
        step(config, revision)
    except CommandError as exc:
        raise _unknown_revision(revision, str(exc)) from None


def upgrade(url: str | None = None, revision: str = "head") -> None:
    _migrate(command.upgrade, url, revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    _migrate(command.downgrade, url, revision)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class SchemaNotReadyError(RuntimeError):
    """The database is not at the migration head: run `kwx db upgrade`."""


def require_head(engine: Engine) -> None:
    """Refuse to read or write a database that is not at the migration head, saying how to fix it."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        from kwx.data.db import redact

        raise SchemaNotReadyError(
            f"database {redact(str(engine.url))} is at revision {current or '(none)'}, not head {head}: "
            f"run `kwx db upgrade`"
        )


def is_at_head(url: str | None = None) -> bool:
    engine = make_engine(url)
    try:
        return current_revision(engine) == head_revision()
    finally:
        engine.dispose()
