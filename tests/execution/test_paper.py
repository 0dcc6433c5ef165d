"""Paper trading: the live loop's orders and fills are the backtest's, restarts and halts included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from kwx.backtest.data import load_period
from kwx.backtest.engine import simulate
from kwx.backtest.models import ModelSource, OutOfSampleResolver
from kwx.config import RtConfig
from kwx.data.db import make_engine
from kwx.execution import records
from kwx.registry.cache import RegistryCache
from kwx.rt.replay import replay_day
from tests.conftest import clear_rt_records

pytestmark = pytest.mark.integration
DAY = date(2025, 7, 18)
# minute ticks, as the backtest decides; limits that do not bind, so the two see the same markets
PAPER = {"markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 60,
         "execution": {"mode": "paper", "max_open_orders": 100, "max_position_contracts": 100_000,
                       "max_daily_loss_dollars": 1_000_000}}


def _paper_fills(engine, event_date: date) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(text(
            "SELECT f.market_ticker, f.side, f.price_cents, f.count, f.fee_cents, f.liquidity, f.ts_utc "
            "FROM fills f JOIN markets m ON m.ticker = f.market_ticker WHERE m.event_date = :day"), conn,
            params={"day": event_date})
    frame["fill_ts"] = (pd.to_datetime(frame["ts_utc"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        seconds=1)
    return frame.drop(columns="ts_utc")


def test_a_paper_replay_trades_exactly_what_the_backtest_trades(promoted, market_db):
    engine, client = market_db, promoted["client"]
    config = RtConfig.model_validate(PAPER)
    # the day's markets open the day before: both days replayed, a restart of the broker in between
    for day in (date(2025, 7, 17), DAY):
        replay_day(config, engine, client, day)
    paper = _paper_fills(engine, DAY)
    resolver = OutOfSampleResolver([ModelSource.from_run(client, "chicago", "between", promoted["run_id"])],
                                   RegistryCache(client))
    period = load_period(engine, [("chicago", "between")], DAY, DAY, resolver)
    backtest = simulate(period, config).fills
    assert len(backtest) > 0, "the day must trade for the comparison to mean anything"
    key = ["market_ticker", "side", "fill_ts", "liquidity"]
    ours = backtest.rename(columns={"contracts": "count"})[[*key, "price_cents", "count", "fee_cents"]]
    joined = ours.merge(paper, on=key, how="outer", suffixes=("_backtest", "_paper"), indicator=True)
    assert (joined["_merge"] == "both").all(), joined[joined["_merge"] != "both"].head(10)
    for column in ("price_cents", "count", "fee_cents"):
        np.testing.assert_allclose(joined[f"{column}_paper"], joined[f"{column}_backtest"], err_msg=column)
    orders = records.orders(engine, "paper")
    assert set(orders["status"]) <= {"resting", "cancelled", "filled"} and len(orders) >= len(paper)

    # Each paper fill's source (the locked flag of the signal its order was placed on) is the backtest's flag of
    # the decision row it traded on: the minute before a maker fill, a taker fill's own. Every fill of both days,
    # the next day's markets (open from the afternoon before) included.
    markets = load_period(engine, [("chicago", "between")], date(2025, 7, 17), DAY + timedelta(days=1), resolver)
    flags = markets.rows[["market_ticker", "tick_ts"]].assign(locked=markets.inputs.locked)
    sourced = records.fills(engine, "paper", with_source=True)
    fill_ts = (sourced["ts_utc"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    sourced["tick_ts"] = fill_ts - np.where(sourced["liquidity"] == "maker", 60, 0)
    decided = sourced.merge(flags, on=["market_ticker", "tick_ts"])
    assert len(decided) == len(sourced) > len(paper)
    assert (decided["source"] == np.where(decided["locked"], "locked", "open")).all()


def test_a_halt_made_while_the_loop_runs_applies_from_the_next_tick(promoted):
    """The broker asks for the halt state every tick: an operator's halt from another process cancels every
    resting order at the next tick and places none."""
    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    operator = make_engine(engine.url.render_as_string(hide_password=False))  # `kwx rt halt` elsewhere
    resting, halted = set(), []

    def halt_once_orders_rest(tick, result):
        for row in result.execution.orders if result.execution is not None else []:
            (resting.add if row["status"] == "resting" else resting.discard)(row["client_order_id"])
        if resting and not halted:
            records.halt(operator, "paper", reason="test: mid-run", by="pytest", now=tick["ts_utc"])
            halted.append((tick["ts_utc"], sorted(resting)))

    replay_day(RtConfig.model_validate(PAPER), engine, client, DAY, max_ticks=600, on_tick=halt_once_orders_rest)
    operator.dispose()
    at, open_then = halted[0]
    orders = records.orders(engine, "paper").set_index("client_order_id")
    assert (orders["created_at"] <= at).all(), "an order was placed after the halt"
    cancelled = orders.loc[open_then]
    cancelled = cancelled[cancelled["status"] != "filled"]  # a fill at the next tick comes before the policy
    assert len(cancelled) and (cancelled["status"] == "cancelled").all() and (cancelled["reason"] == "halted").all()
    assert (cancelled["cancelled_at"] == at + timedelta(seconds=PAPER["tick_seconds"])).all()


def test_a_halt_cancels_the_resting_orders_and_places_none(promoted):
    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    config = RtConfig.model_validate(PAPER)
    now = datetime(2025, 7, 18, 6, tzinfo=UTC)
    records.halt(engine, "paper", reason="test: operator halt", by="pytest", now=now, cancel_all=True)
    replay_day(config, engine, client, DAY, max_ticks=600)
    assert records.orders(engine, "paper").empty and records.fills(engine, "paper").empty
    records.resume(engine, "paper", by="pytest", now=now)
    replay_day(config, engine, client, DAY, max_ticks=600)
    assert not records.orders(engine, "paper").empty
