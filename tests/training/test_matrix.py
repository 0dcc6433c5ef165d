"""`kwx train --matrix/--all`: the matrix file, preparing every config before any run, one model per config."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import ConfigError, MatrixConfig, TrainConfig, load_config
from kwx.data import dataset
from kwx.data.db import make_engine
from kwx.training import matrix, runner
from tests.conftest import demo_database

REPO = Path(__file__).resolve().parents[2]
SMALL = {"bracket": "between", "start": "2025-07-01", "end": "2025-07-20", "train_days": 12, "test_days": 4,
         "step_days": 4, "trials": 5, "cv_splits": 3}
cli = CliRunner()


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _small_configs(directory: Path, *cities: str) -> None:
    for city in cities:
        _write(directory / f"small_{city}.yaml", {"city": city, **SMALL})


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, MatrixConfig).load_members()
    return info.value.problems


def test_matrix_names_each_bad_field_and_rule(tmp_path):
    _small_configs(tmp_path, "chicago")
    problems = _problems(_write(tmp_path / "m.yaml", {
        "configs": ["small_chicago.yaml", "small_*_nowhere.yaml"], "overrides": {"trals": 3}, "colour": "red"}))
    assert problems == [f"configs.1: matches no file in {tmp_path} (got 'small_*_nowhere.yaml')",
                        "overrides: not a field of the train config: trals",
                        "colour: unknown key (not a field of this config)"]
    assert _problems(_write(tmp_path / "empty.yaml", {"configs": []}))[0].startswith("configs: List should have")


def test_member_problems_name_the_config(tmp_path):
    _small_configs(tmp_path, "chicago", "nyc")
    _write(tmp_path / "twin.yaml", {"city": "chicago", **SMALL})
    problems = _problems(_write(tmp_path / "m.yaml", {"configs": ["small_*.yaml", "twin.yaml"],
                                                     "overrides": {"trials": 0}}))
    assert problems == ["small_chicago.yaml: trials: Input should be greater than or equal to 1 (got 0)",
                        "small_nyc.yaml: trials: Input should be greater than or equal to 1 (got 0)",
                        "twin.yaml: trials: Input should be greater than or equal to 1 (got 0)"]
    members = load_config(tmp_path / "m.yaml", MatrixConfig)
    with pytest.raises(ConfigError, match=r"twin\.yaml: trains chicago/between like small_chicago\.yaml"):
        members.load_members({"trials": 2})


def test_command_line_overrides_win_and_entries_keep_their_order(tmp_path):
    _small_configs(tmp_path, "nyc", "chicago")
    path = _write(tmp_path / "m.yaml", {"configs": ["small_nyc.yaml", "small_*.yaml"], "overrides": {"trials": 3}})
    members = matrix.load_matrix(path, {"cv_splits": 2})
    assert [(p.name, c.trials, c.cv_splits) for p, c in members] == [("small_nyc.yaml", 3, 2),
                                                                    ("small_chicago.yaml", 3, 2)]
    assert matrix.load_matrix(path, {"trials": 7})[0][1].trials == 7


def test_shipped_matrix_and_all_cover_every_city_and_bracket():
    shipped = sorted((REPO / "configs").glob("elasticnet_*.yaml"))
    assert sorted(load_config(REPO / "configs" / "matrix.yaml", MatrixConfig).paths()) == shipped
    members = matrix.load_all({"trials": 2}, REPO / "configs")
    assert len(members) == 21 and {c.trials for _, c in members} == {2}
    assert cli.invoke(app, ["config", "validate", str(REPO / "configs" / "matrix.yaml"), "--kind", "matrix"]
                      ).exit_code == 0


def test_config_validate_reports_matrix_problems(tmp_path):
    path = _write(tmp_path / "m.yaml", {"configs": ["nothing_*.yaml"]})
    result = cli.invoke(app, ["config", "validate", str(path), "--kind", "matrix"])
    assert result.exit_code == 1 and "configs.0: matches no file" in result.output


def test_train_needs_exactly_one_source(tmp_path):
    both = cli.invoke(app, ["train", "--all", "--matrix", str(tmp_path / "m.yaml")])
    assert both.exit_code == 2 and "exactly one of --config, --matrix or --all" in both.output
    assert cli.invoke(app, ["train"]).exit_code == 2
    assert "give both --city and --bracket" in cli.invoke(app, ["models", "list", "--city", "chicago"]).output


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    """Demo data for chicago and nyc only: a miami config has no data."""
    return demo_database(tmp_path_factory.mktemp("db"), ["chicago", "nyc"], date(2025, 7, 1), date(2025, 7, 20), seed=3)


def _parent_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if r.data.tags.get("kwx.kind") == "train"]


@pytest.mark.integration
def test_matrix_trains_each_config_into_its_own_model(tmp_path, demo_db, tracking):
    _small_configs(tmp_path, "chicago", "nyc")
    path = _write(tmp_path / "m.yaml", {"configs": ["small_*.yaml"], "overrides": {"trials": 2}})

    plan = cli.invoke(app, ["train", "--matrix", str(path), "--plan", "--db-url", demo_db])
    assert plan.exit_code == 0, plan.output
    assert "chicago/between walk-forward plan" in plan.output and "nyc/between walk-forward plan" in plan.output
    assert tracking.search_registered_models() == []

    trained = cli.invoke(app, ["train", "--matrix", str(path), "--workers", "1", "--db-url", demo_db])
    assert trained.exit_code == 0, trained.output
    assert "2 configs, 4 windows in" in trained.output
    for city in ("chicago", "nyc"):
        parents = _parent_runs(tracking, f"kwx-{city}-between")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert parents[0].data.params["trials"] == "2"
        versions = tracking.search_model_versions(f"name = 'kwx-{city}-between'")
        assert sorted(str(v.version) for v in versions) == ["1", "2"]
        assert {v.tags["parent_run_id"] for v in versions} == {parents[0].info.run_id}
        assert f"small_{city}.yaml" in trained.output

    listed = cli.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if "kwx-" in line]
    assert len(rows) == 2 and "kwx-chicago-between" in rows[0] and "kwx-nyc-between" in rows[1]
    chicago = tracking.get_run(_parent_runs(tracking, "kwx-chicago-between")[0].info.run_id).data.metrics
    assert "None:2" in rows[0] and f"{chicago['mean_test_log_loss']:.4f}" in rows[0]
    detailed = cli.invoke(app, ["models", "list", "--city", "nyc", "--bracket", "between"])
    assert detailed.exit_code == 0 and detailed.output.count("win_2025") == 2


@pytest.mark.integration
def test_a_city_s_brackets_read_its_forecasts_once_while_the_matrix_is_prepared(demo_db, monkeypatch):
    reads, read = [], dataset.load_forecast_data
    monkeypatch.setattr(dataset, "load_forecast_data",
                        lambda *args, **kwargs: reads.append(args[1]) or read(*args, **kwargs))
    members = [(Path(f"{city}_{bracket}.yaml"), TrainConfig.model_validate(
        {**SMALL, "city": city, "bracket": bracket, "feature_set": "elasticnet_forecast"}))
        for city in ("chicago", "nyc") for bracket in ("between", "less")]
    entries, failures = matrix.prepare_all(members, make_engine(demo_db))
    assert len(entries) + len(failures) == 4  # a few days of a bracket may not train: its rows were read
    assert reads == [["chicago"], ["nyc"]]
    runner.prepare(members[0][1], make_engine(demo_db))
    assert len(reads) == 3  # outside a matrix's preparation every build reads the forecasts stored now


@pytest.mark.integration
def test_config_without_data_fails_before_any_run(tmp_path, demo_db, tracking, monkeypatch):
    _small_configs(tmp_path, "chicago", "miami")
    path = _write(tmp_path / "m.yaml", {"configs": ["small_chicago.yaml", "small_miami.yaml"],
                                        "overrides": {"trials": 2}})
    assert "no registered kwx models" in cli.invoke(app, ["models", "list"]).output

    failed = cli.invoke(app, ["train", "--matrix", str(path), "--db-url", demo_db])
    assert failed.exit_code == 2
    lines = failed.output.strip().splitlines()
    assert lines[0].startswith("cannot train small_miami.yaml: no miami/between markets with event dates ")
    assert len(lines) == 2 and "1 of 2 configs cannot train, nothing was trained" in lines[1]
    assert [e.name for e in tracking.search_experiments()] == ["Default"]
    assert tracking.search_registered_models() == []

    # As under `mlflow run`: the launched run gets the summary, each config still gets a parent run of its own.
    launched = tracking.create_run(tracking.create_experiment("launcher")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    skipped = cli.invoke(app, ["train", "--matrix", str(path), "--skip-missing", "--workers", "2",
                               "--db-url", demo_db])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped small_miami.yaml: no miami/between markets" in skipped.output
    assert "1 configs, 2 windows in" in skipped.output
    parents = _parent_runs(tracking, "kwx-chicago-between")
    assert len(parents) == 1 and parents[0].info.run_id != launched
    # and links each config's parent run, which names it back
    assert tracking.get_run(launched).data.tags["kwx.training_run_ids"] == parents[0].info.run_id
    assert parents[0].data.tags["kwx.launched_by_run_id"] == launched
    assert [m.name for m in tracking.search_registered_models()] == ["kwx-chicago-between"]
    summary = mlflow.artifacts.load_dict(f"runs:/{launched}/matrix_summary.json")
    assert [(r["config"], r["windows"]) for r in summary] == [("small_chicago.yaml", 2)]


def test_demo_data_accepts_all_cities():
    from kwx.cities import CITIES
    from kwx.cli import _parse_cities

    assert _parse_cities("all") == list(CITIES) and len(CITIES) == 7
