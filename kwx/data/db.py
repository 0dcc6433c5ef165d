"""Database engine and URL resolution: ``KWX_DATABASE_URL`` or a SQLite file in the working directory."""

from __future__ import annotations

import errno
import os

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from kwx.secrets import mask_url, redact, url_secrets  # redact is also imported from here

DEFAULT_DATABASE_URL = "sqlite:///kwx.db"
DATABASE_URL_ENV = "KWX_DATABASE_URL"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")

# What a database or the disk under it raises when it is unreachable, read-only or full, wherever a
# command touches it; ``database_problem`` turns each into one line.
DATABASE_FAILURES = (exc.OperationalError, exc.InterfaceError, OSError)


class DatabaseUrlError(ValueError):
    """A database URL kwx cannot use: not a URL, an unsupported backend, or a driver that is not installed."""


def check_url(url: str) -> None:
    """Parse ``url`` and load its driver without connecting; DatabaseUrlError says what is wrong."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise DatabaseUrlError(f"'{mask_url(url)}' is not a database URL (e.g. sqlite:///kwx.db or "
                               "postgresql+psycopg2://user@host/kwx)") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise DatabaseUrlError(f"unsupported database {parsed.drivername!r} in {mask_url(url)}; kwx supports "
                               f"{' and '.join(SUPPORTED_BACKENDS)}")
    try:
        parsed.get_dialect().import_dbapi()
    except (exc.NoSuchModuleError, ImportError) as error:
        raise DatabaseUrlError(f"no driver for {parsed.drivername!r} in {mask_url(url)} ({error}); "
                               "e.g. postgresql+psycopg2://... uses the installed psycopg2") from None


def database_problem(error: BaseException, url: str | None) -> str | None:
    """One line for a database or disk failure (None when ``error`` is neither), naming the database."""
    if isinstance(error, OSError):
        # Any file the command writes (database, MLflow artifacts, reports) can hit these.
        what = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system"}.get(error.errno)
        if what is None:
            return None
        return f"{what}: {error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
    where = f"database {mask_url(url)}" if url else "the database"
    if not isinstance(error, exc.OperationalError | exc.InterfaceError):
        return None
    # A driver may quote what it was given (a host holding half a password cut at an '@').
    reason = redact(str(error.orig or error).strip().splitlines()[0], extra=url_secrets(url) if url else ())
    lowered = reason.lower()
    if "disk is full" in lowered or "no space left" in lowered:
        return f"disk full writing {where}: {reason}"
    if "readonly database" in lowered or "read-only" in lowered:
        return f"{where} is read-only: {reason}"
    if error.connection_invalidated or "connect" in lowered or "unable to open" in lowered:
        return f"cannot reach {where}: {reason}"
    return f"{where} failed: {reason}"


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def make_engine(url: str | None = None) -> Engine:
    url = database_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            # Foreign keys are off by default in SQLite; WAL lets the rt loop read while ingest writes.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


# A reader that must never hold up on, or write to, the database: the dashboard.
READ_ONLY_CONNECT_SECONDS = 3
READ_ONLY_STATEMENT_MS = 10_000


def make_read_only_engine(url: str | None = None) -> Engine:
    """An engine that cannot write: SQLite opened ``mode=ro`` (a missing file is an error, never a new empty
    database) with ``query_only``, unpooled; PostgreSQL sessions ``default_transaction_read_only``, with short connect
    and statement timeouts so an unreachable server answers with an error instead of a hung request."""
    url = database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            raise DatabaseUrlError(f"{mask_url(url)}: a read-only reader needs a SQLite file path")
        # No pool: every read opens the file as it is now, so a database file that went away (and came back,
        # or was restored) is noticed by the next request instead of hidden behind a pooled connection.
        engine = create_engine(parsed.set(database=f"file:{os.path.abspath(path)}",
                                          query={"mode": "ro", "uri": "true"}), poolclass=NullPool)

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA query_only=ON")
            cursor.close()

        return engine
    options = f"-c default_transaction_read_only=on -c statement_timeout={READ_ONLY_STATEMENT_MS}"
    return create_engine(url, pool_pre_ping=True,
                         connect_args={"connect_timeout": READ_ONLY_CONNECT_SECONDS, "options": options})

