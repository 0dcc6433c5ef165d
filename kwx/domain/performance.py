"""Backtest performance from settled fills: daily PnL, equity, Sharpe, drawdown, hit and fill rates. Pure.

Every money figure is also split by source (``kwx.domain.positions.SOURCES``): fills on rows the settlement
rule had already decided (``locked``: profit from the rule) and on the rows the model priced (``open``).
The parts' PnL, capital, fees, fills and contracts sum to the totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from kwx.domain.positions import SOURCES, sources

TRADING_DAYS_PER_YEAR = 365  # weather markets settle every calendar day
NO_MARKETS = "no markets"  # a day of the period without a single decision row
# The figures ``summarize`` also gives per source, as "<source>_<name>": each total's key -> its parts' name.
SPLIT_FIGURES = {"total_pnl": "pnl", "roi_on_capital": "roi_on_capital", "capital_at_risk": "capital_at_risk",
                 "daily_sharpe": "daily_sharpe", "max_drawdown": "max_drawdown", "hit_rate": "hit_rate",
                 "fees_paid": "fees_paid", "n_fills": "n_fills", "contracts": "contracts", "n_positions": "n_positions"}


def source_key(source: str, figure: str) -> str:
    """The summary key of one source's part of a total figure: ('open', 'total_pnl') -> 'open_pnl'."""
    return f"{source}_{SPLIT_FIGURES[figure]}"


@dataclass(frozen=True)
class DayCoverage:
    """The days of a backtest period that were traded, and the reason each other day was not."""

    traded: list[date]
    skipped: dict[date, str]

    @property
    def days_total(self) -> int:
        return len(self.traded) + len(self.skipped)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Skipped days per reason, most first."""
        return dict(Counter(self.skipped.values()).most_common())

    def line(self) -> str:
        """'days: 9 traded of 12; skipped 3: 3 no model (out of sample only)'."""
        text = f"days: {len(self.traded)} traded of {self.days_total}"
        if not self.skipped:
            return text
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped_by_reason.items())
        return f"{text}; skipped {len(self.skipped)}: {reasons}"


def day_coverage(event_dates: ArrayLike, skips: ArrayLike, days: list[date], checks: Sequence[str]) -> DayCoverage:
    """Which of ``days`` were traded: those with at least one decision row that had a model and data.

    ``skips`` gives each decision row's skip kind, None where the row had both (whether or not it then
    traded: a traded day without fills is a day of zero PnL). ``checks`` are the kinds in the order rows
    pass them; a skipped day is put down to the furthest check any of its rows reached, so a day whose
    markets had data but no model is skipped for the model even if many of its minutes also lacked data.
    A day without decision rows is skipped for NO_MARKETS.
    """
    skips = pd.Series(np.asarray(skips, dtype=object))
    rank = skips.map({kind: position for position, kind in enumerate(checks)})
    unknown = rank.isna() & skips.notna()
    if unknown.any():
        raise ValueError(f"skip kind {skips[unknown].iloc[0]!r} is not one of {list(checks)}")
    # a row with a model and data ranks past every check
    rank = rank.fillna(len(checks)).astype(int)
    furthest = rank.groupby(np.asarray(event_dates, dtype=object)).max().to_dict()
    traded = [day for day in days if furthest.get(day) == len(checks)]
    skipped = {day: checks[furthest[day]] if day in furthest else NO_MARKETS
               for day in days if furthest.get(day) != len(checks)}
    return DayCoverage(traded, skipped)


def daily_pnl(settled: pd.DataFrame, days: list[date]) -> pd.DataFrame:
    """PnL (in total and per source: ``open_pnl``, ``locked_pnl``), fees and capital per settlement (climate) day,
    every day of ``days`` present (zero without fills).

    A backtest passes its traded days (``DayCoverage.traded``): days no model or no data could trade
    would add zeros that dilute the daily Sharpe.
    """
    source = sources(settled["locked"])
    frame = settled.assign(**{f"{s}_pnl_cents": settled["pnl_cents"].where(source == s, 0.0) for s in SOURCES})
    columns = {"pnl_cents": "pnl", **{f"{s}_pnl_cents": f"{s}_pnl" for s in SOURCES}, "fee_cents": "fees",
               "cost_cents": "capital", "contracts": "contracts"}
    grouped = (frame.groupby("event_date")[list(columns)].sum() if len(frame)
               else pd.DataFrame(columns=list(columns), dtype=float))
    frame = grouped.rename(columns=columns).reindex(pd.Index(days, name="event_date"), fill_value=0.0)
    money = ["pnl", *(f"{s}_pnl" for s in SOURCES), "fees", "capital"]
    return (frame[money] / 100).assign(contracts=frame["contracts"].astype(int))


def max_drawdown(equity: np.ndarray) -> tuple[float, float]:
    """(largest fall from a running peak, that fall as a fraction of the peak)."""
    equity = np.asarray(equity, dtype=float)
    if equity.size == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(equity)
    falls = peak - equity
    worst = int(np.argmax(falls))
    return float(falls[worst]), float(falls[worst] / peak[worst]) if peak[worst] > 0 else 0.0


def sharpe(daily: np.ndarray) -> float:
    """Mean over standard deviation of daily PnL (per day, not annualised); 0 without variation."""
    daily = np.asarray(daily, dtype=float)
    if daily.size < 2:
        return 0.0
    sd = daily.std(ddof=1)
    return float(daily.mean() / sd) if sd > 0 else 0.0


def _figures(settled: pd.DataFrame, daily: pd.Series, bankroll_dollars: float) -> dict[str, float]:
    """The money figures of ``settled`` fills whose PnL per traded day is ``daily``, keyed as ``summarize``'s."""
    done = settled[settled["pnl_cents"].notna()]
    positions = done.groupby(["market_ticker", "side"])["pnl_cents"].sum()
    capital = float(done["cost_cents"].sum()) / 100
    pnl = float(done["pnl_cents"].sum()) / 100
    drawdown, drawdown_pct = max_drawdown(np.r_[bankroll_dollars, bankroll_dollars + daily.cumsum().to_numpy()])
    return {"total_pnl": pnl, "roi_on_capital": pnl / capital if capital > 0 else 0.0, "capital_at_risk": capital,
            "daily_sharpe": sharpe(daily.to_numpy()), "max_drawdown": drawdown, "max_drawdown_pct": drawdown_pct,
            "hit_rate": float((positions > 0).mean()) if len(positions) else 0.0,
            "fees_paid": float(done["fee_cents"].sum()) / 100, "n_fills": float(len(settled)),
            "contracts": float(settled["contracts"].sum()), "n_positions": float(len(positions))}


