"""`kwx monitor` end to end: a forward window scored once its week settles, drift alarms, withdrawal."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from kwx.cities import get_city
from kwx.cli import app
from kwx.config import TrainConfig
from kwx.data.dataset import load_dataset
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.data.schema import ClimateDaily, Market, RtSignal
from kwx.domain.features import feature_columns
from kwx.domain.markets import climate_day_bounds, with_locked_outcomes
from kwx.domain.metrics import brier, pooled_metrics
from kwx.domain.windows import Window
from kwx.lifecycle.drift import realized_checks
from kwx.lifecycle.monitor import MONITOR_EXPERIMENT, monitor
from kwx.registry.promotion import promote
from kwx.registry.resolution import resolve
from kwx.registry.versions import stage_table
from kwx.report import infrastructure_checks
from kwx.training import runner
from kwx.training.model import predict_yes
from kwx.training.walkforward import sample_rows, window_scores
from tests.conftest import LENIENT_MARKET_GATES, demo_database

pytestmark = pytest.mark.integration
cli = CliRunner()

NAME = "kwx-chicago-between"
CHICAGO = get_city("chicago")
WEEK = [date(2025, 7, 21) + timedelta(days=i) for i in range(4)]
FORWARD = Window(date(2025, 7, 9), date(2025, 7, 20), WEEK[0], WEEK[-1])
SMALL = {"city": "chicago", "bracket": "between", "train_days": 12, "test_days": 4, "step_days": 4, "trials": 2,
         "cv_splits": 3, "acceptance": {"min_windows": 1, "max_ece": 0.5, **LENIENT_MARKET_GATES}}


def _now(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=15)


def _unsettle(engine, days: list[date]) -> list[dict]:
    """Delete the climate reports of ``days``; returns them, to settle the days again later."""
    where = (ClimateDaily.station == CHICAGO.station, ClimateDaily.climate_date.in_(days))
    with engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(ClimateDaily).where(*where))]
        conn.execute(delete(ClimateDaily).where(*where))
    return rows


def _settle(engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(ClimateDaily), rows)


def _demo_and_forward_config(engine) -> TrainConfig:
    """Demo chicago data 2025-07-01..24 and the config of the forward window FORWARD (trades 2025-07-21..24)."""
    load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    return TrainConfig.model_validate(SMALL | {"start": "2025-07-09", "end": "2025-07-24"})


def _signals(engine, model_id: str) -> pd.DataFrame:
    """A few rt_signals rows of the live loop during the week: three of ``model_id`` (two sized) on 2025-07-22,
    one of another model and one of ``model_id`` outside the week, which the loop view must ignore."""
    with engine.connect() as conn:
        tickers = list(conn.scalars(select(Market.ticker).where(
            Market.city == "chicago", Market.strike_type == "between", Market.event_date == WEEK[1]
        ).order_by(Market.ticker).limit(3)))
        outside = conn.scalar(select(Market.ticker).where(Market.city == "chicago",
                                                          Market.event_date == date(2025, 7, 19)))
    start, _ = climate_day_bounds(WEEK[1], CHICAGO)
    rows = pd.DataFrame({
        "ts_utc": [start + timedelta(hours=h) for h in (12, 13, 14, 15)] + [start - timedelta(days=3)],
        "market_ticker": [*tickers, tickers[0], outside], "model_id": [model_id] * 3 + ["kwx-other/1", model_id],
        "p_model": [0.8, 0.3, 0.6, 0.5, 0.9], "p_market": [0.6, 0.35, 0.5, 0.5, 0.5],
        "edge_cents": [4.0, 1.0, 3.0, 9.0, 9.0], "size_fraction": [0.05, 0.0, 0.02, 0.3, 0.3],
    })
    with engine.begin() as conn:
        conn.execute(insert(RtSignal), [{**r, "city": "chicago", "bracket": "between"}
                                        for r in rows.to_dict("records")])
    return rows.iloc[:3]


def test_forward_week_is_scored_once_settled_like_a_test_week(engine, tracking):
    config = _demo_and_forward_config(engine)
    week = _unsettle(engine, WEEK)
    summary = runner.train(config, engine, prepared=runner.prepare(config, engine, windows=[FORWARD]),
                           forward_as_of=WEEK[0])
    assert summary.versions == {FORWARD.name: "1"}
    version = tracking.get_model_version(NAME, "1")
    assert (version.tags["origin"], version.tags["evaluation"]) == ("forward", "pending")
    window_run, parent_run = version.run_id, summary.parent_run_id
    cv_before = tracking.get_run(parent_run).data.metrics["mean_cv_calibrated_log_loss"]
    params_before = tracking.get_run(window_run).data.params
    signals = _signals(engine, f"{NAME}/1")

    # (b) the week has not ended, then it has but is unsettled, then one day is still missing: it waits
    early = monitor(tracking, engine, as_of=WEEK[-1], now=_now(WEEK[-1]))
    assert early.evaluated == [] and early.waiting == [
        f"{NAME} version 1 ({FORWARD.name}): trades until 2025-07-24, its week has not ended before 2025-07-24"]
    unsettled = monitor(tracking, engine, as_of=date(2025, 7, 25), now=_now(date(2025, 7, 25)))
    assert unsettled.waiting == [f"{NAME} version 1 ({FORWARD.name}): 2025-07-21, 2025-07-22, 2025-07-23, "
                                 "2025-07-24 not settled yet (no climate report of KMDW for those days)"]
    _settle(engine, [r for r in week if r["climate_date"] != WEEK[-1]])
    one_left = monitor(tracking, engine, as_of=date(2025, 7, 25), now=_now(date(2025, 7, 25)))
    assert one_left.waiting == [f"{NAME} version 1 ({FORWARD.name}): 2025-07-24 not settled yet (no climate "
                                "report of KMDW for that day)"]
    assert tracking.get_model_version(NAME, "1").tags["evaluation"] == "pending"
    assert "test_unlocked_ece" not in tracking.get_run(window_run).data.metrics
    assert "drift" not in " ".join(one_left.lines())  # nothing is in Production: no family to watch

    # (a) settled: scored exactly as a direct recomputation through the registered model
    _settle(engine, [r for r in week if r["climate_date"] == WEEK[-1]])
    now = _now(date(2025, 7, 26))
    report = monitor(tracking, engine, as_of=date(2025, 7, 26), now=now)
    assert report.waiting == [] and [e.version for e in report.evaluated] == ["1"]

    rows = load_dataset(engine, "chicago", "between", WEEK[0], WEEK[-1], config.feature_set,
                        max_obs_age_minutes=config.vc_for("chicago").max_obs_age_minutes,
                        lock_margin_f=config.lock_margin_f)
    rows = sample_rows(rows[rows["label"].notna()], config.sample_every_minutes)
    model = mlflow.sklearn.load_model(f"models:/{NAME}/1")
    y, locked = rows["label"].to_numpy(dtype=int), rows["locked"].to_numpy(dtype=bool)
    p_model = with_locked_outcomes(predict_yes(model, rows[feature_columns(config.feature_set, "between")]),
                                   rows["locked_outcome"].to_numpy(dtype=float))
    p_market = np.clip(rows["yes_mid"].to_numpy(dtype=float) / 100, 0, 1)
    expected = window_scores(y, p_model, p_market, locked, rows["event_date"].to_numpy())

    window = tracking.get_run(window_run).data
    for key, value in expected.items():
        assert window.metrics[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    assert report.evaluated[0].rows == len(rows)
    for key in ("n_test", "n_test_locked"):  # params are immutable: logged only when training had not
        fresh = str(len(rows)) if key == "n_test" else str(int(locked.sum()))
        assert window.params[key] == params_before.get(key, fresh)
    artifacts = {a.path for a in tracking.list_artifacts(window_run)}
    assert {"test_predictions.csv", "reliability.json", "reliability.png"} <= artifacts
    logged = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=window_run, artifact_path="test_predictions.csv"))
    assert logged["p_model"].to_numpy() == pytest.approx(p_model, abs=1e-12)

    # the live loop's view of the week: only this model's rows inside the week count
    labels = rows.groupby("market_ticker")["label"].first()
    sized = signals[signals["size_fraction"] > 0]
    sized_labels = sized["market_ticker"].map(labels).to_numpy()
    assert window.metrics["loop_signals"] == 3 and window.metrics["loop_sized_signals"] == 2
    assert window.metrics["loop_mean_edge_cents"] == pytest.approx(3.5)
    assert window.metrics["loop_traded_brier_model"] == pytest.approx(brier(sized_labels, sized["p_model"]))
    assert window.metrics["loop_traded_brier_market"] == pytest.approx(brier(sized_labels, sized["p_market"]))

    # the training run's summary now reads like a walk-forward run's
    parent = tracking.get_run(parent_run).data.metrics
    assert parent["mean_test_unlocked_ece"] == pytest.approx(expected["test_unlocked_ece"], abs=1e-12)
    assert parent["std_test_unlocked_ece"] == 0 and parent["n_windows"] == 1 and parent["n_test_rows"] == len(rows)
    assert parent["mean_cv_calibrated_log_loss"] == cv_before
    assert "mean_loop_signals" not in parent
    pooled = pooled_metrics(pd.DataFrame({"label": y, "p_model": p_model, "p_market": p_market, "locked": locked}))
    for key, value in pooled.items():
        assert parent[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    assert "reliability_pooled.json" in {a.path for a in tracking.list_artifacts(parent_run)}

    checks = realized_checks(expected, config.acceptance)
    tags = tracking.get_model_version(NAME, "1").tags
    assert tags["evaluation"] == "done" and tags["evaluated_at"] == now.isoformat()
    assert tags["realized_verdict"] == ("pass" if all(c.passed for c in checks) else "fail")
    assert tags["realized_failing"] == ";".join(c.name for c in checks if not c.passed)

    # (c) a second pass changes nothing
    again = monitor(tracking, engine, as_of=date(2025, 7, 27), now=_now(date(2025, 7, 27)))
    assert again.evaluated == [] and again.waiting == []
    assert len(tracking.get_metric_history(window_run, "test_unlocked_ece")) == 1
    assert len(tracking.get_metric_history(parent_run, "mean_test_unlocked_ece")) == 1
    assert tracking.get_model_version(NAME, "1").tags == tags


def _monitor_cli(db: str, day: str):
    return cli.invoke(app, ["monitor", "--as-of", day, "--city", "chicago", "--bracket", "between", "--db-url", db])


def test_drift_alarm_withdraws_the_trading_version_and_is_charted_once_per_day(tmp_path, tracking):
    db = demo_database(tmp_path, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    engine = make_engine(db)
    # Three walk-forward windows testing 07-13..16, 17..20, 21..24, promoted together; a drift span of six days
    # and an ECE bound the demo's models hold (about 0.06) but not once four days' highs are shifted (about 0.12).
    trained = runner.train(TrainConfig.model_validate(SMALL | {
        "start": "2025-07-01", "end": "2025-07-24",
        "lifecycle": {"monitor_days": 6, "auto_withdraw": True, "drift": {"max_ece": 0.09}}}), engine)
    promote(tracking, trained.parent_run_id, "Production", now=datetime(2025, 7, 25, tzinfo=UTC),
            infrastructure=infrastructure_checks(engine, tracking, trained.parent_run_id))

    calm = _monitor_cli(db, "2025-07-25")
    assert calm.exit_code == 0, calm.output
    assert "drift alarm" not in calm.output and NAME in calm.output

    with engine.begin() as conn:  # the settled highs of the last test week move 8°F: the models no longer fit
        conn.execute(update(ClimateDaily).where(ClimateDaily.climate_date.in_(WEEK))
                     .values(tmax_f=ClimateDaily.tmax_f + 8))
    alarm = _monitor_cli(db, "2025-07-26")
    assert alarm.exit_code == 1, alarm.output
    assert (f"drift alarm: {NAME}: rolling ECE 0.1" in alarm.output
            and "> drift.max_ece 0.09 over 5 settled days (2025-07-20..2025-07-24)" in alarm.output), alarm.output
    assert f"withdrawn: {NAME} version 3 (win_20250709_20250724) archived" in alarm.output

    # (d) the version trading 07-26 is archived; the week it tested now falls back to the window before it
    withdrawn = tracking.get_model_version(NAME, "3")
    assert withdrawn.current_stage == "Archived"
    assert withdrawn.tags["withdrawn_at"] and "rolling ECE" in withdrawn.tags["withdrawn_reason"]
    table = stage_table(tracking, NAME, "Production")
    assert sorted(f.version for f in table) == ["1", "2"]
    fallback = resolve(table, WEEK[1], city="chicago", bracket="between", stage="Production")
    assert (fallback.facts.version, fallback.stale_days) == ("2", 2)
    assert {k: str(v) for k, v in tracking.get_registered_model(NAME).aliases.items()} == {"production": "2"}

    # (e) one monitoring run, one point per day at step = days since the epoch; a rerun adds none
    again = _monitor_cli(db, "2025-07-26")
    assert again.exit_code == 1 and "withdrawn:" not in again.output  # that day's withdrawal already happened
    assert tracking.get_model_version(NAME, "2").current_stage == "Production"
    experiment = tracking.get_experiment_by_name(MONITOR_EXPERIMENT)
    (run,) = tracking.search_runs([experiment.experiment_id])
    assert run.data.tags["kwx.kind"] == "monitor" and run.data.tags["kwx.model_name"] == NAME
    days = [date(2025, 7, 25), date(2025, 7, 26)]
    history = tracking.get_metric_history(run.info.run_id, "rolling_ece")
    assert [m.step for m in history] == [(d - date(1970, 1, 1)).days for d in days]
    assert [m.timestamp for m in history] == [int(datetime.combine(d, datetime.min.time(), tzinfo=UTC).timestamp())
                                              * 1000 for d in days]
    assert history[0].value < 0.09 < history[1].value
    assert [m.value for m in tracking.get_metric_history(run.info.run_id, "drift_breaches")] == [0, 1]
    artifacts = {a.path for a in tracking.list_artifacts(run.info.run_id, "drift")}
    assert artifacts == {"drift/2025-07-25.json", "drift/2025-07-26.json"}
    document = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/drift/2025-07-26.json"))
    assert len(document["breaches"]) == 1 and document["trading"]["2025-07-22"] == "3 (win_20250709_20250724)"
    assert document["span"] == ["2025-07-20", "2025-07-24"] and not math.isnan(document["quality"]["rolling_ece"])
    engine.dispose()


def test_monitor_refuses_a_city_without_a_bracket(tracking):
    result = cli.invoke(app, ["monitor", "--city", "chicago"])
    assert result.exit_code == 2
    assert "give both --city and --bracket, or neither" in result.output
    assert "Traceback" not in result.output
