"""Paper trading inside the real-time loop: the execution policy's orders kept in the database, filled by the
backtest's own rule on each new candle, positions and P&L from those fills.

Per tick, in this order (the backtest's minute, replayed live):
1. each resting order meets the candles completed since it was set: a trade strictly through its price fills
   it (``execution.trades_through``), for at most the candle's volume, sized by the shared ``Allocator``
   (Kelly target less what is held, the position limit, the city/day/side cap) as of the decision before;
2. the tick's decisions go through the policy (``orders.order_step``): orders are placed, re-pegged and
   cancelled; a halt (kill switch, halt file, daily loss limit) cancels them all and places none;
3. taker-fallback orders fill at once at the taker price.
"""

from __future__ import annotations

import hashlib
from collections import namedtuple
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from kwx.config import RtConfig
from kwx.domain.execution import FILL_COLUMNS, trades_through
from kwx.domain.fees import FeeBook
from kwx.domain.orders import NO_SIDE, maker_gates, order_step
from kwx.execution import records
from kwx.execution.broker import MINUTE, PLACED, Broker, PaperTick
from kwx.rt.engine import Decision, TickInputs

MODE = ENVIRONMENT = "paper"
# a candidate fill, as the Allocator reads it, with the order it would fill
Event = namedtuple("Event", ["fill_ts", "decision_ts", "market_ticker", "city", "bracket", "event_date", "side",
                             "liquidity", "price_cents", "target_fraction", "available", "episode", "locked",
                             "client_order_id"])
Filled = namedtuple("Filled", [*FILL_COLUMNS, "client_order_id"])  # an allocated fill (a row) with its order's id
_ORDER_KEY = itemgetter(*(FILL_COLUMNS.index(c) for c in ("market_ticker", "fill_ts", "liquidity")))  # of a fill row


def paper_order_id(ticker: str, side: str, placed_ts: int) -> str:
    """Deterministic: the same decision replayed gets the same id, so a re-run upserts instead of duplicating."""
    digest = hashlib.sha256(f"paper|{ticker}|{side}|{placed_ts}".encode()).hexdigest()[:24]
    return f"paper-{digest}"


@dataclass
class Resting:
    """An open paper order as the broker tracks it between ticks."""

    client_order_id: str
    side: str
    price_cents: float
    set_ts: int  # when its price was last set: it fills only on candles that began after that
    city: str
    bracket: str
    event_date: object
    target_fraction: float  # the Kelly target of the decision that last kept it
    locked: bool
    count: int = 0  # contracts the order asked for when placed
    filled: int = 0
    checked_ts: int = 0  # candles ending at or before this were already matched against it
    placed_ts: int = 0  # when it was placed: its price was set no earlier


def _time(ts: int) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


