"""`kwx retrain`: the forward window of a day, idempotent, refused on unsettled or thin data, gated promotion."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import mlflow
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import TrainConfig
from kwx.data import migrations
from kwx.data.dataset import load_dataset
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.data.schema import Candle, ClimateDaily, Market
from kwx.domain.features import feature_columns
from kwx.lifecycle.forward import forward_config, forward_window
from kwx.lifecycle.retrain import RetrainError, retrain
from kwx.registry.versions import all_versions, stage_table
from kwx.training.model import predict_yes
from tests.conftest import LENIENT_MARKET_GATES

NOW = datetime(2025, 7, 20, 12, tzinfo=UTC)
AS_OF = date(2025, 7, 20)
LENIENT_FORWARD = {"max_cv_log_loss": 5.0, "max_cv_ece": 1.0, "max_cv_brier": 1.0, "min_cv_brier_skill": -1.0}
CONFIG = {"city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
          "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3, "seed": 5,
          "acceptance": {"min_windows": 1, "max_ece": 0.5, "max_brier": 0.5, **LENIENT_MARKET_GATES},
          "lifecycle": {"gates": LENIENT_FORWARD}}


def config(**changes) -> TrainConfig:
    return TrainConfig.model_validate({**CONFIG, **changes})


@given(as_of=st.dates(date(2000, 1, 1), date(2090, 1, 1)), train_days=st.integers(1, 400),
       test_days=st.integers(1, 30))
def test_forward_window_trains_only_before_the_day_it_starts_trading(as_of, train_days, test_days):
    window = forward_window(as_of, train_days, test_days)
    assert window.train_end < window.test_start == as_of
    assert (window.train_end - window.train_start).days + 1 == train_days
    assert (window.test_end - window.test_start).days + 1 == test_days
    assert window.name == f"win_{window.train_start:%Y%m%d}_{window.test_end:%Y%m%d}"


def test_forward_config_plans_exactly_the_forward_window_and_names_the_day_in_its_fingerprint():
    from kwx.domain.windows import plan_windows

    cfg = forward_config(config(), AS_OF)
    assert plan_windows(cfg.start, cfg.end, cfg.train_days, cfg.test_days, cfg.step_days) == [
        forward_window(AS_OF, 12, 4)]
    assert cfg.fingerprint() == forward_config(config(), AS_OF).fingerprint()
    assert cfg.fingerprint() != forward_config(config(), AS_OF + timedelta(days=7)).fingerprint()


@pytest.fixture
def season(db_url, tmp_path, monkeypatch):
    """Chicago demo data 2025-07-01..24 whose days from AS_OF on are not settled yet, and a fresh MLflow store."""
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    with engine.begin() as conn:
        conn.execute(delete(ClimateDaily).where(ClimateDaily.climate_date >= AS_OF))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield engine
    engine.dispose()
    mlflow.set_tracking_uri(None)


def _runs(client):
    experiment = client.get_experiment_by_name("kwx-chicago-between")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


@pytest.mark.integration
def test_a_forward_window_is_one_parent_one_window_and_one_pending_version_and_a_rerun_finds_it(season):
    first = retrain(config(), season, as_of=AS_OF, now=NOW)
    client = MlflowClient()
    [version] = all_versions(client, "kwx-chicago-between")
    assert first.created and first.version == str(version.version)
    assert version.tags["window"] == "win_20250708_20250723"
    assert (version.tags["origin"], version.tags["evaluation"]) == ("forward", "pending")
    assert (version.tags["train_end"], version.tags["test_start"]) == ("2025-07-19", "2025-07-20")
    window_run = client.get_run(version.run_id)
    assert {"cv_calibrated_log_loss", "cv_calibrated_ece", "cv_brier_skill", "cv_log_loss"} <= set(
        window_run.data.metrics)
    assert not any(k.startswith(("test_", "market_")) for k in window_run.data.metrics)
    parent = client.get_run(first.run_id)
    assert parent.data.tags["kwx.forward_as_of"] == "2025-07-20"
    assert {r.info.status for r in _runs(client)} == {"FINISHED"}

    again = retrain(config(), season, as_of=AS_OF, now=NOW)
    assert not again.created and again.version == first.version and again.run_id == first.run_id
    assert len(all_versions(client, "kwx-chicago-between")) == 1 and len(_runs(client)) == 2
    assert any("already trained" in line for line in again.lines())


@pytest.mark.integration
def test_unsettled_thin_or_one_class_training_days_refuse_before_any_run(season):
    client = MlflowClient()
    with season.begin() as conn:
        conn.execute(delete(ClimateDaily).where(ClimateDaily.climate_date == date(2025, 7, 15)))
    with pytest.raises(RetrainError, match=r"not settled yet \(2025-07-15\)"):
        retrain(config(), season, as_of=AS_OF, now=NOW)
    with pytest.raises(RetrainError, match="only 4 of the 12 training days"):
        retrain(config(), season, as_of=date(2025, 7, 5), now=NOW)
    with season.begin() as conn:  # no market of the training days wins: every label is 0
        conn.execute(update(ClimateDaily).values(tmax_f=-40))
    with pytest.raises(RetrainError, match="one class"):
        retrain(config(), season, as_of=date(2025, 7, 14), now=NOW)
    assert _runs(client) == []


@pytest.mark.integration
def test_promote_applies_the_lifecycle_policy_through_kwx_promote(season):
    client = MlflowClient()
    refused = retrain(config(lifecycle={"gates": {**LENIENT_FORWARD, "max_cv_ece": 0.0001}}), season,
                      as_of=AS_OF, now=NOW, promote=True)
    assert [c.name for c in refused.refused] == ["cv ECE <= lifecycle.gates.max_cv_ece"]
    version = client.get_model_version("kwx-chicago-between", refused.version)
    assert version.tags["promotion_refused"] == "cv ECE <= lifecycle.gates.max_cv_ece"
    assert version.current_stage == "None" and stage_table(client, "kwx-chicago-between", "Production") == []

    passed = retrain(config(), season, as_of=AS_OF, now=NOW, promote=True)
    assert passed.created and passed.version != refused.version  # another config: another version
    [trading] = stage_table(client, "kwx-chicago-between", "Production")
    assert trading.version == passed.version
    assert str(client.get_registered_model("kwx-chicago-between").aliases["production"]) == passed.version
    assert client.get_model_version("kwx-chicago-between", passed.version).tags["promotion_refused"] == ""
    assert retrain(config(), season, as_of=AS_OF, now=NOW, promote=True).already_promoted


@pytest.mark.integration
def test_family_health_reads_the_most_recent_evaluated_windows(season):
    from kwx.training import runner

    # two walk-forward windows tested on settled days, held to acceptance gates they cannot pass (their ECE is
    # gated at one outcome-day: by default a few days' ECE is not evidence, and is not gated)
    walk = config(end="2025-07-19", step_days=3, acceptance={"max_ece": 0.0001, "max_brier": 0.5,
                                                             "min_window_ece_days": 1, **LENIENT_MARKET_GATES})
    runner.train(walk, season)
    refused = retrain(walk, season, as_of=AS_OF, now=NOW, promote=True)
    [health] = [c for c in refused.refused if c.name.startswith("family health")]
    assert health.value == "0 of 2" and "test_unlocked_ece" not in health.detail


@pytest.mark.integration
def test_the_cli_retrains_reports_and_exits_1_when_the_policy_refuses(season, tmp_path):
    path = tmp_path / "forward.yaml"
    path.write_text(config().model_dump_json())
    url = season.url.render_as_string(hide_password=False)
    runner = CliRunner()
    dry = runner.invoke(app, ["retrain", "-c", str(path), "--as-of", "2025-07-20", "--dry-run", "--db-url", url])
    assert dry.exit_code == 0, dry.output
    assert "would train kwx-chicago-between win_20250708_20250723" in dry.output
    refused = runner.invoke(app, ["retrain", "-c", str(path), "--as-of", "2025-07-20", "--promote", "--db-url", url,
                                  "--set", "lifecycle.gates.max_cv_brier=0.0001"])
    assert refused.exit_code == 1, refused.output
    assert "FAIL cv Brier <= lifecycle.gates.max_cv_brier" in refused.output
    bad = runner.invoke(app, ["retrain", "-c", str(path), "--as-of", "2025-07-26", "--db-url", url])
    assert bad.exit_code == 2 and "not settled yet" in bad.output and "Traceback" not in bad.output


@pytest.mark.integration
def test_a_signal_planted_in_the_future_is_never_learned(tmp_path, monkeypatch):
    """Days from AS_OF on get quotes that give their outcome away; the forward window of AS_OF must be the
    very same model with or without them: nothing from its trading week reached its fit."""
    def forward_model(root, plant: bool):
        db = f"sqlite:///{root / 'kwx.db'}"
        root.mkdir()
        migrations.upgrade(db)
        engine = make_engine(db)
        load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
        if plant:
            with engine.begin() as conn:
                markets = conn.execute(select(Market.ticker, Market.settlement_value).where(
                    Market.event_date >= AS_OF)).all()
                for ticker, paid in markets:
                    quote = 99.0 if paid else 1.0
                    conn.execute(update(Candle).where(Candle.market_ticker == ticker).values(
                        yes_bid_close=quote - 0.5, yes_ask_close=quote + 0.5))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        outcome = retrain(config(), engine, as_of=AS_OF, now=NOW)
        model = mlflow.sklearn.load_model(f"models:/kwx-chicago-between/{outcome.version}")
        rows = load_dataset(engine, "chicago", "between", date(2025, 7, 8), date(2025, 7, 24))
        engine.dispose()
        mlflow.set_tracking_uri(None)
        return model, rows, outcome

    clean, rows, _ = forward_model(tmp_path / "clean", plant=False)
    planted, planted_rows, outcome = forward_model(tmp_path / "planted", plant=True)
    features = feature_columns("elasticnet_relative", "between")
    future = planted_rows[planted_rows["event_date"] >= AS_OF]
    assert future["market_logit"].abs().min() > 4  # the planted quotes are there, and they are the answer
    np.testing.assert_array_equal(predict_yes(clean, future[features]), predict_yes(planted, future[features]))
    np.testing.assert_array_equal(predict_yes(clean, rows[features]), predict_yes(planted, rows[features]))
    assert outcome.window.train_end < AS_OF
