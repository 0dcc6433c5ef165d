"""Backtest metrics against hand computations."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwx.domain.performance import (
    NO_MARKETS,
    SPLIT_FIGURES,
    DayCoverage,
    by_city_bracket,
    daily_pnl,
    day_coverage,
    max_drawdown,
    sharpe,
    source_key,
    summarize,
)


def test_max_drawdown_is_the_largest_fall_from_a_running_peak():
    assert max_drawdown(np.array([100, 120, 90, 130, 100])) == (30.0, 0.25)
    assert max_drawdown(np.array([100, 110, 120])) == (0.0, 0.0)


def test_sharpe_is_mean_over_sample_std():
    daily = np.array([10.0, -5.0, 20.0, 0.0])
    assert sharpe(daily) == pytest.approx(daily.mean() / daily.std(ddof=1))
    assert sharpe(np.array([3.0, 3.0])) == 0.0


def _settled():
    """A/yes fills on an open row (+5.00) and, once the rule decided A, on a locked one (+2.50); B/no on an open
    row (-2.00)."""
    return pd.DataFrame({
        "event_date": [date(2025, 7, 2), date(2025, 7, 2), date(2025, 7, 4)],
        "market_ticker": ["A", "A", "B"], "side": ["yes", "yes", "no"], "city": "chicago", "bracket": "between",
        "liquidity": ["maker", "maker", "taker"], "episode": [0, 1, -1], "contracts": [10, 5, 4],
        "pnl_cents": [500.0, 250.0, -200.0], "fee_cents": [0.0, 0.0, 8.0], "cost_cents": [500.0, 250.0, 208.0],
        "locked": [False, True, False],
    })


def test_daily_pnl_has_every_day_even_idle_ones():
    days = [date(2025, 7, d) for d in range(1, 6)]
    daily = daily_pnl(_settled(), days)
    assert daily["pnl"].tolist() == [0.0, 7.5, 0.0, -2.0, 0.0]
    assert daily["open_pnl"].tolist() == [0.0, 5.0, 0.0, -2.0, 0.0]
    assert daily["locked_pnl"].tolist() == [0.0, 2.5, 0.0, 0.0, 0.0]
    assert daily["contracts"].tolist() == [0, 15, 0, 4, 0]


def test_summary_rates_and_totals():
    days = [date(2025, 7, d) for d in range(1, 6)]
    settled = _settled()
    summary = summarize(settled, daily_pnl(settled, days), bankroll_dollars=1000, episodes=4,
                        coverage=DayCoverage(days, {}))
    assert summary["total_pnl"] == pytest.approx(5.5)
    assert summary["capital_at_risk"] == pytest.approx(9.58)
    assert summary["roi_on_capital"] == pytest.approx(5.5 / 9.58)
    assert summary["hit_rate"] == 0.5  # positions A/yes won, B/no lost
    assert summary["fill_rate"] == 0.5  # two of four posted orders filled
    assert summary["fees_paid"] == pytest.approx(0.08)
    assert summary["max_drawdown"] == pytest.approx(2.0)
    assert summary["n_maker_fills"] == 2 and summary["n_taker_fills"] == 1 and summary["active_days"] == 2
    table = by_city_bracket(settled)
    assert table.to_dict(orient="records") == [{"city": "chicago", "bracket": "between", "fills": 3, "positions": 2,
                                                "contracts": 19, "fees": 0.08, "pnl": 5.5, "open_fills": 2,
                                                "locked_fills": 1, "open_pnl": 3.0, "locked_pnl": 2.5}]


def test_summary_splits_every_money_figure_by_source():
    days = [date(2025, 7, d) for d in range(1, 6)]
    settled = _settled()
    summary = summarize(settled, daily_pnl(settled, days), bankroll_dollars=1000, episodes=4,
                        coverage=DayCoverage(days, {}))
    assert (summary["open_pnl"], summary["locked_pnl"]) == (pytest.approx(3.0), pytest.approx(2.5))
    assert (summary["open_n_fills"], summary["locked_n_fills"]) == (2, 1)
    assert (summary["open_contracts"], summary["locked_contracts"]) == (14, 5)
    assert summary["open_capital_at_risk"] == pytest.approx(7.08) and summary["locked_capital_at_risk"] == 2.5
    assert summary["open_fees_paid"] == pytest.approx(0.08) and summary["locked_fees_paid"] == 0
    assert summary["open_roi_on_capital"] == pytest.approx(3.0 / 7.08)
    # a position is (market, side, source): A/yes counts in both parts, once in the total
    assert (summary["open_n_positions"], summary["locked_n_positions"], summary["n_positions"]) == (2, 1, 2)
    assert summary["open_hit_rate"] == 0.5  # A/yes/open won, B/no/open lost
    assert summary["locked_hit_rate"] == 1.0  # A/yes/locked won
    assert summary["open_daily_sharpe"] == pytest.approx(sharpe(np.array([0.0, 5.0, 0.0, -2.0, 0.0])))
    assert summary["open_max_drawdown"] == pytest.approx(2.0) and summary["locked_max_drawdown"] == 0
    assert {source_key(s, f) for s in ("open", "locked") for f in SPLIT_FIGURES} <= set(summary)


def test_a_baseline_that_only_trades_locked_rows_shows_no_open_pnl():
    days = [date(2025, 7, d) for d in range(1, 6)]
    settled = _settled().assign(locked=True, pnl_cents=[300.0, 150.0, 16.0])  # NO at 96c on decided brackets
    summary = summarize(settled, daily_pnl(settled, days), bankroll_dollars=1000, episodes=3,
                        coverage=DayCoverage(days, {}))
    for figure in SPLIT_FIGURES:
        assert summary[source_key("open", figure)] == 0, figure
        assert summary[source_key("locked", figure)] == pytest.approx(summary[figure]), figure
    assert summary["locked_hit_rate"] == 1.0 and summary["total_pnl"] == pytest.approx(4.66)


fills = st.lists(st.tuples(
    st.integers(1, 5), st.sampled_from(["A", "B", "C"]), st.sampled_from(["yes", "no"]), st.booleans(),
    st.integers(1, 50), st.integers(1, 99), st.one_of(st.none(), st.integers(-5000, 5000)), st.integers(0, 30)),
    max_size=25)


@given(fills)
def test_the_sources_sum_to_the_totals(rows):
    """Whatever the fills, their open and locked parts add up to the total: PnL (also per day), capital, fees,
    fills and contracts; each part's hit rate is a share."""
    settled = pd.DataFrame([
        {"event_date": date(2025, 7, day), "market_ticker": market, "side": side, "locked": locked,
         "contracts": contracts, "cost_cents": float(contracts * price + fee), "fee_cents": float(fee),
         "pnl_cents": np.nan if pnl is None else float(pnl), "liquidity": "maker", "episode": k,
         "city": "chicago", "bracket": "between"}
        for k, (day, market, side, locked, contracts, price, pnl, fee) in enumerate(rows)],
        columns=["event_date", "market_ticker", "side", "locked", "contracts", "cost_cents", "fee_cents", "pnl_cents",
                 "liquidity", "episode", "city", "bracket"])
    days = [date(2025, 7, d) for d in range(1, 6)]
    daily = daily_pnl(settled, days)
    np.testing.assert_allclose(daily["open_pnl"] + daily["locked_pnl"], daily["pnl"], atol=1e-9)
    summary = summarize(settled, daily, bankroll_dollars=1000, episodes=len(rows), coverage=DayCoverage(days, {}))
    for figure in ("total_pnl", "capital_at_risk", "fees_paid", "n_fills", "contracts"):
        parts = summary[source_key("open", figure)] + summary[source_key("locked", figure)]
        assert parts == pytest.approx(summary[figure], abs=1e-9), figure
    for source in ("open", "locked"):
        assert 0 <= summary[source_key(source, "hit_rate")] <= 1
    assert summary["n_positions"] <= summary["open_n_positions"] + summary["locked_n_positions"]
    table = by_city_bracket(settled)
    assert table["open_fills"].sum() + table["locked_fills"].sum() == len(settled)
    np.testing.assert_allclose((table["open_pnl"] + table["locked_pnl"]).to_numpy(dtype=float),
                               table["pnl"].to_numpy(dtype=float), atol=1e-9)


