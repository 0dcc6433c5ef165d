"""Backtest metrics against hand computations."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from kwx.domain.performance import (
    NO_MARKETS,
    DayCoverage,
    by_city_bracket,
    daily_pnl,
    day_coverage,
    max_drawdown,
    sharpe,
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
    return pd.DataFrame({
        "event_date": [date(2025, 7, 2), date(2025, 7, 2), date(2025, 7, 4)],
        "market_ticker": ["A", "A", "B"], "side": ["yes", "yes", "no"], "city": "chicago", "bracket": "between",
        "liquidity": ["maker", "maker", "taker"], "episode": [0, 1, -1], "contracts": [10, 5, 4],
        "pnl_cents": [500.0, 250.0, -200.0], "fee_cents": [0.0, 0.0, 8.0], "cost_cents": [500.0, 250.0, 208.0],
    })


def test_daily_pnl_has_every_day_even_idle_ones():
    days = [date(2025, 7, d) for d in range(1, 6)]
    daily = daily_pnl(_settled(), days)
    assert daily["pnl"].tolist() == [0.0, 7.5, 0.0, -2.0, 0.0]
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
                                                "contracts": 19, "fees": 0.08, "pnl": 5.5}]


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
