"""MLflow's INFO lines (a new tracking store's "Creating initial MLflow database tables...", and the like) stay out
of a command's output unless -v asks for them: they would interleave with kwx's own lines."""

from __future__ import annotations

import logging

import pytest
from mlflow.utils.logging_utils import _configure_mlflow_loggers
from typer.testing import CliRunner

from kwx.cli import app, init
from kwx.config import sample_configs_dir

MLFLOW_INFO = "Creating initial MLflow database tables..."
MLFLOW_WARNING = "the tracking store is slow"


@pytest.fixture
def command_logging_through_mlflow(monkeypatch):
    """`kwx init` with MLflow imported (and so configuring its loggers) while the command runs, as a command that
    opens a tracking store does, and logging as MLflow does then."""

    def samples_after_mlflow_logged():
        _configure_mlflow_loggers("mlflow")
        logging.getLogger("mlflow.store.db.utils").info(MLFLOW_INFO)
        logging.getLogger("mlflow.store.db.utils").warning(MLFLOW_WARNING)
        return sample_configs_dir()

    monkeypatch.setattr(init, "sample_configs_dir", samples_after_mlflow_logged)


@pytest.mark.parametrize("verbose", [[], ["-v"], ["--verbose"]], ids=["quiet", "-v", "--verbose"])
def test_mlflow_info_lines_show_only_with_verbose(command_logging_through_mlflow, tmp_path, verbose):
    result = CliRunner().invoke(app, [*verbose, "init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (MLFLOW_INFO in result.stderr) == bool(verbose), result.stderr
    assert MLFLOW_WARNING in result.stderr  # warnings always show


def test_verbose_is_documented_in_help():
    result = CliRunner().invoke(app, ["--help"])
    assert "--verbose" in result.output and "-v" in result.output