CHECKS = ("no data", "no model")  # the order rows pass them: a model is asked only for rows with data


def test_a_day_is_traded_when_one_row_had_a_model_and_data():
    days = [date(2025, 7, d) for d in range(1, 7)]
    rows = pd.DataFrame([
        (date(2025, 7, 1), "no data"), (date(2025, 7, 1), "no data"),
        (date(2025, 7, 2), "no data"), (date(2025, 7, 2), "no model"), (date(2025, 7, 2), "no data"),
        (date(2025, 7, 3), "no data"), (date(2025, 7, 3), None),  # traded, with or without fills
        (date(2025, 7, 5), None),
        (date(2025, 7, 6), "no model"),
        (date(2025, 6, 30), None),  # outside the period: not counted
    ], columns=["event_date", "skip"])
    coverage = day_coverage(rows["event_date"], rows["skip"], days, CHECKS)
    assert coverage.traded == [date(2025, 7, 3), date(2025, 7, 5)]
    # a day is put down to the furthest check its rows reached: 7/2 had data, so its model was missing
    assert coverage.skipped == {date(2025, 7, 1): "no data", date(2025, 7, 2): "no model",
                                date(2025, 7, 4): NO_MARKETS, date(2025, 7, 6): "no model"}
    assert coverage.days_total == 6
    assert coverage.skipped_by_reason == {"no model": 2, "no data": 1, NO_MARKETS: 1}
    assert coverage.line() == "days: 2 traded of 6; skipped 4: 2 no model, 1 no data, 1 no markets"
    assert DayCoverage(days[:2], {}).line() == "days: 2 traded of 2"


def test_an_unknown_skip_kind_is_an_error_not_a_traded_row():
    with pytest.raises(ValueError, match="'no quote' is not one of"):
        day_coverage([date(2025, 7, 1)], ["no quote"], [date(2025, 7, 1)], CHECKS)


def test_sharpe_is_over_traded_days_only():
    days = [date(2025, 7, d) for d in range(1, 6)]
    settled = _settled()  # fills settle on 7/2 (+7.50) and 7/4 (-2.00)
    coverage = DayCoverage(days[1:4], {days[0]: "no model", days[4]: "no data"})  # 7/3 traded without fills
    daily = daily_pnl(settled, coverage.traded)
    assert daily["pnl"].tolist() == [7.5, 0.0, -2.0]
    summary = summarize(settled, daily, bankroll_dollars=1000, episodes=4, coverage=coverage)
    assert summary["daily_sharpe"] == pytest.approx(sharpe(np.array([7.5, 0.0, -2.0])))
    assert summary["daily_sharpe"] != pytest.approx(sharpe(np.array([0.0, 7.5, 0.0, -2.0, 0.0])))
    assert summary["annualized_sharpe"] == pytest.approx(summary["daily_sharpe"] * np.sqrt(365))
    assert (summary["days_total"], summary["days_traded"], summary["days_skipped"]) == (5, 3, 2)
    assert summary["total_pnl"] == pytest.approx(5.5) and summary["roi_on_capital"] == pytest.approx(5.5 / 9.58)
