"""What paper and live trading share: the ``Broker`` base (the policy's limits, the Allocator's state from the
fills, the daily loss limit's book, the halt checks) and the records a tick leaves (``PaperTick``).

``kwx.execution.modes`` picks the broker for an execution mode; ``paper`` and ``live`` build on this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from kwx.cities import get_city
from kwx.config import RtConfig
from kwx.data.fees import load_fee_book
from kwx.data.schema import Market
from kwx.domain.execution import Allocator
from kwx.domain.fees import FeeBook
from kwx.domain.markets import climate_day
from kwx.domain.positions import side_value_cents
from kwx.execution import records
from kwx.rt.engine import TickInputs, execution_caps, order_limits

MINUTE = 60
PLACED = "policy: edge above tau_open"  # a resting order's reason


@dataclass
class PaperTick:
    """What one tick leaves to store, in paper or live mode: its orders' rows and its fills."""

    orders: list[dict]  # whole rows (``records.ORDER_COLUMNS``) of the orders the tick placed or changed
    fills: list[dict] | None = None  # rows (``records.FILL_COLUMNS``) for ``fills`` (None: none; most fill nothing)


def write_paper_ticks(conn, ticks: list[PaperTick]) -> None:
    """Several ticks' orders and fills in the caller's transaction (``SignalWriter``): each order's newest row
    (rows are whole, so the last one is the order's state), then the fills, which reference them. Written as
    rows: framing them cost more than the policy on the ticks that change orders."""
    orders = [row for t in ticks for row in t.orders]
    if orders:
        records.save_orders(conn, orders)
    fills = [row for t in ticks if t.fills for row in t.fills]
    if fills:
        records.save_fills(conn, fills)


def _open_through(orders: pd.DataFrame, booked: pd.DataFrame, through: datetime) -> pd.DataFrame:
    """The orders (``records.orders``) that were open after the tick at ``through``, as they stood then: placed
    by then, not yet cancelled, their fill counts those of ``booked`` (the fills stamped by then)."""
    placed = orders[orders["created_at"] <= through]
    cancelled = placed["cancelled_at"].notna() & (placed["cancelled_at"] <= through)
    rows = placed[placed["status"].isin(records.OPEN_STATUSES) | ((placed["status"] == "cancelled") & ~cancelled)]
    filled = rows["client_order_id"].map(booked.groupby("client_order_id")["count"].sum()).fillna(0).astype(int)
    return rows.assign(status="resting", filled_count=filled, remaining_count=(rows["count"] - filled).clip(lower=0),
                       cancelled_at=pd.NaT, reason=PLACED)


