"""The broker's per-tick kill-switch check (``records.HaltWatch``): on SQLite it reads the control row again only
after another connection committed, and whatever goes wrong with its held connection it reads the row instead;
on PostgreSQL it reads the row every time. A halt or resume is never missed either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.execution import records

NOW = datetime(2025, 11, 29, 12, tzinfo=UTC)


@pytest.fixture
def row_reads(monkeypatch) -> list[str]:
    """Each read of an ``execution_control`` row, by mode."""
    reads, read = [], records._control_row

    def counted(conn, mode):
        reads.append(mode)
        return read(conn, mode)

    monkeypatch.setattr(records, "_control_row", counted)
    return reads


@pytest.fixture
def operator(engine):
    """`kwx rt halt` from another process: an engine of its own on the same database."""
    other = make_engine(engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


def _halt_then_resume_are_seen(watch: records.HaltWatch, operator) -> None:
    records.halt(operator, "paper", reason="test: operator", by="pytest", now=NOW, cancel_all=True)
    state = watch.state()
    assert (state.halted, state.reason, state.cancel_all_requested) == (True, "test: operator", True)
    records.resume(operator, "paper", by="pytest", now=NOW + timedelta(minutes=1))
    assert not watch.state().halted


def test_the_watch_reads_the_row_again_only_after_a_commit(engine, operator, row_reads, db_url):
    watch = records.HaltWatch(engine, "paper")
    for _ in range(3):
        assert not watch.state().halted
    sqlite = engine.dialect.name == "sqlite"
    assert len(row_reads) == (1 if sqlite else 3), "SQLite: nothing committed since the first read"
    _halt_then_resume_are_seen(watch, operator)
    # the loop's own engine commits too (the loss limit's halt, a cancel-all cleared): on another connection
    records.halt(engine, "paper", reason="test: loss limit", by="pytest", now=NOW + timedelta(minutes=2))
    assert watch.state().reason == "test: loss limit"
    records.clear_cancel_all(engine, "paper")
    reads = len(row_reads)
    assert watch.state().halted and watch.state().halted
    assert len(row_reads) == reads + (1 if sqlite else 2)


def test_a_halt_file_halts_the_watch_without_a_commit(sqlite_url, tmp_path):
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    halt_file = tmp_path / "HALT"
    watch = records.HaltWatch(engine, "paper", halt_file)
    assert not watch.state().halted
    halt_file.write_text("test: file\n")
    assert (watch.state().halted, watch.state().source, watch.state().reason) == (True, "file", "test: file")
    halt_file.unlink()
    assert not watch.state().halted
    engine.dispose()


def test_an_error_of_the_held_connection_falls_back_to_reading_the_row(sqlite_url, row_reads):
    migrations.upgrade(sqlite_url)
    engine, operator = make_engine(sqlite_url), make_engine(sqlite_url)
    watch = records.HaltWatch(engine, "paper")
    assert not watch.state().halted and len(row_reads) == 1
    watch._held.close()  # any error: sqlite3.ProgrammingError on a closed connection
    assert not watch.state().halted and len(row_reads) == 2
    assert not watch.state().halted and len(row_reads) == 3, "no longer watched: read every time"
    _halt_then_resume_are_seen(watch, operator)
    engine.dispose(), operator.dispose()


def test_an_error_opening_the_held_connection_falls_back_to_reading_the_row(sqlite_url, row_reads, monkeypatch):
    migrations.upgrade(sqlite_url)
    engine, operator = make_engine(sqlite_url), make_engine(sqlite_url)

    connect = engine.raw_connection

    def unavailable_once():  # the watch asks first, before the row is read
        monkeypatch.setattr(engine, "raw_connection", connect)
        raise OSError("test: no connection to hold")

    monkeypatch.setattr(engine, "raw_connection", unavailable_once)
    watch = records.HaltWatch(engine, "paper")
    assert not watch.state().halted and not watch.state().halted and len(row_reads) == 2
    _halt_then_resume_are_seen(watch, operator)
    engine.dispose(), operator.dispose()


def test_the_watch_outlives_the_pool_closing_its_connections(sqlite_url):
    """The pool's connections all closing (the last one removes the WAL and its index) must not break the held
    connection: it read before it was trusted, so it keeps the WAL index open."""
    migrations.upgrade(sqlite_url)
    engine, operator = make_engine(sqlite_url), make_engine(sqlite_url)
    watch = records.HaltWatch(engine, "paper")
    assert not watch.state().halted
    engine.dispose(), operator.dispose()
    records.halt(operator, "paper", reason="test: after dispose", by="pytest", now=NOW)
    operator.dispose()
    assert watch._held is not None and watch.state().reason == "test: after dispose"
    assert watch._held is not None, "still watching"
    watch.close()
    engine.dispose()
