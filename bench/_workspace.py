"""A scratch workspace for benchmarks: never the user's kwx.db or MLflow store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_workspace() -> Iterator[tuple[Path, object]]:
    """(temporary directory, engine on a migrated SQLite kwx database in it); MLflow logs to a SQLite store there."""
    from kwx.data import migrations
    from kwx.data.db import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chdir(root)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        url = f"sqlite:///{root / 'kwx.db'}"
        migrations.upgrade(url)
        engine = make_engine(url)
        try:
            yield root, engine
        finally:
            engine.dispose()


@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """The URL of an empty database for one benchmark: a SQLite file in a temporary directory, or a throwaway
    database on KWX_TEST_PG_URL's PostgreSQL server (dropped afterwards, connections and all)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
            return
        admin_url = os.environ.get("KWX_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
        name = f"kwx_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
            settle_postgres(admin_url)


def settle_postgres(url: str) -> None:
    """Flush the server's dirty pages now (CHECKPOINT), so a bulk load's or a drop's writes are not still going to
    disk under the next measurement. Needs a superuser or pg_checkpoint; without, the figures are noisier."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("CHECKPOINT"))
    except SQLAlchemyError as exc:
        print(f"(no CHECKPOINT: {type(exc).__name__}; the server may still be writing under the measurement)")
    finally:
        engine.dispose()
