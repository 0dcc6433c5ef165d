"""The model lifecycle from the command line: train, report, promote, list, resolve."""

from __future__ import annotations

import pytest
import typer
import yaml
from typer.testing import CliRunner

from kwx.cli import app
from kwx.cli import demo as demo_cli
from tests.conftest import LENIENT_MARKET_GATES

pytestmark = pytest.mark.integration
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def test_train_report_promote_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert _invoke("data", "demo", "--cities", "chicago", "--start", "2025-07-01", "--end", "2025-07-24").exit_code == 0
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({
        "city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
        "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3,
        "acceptance": {"min_windows": 2, "max_ece": 0.5, **LENIENT_MARKET_GATES}}))

    plan = _invoke("train", "--config", str(config), "--plan")
    assert plan.exit_code == 0 and plan.output.count("win_2025") == 3

    trained = _invoke("train", "--config", str(config), "--workers", "1")
    assert trained.exit_code == 0, trained.output
    assert "3 windows in" in trained.output
    progress = [line.rsplit(" ", 1)[1] for line in trained.output.splitlines() if ": test log loss " in line]
    assert progress == ["[1/3]", "[2/3]", "[3/3]"], trained.output

    report = _invoke("report", "--city", "chicago", "--bracket", "between")
    assert report.exit_code == 0 and "PASS acceptance report written" in report.output, report.output
    assert "PASS pooled Brier skill lower bound >= min_brier_skill" in report.output

    dry = _invoke("promote", "--city", "chicago", "--bracket", "between", "--dry-run")
    assert dry.exit_code == 0 and "would promote kwx-chicago-between versions 1, 2, 3" in dry.output
    # the same numbers `kwx report` printed, interval and threshold included
    skill_line = next(line for line in report.output.splitlines() if "pooled Brier skill lower bound" in line)
    assert "95% CI" in skill_line and skill_line in dry.output
    promoted = _invoke("promote", "--city", "chicago", "--bracket", "between", "--stage", "Production")
    assert promoted.exit_code == 0 and "alias @production -> version 3" in promoted.output

    listed = _invoke("models", "list", "--city", "chicago", "--bracket", "between")
    assert listed.exit_code == 0 and listed.output.count("Production") == 3

    inside = _invoke("models", "resolve", "--city", "chicago", "--bracket", "between", "--date", "2025-07-18")
    assert inside.exit_code == 0 and "version 2, win_20250705_20250720" in inside.output
    after = _invoke("models", "resolve", "--city", "chicago", "--bracket", "between", "--date", "2025-07-30")
    assert after.exit_code == 0 and "stale by 6 day(s)" in after.output
    assert "warning: win_20250709_20250724 was never tested on 2025-07-30" in after.output
    before = _invoke("models", "resolve", "--city", "chicago", "--bracket", "between", "--date", "2025-07-01")
    assert before.exit_code == 1 and "no model for chicago/between on 2025-07-01" in before.output


def test_gate_refusal_exits_non_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    _invoke("data", "demo", "--cities", "chicago", "--start", "2025-07-01", "--end", "2025-07-20")
    config = tmp_path / "strict.yaml"
    config.write_text(yaml.safe_dump({
        "city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-20", "train_days": 12,
        "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3,
        "acceptance": {"min_windows": 5, "max_brier": 0.0001}}))
    assert _invoke("train", "--config", str(config), "--workers", "1").exit_code == 0
    report = _invoke("report", "--city", "chicago", "--bracket", "between")
    assert report.exit_code == 1 and "FAIL acceptance report written" in report.output
    assert "FAIL pooled unlocked test Brier <= max_brier" in report.output
    dry = _invoke("promote", "--city", "chicago", "--bracket", "between", "--dry-run")
    assert dry.exit_code == 1 and "refused" in dry.output and "would promote" not in dry.output
    unknown_stage = _invoke("promote", "--city", "chicago", "--bracket", "between", "--stage", "Prod", "--dry-run")
    assert unknown_stage.exit_code == 2 and "'Prod'" in unknown_stage.output
    refused = _invoke("promote", "--city", "chicago", "--bracket", "between")
    assert refused.exit_code == 1
    assert "pooled unlocked test Brier <= max_brier" in refused.output
    assert "windows >= min_windows: 2 (threshold 5)" in refused.output


def test_train_bad_input_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert _invoke("db", "upgrade").exit_code == 0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"city": "chicago", "bracket": "between", "start": "2025-07-01",
                                      "end": "2025-07-24", "train_days": 12, "test_days": 4}))
    empty = _invoke("train", "--config", str(config))
    assert empty.exit_code == 2 and "no chicago/between markets" in empty.output
    assert len(empty.output.strip().splitlines()) == 1
    bad = _invoke("train", "--config", str(config), "--set", "feature_set=fancy")
    assert bad.exit_code == 2 and "unknown feature set 'fancy'" in bad.output
    assert "no registered versions" in _invoke("models", "list", "--city", "chicago", "--bracket", "between").output
    rare = tmp_path / "rare.yaml"
    _invoke("data", "demo", "--cities", "chicago", "--start", "2025-07-01", "--end", "2025-07-24")
    # With the demo's default seed chicago's less tail wins once (07-11) in the window's training days
    # 07-05..07-11: the fold holding that day leaves the others to train on one class.
    rare.write_text(yaml.safe_dump({"city": "chicago", "bracket": "less", "start": "2025-07-05", "end": "2025-07-15",
                                    "train_days": 7, "test_days": 4, "cv_splits": 3}))
    skipped = _invoke("train", "--config", str(rare))
    assert skipped.exit_code == 2 and "no window of chicago/less can train" in skipped.output
    assert "trains on one label class only" in skipped.output


def test_demo_skips_promotion_when_the_report_fails(monkeypatch):
    calls = []

    def step(name, exit_code=None):
        def run(*args, **kwargs):
            calls.append(name)
            if exit_code is not None:
                raise typer.Exit(exit_code)
        return run

    monkeypatch.setattr(demo_cli.migrations, "upgrade", lambda url: None)
    for name in ("data_demo", "train", "promote", "models_list", "models_resolve", "backtest", "serve_rt",
                 "_print_paper_day", "simulate"):
        monkeypatch.setattr(demo_cli, name, step(name))
    monkeypatch.setattr(demo_cli, "report", step("report", exit_code=1))
    failed = _invoke("demo", "--db-url", "sqlite:///unused.db")
    assert failed.exit_code == 1 and "5-6 skipped" in failed.output and "8 skipped" in failed.output
    assert calls == ["data_demo", "train", "report", "backtest"]

    calls.clear()
    monkeypatch.setattr(demo_cli, "report", step("report"))
    assert _invoke("demo", "--db-url", "sqlite:///unused.db").exit_code == 0
    assert calls == ["data_demo", "train", "report", "promote", "models_list", *["models_resolve"] * 3, "backtest",
                     "serve_rt", "_print_paper_day", "simulate"]
    monkeypatch.setattr(demo_cli, "report", step("report", exit_code=2))
    assert _invoke("demo", "--db-url", "sqlite:///unused.db").exit_code == 2
