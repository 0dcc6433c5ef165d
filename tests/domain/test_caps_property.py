"""Caps are never exceeded: random decision streams through the order policy and the Allocator, as the backtest
and the paper broker run them (a property over ticks, markets, edges, prices and traded volumes)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from kwx.domain.execution import Allocator, Caps, trades_through
from kwx.domain.fees import FeeBook
from kwx.domain.orders import NO_SIDE, OrderLimits, order_step

MARKETS = np.array(["A", "B", "C", "D"], dtype=object)
FEES = FeeBook.fixed(taker_rate=0.07, maker_rate=0.0175, contracts=10)

tick = st.lists(st.tuples(st.floats(-2, 12), st.sampled_from(["yes", "no"]), st.integers(1, 98),
                          st.floats(0, 0.3), st.integers(0, 100), st.integers(0, 5_000)),
                min_size=len(MARKETS), max_size=len(MARKETS))


@settings(max_examples=60)
@given(st.lists(tick, min_size=1, max_size=25), st.integers(0, 4), st.integers(0, 400), st.floats(0.01, 0.5))
def test_positions_open_orders_and_group_spend_stay_within_their_limits(ticks, max_open, max_position, group_cap):
    caps = Caps(bankroll_cents=1_000_000, max_fraction_city_day_side=group_cap, slip_per_leg_cents=1,
                max_position_contracts=max_position)
    allocator = Allocator(caps, FEES)
    limits = OrderLimits(tau_close_cents=0.5, cancel_minutes_before_close=15, max_open_orders=max_open,
                         taker_fallback_cents=8)
    resting_side = np.full(len(MARKETS), NO_SIDE, dtype=object)
    resting_price = np.full(len(MARKETS), np.nan)
    for t, rows in enumerate(ticks):
        edge = np.array([r[0] for r in rows])
        side = np.array([r[1] for r in rows], dtype=object)
        price = np.array([r[2] for r in rows], dtype=float)
        target = np.array([r[3] for r in rows])
        traded = np.array([r[4] for r in rows], dtype=float)
        volume = np.array([r[5] for r in rows], dtype=float)
        # last tick's resting orders meet this minute's trades first, then the policy decides
        rested = resting_side != NO_SIDE
        through = rested & trades_through(resting_side, resting_price, traded, traded)
        events = pd.DataFrame({
            "fill_ts": t, "decision_ts": t - 1, "market_ticker": MARKETS[through], "city": "chicago",
            "bracket": "between", "event_date": date(2025, 7, 18), "side": resting_side[through],
            "liquidity": "maker", "price_cents": resting_price[through], "target_fraction": target[through],
            "available": volume[through], "episode": -1})
        step = order_step(edge >= 1.0, edge >= 0.5, side, price, edge, resting_side, resting_price, limits,
                          taker_ok=np.ones(len(MARKETS), bool), taker_edge_cents=edge)
        takes = pd.DataFrame({
            "fill_ts": t, "decision_ts": t, "market_ticker": MARKETS[step.take], "city": "chicago",
            "bracket": "between", "event_date": date(2025, 7, 18), "side": side[step.take], "liquidity": "taker",
            "price_cents": price[step.take], "target_fraction": target[step.take], "available": np.inf,
            "episode": -1})
        allocator.fill(pd.concat([events, takes], ignore_index=True))
        resting_side = np.where(step.rest, side, NO_SIDE)
        resting_price = np.where(step.rest, price, np.nan)

        assert step.rest.sum() <= max_open
        assert all(held <= max_position for held in allocator.held.values())
        assert all(spent <= group_cap * caps.bankroll_cents + 1e-6 for spent in allocator.spent.values())
