"""Maker-first execution of signals: resting orders, conservative fills, caps, settlement. Pure numpy/pandas.

The backtest decides once per minute, on each new candle. A market that passes the gates gets a
resting buy order at its maker price (YES at the bid, NO at 100 − ask), re-pegged every minute; it
fills only when the next candle *trades through* that price (a trade strictly below our YES bid, or
strictly above the ask we sell YES at when buying NO), never merely by touching it. An optional taker
fallback crosses the spread when the taker edge clears a higher threshold. Positions are held to
settlement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
import pandas as pd

from kwx.domain.fees import FeeBook

FILL_COLUMNS = ["fill_ts", "decision_ts", "market_ticker", "city", "bracket", "event_date", "side", "liquidity",
                "price_cents", "contracts", "fee_cents", "slippage_cents", "target_fraction", "episode", "locked"]


def series_starts(codes: np.ndarray) -> np.ndarray:
    """True where a row begins a new market's series (rows sorted by market, then time)."""
    codes = np.asarray(codes)
    return np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.zeros(0, dtype=bool)


def episode_ids(codes: np.ndarray, side: np.ndarray, resting: np.ndarray) -> np.ndarray:
    """An id per continuous resting order (re-pegging keeps the id); -1 where nothing rests."""
    side = np.asarray(side, dtype=object)
    first = series_starts(codes)
    prev_resting = np.r_[False, resting[:-1]] & ~first
    starts = resting & (~prev_resting | (side != np.roll(side, 1)))
    return np.where(resting, np.cumsum(starts) - 1, -1)


def trades_through(side: np.ndarray, price_cents: np.ndarray, next_low: np.ndarray, next_high: np.ndarray
                   ) -> np.ndarray:
    """Whether the next candle's trades went strictly through a resting buy order's price.

    YES bought at P fills when YES traded below P; NO bought at P is YES sold at 100 − P, which fills
    when YES traded above 100 − P. A minute without trades (NaN prices) fills nothing.
    """
    side = np.asarray(side, dtype=object)
    price = np.asarray(price_cents, dtype=float)
    with np.errstate(invalid="ignore"):
        yes = np.asarray(next_low, dtype=float) < price
        no = np.asarray(next_high, dtype=float) > 100 - price
    return np.where(side == "yes", yes, np.where(side == "no", no, False))


@dataclass(frozen=True)
class Caps:
    bankroll_cents: float
    max_fraction_city_day_side: float
    slip_per_leg_cents: float
    max_position_contracts: float = float("inf")  # contracts of one market and side, whatever Kelly says


class Allocator:
    """Turns candidate fills into fills, in time order, under the position targets and caps.

    Candidate fills (events): fill_ts, decision_ts, market_ticker, city, bracket, event_date, side,
    liquidity ("maker"/"taker"), price_cents, target_fraction (Kelly target of the position as a bankroll
    fraction), available (contracts the market offered: the minute's volume for a maker fill), episode, and
    optionally locked (the decision priced a settled-by-rule outcome).

    A position (market, side) grows towards ``target_fraction`` of the bankroll, to at most
    ``max_position_contracts``, and never shrinks before settlement; all positions of one city, climate day and
    side together cost at most ``max_fraction_city_day_side`` of the bankroll, fees and slippage included.
    The backtest feeds it a whole period at once, paper trading one tick at a time: the positions held and
    the money spent carry over between calls (``held``, ``spent``, which a restart rebuilds from the fills).
    Candidate fills are sparse (a trade through a resting order, or a taker signal), so one pass is cheap.
    """

    def __init__(self, caps: Caps, fees: FeeBook):
        self.caps, self.fees = caps, fees
        self.held: dict[tuple, int] = {}  # (market, side) -> contracts
        self.spent: dict[tuple, float] = {}  # (city, event_date, side) -> cents, fees and slippage included

    def fill(self, events: pd.DataFrame) -> pd.DataFrame:
        if events.empty:
            return pd.DataFrame(columns=FILL_COLUMNS)
        return pd.DataFrame(self.fill_rows(events.itertuples(index=False)), columns=FILL_COLUMNS)

    def fill_rows(self, events: Iterable) -> list[tuple]:
        """``fill`` over events as objects with the events' fields as attributes (rows of ``FILL_COLUMNS``): paper
        trading's few events of a tick need no frame."""
        caps, held, spent = self.caps, self.held, self.spent
        cap_cents = caps.max_fraction_city_day_side * caps.bankroll_cents
        rows = []
        for e in sorted(events, key=attrgetter("fill_ts", "liquidity", "market_ticker")):  # stable: time order
            maker = e.liquidity == "maker"
            position, group = (e.market_ticker, e.side), (e.city, e.event_date, e.side)
            unit = e.price_cents + caps.slip_per_leg_cents
            target = min(int(e.target_fraction * caps.bankroll_cents // unit), caps.max_position_contracts)
            room = cap_cents - spent.get(group, 0.0)
            contracts = int(min(target - held.get(position, 0), e.available, room // unit))
            fee = self.fees.order_cents(e.market_ticker, e.fill_ts, e.price_cents, contracts, maker) \
                if contracts > 0 else 0.0
            while contracts > 0 and contracts * unit + fee > room:  # the fee may tip the last contract over the cap
                contracts -= 1
                fee = self.fees.order_cents(e.market_ticker, e.fill_ts, e.price_cents, contracts, maker)
            if contracts <= 0:
                continue
            held[position] = held.get(position, 0) + contracts
            spent[group] = spent.get(group, 0.0) + contracts * unit + fee
            rows.append((e.fill_ts, e.decision_ts, e.market_ticker, e.city, e.bracket, e.event_date, e.side,
                         e.liquidity, e.price_cents, contracts, fee, contracts * caps.slip_per_leg_cents,
                         e.target_fraction, e.episode, bool(getattr(e, "locked", False))))
        return rows


def allocate(events: pd.DataFrame, caps: Caps, fees: FeeBook) -> pd.DataFrame:
    """A period's candidate fills allocated from flat (``Allocator``)."""
    return Allocator(caps, fees).fill(events)


def settle(fills: pd.DataFrame, outcome: pd.Series) -> pd.DataFrame:
    """Each fill's payout and PnL at settlement; ``outcome`` maps market ticker -> 1 (YES won), 0, or NaN.

    PnL (cents) = contracts × (100 if the side won else 0) − contracts × price − fee − slippage;
    NaN while the market is unsettled.
    """
    won_yes = fills["market_ticker"].map(outcome).to_numpy(dtype=float)
    won = np.where(fills["side"].to_numpy() == "yes", won_yes, 1 - won_yes)
    contracts = fills["contracts"].to_numpy(dtype=float)
    cost = contracts * fills["price_cents"].to_numpy(dtype=float) + fills["fee_cents"].to_numpy(dtype=float) \
        + fills["slippage_cents"].to_numpy(dtype=float)
    return fills.assign(won=won, cost_cents=cost, payout_cents=100 * contracts * won,
                        pnl_cents=100 * contracts * won - cost)
