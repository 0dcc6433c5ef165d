"""The CLI as a user runs it: exit codes and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kwx.cli import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_commands():
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("config", "db", "demo"):
        assert command in result.output


@pytest.mark.parametrize("command", [["config", "validate"], ["db", "upgrade"], ["db", "downgrade"],
                                     ["db", "current"], ["demo"]])
def test_every_command_has_help(command):
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_config_validate_ok():
    result = _invoke("config", "validate", str(REPO / "configs" / "elasticnet_chi_between.yaml"))
    assert result.exit_code == 0
    assert result.output.startswith("OK ")
    assert len(result.output.strip().splitlines()) == 1


def test_config_validate_reports_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"city": "gotham", "bracket": "between", "start": "2025-05-01",
                                   "end": "2025-09-23", "blend_weight": 1.5, "colour": "blue"}))
    result = _invoke("config", "validate", str(bad))
    assert result.exit_code == 1
    assert "blend_weight" in result.output and "colour" in result.output and "gotham" in result.output


def test_db_upgrade_current_downgrade_from_another_directory(tmp_path, db_url):
    # the autouse fixture already chdir'ed into tmp_path, far from the repository's alembic/
    assert _invoke("db", "upgrade", "--db-url", db_url).exit_code == 0
    current = _invoke("db", "current", "--db-url", db_url)
    assert "(at head)" in current.output
    assert _invoke("db", "downgrade", "base", "--db-url", db_url).exit_code == 0
    assert "revision (none)" in _invoke("db", "current", "--db-url", db_url).output


def test_default_database_is_a_sqlite_file_in_the_working_directory(tmp_path):
    result = _invoke("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kwx.db").is_file()


def test_env_var_selects_database(tmp_path, monkeypatch):
    monkeypatch.setenv("KWX_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert _invoke("db", "upgrade").exit_code == 0
    assert (tmp_path / "env.db").is_file() and not (tmp_path / "kwx.db").exists()


@pytest.mark.integration
def test_data_demo_and_summary(tmp_path):
    args = ["data", "demo", "--cities", "chicago,nyc", "--start", "2025-07-01", "--end", "2025-07-02",
            "--market-skill", "0.8"]
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    assert "24 markets" in first.output and "market skill 0.8" in first.output
    assert _invoke(*args).exit_code == 0  # idempotent
    summary = _invoke("data", "summary")
    assert summary.exit_code == 0
    assert "chicago" in summary.output and "nyc" in summary.output
    assert "2025-07-01..2025-07-02" in summary.output


def test_data_commands_reject_bad_input():
    assert "unknown city 'gotham'" in _invoke("data", "demo", "--cities", "gotham").output
    result = _invoke("data", "demo", "--start", "2025-07-02", "--end", "2025-07-01")
    assert result.exit_code != 0 and "before --start" in result.output
    unmigrated = _invoke("data", "summary")
    assert unmigrated.exit_code == 2 and "run `kwx db upgrade`" in unmigrated.output
    assert _invoke("db", "upgrade").exit_code == 0
    empty = _invoke("data", "summary")
    assert empty.exit_code == 2 and "no data" in empty.output


@pytest.mark.parametrize("skill", ["1.5", "-0.1", "nan"])
def test_market_skill_outside_0_1_is_one_clear_line(tmp_path, skill):
    result = _invoke("data", "demo", "--market-skill", skill)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --market-skill must be a number in [0, 1] (0 = a market that lags the weather, 1 = one as "
        f"informed as the forecaster), got {float(skill)!r}"]
    assert not (tmp_path / "kwx.db").exists()  # rejected before anything is written