def summarize(settled: pd.DataFrame, daily: pd.DataFrame, bankroll_dollars: float, episodes: int,
              coverage: DayCoverage) -> dict[str, float]:
    """The headline numbers of one backtest (dollars where money), then ``SPLIT_FIGURES`` per source
    (``source_key``: ``open_pnl``, ``locked_hit_rate``, ...).

    ``episodes`` counts posted maker orders (a re-pegged order is one); fill rate is the share of them
    that filled at least once. Hit rate is the share of settled positions (market × side; per source,
    market × side × source) that made money, so a position with fills of both sources counts once in
    each part: the parts' positions may sum to more than the total's.
    ``daily`` holds the traded days of ``coverage``, so the Sharpe ratios are per traded day.
    """
    total = _figures(settled, daily["pnl"], bankroll_dollars)
    maker = settled[settled["liquidity"] == "maker"]
    summary = {
        **{key: total[key] for key in ("total_pnl", "roi_on_capital", "capital_at_risk", "daily_sharpe")},
        "annualized_sharpe": total["daily_sharpe"] * float(np.sqrt(TRADING_DAYS_PER_YEAR)),
        **{key: total[key] for key in ("max_drawdown", "max_drawdown_pct", "hit_rate")},
        "fill_rate": maker["episode"].nunique() / episodes if episodes else 0.0,
        "fees_paid": total["fees_paid"],
        "n_fills": total["n_fills"],
        "n_maker_fills": float(len(maker)),
        "n_taker_fills": float((settled["liquidity"] == "taker").sum()),
        "n_positions": total["n_positions"],
        "n_orders_posted": float(episodes),
        "contracts": total["contracts"],
        "unsettled_fills": float(settled["pnl_cents"].isna().sum()),
        "active_days": float((daily["contracts"] > 0).sum()),
        "days_total": float(coverage.days_total),
        "days_traded": float(len(coverage.traded)),
        "days_skipped": float(len(coverage.skipped)),
    }
    source = sources(settled["locked"])
    for name in SOURCES:
        part = _figures(settled[source == name], daily[f"{name}_pnl"], bankroll_dollars)
        summary.update({source_key(name, figure): part[figure] for figure in SPLIT_FIGURES})
    return summary


def by_city_bracket(settled: pd.DataFrame) -> pd.DataFrame:
    """Fills, positions, contracts, fees and PnL (dollars) per city × bracket, with each source's fills and PnL."""
    split = [f"{s}_{what}" for what in ("fills", "pnl") for s in SOURCES]
    if settled.empty:
        return pd.DataFrame(columns=["city", "bracket", "fills", "positions", "contracts", "fees", "pnl", *split])
    source = sources(settled["locked"])
    frame = settled.assign(**{f"{s}_fill": source == s for s in SOURCES},
                           **{f"{s}_pnl_cents": settled["pnl_cents"].where(source == s, 0.0) for s in SOURCES})
    grouped = frame.groupby(["city", "bracket"])
    positions = settled.drop_duplicates(["city", "bracket", "market_ticker", "side"]).groupby(["city", "bracket"])
    return pd.DataFrame({
        "fills": grouped.size(),
        "positions": positions.size(),
        "contracts": grouped["contracts"].sum(),
        "fees": grouped["fee_cents"].sum() / 100,
        "pnl": grouped["pnl_cents"].sum() / 100,
        **{f"{s}_fills": grouped[f"{s}_fill"].sum() for s in SOURCES},
        **{f"{s}_pnl": grouped[f"{s}_pnl_cents"].sum() / 100 for s in SOURCES},
    }).reset_index()
