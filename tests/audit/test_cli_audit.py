"""The audit commands' help: every option documented."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from kwx.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("name", "options"), [
    ("time", {"city", "cities", "start", "end", "out", "max_gap_minutes", "close_tolerance_minutes",
              "lock_margin_f", "db_url"}),
    ("lock-margin", {"city", "cities", "start", "end", "margin", "config", "margin_step", "out", "db_url"}),
    ("features", {"run_id", "city", "bracket", "repeats", "db_url", "tracking_uri"}),
])
def test_audit_commands_document_every_option(name, options):
    command = typer.main.get_command(app).commands["audit"].commands[name]
    assert command.help
    params = {p.name: p for p in command.params}
    assert set(params) == options
    assert all(len(params[o].help or "") > 10 for o in options), {o: params[o].help for o in options}
    result = runner.invoke(app, ["audit", name, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_audit_group_lists_its_commands():
    result = runner.invoke(app, ["audit"])
    assert all(name in result.output for name in ("time", "lock-margin", "features"))


def test_audit_time_rejects_an_inverted_range(tmp_path):
    result = runner.invoke(app, ["audit", "time", "--start", "2025-11-08", "--end", "2025-11-01",
                                 "--db-url", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2 and "before --start" in result.output
