"""`kwx demo` runs with the user's ./configs when `kwx init` wrote them there (edited or not), and its closing
dashboard command works from the user's directory, never pointing into the installed package."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kwx.cli import app, demo
from kwx.config import sample_configs_dir

TRAIN, RT = "elasticnet_chi_between.yaml", "rt.yaml"


@pytest.fixture
def printed(monkeypatch):
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    monkeypatch.setattr(demo, "console", console)
    yield console.export_text
    console.file.close()


def test_demo_reads_the_configs_kwx_init_wrote_and_the_user_edited(tmp_path):
    # conftest runs each test in its own tmp_path: the cwd, here
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    edited = Path("configs") / RT
    edited.write_text(edited.read_text(encoding="utf-8") + "\n# edited by the user\n", encoding="utf-8")
    assert demo.demo_config(RT) == edited
    assert demo.demo_config(TRAIN) == Path("configs") / TRAIN
    assert "# edited by the user" in demo.demo_config(RT).read_text(encoding="utf-8")


def test_demo_reads_the_samples_without_configs_and_per_file(tmp_path):
    assert demo.demo_config(RT) == sample_configs_dir() / RT
    Path("configs").mkdir()
    (Path("configs") / TRAIN).write_text((sample_configs_dir() / TRAIN).read_text(encoding="utf-8"))
    assert demo.demo_config(TRAIN) == Path("configs") / TRAIN
    assert demo.demo_config(RT) == sample_configs_dir() / RT  # one the user lacks: the sample


def test_dashboard_command_uses_the_users_config_relative_to_the_cwd(printed, tmp_path):
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    demo._print_dashboard_command(Path("configs") / RT, "sqlite:///kwx.db", None, season_weeks=2)
    text = printed()
    assert "kwx dashboard --config configs/rt.yaml --db-url sqlite:///kwx.db" in text
    assert "kwx init" not in text


def test_dashboard_command_never_points_into_the_package(printed, tmp_path):
    demo._print_dashboard_command(sample_configs_dir() / RT, "sqlite:///kwx.db", None, season_weeks=2)
    text = printed()
    assert str(sample_configs_dir()) not in text
    assert "kwx init" in text and "--config configs/rt.yaml" in text
    # the command it gives works from here: `kwx init` writes the config it names
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / "configs" / RT).read_text() == (sample_configs_dir() / RT).read_text()


def test_dashboard_command_does_not_ask_init_to_overwrite_the_users_configs(printed, tmp_path):
    Path("configs").mkdir()  # the user's own configs, without an rt.yaml: `kwx init` would refuse
    demo._print_dashboard_command(sample_configs_dir() / RT, "sqlite:///kwx.db", None, season_weeks=0)
    text = printed()
    assert "kwx init" not in text
    assert f"--config {sample_configs_dir() / RT}" in text  # a path that works from anywhere
