"""The loop's kill-switch check (``records.halt_flags``, asked every tick): it reads the control row every time,
holding no connection between ticks, so a halt or resume from another process is seen at the next tick, and it
says what ``records.halt_state`` says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kwx.data.db import make_engine
from kwx.execution import records

NOW = datetime(2025, 11, 29, 12, tzinfo=UTC)


def _checked(engine, mode: str, halt_file=None) -> tuple[bool, bool]:
    """``halt_flags``, held to ``halt_state`` and to holding no connection afterwards."""
    flags = records.halt_flags(engine, mode, halt_file)
    state = records.halt_state(engine, mode, halt_file)
    assert flags == (state.halted, state.cancel_all_requested)
    assert engine.pool.checkedout() == 0, "the check must hold no connection between ticks"
    return flags


def test_every_check_reads_the_row_so_another_process_s_halt_is_seen_at_the_next_tick(engine, tmp_path):
    operator = make_engine(engine.url.render_as_string(hide_password=False))  # `kwx rt halt`, another process
    halt_file = tmp_path / "HALT"
    try:
        assert _checked(engine, "paper") == (False, False)  # no row yet: never halted
        records.halt(operator, "paper", reason="test: operator", by="pytest", now=NOW, cancel_all=True)
        assert _checked(engine, "paper") == (True, True)
        assert _checked(engine, "live") == (False, False)  # one switch per mode
        records.clear_cancel_all(operator, "paper")
        assert _checked(engine, "paper") == (True, False)
        records.resume(operator, "paper", by="pytest", now=NOW + timedelta(minutes=1))
        assert _checked(engine, "paper") == (False, False)
        halt_file.write_text("test: file\n")
        assert _checked(engine, "paper", halt_file) == (True, False)  # a halt file halts whatever the row says
        assert _checked(engine, "paper") == (False, False)  # a loop configured without it
        halt_file.unlink()
        assert _checked(engine, "paper", halt_file) == (False, False)
        records.halt(operator, "live", reason=None, by="pytest", now=NOW + timedelta(minutes=2))
        assert _checked(engine, "live") == (True, False)
    finally:
        operator.dispose()
