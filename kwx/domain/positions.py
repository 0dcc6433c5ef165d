"""Positions and P&L from fills: pure pandas, the arithmetic `kwx.execution.records` applies to stored rows.

A position is one (market, side), or one (market, side, source) when P&L is split by where it comes from:
``source`` is "locked" for fills on rows the settlement rule had already decided (the day's observed running
maximum settles them: profit from the rule) and "open" for the rows the model priced.

Prices are cents of the position's own side: a NO contract bought at 30¢ pays 100¢ when the market settles
NO. Settlements and marks arrive as YES values (Kalshi's ``settlement_value`` and the candle mid), so a NO
position is valued at 100 minus them.

Costs use the average buy price: contracts still held carry it as their cost, contracts sold realize
their sale price minus it. Whatever the order of buys and sells, a settled position's P&L is therefore
its cash flows: payout + sale proceeds − purchase cost − fees, and an open one's the same with what it holds
valued at the mark. Split by source, the parts' P&L therefore sums to the whole's, and so do realized, MTM
and fees for books that only buy, as kwx's orders do (a sale of one source against another's purchases would
move P&L between realized and MTM).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

POSITION_KEYS = ["market_ticker", "side"]
FILL_INPUT_COLUMNS = ["market_ticker", "side", "action", "price_cents", "count", "fee_cents"]
VALUE_COLUMNS = ["bought", "sold", "contracts", "avg_cost_cents", "cost_cents", "proceeds_cents", "fees_cents",
                 "settled", "payout_cents", "mark_cents", "market_value_cents", "realized_cents", "unrealized_cents",
                 "pnl_cents"]
POSITION_COLUMNS = [*POSITION_KEYS, *VALUE_COLUMNS]
# Where a trade's profit comes from, in the order every split lists them, and how output names them.
SOURCES = ("open", "locked")
SOURCE_LABELS = {"open": "open (model)", "locked": "locked (rule)"}
TOTAL_COLUMNS = ["positions", "contracts", "cost_cents", "realized_cents", "unrealized_cents", "fees_cents",
                 "pnl_cents", "unmarked"]


def side_value_cents(side, yes_value_cents) -> np.ndarray:
    """What one contract of ``side`` is worth when YES is worth ``yes_value_cents`` (NO: 100 minus it)."""
    yes_value = np.asarray(yes_value_cents, dtype=float)
    return np.where(np.asarray(side, dtype=object) == "no", 100.0 - yes_value, yes_value)


def sources(locked) -> np.ndarray:
    """Each trade's source from its row's ``locked`` flag: "locked" where true, "open" where false or missing."""
    flags = pd.Series(np.asarray(locked, dtype=object)).fillna(False).astype(bool).to_numpy()
    return np.where(flags, "locked", "open").astype(object)


def position_pnl(fills: pd.DataFrame, settlement_cents: pd.Series, mid_cents: pd.Series, *,
                 by_source: bool = False) -> pd.DataFrame:
    """One row per (market_ticker, side) of ``fills`` (columns ``FILL_INPUT_COLUMNS``), per (market_ticker, side,
    source) with ``by_source`` (``fills`` then carry ``source``).

    ``settlement_cents`` and ``mid_cents`` are YES values indexed by market ticker; NaN or a missing ticker
    means unsettled, respectively unquoted. A settled position realizes its payout; an open one is marked
    at the mid (its unrealized P&L is NaN while no mid is known, and 0 once nothing is held).
    ``realized_cents`` and ``unrealized_cents`` are before fees; ``pnl_cents`` is their sum minus the fees.
    """
    keys = [*POSITION_KEYS, "source"] if by_source else POSITION_KEYS
    missing = [c for c in (*FILL_INPUT_COLUMNS, *keys) if c not in fills.columns]
    if missing:
        raise KeyError(f"fills lack the column(s) {sorted(set(missing))}")
    if fills.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in [*keys, *VALUE_COLUMNS]})
    count = fills["count"].to_numpy(dtype=float)
    paid = fills["price_cents"].to_numpy(dtype=float) * count
    buy = (fills["action"] == "buy").to_numpy()
    flows = pd.DataFrame({
        **{key: fills[key].to_numpy() for key in keys},
        "bought": np.where(buy, count, 0.0), "sold": np.where(buy, 0.0, count),
        "buy_cents": np.where(buy, paid, 0.0), "proceeds_cents": np.where(buy, 0.0, paid),
        "fees_cents": fills["fee_cents"].to_numpy(dtype=float),
    })
    out = flows.groupby(keys, sort=True, as_index=False).sum()
    bought, sold = out["bought"].to_numpy(), out["sold"].to_numpy()
    contracts = bought - sold
    # Sold without a buy (a short): no purchase price, so the arithmetic uses 0 and the column shows NaN.
    avg = np.divide(out["buy_cents"].to_numpy(), bought, out=np.zeros(len(out)), where=bought > 0)
    cost = contracts * avg
    side = out["side"].to_numpy()
    tickers = out["market_ticker"]
    settle_yes = tickers.map(settlement_cents).to_numpy(dtype=float)
    mid_yes = tickers.map(mid_cents).to_numpy(dtype=float)
    settled = ~np.isnan(settle_yes)
    mark = np.where(settled, side_value_cents(side, settle_yes), side_value_cents(side, mid_yes))
    value = contracts * mark
    value = np.where(contracts == 0, 0.0, value)  # nothing held is worth exactly nothing, quoted or not
    trading = out["proceeds_cents"].to_numpy() - sold * avg
    realized = trading + np.where(settled, value - cost, 0.0)
    unrealized = np.where(settled, 0.0, value - cost)
    out["contracts"] = contracts.astype(int)
    out["bought"], out["sold"] = bought.astype(int), sold.astype(int)
    out["avg_cost_cents"] = np.where(bought > 0, avg, np.nan)
    out["cost_cents"] = cost
    out["settled"] = settled
    out["payout_cents"] = np.where(settled, value, np.nan)
    out["mark_cents"] = mark
    out["market_value_cents"] = value
    out["realized_cents"] = realized
    out["unrealized_cents"] = unrealized
    out["pnl_cents"] = realized + unrealized - out["fees_cents"].to_numpy()
    return out[[*keys, *VALUE_COLUMNS]]


def _dtype(column: str) -> str:
    if column in ("market_ticker", "side", "source"):
        return "object"
    if column in ("bought", "sold", "contracts"):
        return "int64"
    return "bool" if column == "settled" else "float64"


def pnl_totals(positions: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Sums of ``position_pnl`` rows, overall (one row) or per ``by`` group.

    Positions held without a mark (``unmarked``) are left out of the unrealized and total P&L and counted,
    so a missing quote shows as missing rather than as a price of zero.
    """
    frame = positions.assign(
        positions=1, unmarked=positions["unrealized_cents"].isna().astype(int),
        unrealized_cents=positions["unrealized_cents"].fillna(0.0))
    sums = ["positions", "contracts", "cost_cents", "realized_cents", "unrealized_cents", "fees_cents", "unmarked"]
    if by:
        totals = frame.groupby(by, sort=True)[sums].sum().reset_index()
    else:
        totals = frame[sums].sum().to_frame().T.astype({"positions": int, "contracts": int, "unmarked": int})
    totals["pnl_cents"] = totals["realized_cents"] + totals["unrealized_cents"] - totals["fees_cents"]
    return totals[[*(by or []), *TOTAL_COLUMNS]]


def source_totals(positions: pd.DataFrame) -> pd.DataFrame:
    """``pnl_totals`` of ``position_pnl(..., by_source=True)`` rows per source: one row for each of ``SOURCES``, in
    that order, indexed by source (zeros for a source without positions)."""
    return pnl_totals(positions, by=["source"]).set_index("source").reindex(list(SOURCES), fill_value=0)


def pnl_by_source(positions: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``pnl_totals`` per ``by`` group with each source's P&L beside the group's: ``open_pnl_cents`` and
    ``locked_pnl_cents`` (zero where the group has no position of that source), which sum to ``pnl_cents``."""
    totals = pnl_totals(positions, by)
    parts = pnl_totals(positions, [*by, "source"]).set_index([*by, "source"])["pnl_cents"].unstack("source")
    parts = parts.reindex(columns=list(SOURCES)).fillna(0.0).rename(columns=lambda source: f"{source}_pnl_cents")
    return totals.join(parts, on=by).fillna({f"{source}_pnl_cents": 0.0 for source in SOURCES})
