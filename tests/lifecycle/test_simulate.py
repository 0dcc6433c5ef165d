"""`kwx simulate`: three weeks of retrain → promote → trade → settle → monitor on a simulated clock."""

from __future__ import annotations

from datetime import date, timedelta

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import update
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import RtConfig, TrainConfig, load_config, sample_configs_dir
from kwx.data import migrations
from kwx.data.dataset import load_dataset
from kwx.data.db import make_engine
from kwx.data.fees import stored_fee_changes
from kwx.data.schema import ClimateDaily
from kwx.domain.features import feature_columns
from kwx.domain.markets import with_locked_outcomes
from kwx.domain.metrics import brier, log_loss, reliability
from kwx.lifecycle.simulate import retrain_days, simulate
from kwx.registry.promotion import run_config
from kwx.registry.versions import all_versions
from kwx.training.model import predict_yes
from kwx.training.walkforward import sample_rows
from tests.conftest import LENIENT_MARKET_GATES, demo_database

pytestmark = [pytest.mark.integration, pytest.mark.long(seconds=85)]

START, END = date(2025, 6, 16), date(2025, 7, 6)  # three weeks, Monday to Sunday
SHIFTED = [date(2025, 6, 23) + timedelta(days=k) for k in range(7)]  # week two's reports read 8 °F high
CONFIG = {
    "city": "chicago", "bracket": "between", "start": "2025-06-01", "end": "2025-06-30", "train_days": 14,
    "test_days": 7, "step_days": 7, "trials": 2, "cv_splits": 3, "sample_every_minutes": 30, "seed": 3,
    "acceptance": {"min_windows": 1, "max_ece": 0.2, "max_brier": 0.2, **LENIENT_MARKET_GATES},
    "lifecycle": {"retrain_weekday": "monday", "monitor_days": 7, "auto_withdraw": True,
                  "gates": {"max_cv_log_loss": 5.0, "max_cv_ece": 1.0, "max_cv_brier": 1.0,
                            "min_cv_brier_skill": -1.0},
                  "min_healthy_windows": 0,
                  # healthy demo weeks score a rolling Brier of ~0.12 (a market that reads the forecast leaves the
                  # between model its mornings' uncertainty); the shifted week's reach 0.14-0.19
                  "drift": {"max_ece": 0.5, "max_brier": 0.135, "min_brier_skill": -1.0, "min_days": 3}},
}


def test_retrain_days_are_the_weekday_and_the_first_day():
    assert retrain_days(date(2025, 6, 18), date(2025, 7, 1), "monday") == [
        date(2025, 6, 18), date(2025, 6, 23), date(2025, 6, 30)]
    assert retrain_days(START, START, "friday") == [START]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Chicago demo data 2025-06-01..07-10 whose week-two settlements are shifted 8 °F up (an injected drift)."""
    url = demo_database(tmp_path_factory.mktemp("source"), ["chicago"], date(2025, 6, 1), date(2025, 7, 10), seed=3)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(update(ClimateDaily).where(ClimateDaily.climate_date.in_(SHIFTED))
                     .values(tmax_f=ClimateDaily.tmax_f + 8))
    yield engine
    engine.dispose()


def _recomputed(engine, client, version) -> dict[str, float]:
    """A version's realized test-week scores computed here, straight from the database and its model."""
    config = run_config(version.tags["parent_run_id"])
    rows = load_dataset(engine, "chicago", "between", date.fromisoformat(version.tags["test_start"]),
                        date.fromisoformat(version.tags["test_end"]), config.feature_set,
                        lock_margin_f=config.lock_margin_f)
    rows = sample_rows(rows[rows["label"].notna()], config.sample_every_minutes)
    model = mlflow.sklearn.load_model(f"models:/{version.name}/{version.version}")
    p = with_locked_outcomes(predict_yes(model, rows[feature_columns(config.feature_set, "between")]),
                             rows["locked_outcome"].to_numpy(dtype=float))
    y = rows["label"].to_numpy(dtype=int)
    return {"test_log_loss": log_loss(y, p), "test_brier": brier(y, p), "test_ece": reliability(y, p).ece}


def test_a_season_trades_only_past_trained_windows_scores_them_and_withdraws_a_drifting_one(
        source, db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("KWX_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    migrations.upgrade(db_url)
    workspace = make_engine(db_url)
    rt = load_config(sample_configs_dir() / "rt.yaml", RtConfig, {"tick_seconds": 900})
    result = simulate(TrainConfig.model_validate(CONFIG), rt, source, workspace, start=START, end=END)
    client = MlflowClient()
    days = {r.day: r for r in result.days}
    assert len(result.days) == 21 and len(result.weeks) == 3

    # every traded day: its window trained only on days before it, and the first day already had one
    versions = {str(v.version): v for v in all_versions(client, "kwx-chicago-between")}
    traded = [r for r in result.days if r.version is not None]
    assert days[START].version is not None and len(traded) == 21
    for record in traded:
        assert date.fromisoformat(versions[record.version].tags["train_end"]) < record.day
    assert {r.retrain[0].split()[0] for r in result.days if r.retrain} == {"trained"}

    # every forward window whose week settled was scored exactly as a direct recomputation says
    evaluated = [v for v in versions.values() if v.tags.get("evaluation") == "done"]
    assert len(evaluated) == 3
    for version in evaluated:
        logged = client.get_run(version.run_id).data.metrics
        for key, value in _recomputed(workspace, client, version).items():
            assert logged[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (version.version, key)

    # the shifted week raises the alarm, the version trading that day is withdrawn, and the loop falls back
    alarmed = [r for r in result.days if r.alarms]
    assert alarmed and alarmed[0].day > SHIFTED[0]
    withdrawn = [v for v in versions.values() if v.tags.get("withdrawn_at")]
    assert withdrawn and all(client.get_model_version("kwx-chicago-between", v.version).current_stage == "Archived"
                             for v in withdrawn)
    first = min(date.fromisoformat(v.tags["withdrawn_as_of"]) for v in withdrawn)
    after = days[first] if first <= END else None
    assert after is not None and after.version not in {v.version for v in withdrawn}
    assert after.stale_days and after.stale_days > 0
    assert int(result.weeks["drift_alarms"].sum()) == sum(len(r.alarms) for r in result.days)
    assert np.isfinite(result.weeks["model_brier"]).all()
    workspace.dispose()


def test_the_cli_prints_the_week_table_and_keeps_a_finished_workspace(source, tmp_path):
    config = tmp_path / "season.yaml"
    config.write_text(TrainConfig.model_validate(CONFIG).model_dump_json())
    source_url = source.url.render_as_string(hide_password=False)
    args = ["simulate", "-c", str(config), "--start", "2025-06-16", "--end", "2025-06-17", "--tick-seconds", "1800",
            "--workdir", str(tmp_path / "season"), "--db-url", source_url]
    runner = CliRunner()
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "simulated season, one row per week" in done.output and "win_20250602_20250622" in done.output
    assert (tmp_path / "season" / "mlflow.db").exists() and (tmp_path / "season" / "kwx.db").exists()
    # the workspace trades at the fees the source stores for the series
    workspace = make_engine(f"sqlite:///{tmp_path / 'season' / 'kwx.db'}")
    assert stored_fee_changes(workspace) == stored_fee_changes(source) != []
    workspace.dispose()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    backwards = runner.invoke(app, [*args[:6], "2025-06-10", *args[7:], "--overwrite"])
    assert backwards.exit_code == 2 and "before --start" in backwards.output
