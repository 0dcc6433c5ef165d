"""Maker-first execution: fills only on a trade through the price, hysteresis, caps, fees, settlement."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwx.domain.execution import Caps, allocate, episode_ids, settle, trades_through
from kwx.domain.fees import FeeBook
from kwx.domain.orders import OrderLimits, step_through

FEES = FeeBook.fixed(taker_rate=0.07, maker_rate=0.0, contracts=10)


def test_a_yes_bid_fills_only_when_trades_go_below_it():
    side = np.array(["yes"] * 4)
    price = np.array([40.0, 40.0, 40.0, 40.0])
    low = np.array([40.0, 39.0, np.nan, 41.0])  # touch, through, no trade, above
    assert trades_through(side, price, low, low).tolist() == [False, True, False, False]


def test_a_no_order_fills_only_when_yes_trades_above_the_ask_it_sold():
    side = np.array(["no"] * 3)
    price = np.array([60.0, 60.0, 60.0])  # NO at 60 = YES sold at 40
    high = np.array([40.0, 41.0, np.nan])
    assert trades_through(side, price, high, high).tolist() == [False, True, False]


@given(st.lists(st.tuples(st.sampled_from(["yes", "no"]), st.integers(1, 99), st.integers(1, 99)), min_size=1,
                max_size=30))
def test_no_fill_without_a_trade_strictly_through_the_price(orders):
    side = np.array([o[0] for o in orders], dtype=object)
    price = np.array([o[1] for o in orders], dtype=float)
    traded = np.array([o[2] for o in orders], dtype=float)
    fills = trades_through(side, price, traded, traded)
    through = np.where(side == "yes", traded < price, traded > 100 - price)
    assert (fills == through).all()


LIMITS = OrderLimits(tau_close_cents=0.5, cancel_minutes_before_close=15, max_open_orders=20)


def resting_orders(codes, side, open_ok, keep_ok):
    """Minute after minute (one row per market and minute, in order), as the backtest steps the policy."""
    ticks = np.concatenate([np.arange((codes == c).sum()) for c in np.unique(codes)])
    edge = np.ones(len(codes))
    return step_through(ticks, codes, open_ok, keep_ok, side, np.full(len(codes), 40.0), edge, LIMITS)


def test_orders_open_above_tau_open_rest_above_tau_close_and_cancel_below():
    edge = np.array([2.0, 0.8, 0.6, 0.4, 0.8, 2.0])
    codes = np.zeros(6, dtype=int)
    side = np.array(["yes"] * 6, dtype=object)
    resting = resting_orders(codes, side, edge >= 1.0, edge >= 0.5)
    assert resting.tolist() == [True, True, True, False, False, True]
    assert episode_ids(codes, side, resting).tolist() == [0, 0, 0, -1, -1, 1]


def test_a_side_flip_or_a_new_market_cancels_the_resting_order():
    codes = np.array([0, 0, 0, 1])
    side = np.array(["yes", "no", "no", "no"], dtype=object)
    edge = np.array([2.0, 0.8, 2.0, 0.8])
    resting = resting_orders(codes, side, edge >= 1.0, edge >= 0.5)
    assert resting.tolist() == [True, False, True, False]
    assert episode_ids(codes, side, resting).tolist() == [0, -1, 1, -1]


def _events(rows):
    frame = pd.DataFrame(rows, columns=["fill_ts", "market_ticker", "side", "liquidity", "price_cents",
                                        "target_fraction", "available"])
    return frame.assign(decision_ts=frame["fill_ts"] - 60, city="chicago", bracket="between",
                        event_date=date(2025, 7, 18), episode=0)


def test_positions_grow_to_the_kelly_target_within_the_traded_volume():
    caps = Caps(bankroll_cents=1_000_000, max_fraction_city_day_side=1.0, slip_per_leg_cents=1)
    events = _events([(60, "A", "yes", "maker", 49, 0.05, 300), (120, "A", "yes", "maker", 49, 0.05, 10_000),
                      (180, "A", "yes", "maker", 49, 0.05, 10_000)])
    fills = allocate(events, caps, FEES)
    # target: 5 % of $10,000 at 50 cents all-in = 1,000 contracts; 300 then the rest, then nothing
    assert fills["contracts"].tolist() == [300, 700]
    assert fills["fee_cents"].tolist() == [0.0, 0.0]  # maker fee rate 0
    assert fills["slippage_cents"].tolist() == [300.0, 700.0]


def test_taker_fills_pay_kalshis_rounded_fee():
    caps = Caps(bankroll_cents=1_000_000, max_fraction_city_day_side=1.0, slip_per_leg_cents=0)
    fills = allocate(_events([(60, "A", "yes", "taker", 50, 0.0005, np.inf)]), caps, FEES)
    # 0.05 % of $10,000 = $5 = 10 contracts at 50: fee ceil(0.07 * 10 * 0.5 * 0.5 dollars) = 18 cents
    assert fills["contracts"].tolist() == [10] and fills["fee_cents"].tolist() == [18.0]


def test_the_city_day_side_cap_binds_across_markets():
    caps = Caps(bankroll_cents=1_000_000, max_fraction_city_day_side=0.10, slip_per_leg_cents=0)
    events = _events([(60, "A", "yes", "maker", 50, 0.08, 10_000), (120, "B", "yes", "maker", 50, 0.08, 10_000),
                      (180, "C", "no", "maker", 50, 0.08, 10_000)])
    fills = allocate(events, caps, FEES)
    # A takes $800, B only the $200 left under the $1,000 YES cap; NO has its own cap
    assert fills["contracts"].tolist() == [1600, 400, 1600]


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from("ABC"), st.sampled_from(["yes", "no"]),
                          st.sampled_from(["maker", "taker"]), st.integers(1, 99), st.floats(0, 0.3),
                          st.integers(0, 5_000)), max_size=40),
       st.floats(0.01, 0.5), st.floats(0, 3))
def test_fills_never_exceed_targets_volume_or_caps(rows, cap, slip):
    caps = Caps(bankroll_cents=500_000, max_fraction_city_day_side=cap, slip_per_leg_cents=slip)
    # one candidate per (minute, market, side, liquidity), so each fill maps back to its event's volume
    events = _events([(60 * t, *rest) for t, *rest in rows]).drop_duplicates(
        ["fill_ts", "market_ticker", "side", "liquidity"])
    taker_fees = FeeBook.fixed(taker_rate=0.07, maker_rate=0.0175, contracts=10)
    fills = allocate(events, caps, taker_fees)
    if fills.empty:
        return
    spent = (fills["contracts"] * (fills["price_cents"] + slip) + fills["fee_cents"]).groupby(fills["side"]).sum()
    assert (spent <= cap * caps.bankroll_cents + 1e-6).all()
    assert (fills["contracts"] > 0).all()
    held = fills.groupby(["market_ticker", "side"])["contracts"].cumsum()
    target = (fills["target_fraction"] * caps.bankroll_cents // (fills["price_cents"] + slip))
    assert (held <= target).all()
    merged = fills.merge(events[["fill_ts", "market_ticker", "side", "liquidity", "available"]],
                         on=["fill_ts", "market_ticker", "side", "liquidity"])
    assert (merged["contracts"] <= merged["available"]).all()


def test_settlement_pays_the_winning_side_and_charges_cost_fee_and_slippage():
    fills = pd.DataFrame({"market_ticker": ["A", "A", "B"], "side": ["yes", "no", "yes"],
                          "contracts": [10, 10, 5], "price_cents": [40.0, 55.0, 30.0],
                          "fee_cents": [17.0, 0.0, 0.0], "slippage_cents": [10.0, 10.0, 5.0]})
    settled = settle(fills, pd.Series({"A": 1.0, "B": np.nan}))
    assert settled["pnl_cents"].iloc[0] == pytest.approx(10 * 100 - 400 - 17 - 10)
    assert settled["pnl_cents"].iloc[1] == pytest.approx(-550 - 10)
    assert np.isnan(settled["pnl_cents"].iloc[2])  # unsettled: no PnL yet
