"""Backtest performance from settled fills: daily PnL, equity, Sharpe, drawdown, hit and fill rates. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

TRADING_DAYS_PER_YEAR = 365  # weather markets settle every calendar day
NO_MARKETS = "no markets"  # a day of the period without a single decision row


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
    """PnL, fees and capital per settlement (climate) day, every day of ``days`` present (zero without fills).

    A backtest passes its traded days (``DayCoverage.traded``): days no model or no data could trade
    would add zeros that dilute the daily Sharpe.
    """
    columns = {"pnl_cents": "pnl", "fee_cents": "fees", "cost_cents": "capital", "contracts": "contracts"}
    grouped = settled.groupby("event_date")[list(columns)].sum() if len(settled) else pd.DataFrame(columns=columns)
    frame = grouped.rename(columns=columns).reindex(pd.Index(days, name="event_date"), fill_value=0.0)
    return (frame[["pnl", "fees", "capital"]] / 100).assign(contracts=frame["contracts"].astype(int))


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


def summarize(settled: pd.DataFrame, daily: pd.DataFrame, bankroll_dollars: float, episodes: int,
              coverage: DayCoverage) -> dict[str, float]:
    """The headline numbers of one backtest (dollars where money).

    ``episodes`` counts posted maker orders (a re-pegged order is one); fill rate is the share of them
    that filled at least once. Hit rate is the share of settled positions (market × side) that made money.
    ``daily`` holds the traded days of ``coverage``, so the Sharpe ratios are per traded day.
    """
    done = settled[settled["pnl_cents"].notna()]
    positions = done.groupby(["market_ticker", "side"])["pnl_cents"].sum()
    equity = bankroll_dollars + daily["pnl"].cumsum().to_numpy()
    drawdown, drawdown_pct = max_drawdown(np.r_[bankroll_dollars, equity])
    capital = float(done["cost_cents"].sum()) / 100
    pnl = float(done["pnl_cents"].sum()) / 100
    maker = settled[settled["liquidity"] == "maker"]
    daily_sharpe = sharpe(daily["pnl"].to_numpy())
    return {
        "total_pnl": pnl,
        "roi_on_capital": pnl / capital if capital > 0 else 0.0,
        "capital_at_risk": capital,
        "daily_sharpe": daily_sharpe,
        "annualized_sharpe": daily_sharpe * float(np.sqrt(TRADING_DAYS_PER_YEAR)),
        "max_drawdown": drawdown,
        "max_drawdown_pct": drawdown_pct,
        "hit_rate": float((positions > 0).mean()) if len(positions) else 0.0,
        "fill_rate": maker["episode"].nunique() / episodes if episodes else 0.0,
        "fees_paid": float(done["fee_cents"].sum()) / 100,
        "n_fills": float(len(settled)),
        "n_maker_fills": float(len(maker)),
        "n_taker_fills": float((settled["liquidity"] == "taker").sum()),
        "n_positions": float(len(positions)),
        "n_orders_posted": float(episodes),
        "contracts": float(settled["contracts"].sum()),
        "unsettled_fills": float(settled["pnl_cents"].isna().sum()),
        "active_days": float((daily["contracts"] > 0).sum()),
        "days_total": float(coverage.days_total),
        "days_traded": float(len(coverage.traded)),
        "days_skipped": float(len(coverage.skipped)),
    }


def by_city_bracket(settled: pd.DataFrame) -> pd.DataFrame:
    """Fills, positions, contracts, fees and PnL (dollars) per city × bracket."""
    if settled.empty:
        return pd.DataFrame(columns=["city", "bracket", "fills", "positions", "contracts", "fees", "pnl"])
    grouped = settled.groupby(["city", "bracket"])
    positions = settled.drop_duplicates(["city", "bracket", "market_ticker", "side"]).groupby(["city", "bracket"])
    return pd.DataFrame({
        "fills": grouped.size(),
        "positions": positions.size(),
        "contracts": grouped["contracts"].sum(),
        "fees": grouped["fee_cents"].sum() / 100,
        "pnl": grouped["pnl_cents"].sum() / 100,
    }).reset_index()
