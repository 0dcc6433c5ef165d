"""Fixtures the paper-trading test files share."""

from __future__ import annotations

from datetime import date

import pytest

from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from tests.conftest import clear_rt_records


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def market_db(request, promoted):
    """The promoted model's demo markets: its own SQLite database, or the same demo data in a fresh PostgreSQL
    one (the models come from the same registry either way)."""
    if request.param == "sqlite":
        clear_rt_records(promoted["engine"])
        yield promoted["engine"]
        return
    url = request.getfixturevalue("postgres_url")
    migrations.upgrade(url)
    engine = make_engine(url)
    load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)  # small_training_run's data
    yield engine
    engine.dispose()
