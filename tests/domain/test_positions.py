"""Positions and P&L from fills: hand-computed cases and the cash-flow identities as properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwx.domain.positions import (
    POSITION_COLUMNS,
    SOURCES,
    pnl_by_source,
    pnl_totals,
    position_pnl,
    side_value_cents,
    source_totals,
    sources,
)

NONE = pd.Series(dtype=float)


def _fills(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["market_ticker", "side", "action", "price_cents", "count", "fee_cents"])


def _one(frame: pd.DataFrame, ticker: str, side: str) -> pd.Series:
    return frame.set_index(["market_ticker", "side"]).loc[(ticker, side)]


def test_settled_yes_position_with_a_partial_sale():
    # 10 YES bought at 40 (fee 17), 4 sold at 55 (fee 7); YES settles at 100.
    fills = _fills(("A", "yes", "buy", 40, 10, 17), ("A", "yes", "sell", 55, 4, 7))
    row = _one(position_pnl(fills, pd.Series({"A": 100.0}), NONE), "A", "yes")
    assert (row.bought, row.sold, row.contracts) == (10, 4, 6)
    assert row.avg_cost_cents == 40 and row.cost_cents == 240  # 6 held at the average buy price
    assert row.settled and row.payout_cents == 600 and row.mark_cents == 100
    assert row.realized_cents == pytest.approx(4 * (55 - 40) + 600 - 240)  # 420
    assert row.unrealized_cents == 0 and row.fees_cents == 24
    assert row.pnl_cents == pytest.approx(600 + 220 - 400 - 24)  # the cash flows: 396


def test_no_position_is_valued_at_100_minus_the_yes_values():
    fills = _fills(("A", "no", "buy", 30, 5, 8), ("B", "no", "buy", 20, 3, 2))
    frame = position_pnl(fills, pd.Series({"A": 100.0, "B": np.nan}), pd.Series({"B": 50.0}))
    settled, open_ = _one(frame, "A", "no"), _one(frame, "B", "no")
    assert settled.settled and settled.payout_cents == 0 and settled.pnl_cents == -150 - 8
    assert not open_.settled and math.isnan(open_.payout_cents)
    assert open_.mark_cents == 50 and open_.market_value_cents == 150
    assert open_.unrealized_cents == 150 - 60 and open_.realized_cents == 0 and open_.pnl_cents == 88


def test_an_open_position_without_a_mid_is_unmarked_and_left_out_of_the_totals():
    fills = _fills(("A", "yes", "buy", 40, 2, 1), ("B", "yes", "buy", 10, 1, 1), ("B", "yes", "sell", 12, 1, 1))
    frame = position_pnl(fills, NONE, NONE)
    assert math.isnan(_one(frame, "A", "yes").unrealized_cents)
    closed = _one(frame, "B", "yes")  # nothing held: worth nothing, quoted or not
    assert closed.contracts == 0 and closed.unrealized_cents == 0 and closed.realized_cents == 2
    totals = pnl_totals(frame).iloc[0]
    assert totals.unmarked == 1 and totals.positions == 2
    assert totals.pnl_cents == pytest.approx(2 - 3)  # B's realized gain minus all fees; A's value unknown


def test_totals_per_group_and_the_empty_case():
    fills = _fills(("A", "yes", "buy", 40, 2, 1), ("A", "no", "buy", 50, 2, 1), ("B", "yes", "buy", 10, 1, 0))
    frame = position_pnl(fills, pd.Series({"A": 0.0}), pd.Series({"B": 20.0}))
    per_market = pnl_totals(frame, by=["market_ticker"]).set_index("market_ticker")
    assert per_market.loc["A", "pnl_cents"] == pytest.approx((0 - 80) + (200 - 100) - 2)  # YES lost, NO paid
    assert per_market.loc["B", "pnl_cents"] == 10
    empty = position_pnl(fills.iloc[:0], NONE, NONE)
    assert list(empty.columns) == POSITION_COLUMNS and empty.empty
    assert pnl_totals(empty).iloc[0].pnl_cents == 0


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match="fee_cents"):
        position_pnl(_fills().drop(columns="fee_cents"), NONE, NONE)
    with pytest.raises(KeyError, match="source"):
        position_pnl(_fills(("A", "yes", "buy", 40, 2, 1)), NONE, NONE, by_source=True)


def test_a_fills_source_is_its_rows_locked_flag_and_missing_is_open():
    assert sources([True, False, None, np.nan]).tolist() == ["locked", "open", "open", "open"]


def test_positions_split_by_source_and_their_totals():
    # A/yes: 2 bought at 40 on an open row, 3 at 90 once the rule had decided A; YES pays. B/no: 5 at 95 on a
    # locked row, marked at a YES mid of 3 (NO worth 97). C/yes: 1 at 50 on an open row, unquoted.
    fills = _fills(("A", "yes", "buy", 40, 2, 1), ("A", "yes", "buy", 90, 3, 1), ("B", "no", "buy", 95, 5, 0),
                   ("C", "yes", "buy", 50, 1, 1)).assign(source=["open", "locked", "locked", "open"])
    frame = position_pnl(fills, pd.Series({"A": 100.0}), pd.Series({"B": 3.0}), by_source=True)
    rows = frame.set_index(["market_ticker", "side", "source"])
    assert rows.loc[("A", "yes", "open"), "pnl_cents"] == 2 * 60 - 1
    assert rows.loc[("A", "yes", "locked"), "pnl_cents"] == 3 * 10 - 1
    assert rows.loc[("B", "no", "locked"), "unrealized_cents"] == 5 * 2
    parts = source_totals(frame)
    assert list(parts.index) == list(SOURCES)
    assert parts.loc["open"].tolist()[:2] == [2, 3] and parts.loc["open", "unmarked"] == 1
    assert parts.loc["open", "pnl_cents"] == 119 - 1  # C is unmarked: only its fee counts
    assert parts.loc["locked", "pnl_cents"] == 29 + 10
    whole = pnl_totals(position_pnl(fills, pd.Series({"A": 100.0}), pd.Series({"B": 3.0}))).iloc[0]
    assert parts["pnl_cents"].sum() == whole["pnl_cents"] and parts["fees_cents"].sum() == whole["fees_cents"]
    by_day = pnl_by_source(frame.assign(event_date=["d1", "d1", "d2", "d2"]), ["event_date"]).set_index("event_date")
    assert by_day[["open_pnl_cents", "locked_pnl_cents"]].to_dict("index") == {
        "d1": {"open_pnl_cents": 119.0, "locked_pnl_cents": 29.0}, "d2": {"open_pnl_cents": -1.0,
                                                                         "locked_pnl_cents": 10.0}}
    empty = position_pnl(fills.iloc[:0], NONE, NONE, by_source=True)
    assert source_totals(empty)["pnl_cents"].tolist() == [0, 0]
    assert pnl_by_source(empty.assign(event_date=pd.Series(dtype=object)), ["event_date"]).empty


def test_side_value():
    assert side_value_cents(["yes", "no"], [30.0, 30.0]).tolist() == [30, 70]


trades = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 99), st.integers(1, 50),
                            st.integers(0, 20)), min_size=1, max_size=8)


@given(trades, st.sampled_from(["yes", "no"]), st.sampled_from([0.0, 100.0]))
def test_a_settled_position_earns_its_cash_flows(rows, side, settlement):
    fills = _fills(*[("A", side, action, price, count, fee) for action, price, count, fee in rows])
    row = _one(position_pnl(fills, pd.Series({"A": settlement}), NONE), "A", side)
    payout = settlement if side == "yes" else 100 - settlement
    signed = fills["count"].where(fills["action"] == "buy", -fills["count"])
    cash = -(signed * fills["price_cents"]).sum() + row.contracts * payout - fills["fee_cents"].sum()
    assert row.pnl_cents == pytest.approx(cash, abs=1e-6)
    if (fills["action"] == "buy").all():  # bought only: contracts x payout - cost - fees
        assert row.pnl_cents == pytest.approx(row.contracts * payout - row.cost_cents - row.fees_cents)


@given(st.integers(1, 99), st.integers(1, 99), st.integers(1, 100), st.sampled_from([0.0, 100.0]),
       st.integers(0, 10), st.integers(0, 10))
def test_yes_and_no_of_one_market_sum_to_a_sure_dollar(yes_price, no_price, contracts, settlement, fee_y, fee_n):
    """n YES and n NO of one market pay n dollars whichever way it settles."""
    fills = _fills(("A", "yes", "buy", yes_price, contracts, fee_y), ("A", "no", "buy", no_price, contracts, fee_n))
    frame = position_pnl(fills, pd.Series({"A": settlement}), NONE)
    assert frame["pnl_cents"].sum() == pytest.approx(contracts * (100 - yes_price - no_price) - fee_y - fee_n)
    assert frame["payout_cents"].sum() == contracts * 100


@given(st.integers(1, 99), st.integers(1, 100), st.floats(0.5, 99.5))
def test_marking_at_the_mid_values_yes_and_no_consistently(price, contracts, mid):
    fills = _fills(("A", "yes", "buy", price, contracts, 0), ("A", "no", "buy", price, contracts, 0))
    frame = position_pnl(fills, NONE, pd.Series({"A": mid}))
    assert frame["market_value_cents"].sum() == pytest.approx(contracts * 100)
    assert frame["unrealized_cents"].sum() == pytest.approx(contracts * (100 - 2 * price))


sourced = st.lists(st.tuples(st.sampled_from(["A", "B"]), st.sampled_from(["yes", "no"]),
                             st.sampled_from(["buy", "buy", "sell"]), st.integers(1, 99), st.integers(1, 50),
                             st.integers(0, 20), st.sampled_from(SOURCES)), min_size=1, max_size=12)


@given(sourced, st.sampled_from([0.0, 100.0, None]), st.floats(0.5, 99.5))
def test_split_by_source_the_pnl_sums_to_the_unsplit_total(rows, settlement, mid):
    """A's settlement (or none: marked at the mid) and B's mid: whatever the fills and their sources, the
    parts' P&L adds up to today's unsplit P&L; for fills that only buy, realized, MTM and fees do too."""
    fills = pd.DataFrame(rows, columns=["market_ticker", "side", "action", "price_cents", "count", "fee_cents",
                                        "source"])
    settle = pd.Series({"A": np.nan if settlement is None else settlement})
    mids = pd.Series({"A": mid, "B": mid})
    whole = pnl_totals(position_pnl(fills, settle, mids)).iloc[0]
    parts = source_totals(position_pnl(fills, settle, mids, by_source=True))
    assert parts["pnl_cents"].sum() == pytest.approx(whole["pnl_cents"], abs=1e-6)
    assert parts["fees_cents"].sum() == pytest.approx(whole["fees_cents"])
    if (fills["action"] == "buy").all():
        for column in ("realized_cents", "unrealized_cents", "contracts", "cost_cents"):
            assert parts[column].sum() == pytest.approx(whole[column], abs=1e-6), column
