"""The loop's kill-switch check (``records.halt_state``, asked every tick): it reads the control row every time,
holding no connection between ticks, so a halt or resume from another process is seen at the next tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kwx.data.db import make_engine
from kwx.execution import records

NOW = datetime(2025, 11, 29, 12, tzinfo=UTC)


def test_every_check_reads_the_row_so_another_process_s_halt_is_seen_at_the_next_tick(engine, monkeypatch):
    reads, read = [], records._control_row

    def counted(conn, mode):
        reads.append(mode)
        return read(conn, mode)

    monkeypatch.setattr(records, "_control_row", counted)
    operator = make_engine(engine.url.render_as_string(hide_password=False))  # `kwx rt halt`, another process
    try:
        assert not records.halt_state(engine, "paper").halted
        records.halt(operator, "paper", reason="test: operator", by="pytest", now=NOW, cancel_all=True)
        state = records.halt_state(engine, "paper")
        assert (state.halted, state.reason, state.cancel_all_requested) == (True, "test: operator", True)
        records.resume(operator, "paper", by="pytest", now=NOW + timedelta(minutes=1))
        assert not records.halt_state(engine, "paper").halted
        assert not records.halt_state(engine, "live").halted  # one switch per mode
        # halt and resume read the state back once each: every other read is a check of its own
        assert reads == ["paper", "paper", "paper", "paper", "paper", "live"]
    finally:
        operator.dispose()