class PaperBroker(Broker):
    """``through``: a paper replay resuming after its tick at that time. The broker then holds what the records
    held after that tick, as the run that wrote them did (``resume`` completes it), so the replay goes on from
    the next tick exactly as an uninterrupted run would; later records are not read."""

    mode = MODE

    def __init__(self, engine: Engine, config: RtConfig, *, through: datetime | None = None,
                 fees: FeeBook | None = None):
        super().__init__(engine, config, fees)
        self.resting: dict[str, Resting] = {}
        self._rows: dict[str, dict] = {}  # client_order_id -> the whole row of each open order
        self._booked_before: int | None = None  # the first restored fill's time (``resume``)
        self._matched: pd.DataFrame | None = None  # the candles last matched against the resting orders
        self._restore(through)

    def _restore(self, through: datetime | None) -> None:
        """After a restart: the open orders, and what the fills already hold and spent."""
        restored = self._restored_records(through)
        if restored is None:
            return
        booked, open_orders, info = restored
        # the orders table's own columns: a row read back also carries the market's city
        self._rows = {row["client_order_id"]: row for row in open_orders[records.ORDER_COLUMNS].to_dict("records")}
        for row in open_orders.itertuples(index=False):
            market = info.loc[row.market_ticker]
            # every order resting after a tick was matched against the candles up to it
            checked = int((through or row.updated_at).timestamp())
            self.resting[row.market_ticker] = Resting(
                row.client_order_id, row.side, float(row.limit_price_cents), int(row.updated_at.timestamp()),
                market["city"], market["bracket"], market["event_date"], 0.0, False, count=int(row.count),
                filled=int(row.filled_count), checked_ts=checked, placed_ts=int(row.created_at.timestamp()))
        if through is not None and len(booked):
            self._booked_before = int(booked["ts_utc"].min().timestamp())

    def resume(self, decided: list[tuple[int, TickInputs, Decision]], tick_seconds: float) -> None:
        """The rest of the state after the tick at ``through`` that the records do not hold, from the maker
        decisions of the ticks up to it (``decided``: oldest first, back to a minute and a tick before it):

        - each resting order's Kelly target and locked flag, the last tick's (every resting order rested then);
        - when its price was set: it equals the decision's price on every tick it rested, so it was set on the
          earliest tick of the run of equal prices that ends at ``through`` (or any time a minute before: a
          candle still to be matched ends after ``through``, so it began after that time either way);
        - the minute the daily loss limit was last checked: the last tick's when a fill was held before it.
        """
        if not decided:
            return
        last_ts, inputs, maker = decided[-1]
        where = {ticker: i for i, ticker in enumerate(inputs.tickers)}
        for ticker, order in self.resting.items():
            if ticker not in where:
                continue  # its market closed: the next tick cancels it
            order.target_fraction = float(maker.math.target_fraction[where[ticker]])
            order.locked = bool(inputs.locked[where[ticker]])
            for ts, tick_inputs, tick_maker in reversed(decided):
                at = np.flatnonzero(tick_inputs.tickers == ticker)
                if ts < order.placed_ts or not len(at) or tick_maker.math.price_cents[at[0]] != order.price_cents:
                    break
                order.set_ts = ts
        if self._booked_before is not None and self._booked_before <= last_ts - tick_seconds:
            self._loss_checked_minute = last_ts // MINUTE

    def tick(self, now_ts: int, inputs: TickInputs, maker: Decision, taker: Decision,
             candles: pd.DataFrame) -> PaperTick | None:
        """The tick's orders and fills to store; None when it placed, changed and filled nothing (most ticks: an
        order rests for minutes, and framing nothing every tick cost more than the policy)."""
        now = _time(now_ts)
        halted = self.halted(now, inputs)
        maker_events = self._trade_through(candles, now_ts)
        new_orders: list[dict] = []
        updates: list[dict] = []
        tickers = np.asarray(inputs.tickers, dtype=object)
        rows_of = self._rows_of(inputs)
        resting_side, resting_price = np.full(len(tickers), NO_SIDE, dtype=object), np.full(len(tickers), np.nan)
        for ticker, order in self.resting.items():  # a few orders, not every market
            for i in rows_of.get(ticker, ()):
                resting_side[i], resting_price[i] = order.side, order.price_cents
        open_ok, keep_ok = maker_gates(maker.reason, maker.math.edge_cents, maker.minutes_left, self.limits)
        taker_ok = None  # only the taker fallback reads it
        if self.limits.taker_fallback_cents is not None:
            taker_ok = pd.isna(taker.reason) & (taker.minutes_left >= self.limits.cancel_minutes_before_close)
        step = order_step(open_ok, keep_ok, maker.math.better, maker.math.price_cents, maker.math.edge_cents,
                          resting_side, resting_price, self.limits, halted=halted, taker_ok=taker_ok,
                          taker_edge_cents=taker.math.edge_cents)
        fills = self._allocate(maker_events + self._taker_events(inputs, taker, step.take, now_ts))
        updates += self._filled(fills, now)
        for f in fills:
            self._book_fill(f.market_ticker, f.side, f.contracts, f.price_cents, f.fee_cents, f.event_date)
        for ticker in sorted(set(self.resting) - rows_of.keys()):  # markets that left the tick (closed)
            updates.append(self._cancel(ticker, now, "market closed"))
        for i in np.flatnonzero(step.cancel):
            updates.append(self._cancel(tickers[i], now, "halted" if halted else "policy: gates, edge or side"))
        for i in np.flatnonzero(step.place):
            new_orders.append(self._place(inputs, maker, i, now_ts))
        for i in np.flatnonzero(step.repeg):
            order = self.resting[tickers[i]]
            order.price_cents, order.set_ts = float(maker.math.price_cents[i]), now_ts
            if order.count:
                updates.append({"client_order_id": order.client_order_id, "limit_price_cents": order.price_cents,
                                "updated_at": now})
        for i in np.flatnonzero(step.rest):  # the Kelly target the next candle's fill is sized by
            order = self.resting[tickers[i]]
            order.target_fraction, order.locked = float(maker.math.target_fraction[i]), bool(inputs.locked[i])
        new_orders += self._taker_orders(fills, now)
        changed = self._changed(new_orders, updates)
        if not fills:
            return PaperTick(changed) if changed else None
        return PaperTick(changed, self._fill_rows(fills))

    def _changed(self, new_orders: list[dict | None], updates: list[dict | None]) -> list[dict]:
        """Whole rows of every order the tick placed or changed; finished ones leave the broker's memory."""
        changed = []
        for row in new_orders:
            if row:
                self._rows[row["client_order_id"]] = row
                changed.append(row["client_order_id"])
        for update in updates:
            if update:
                self._rows[update["client_order_id"]].update(update)
                changed.append(update["client_order_id"])
        rows = [dict(self._rows[cid]) for cid in dict.fromkeys(changed)]
        for row in rows:
            if row["status"] in ("cancelled", "filled"):
                self._rows.pop(row["client_order_id"], None)
        return rows

    def _allocate(self, events: list[Event]) -> list[Filled]:
        """Candidate fills of both kinds through the shared Allocator, each fill with its order's id (rows, not a
        frame: a tick fills a few, and iterating a frame's rows cost more than the fills' arithmetic)."""
        order_of = {(e.market_ticker, e.fill_ts, e.liquidity): e.client_order_id for e in events}
        return [Filled(*row, order_of[_ORDER_KEY(row)]) for row in self.allocator.fill_rows(events)]

    def _taker_events(self, inputs: TickInputs, taker: Decision, take: np.ndarray, now_ts: int) -> list[Event]:
        rows = np.flatnonzero(take)
        if not len(rows):
            return []
        tickers = np.asarray(inputs.tickers, dtype=object)[rows]
        return [Event(now_ts, now_ts, ticker, inputs.city[i], inputs.bracket[i], event_date, side, "taker",
                      taker.math.price_cents[i], taker.math.size_fraction[i], np.inf, -1, inputs.locked[i],
                      paper_order_id(ticker, side, now_ts) + "-t")
                for i, ticker, event_date, side in zip(rows, tickers, self._event_dates(tickers), taker.math.side[rows],
                                                       strict=True)]

    def _filled(self, fills: list[Filled], now: datetime) -> list[dict]:
        """Counts and status of the resting orders that just filled (taker orders are written filled)."""
        out = []
        for f in (f for f in fills if f.liquidity == "maker"):
            order = self.resting[f.market_ticker]
            order.filled += int(f.contracts)
            remaining = max(order.count - order.filled, 0)
            out.append({"client_order_id": order.client_order_id, "filled_count": order.filled,
                        "remaining_count": remaining, "updated_at": now})
        return out

    def _trade_through(self, candles: pd.DataFrame, now_ts: int) -> list[Event]:
        """Candidate fills: resting orders whose market traded strictly through their price in
        a candle that began after the order's price was set (the backtest's next-minute rule).

        A candle covers (end − 60, end]: the order must have rested at its price through all of it (as the
        backtest's decision at t rests through the minute to t + 60), and each candle counts once. At
        sub-minute ticks this is conservative: an order re-pegged mid-minute fills from the next full minute.
        """
        if not self.resting or (candles is not self._matched and candles.empty):  # a matched frame had candles
            return []
        met = []  # (candle, market, order): the minute's new candles (one per market at most) meeting an order
        # Most ticks fall inside a minute an earlier tick matched; a replay then hands out that tick's very frame,
        # whose candles all ended by the time every order has been checked to (that tick's or a later one).
        if candles is not self._matched:
            ends = candles["end_period_ts"].to_numpy()
            self._matched = candles if (ends <= now_ts).all() else None
            fresh = np.flatnonzero((ends > min(r.checked_ts for r in self.resting.values())) & (ends <= now_ts))
            # the minute's few rows of the lookback's thousands: only theirs become Python strings
            fresh_tickers = candles["market_ticker"].array.take(fresh).to_numpy(dtype=object)
            for k, ticker in zip(fresh, fresh_tickers, strict=True):
                order = self.resting.get(ticker)
                if order is not None and ends[k] > order.checked_ts and ends[k] - MINUTE >= order.set_ts:
                    met.append((k, ticker, order))
        for order in self.resting.values():
            order.checked_ts = max(order.checked_ts, now_ts)
        if not met:
            return []
        rows = np.array([k for k, _, _ in met])
        through = trades_through(np.array([o.side for _, _, o in met], dtype=object),
                                 np.array([o.price_cents for _, _, o in met]),
                                 candles["price_low"].to_numpy(dtype=float)[rows],
                                 candles["price_high"].to_numpy(dtype=float)[rows])
        volume = np.nan_to_num(candles["volume"].to_numpy(dtype=float)[rows])
        return [Event(int(ends[k]), int(ends[k]) - MINUTE, ticker, o.city, o.bracket, o.event_date, o.side, "maker",
                      o.price_cents, o.target_fraction, available, -1, o.locked, o.client_order_id)
                for (k, ticker, o), available, filled in zip(met, volume, through, strict=True) if filled]

    def _place(self, inputs: TickInputs, maker: Decision, i: int, now_ts: int) -> dict | None:
        """A new resting order; its row (None when the position is at its limit: nothing could fill it).

        Its count is what the position may still grow by (``max_position_contracts`` less what is held); each
        fill is sized by the Allocator against the Kelly target of the minute, as in the backtest.
        """
        ticker, side = inputs.tickers[i], str(maker.math.better[i])
        order = Resting(paper_order_id(ticker, side, now_ts), side, float(maker.math.price_cents[i]), now_ts,
                        inputs.city[i], inputs.bracket[i], self._event_dates(np.array([ticker]))[0],
                        float(maker.math.target_fraction[i]), bool(inputs.locked[i]), checked_ts=now_ts,
                        placed_ts=now_ts)
        self.resting[ticker] = order
        order.count = int(max(self.allocator.caps.max_position_contracts
                              - self.allocator.held.get((ticker, side), 0), 0))
        if order.count == 0:
            return None
        now = _time(now_ts)
        return {"client_order_id": order.client_order_id, "exchange_order_id": None, "mode": MODE,
                "environment": ENVIRONMENT, "market_ticker": ticker, "side": side, "action": "buy",
                "limit_price_cents": order.price_cents, "count": order.count, "filled_count": 0,
                "remaining_count": order.count, "post_only": True, "status": "resting", "created_at": now,
                "updated_at": now, "cancelled_at": None, "reason": PLACED,
                "signal_ts_utc": now}

    def _cancel(self, ticker: str, now: datetime, reason: str) -> dict | None:
        order = self.resting.pop(ticker)
        if order.count == 0:
            return None  # never written: nothing to cancel
        return {"client_order_id": order.client_order_id, "status": "cancelled", "cancelled_at": now,
                "updated_at": now, "reason": reason}

    def _taker_orders(self, fills: list[Filled], now: datetime) -> list[dict]:
        return [{"client_order_id": f.client_order_id, "exchange_order_id": None, "mode": MODE,
                 "environment": ENVIRONMENT, "market_ticker": f.market_ticker, "side": f.side, "action": "buy",
                 "limit_price_cents": float(f.price_cents), "count": int(f.contracts),
                 "filled_count": int(f.contracts), "remaining_count": 0, "post_only": False, "status": "filled",
                 "created_at": now, "updated_at": now, "cancelled_at": None, "reason": "taker fallback",
                 "signal_ts_utc": now} for f in fills if f.liquidity == "taker"]

    def _fill_rows(self, fills: list[Filled]) -> list[dict]:
        """The ``fills`` rows of a tick's fills."""
        return [{"fill_id": f"{f.client_order_id}-{int(f.fill_ts)}", "client_order_id": f.client_order_id,
                 "market_ticker": f.market_ticker, "side": f.side, "action": "buy",
                 "price_cents": float(f.price_cents), "count": int(f.contracts), "fee_cents": float(f.fee_cents),
                 "liquidity": f.liquidity, "ts_utc": _time(f.fill_ts), "mode": MODE} for f in fills]
