"""The backtest on the promoted demo model: the live signal path, out of sample, no lookahead, logged to MLflow."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, insert, select
from typer.testing import CliRunner

from kwx.backtest.data import load_period
from kwx.backtest.engine import TICK_SECONDS, simulate
from kwx.backtest.models import ModelSource, OutOfSampleResolver
from kwx.backtest.runner import parse_grid, run_backtest
from kwx.cli import app
from kwx.config import FeeConfig, RtConfig, load_config
from kwx.data.schema import Candle, RtSignal, SeriesFeeRecord
from kwx.domain.performance import sharpe
from kwx.domain.signals import FeeSchedule
from kwx.registry.cache import RegistryCache
from kwx.rt.engine import finalize_signals
from kwx.rt.replay import replay_day
from tests.conftest import clear_rt_records, mlflow_pointed_at

pytestmark = pytest.mark.integration
RT = {"markets": [{"city": "chicago", "bracket": "between"}]}
FIRST_TEST_DAY = date(2025, 7, 13)  # the promoted run's windows test 2025-07-13..24


@pytest.fixture(scope="module")
def period(promoted):
    client = promoted["client"]
    resolver = OutOfSampleResolver([ModelSource.from_run(client, "chicago", "between", promoted["run_id"])],
                                   RegistryCache(client))
    with mlflow_pointed_at(promoted["tracking_uri"]):  # the models load by models:/ URIs, through MLflow's global one
        return load_period(promoted["engine"], [("chicago", "between")], date(2025, 7, 10), date(2025, 7, 24),
                           resolver)


@pytest.fixture
def tracked(promoted, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    return promoted


def test_decisions_equal_the_replayed_live_signals(promoted, period):
    engine, client = promoted["engine"], promoted["client"]
    config = RtConfig.model_validate({**RT, "tick_seconds": TICK_SECONDS})
    day = date(2025, 7, 18)
    clear_rt_records(engine)  # other files' replays of the day, at other ticks, share this session's store
    replay_day(config, engine, client, day)
    with engine.connect() as conn:
        replayed = pd.read_sql(select(RtSignal).where(RtSignal.ts_utc >= datetime(2025, 7, 18, 6, tzinfo=UTC),
                                                      RtSignal.ts_utc < datetime(2025, 7, 19, 6, tzinfo=UTC)), conn)
    replayed["ts_utc"] = pd.to_datetime(replayed["ts_utc"], utc=True)
    ours = finalize_signals(period.rows["tick_ts"].to_numpy(), period.inputs, config)
    joined = replayed.merge(ours, on=["ts_utc", "market_ticker"], suffixes=("_replay", "_backtest"))
    assert len(joined) == len(replayed) > 1000  # every replayed (tick, market) is a backtest decision
    for column in ("p_model", "p_blend", "edge_cents", "size_fraction"):
        np.testing.assert_allclose(joined[f"{column}_backtest"], joined[f"{column}_replay"], rtol=1e-9,
                                   equal_nan=True, err_msg=column)
    for column in ("side", "skip_reason", "wf_window"):
        pd.testing.assert_series_equal(joined[f"{column}_backtest"].fillna(""), joined[f"{column}_replay"].fillna(""),
                                       check_names=False)


def test_only_out_of_sample_days_trade(period):
    config = RtConfig.model_validate(RT)
    result = simulate(period, config)
    assert len(result.fills) > 0
    assert (result.fills["event_date"] >= FIRST_TEST_DAY).all()
    early = period.rows["event_date"] < FIRST_TEST_DAY
    reasons = pd.Series(period.inputs.data_skip[early.to_numpy()]).dropna()
    assert reasons.str.startswith("no model: out of sample only").any()
    assert period.inputs.window[~early.to_numpy() & ~np.isnan(period.inputs.p_model)].size > 0


def test_figures_are_over_traded_days_and_skipped_days_say_why(period):
    result = simulate(period, RtConfig.model_validate(RT))
    # the days before the first window's test week
    assert result.coverage.skipped == {date(2025, 7, d): "no model (out of sample only)" for d in (10, 11, 12)}
    assert result.coverage.traded == [date(2025, 7, d) for d in range(13, 25)]
    assert list(result.daily.index) == result.coverage.traded  # no zero days for the untradeable ones
    assert result.summary["daily_sharpe"] == pytest.approx(sharpe(result.daily["pnl"].to_numpy()))
    assert (result.summary["days_total"], result.summary["days_traded"], result.summary["days_skipped"]) == (15, 12, 3)
    assert result.coverage.line() == "days: 12 traded of 15; skipped 3: 3 no model (out of sample only)"


def test_backtest_probabilities_are_open_inside_0_1_and_locked_exactly_0_or_1(period):
    p, locked = period.inputs.p_model, period.inputs.locked
    priced = ~np.isnan(p)
    assert locked.any() and (priced & ~locked).any()
    assert ((p[priced & ~locked] > 0) & (p[priced & ~locked] < 1)).all()
    assert set(np.unique(p[locked])) <= {0.0, 1.0}
    fills = simulate(period, RtConfig.model_validate(RT)).fills
    assert fills["locked"].dtype == bool  # each fill says whether the rule or the model priced it


def test_no_decision_sees_the_future_and_no_fill_without_a_trade_through(promoted, period):
    rows = period.rows
    assert (rows["end_period_ts"].dropna() <= rows.loc[rows["end_period_ts"].notna(), "tick_ts"]).all()
    config = RtConfig.model_validate({**RT, "execution": {"taker_fallback_cents": 3}})
    fills = simulate(period, config).fills
    maker, taker = fills[fills["liquidity"] == "maker"], fills[fills["liquidity"] == "taker"]
    assert len(maker) and len(taker)
    assert (maker["fill_ts"] == maker["decision_ts"] + TICK_SECONDS).all()  # fills on the following minute
    assert (taker["fill_ts"] == taker["decision_ts"]).all()
    with promoted["engine"].connect() as conn:
        candles = pd.read_sql(select(Candle.market_ticker, Candle.end_period_ts, Candle.price_low, Candle.price_high,
                                     Candle.volume), conn)
    traded = maker.merge(candles, left_on=["market_ticker", "fill_ts"], right_on=["market_ticker", "end_period_ts"])
    assert len(traded) == len(maker)
    through = np.where(traded["side"] == "yes", traded["price_low"] < traded["price_cents"],
                       traded["price_high"] > 100 - traded["price_cents"])
    assert through.all()
    assert (traded.groupby(["market_ticker", "fill_ts", "side"])["contracts"].sum()
            <= traded.groupby(["market_ticker", "fill_ts", "side"])["volume"].first()).all()


def test_caps_hold_per_city_day_and_side(period):
    config = RtConfig.model_validate({**RT, "risk": {"max_bankroll_pct_city_day_side": 0.02},
                                      "execution": {"bankroll_dollars": 5000}})
    fills = simulate(period, config).fills
    spent = fills.groupby(["city", "event_date", "side"])["cost_cents"].sum()
    assert len(spent) and (spent <= 0.02 * 5000 * 100 + 1e-6).all()
    assert spent.max() > 0.9 * 0.02 * 5000 * 100  # the cap binds, it is not trivially loose


def test_settlement_pnl_follows_the_market_result(promoted, period):
    fills = simulate(period, RtConfig.model_validate(RT)).fills
    won = fills["won"].to_numpy()
    expected = 100 * fills["contracts"] * won - fills["contracts"] * fills["price_cents"] - fills["fee_cents"] \
        - fills["slippage_cents"]
    np.testing.assert_allclose(fills["pnl_cents"], expected)
    outcomes = period.outcome.reindex(fills["market_ticker"]).to_numpy()
    np.testing.assert_array_equal(won, np.where(fills["side"] == "yes", outcomes, 1 - outcomes))


def test_backtest_run_logs_strategy_baselines_and_grid(tracked, tmp_path):
    rt_path = tmp_path / "rt.yaml"
    rt_path.write_text("markets:\n  - {city: chicago, bracket: between}\nblend_weight: 0.7   # keep me\n")
    result = CliRunner().invoke(app, ["backtest", "--start", "2025-07-13", "--end", "2025-07-24", "--config",
                                      str(rt_path), "--blend-grid", "0.5:0.7:0.1", "--write-rt-config",
                                      "--db-url", tracked["db"]])
    assert result.exit_code == 0, result.output
    assert "market only (w=0)" in result.output and "model only (w=1)" in result.output
    # every strategy's PnL in three rows: the model's open rows, the rule's locked rows, their total
    assert result.output.count("open (model)") >= 5 and result.output.count("locked (rule)") >= 5
    assert "best blend weight by daily_sharpe on open rows (open_daily_sharpe)" in result.output
    assert "their P&L and ROI say nothing about a real market" in result.output  # the data is demo data
    assert "days: 12 traded of 12" in result.output
    client = tracked["client"]
    experiment = client.get_experiment_by_name("kwx-backtests").experiment_id
    parent = client.search_runs([experiment], filter_string="tags.`kwx.kind` = 'backtest'",
                                order_by=["attributes.start_time DESC"])[0]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(float(c.data.params["blend_weight"]) for c in children) == [0.5, 0.6, 0.7]
    best = max(children, key=lambda c: c.data.metrics["open_daily_sharpe"])  # the weights differ on open rows only
    assert parent.data.metrics["best_blend_weight"] == float(best.data.params["blend_weight"])
    assert parent.data.params["grid_ranked_by"] == "open_daily_sharpe"
    for key in ("total_pnl", "roi_on_capital", "daily_sharpe", "max_drawdown", "hit_rate", "fill_rate", "fees_paid",
                "market_only_total_pnl", "model_only_total_pnl", "open_pnl", "locked_pnl", "open_hit_rate",
                "locked_n_fills", "market_only_open_pnl", "market_only_locked_pnl", "model_only_open_daily_sharpe"):
        assert key in parent.data.metrics
    assert all("open_pnl" in c.data.metrics and "locked_hit_rate" in c.data.metrics for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trades.csv", "daily_pnl.csv", "equity_curve.png", "blend_grid.png", "blend_grid.csv",
            "summary.json", "by_city_bracket.csv"} <= artifacts
    written = load_config(rt_path, RtConfig)
    assert written.blend_weight == float(best.data.params["blend_weight"])
    assert "# keep me" in rt_path.read_text()


def test_baselines_are_the_same_engine_at_w0_and_w1(tracked):
    run = run_backtest(RtConfig.model_validate(RT), tracked["engine"], [("chicago", "between")],
                       date(2025, 7, 13), date(2025, 7, 24))
    assert run.baselines["market_only"].blend_weight == 0.0
    assert run.baselines["model_only"].blend_weight == 1.0
    metrics = mlflow.get_run(run.run_id).data.metrics
    assert metrics["model_only_total_pnl"] == pytest.approx(run.baselines["model_only"].summary["total_pnl"])
    assert metrics["total_pnl"] == pytest.approx(run.strategy.summary["total_pnl"])
    market = run.baselines["market_only"].summary
    assert metrics["market_only_open_pnl"] == pytest.approx(market["open_pnl"])
    assert metrics["market_only_locked_pnl"] == pytest.approx(market["locked_pnl"])
    for result in (run.strategy, *run.baselines.values()):
        s, fills = result.summary, result.fills
        assert s["open_pnl"] + s["locked_pnl"] == pytest.approx(s["total_pnl"])
        assert (s["open_n_fills"], s["locked_n_fills"]) == ((~fills["locked"]).sum(), fills["locked"].sum())
        np.testing.assert_allclose(result.daily["open_pnl"] + result.daily["locked_pnl"], result.daily["pnl"])
    assert run.strategy.blend_weight == 0.7
    assert run.demo_data and mlflow.get_run(run.run_id).data.tags["kwx.demo_data"] == "true"
    # the demo stores its series at Kalshi's general schedule, and the run says those are the fees it paid
    assert run.fees.startswith("exchange: KXHIGHCHI: quadratic ×1 from 2025-06-")
    assert mlflow.get_run(run.run_id).data.tags["kwx.fees"] == run.fees


def test_fills_pay_the_series_fee_in_force_at_their_time(promoted):
    """A fee change planted in the stored fee data reaches the decisions' edges and the fills from its second on
    (kwx used to price every fill at the config's maker 0 / taker 0.07, as the override still does)."""
    engine, client = promoted["engine"], promoted["client"]
    resolver = OutOfSampleResolver([ModelSource.from_run(client, "chicago", "between", promoted["run_id"])],
                                   RegistryCache(client))
    change_ts = int(datetime(2025, 7, 18, 15, tzinfo=UTC).timestamp())
    record = {"series_ticker": "KXHIGHCHI", "effective_ts": change_ts, "fee_type": "quadratic_with_maker_fees",
              "fee_multiplier": 2.0, "source": "fee_change", "fetched_ts": change_ts}
    with engine.begin() as conn:
        conn.execute(insert(SeriesFeeRecord).values(**record))
    try:
        def trade(fees: FeeConfig):
            period = load_period(engine, [("chicago", "between")], FIRST_TEST_DAY, date(2025, 7, 24), resolver,
                                 fees=fees)
            return period, simulate(period, RtConfig.model_validate(RT))

        period, result = trade(FeeConfig())
        _, overridden = trade(FeeConfig(taker_rate=0.07, maker_rate=0.0))
    finally:
        with engine.begin() as conn:
            conn.execute(delete(SeriesFeeRecord).where(SeriesFeeRecord.effective_ts == change_ts))
    candle_ts = period.inputs.candle_ts
    priced = ~np.isnan(candle_ts)
    assert set(period.inputs.fees.maker_rate[priced & (candle_ts >= change_ts)]) == {0.035}
    assert set(period.inputs.fees.maker_rate[priced & (candle_ts < change_ts)]) == {0.0}
    assert set(period.inputs.fees.taker_rate[priced & (candle_ts >= change_ts)]) == {0.14}
    fills = result.fills
    maker, after = (fills["liquidity"] == "maker").to_numpy(), (fills["fill_ts"] >= change_ts).to_numpy()
    assert (maker & after).sum() > 0 and (maker & ~after).sum() > 0
    assert (fills["fee_cents"][maker & ~after] == 0).all()
    late = fills[maker & after]
    np.testing.assert_array_equal(late["fee_cents"], FeeSchedule(0.14, 0.035).order_cents(
        late["price_cents"].to_numpy(), late["contracts"].to_numpy(), maker=True))
    assert (late["fee_cents"] > 0).all()
    assert (overridden.fills["fee_cents"][overridden.fills["liquidity"] == "maker"] == 0).all()
    assert result.summary["fees_paid"] > overridden.summary["fees_paid"]


def test_the_run_logs_traded_and_skipped_days(tracked):
    run = run_backtest(RtConfig.model_validate(RT), tracked["engine"], [("chicago", "between")],
                       date(2025, 7, 10), date(2025, 7, 24))
    logged = mlflow.get_run(run.run_id).data
    assert (logged.metrics["days_total"], logged.metrics["days_traded"], logged.metrics["days_skipped"]) == (15, 12, 3)
    assert json.loads(logged.tags["kwx.days_skipped"]) == {"no model (out of sample only)": 3}
    summary = mlflow.artifacts.load_dict(f"runs:/{run.run_id}/summary.json")
    assert summary["days_skipped"] == {"no model (out of sample only)": ["2025-07-10", "2025-07-11", "2025-07-12"]}
    assert (summary["days_total"], summary["days_traded"]) == (15, 12)
    assert run.baselines["market_only"].coverage == run.strategy.coverage  # the days do not depend on the weight


@pytest.mark.parametrize(("args", "message"), [
    (["--blend-grid", "0.9:0.5:0.1"], "needs 0 <= START <= STOP <= 1"),
    (["--blend-grid", "a:b"], "is not START:STOP:STEP"),
    (["--write-rt-config"], "needs --blend-grid"),
    (["--city", "chicago"], "give --city and --bracket together"),
])
def test_bad_input_fails_with_one_clear_line(tracked, tmp_path, args, message):
    (tmp_path / "rt.yaml").write_text(json.dumps(RT))
    result = CliRunner().invoke(app, ["backtest", "--start", "2025-07-13", "--end", "2025-07-24", "--config",
                                      str(tmp_path / "rt.yaml"), "--db-url", tracked["db"], *args])
    assert result.exit_code == 2 and message in result.output


def test_a_period_without_markets_is_a_clear_error(tracked, tmp_path):
    (tmp_path / "rt.yaml").write_text(json.dumps(RT))
    result = CliRunner().invoke(app, ["backtest", "--start", "2024-01-01", "--end", "2024-01-31", "--config",
                                      str(tmp_path / "rt.yaml"), "--db-url", tracked["db"]])
    assert result.exit_code == 2 and "no chicago/between markets with event dates 2024-01-01..2024-01-31" in (
        result.output)


def test_grid_parsing_includes_both_ends():
    assert parse_grid("0.5:0.8:0.05") == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
    assert parse_grid("0.3:0.3:0.1") == [0.3]
