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