class Broker:
    """What paper and live trading share: the policy's limits, the Allocator's state (``held``, ``spent``) built
    from the fills, the positions the daily loss limit marks, and the halt checks."""

    mode: str  # paper or live: whose records it reads and halts

    def __init__(self, engine: Engine, config: RtConfig, fees: FeeBook | None = None):
        self.engine, self.config = engine, config
        self.limits = order_limits(config)
        self.fees = fees if fees is not None else load_fee_book(engine, config.fees)
        self.allocator = Allocator(execution_caps(config), self.fees)
        self.halt_file = Path(config.execution.halt_file) if config.execution.halt_file else None
        self.city = get_city(config.markets[0].city)  # whose climate day the daily loss limit counts
        self._loss_checked_minute = -1
        self._event_date: dict[str, object] = {}
        self._rows_by_ticker: tuple[TickInputs, dict[str, list[int]]] | None = None  # of the last inputs
        # (market, side) -> (contracts, cost with fees, event date): the daily loss limit marks them each minute
        self.book: dict[tuple[str, str], tuple[int, float, object]] = {}

    def _market_info(self, tickers: list[str]) -> pd.DataFrame:
        """City, bracket and event date of those markets the database knows, indexed by ticker."""
        rows = []
        if tickers:
            with self.engine.connect() as conn:
                rows = conn.execute(select(Market.ticker, Market.city, Market.strike_type, Market.event_date)
                                    .where(Market.ticker.in_(tickers))).all()
        return pd.DataFrame(rows, columns=["market_ticker", "city", "bracket", "event_date"]).set_index("market_ticker")

    def _restored_records(self, through: datetime | None = None
                          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
        """After a restart: this mode's stored fills and open orders, with their markets' info (None when there
        are neither); what the fills hold and spent is held again. ``through``: as they stood after the tick at
        that time (fills stamped by then, orders open then), whatever later ticks stored since."""
        booked = records.fills(self.engine, self.mode, until=through)
        open_rows = (records.open_orders(self.engine, self.mode) if through is None
                     else _open_through(records.orders(self.engine, self.mode), booked, through))
        tickers = sorted(set(booked["market_ticker"]) | set(open_rows["market_ticker"]))
        if not tickers:
            return None
        info = self._market_info(tickers)
        if len(booked):
            self._hold(booked.join(info[["city", "event_date"]], on="market_ticker"))
        return booked, open_rows, info

    def _hold(self, fills: pd.DataFrame) -> None:
        """Fills (``records.FILL_COLUMNS`` with the market's city and event date) into what the Allocator holds
        and spent, slippage and fees counted as it counts them, and into the loss limit's book."""
        caps = self.allocator.caps
        for row in fills.itertuples(index=False):  # a restart's fills of held positions, or a tick's few new ones
            position, group = (row.market_ticker, row.side), (row.city, row.event_date, row.side)
            self.allocator.held[position] = self.allocator.held.get(position, 0) + int(row.count)
            self.allocator.spent[group] = self.allocator.spent.get(group, 0.0) + row.count * (
                row.price_cents + caps.slip_per_leg_cents) + row.fee_cents
        self._book_fills(fills)

    def _halt(self, now: datetime, inputs: TickInputs) -> tuple[bool, bool]:
        """(halted, cancel-all requested): the kill switch (database or halt file), a pending cancel-all (this
        tick cancels every order; the request is then cleared), and the daily loss limit, checked once a minute
        on the day's fills marked at the tick's mids."""
        minute = int(now.timestamp()) // MINUTE
        halted, cancel_all = records.halt_flags(self.engine, self.mode, self.halt_file)
        if minute != self._loss_checked_minute and not halted and self.book:
            self._loss_checked_minute = minute
            day = climate_day(now, self.city)
            loss = -self.day_pnl_cents(inputs, day)
            limit = self.config.execution.max_daily_loss_dollars * 100
            if loss > limit:
                halted = records.halt(self.engine, self.mode, reason=f"daily loss limit: {day} P&L "
                                     f"{-loss / 100:+,.2f} $ beyond -{limit / 100:,.2f} $", by="kwx:daily-loss-limit",
                                     now=now, halt_file=self.halt_file).halted
        if cancel_all:
            records.clear_cancel_all(self.engine, self.mode)
            return True, True
        return halted, False

    def halted(self, now: datetime, inputs: TickInputs) -> bool:
        """Whether this tick places nothing and cancels every resting order (see ``_halt``)."""
        return self._halt(now, inputs)[0]

    def day_pnl_cents(self, inputs: TickInputs, day) -> float:
        """P&L of ``day``'s positions after fees, marked at the tick's mids (the exchange's settlement comes
        the next morning, so within the day every position is open; one without a mid counts at cost)."""
        rows_of = self._rows_of(inputs)
        held = [(ticker, side, contracts, cost) for (ticker, side), (contracts, cost, event_date) in self.book.items()
                if event_date == day]  # the day's few positions
        mids = np.array([(inputs.bid[at[-1]] + inputs.ask[at[-1]]) / 2 if (at := rows_of.get(ticker)) else np.nan
                         for ticker, _, _, _ in held], dtype=float)
        values = side_value_cents([side for _, side, _, _ in held], mids)
        pnl = 0.0
        for (_, _, contracts, cost), mid, value in zip(held, mids.tolist(), values.tolist(), strict=True):
            pnl += (cost if np.isnan(mid) else contracts * value) - cost
        return pnl

    def _rows_of(self, inputs: TickInputs) -> dict[str, list[int]]:
        """Each market's rows in the tick's ``inputs`` (kept while the inputs are: most ticks reuse the last's)."""
        if self._rows_by_ticker is None or self._rows_by_ticker[0] is not inputs:
            rows: dict[str, list[int]] = {}
            for i, ticker in enumerate(np.asarray(inputs.tickers).tolist()):
                rows.setdefault(ticker, []).append(i)
            self._rows_by_ticker = (inputs, rows)
        return self._rows_by_ticker[1]

    def _book_fills(self, fills: pd.DataFrame) -> None:
        """A frame of fills (``records.FILL_COLUMNS`` with the market's event date) into the loss limit's book."""
        for f in fills.itertuples(index=False):
            self._book_fill(f.market_ticker, f.side, f.count, f.price_cents, f.fee_cents, f.event_date)

    def _book_fill(self, ticker: str, side: str, count: int, price_cents: float, fee_cents: float,
                   event_date) -> None:
        """A position for the loss limit: contracts and what they cost, fees included (buys only, as kwx trades)."""
        contracts, cost, _ = self.book.get((ticker, side), (0, 0.0, event_date))
        self.book[(ticker, side)] = (contracts + int(count), cost + price_cents * count + fee_cents, event_date)

    def _event_dates(self, tickers: np.ndarray) -> np.ndarray:
        """Each market's event date, read once per market (a market's date never changes)."""
        unknown = sorted(set(tickers) - set(self._event_date))
        if unknown:
            with self.engine.connect() as conn:
                self._event_date.update(conn.execute(select(Market.ticker, Market.event_date).where(
                    Market.ticker.in_(unknown))).all())
        return np.array([self._event_date[t] for t in tickers], dtype=object)
