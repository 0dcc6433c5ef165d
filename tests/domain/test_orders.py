"""The execution policy (kwx/domain/orders.py): hysteresis, re-pegging, side flips, the open-order limit, halts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from kwx.domain.orders import EDGE_GATE, NO_SIDE, OrderLimits, maker_gates, order_step, step_through

LIMITS = OrderLimits(tau_close_cents=0.5, cancel_minutes_before_close=15, max_open_orders=20, taker_fallback_cents=4)


def hysteresis(codes, side, open_ok, keep_ok):
    """The closed form the backtest used before it stepped the policy: rows sorted by market, then time."""
    first = np.r_[True, codes[1:] != codes[:-1]]
    same_side = ~first & (side == np.roll(side, 1))
    state = np.full(len(side), np.nan)
    state[~(keep_ok & same_side)] = 0.0
    state[open_ok] = 1.0
    return pd.Series(state).ffill().to_numpy() == 1.0


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["yes", "no"]), st.booleans(), st.booleans()),
                min_size=1, max_size=60))
def test_stepping_the_policy_minute_by_minute_is_the_hysteresis_when_no_limit_binds(rows):
    frame = pd.DataFrame(rows, columns=["market", "side", "open_ok", "keep_ok"])
    frame["tick"] = frame.groupby("market").cumcount()
    frame = frame.sort_values(["market", "tick"], kind="stable")
    codes, side = frame["market"].to_numpy(), frame["side"].to_numpy(dtype=object)
    open_ok, keep_ok = frame["open_ok"].to_numpy(), frame["keep_ok"].to_numpy()
    stepped = step_through(frame["tick"].to_numpy(), codes, open_ok, keep_ok, side, np.full(len(frame), 40.0),
                           np.ones(len(frame)), LIMITS)
    assert (stepped == hysteresis(codes, side, open_ok, keep_ok)).all()


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0, 20)), min_size=1, max_size=40),
       st.integers(0, 10))
def test_never_more_orders_rest_than_max_open_orders_and_the_largest_edges_keep_them(markets, cap):
    open_ok = np.array([m[0] for m in markets])
    keep_ok = np.array([m[1] for m in markets])
    edge = np.array([m[2] for m in markets])
    side = np.full(len(markets), "yes", dtype=object)
    limits = OrderLimits(0.5, 15, cap)
    step = order_step(open_ok, keep_ok, side, np.full(len(markets), 40.0), edge, side.copy(),
                      np.full(len(markets), 40.0), limits)
    assert step.rest.sum() <= cap
    wanted = open_ok | keep_ok
    if wanted.sum() > cap > 0:
        assert edge[step.rest].min() >= np.sort(edge[wanted])[::-1][cap - 1]


def test_a_resting_order_is_repegged_kept_flipped_or_cancelled():
    side = np.array(["yes", "yes", "no", "yes", "yes"], dtype=object)
    resting = np.array(["yes", "yes", "yes", NO_SIDE, "yes"], dtype=object)
    price = np.array([40.0, 41.0, 55.0, 30.0, 40.0])
    step = order_step(np.array([True, True, True, True, False]), np.array([True, True, True, False, False]),
                      side, price, np.ones(5), resting, np.full(5, 40.0), LIMITS)
    assert step.rest.tolist() == [True, True, True, True, False]
    assert step.place.tolist() == [False, False, True, True, False]  # a side flip is a new order
    assert step.repeg.tolist() == [False, True, False, False, False]
    assert step.cancel.tolist() == [False, False, True, False, True]


def test_a_halt_cancels_everything_and_takes_nothing():
    side = np.array(["yes", "no"], dtype=object)
    step = order_step(np.ones(2, bool), np.ones(2, bool), side, np.full(2, 40.0), np.full(2, 9.0), side.copy(),
                      np.full(2, 40.0), LIMITS, halted=True, taker_ok=np.ones(2, bool),
                      taker_edge_cents=np.full(2, 9.0))
    assert not step.rest.any() and step.cancel.all() and not step.take.any()


def test_the_taker_fallback_needs_its_own_larger_edge():
    step = order_step(np.zeros(3, bool), np.zeros(3, bool), np.full(3, "yes", dtype=object), np.full(3, 40.0),
                      np.zeros(3), np.full(3, NO_SIDE, dtype=object), np.full(3, np.nan), LIMITS,
                      taker_ok=np.array([True, True, False]), taker_edge_cents=np.array([4.0, 3.9, 9.0]))
    assert step.take.tolist() == [True, False, False]


def test_maker_gates_keep_an_order_through_the_edge_gate_only_and_never_near_the_close():
    reason = np.array([None, EDGE_GATE, "spread wider than max_spread_cents", None], dtype=object)
    edge = np.array([2.0, 0.6, 5.0, 2.0])
    open_ok, keep_ok = maker_gates(reason, edge, np.array([60.0, 60.0, 60.0, 10.0]), LIMITS)
    assert open_ok.tolist() == [True, False, False, False]
    assert keep_ok.tolist() == [True, True, False, False]


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from(["yes", "no"]), st.sampled_from([40.0, 41.0]),
                          st.sampled_from(["yes", "no", NO_SIDE]), st.floats(0, 5)), min_size=1, max_size=30))
def test_an_order_that_stays_at_its_side_and_price_is_left_alone(markets):
    """Only a real change is an order: one that keeps resting on its side at its price is neither placed anew,
    re-pegged nor cancelled; a place needs no order or the other side, a re-peg another price."""
    open_ok, keep_ok, side, price, resting_side, edge = (np.array(column) for column in zip(*markets, strict=True))
    side, resting_side = side.astype(object), resting_side.astype(object)
    resting_price = np.where(resting_side == NO_SIDE, np.nan, 40.0)
    step = order_step(open_ok, keep_ok, side, price, edge, resting_side, resting_price, LIMITS)
    unchanged = step.rest & (resting_side == side) & (price == resting_price)
    assert not (step.place | step.repeg | step.cancel)[unchanged].any()
    assert ((resting_side == NO_SIDE) | (resting_side != side))[step.place].all()
    assert (price != resting_price)[step.repeg].all() and (resting_side == side)[step.repeg].all()
