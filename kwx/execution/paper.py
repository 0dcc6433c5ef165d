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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from kwx.cities import get_city
from kwx.config import RtConfig
from kwx.data.fees import load_fee_book
from kwx.data.schema import Market
from kwx.domain.execution import Allocator, trades_through
from kwx.domain.fees import FeeBook
from kwx.domain.markets import climate_day
from kwx.domain.orders import NO_SIDE, maker_gates, order_step
from kwx.domain.positions import side_value_cents
from kwx.execution import records
from kwx.rt.engine import Decision, TickInputs, execution_caps, order_limits

MODE = ENVIRONMENT = "paper"
MINUTE = 60
PLACED = "policy: edge above tau_open"  # a resting order's reason
# a candidate fill, as the Allocator reads it, with the order it would fill
EVENT_COLUMNS = ["fill_ts", "decision_ts", "market_ticker", "city", "bracket", "event_date", "side", "liquidity",
                 "price_cents", "target_fraction", "available", "episode", "locked", "client_order_id"]


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


@dataclass
class PaperTick:
    orders: pd.DataFrame  # whole rows of the orders the tick placed or changed
    fills: pd.DataFrame  # rows for ``fills``
    fill_events: pd.DataFrame  # the fills as ``Allocator`` returns them (``execution.FILL_COLUMNS``)


def write_paper_ticks(conn, ticks: list[PaperTick]) -> None:
    """Several ticks' orders and fills in the caller's transaction (``SignalWriter``): each order's newest row
    (rows are whole, so the last one is the order's state), then the fills, which reference them."""
    orders = [t.orders for t in ticks if len(t.orders)]
    if orders:
        records.save_orders(conn, pd.concat(orders, ignore_index=True).drop_duplicates("client_order_id",
                                                                                        keep="last"))
    fills = [t.fills for t in ticks if len(t.fills)]
    if fills:
        records.save_fills(conn, pd.concat(fills, ignore_index=True))


def _time(ts: int) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


def _open_through(orders: pd.DataFrame, booked: pd.DataFrame, through: datetime) -> pd.DataFrame:
    """The orders (``records.orders``) that were open after the tick at ``through``, as they stood then: placed
    by then, not yet cancelled, their fill counts those of ``booked`` (the fills stamped by then)."""
    placed = orders[orders["created_at"] <= through]
    cancelled = placed["cancelled_at"].notna() & (placed["cancelled_at"] <= through)
    rows = placed[placed["status"].isin(records.OPEN_STATUSES) | ((placed["status"] == "cancelled") & ~cancelled)]
    filled = rows["client_order_id"].map(booked.groupby("client_order_id")["count"].sum()).fillna(0).astype(int)
    return rows.assign(status="resting", filled_count=filled, remaining_count=(rows["count"] - filled).clip(lower=0),
                       cancelled_at=pd.NaT, reason=PLACED)


class ExecutionModeError(ValueError):
    """An execution mode this loop cannot run."""


def broker_for(config: RtConfig, engine: Engine, *, environment: str = "demo", confirm_production: bool = False,
               trader=None, through: datetime | None = None, fees: FeeBook | None = None) -> Broker | None:
    """The loop's broker for ``execution.mode``: None for signals (the dry run), a PaperBroker for paper (its state
    as the records stood after the tick at ``through``, see ``PaperBroker``), a ``LiveBroker`` on Kalshi's
    ``environment`` for live (production only with ``confirm_production``; at $KWX_KALSHI_TRADE_URL or
    ``execution.trade_api_url`` when set; the keys from KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH unless a
    ``trader`` is given, as tests do). ``fees``: the series' fee book, else the
    config's (``load_fee_book``)."""
    mode = config.execution.mode
    if mode == "signals":
        return None
    if mode == "paper":
        return PaperBroker(engine, config, through=through, fees=fees)
    if mode == "live":
        from kwx.execution.live import LiveBroker, live_trader  # live.py imports this module: load it on demand

        if trader is None:
            trader = live_trader(environment, confirm_production, tick_seconds=config.tick_seconds,
                                 url=config.execution.trade_api_url)
        broker = LiveBroker(engine, config, trader, environment, fees=fees)
        broker.check_access()
        return broker
    raise ExecutionModeError(f"execution.mode {mode!r}: the loop runs signals, paper or live")


class Broker:
    """What paper and live trading share: the policy's limits, the Allocator's state (``held``, ``spent``) built
    from the fills, the positions the daily loss limit marks, and the halt checks."""

    mode = MODE

    def __init__(self, engine: Engine, config: RtConfig, fees: FeeBook | None = None):
        self.engine, self.config = engine, config
        self.limits = order_limits(config)
        self.fees = fees if fees is not None else load_fee_book(engine, config.fees)
        self.allocator = Allocator(execution_caps(config), self.fees)
        self.halt_file = Path(config.execution.halt_file) if config.execution.halt_file else None
        self.city = get_city(config.markets[0].city)  # whose climate day the daily loss limit counts
        self._loss_checked_minute = -1
        self._event_date: dict[str, object] = {}
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
        state = records.halt_state(self.engine, self.mode, self.halt_file)
        if minute != self._loss_checked_minute and not state.halted and self.book:
            self._loss_checked_minute = minute
            day = climate_day(now, self.city)
            loss = -self.day_pnl_cents(inputs, day)
            limit = self.config.execution.max_daily_loss_dollars * 100
            if loss > limit:
                state = records.halt(self.engine, self.mode, reason=f"daily loss limit: {day} P&L "
                                     f"{-loss / 100:+,.2f} $ beyond -{limit / 100:,.2f} $", by="kwx:daily-loss-limit",
                                     now=now, halt_file=self.halt_file)
        if state.cancel_all_requested:
            records.clear_cancel_all(self.engine, self.mode)
            return True, True
        return state.halted, False

    def halted(self, now: datetime, inputs: TickInputs) -> bool:
        """Whether this tick places nothing and cancels every resting order (see ``_halt``)."""
        return self._halt(now, inputs)[0]

    def day_pnl_cents(self, inputs: TickInputs, day) -> float:
        """P&L of ``day``'s positions after fees, marked at the tick's mids (the exchange's settlement comes
        the next morning, so within the day every position is open; one without a mid counts at cost)."""
        mids = dict(zip(inputs.tickers, (np.asarray(inputs.bid) + np.asarray(inputs.ask)) / 2, strict=True))
        pnl = 0.0
        for (ticker, side), (contracts, cost, event_date) in self.book.items():  # the day's few positions
            mid = mids.get(ticker, np.nan)
            if event_date == day:
                value = cost if np.isnan(mid) else contracts * float(side_value_cents(side, mid))
                pnl += value - cost
        return pnl

    def _book_fills(self, fills: pd.DataFrame) -> None:
        """Positions for the loss limit: contracts and what they cost, fees included (buys only, as kwx trades)."""
        for f in fills.itertuples(index=False):
            contracts, cost, _ = self.book.get((f.market_ticker, f.side), (0, 0.0, f.event_date))
            self.book[(f.market_ticker, f.side)] = (contracts + int(f.count),
                                                    cost + f.price_cents * f.count + f.fee_cents, f.event_date)

    def _event_dates(self, tickers: np.ndarray) -> np.ndarray:
        """Each market's event date, read once per market (a market's date never changes)."""
        unknown = sorted(set(tickers) - set(self._event_date))
        if unknown:
            with self.engine.connect() as conn:
                self._event_date.update(conn.execute(select(Market.ticker, Market.event_date).where(
                    Market.ticker.in_(unknown))).all())
        return np.array([self._event_date[t] for t in tickers], dtype=object)


class PaperBroker(Broker):
    """``through``: a paper replay resuming after its tick at that time. The broker then holds what the records
    held after that tick, as the run that wrote them did (``resume`` completes it), so the replay goes on from
    the next tick exactly as an uninterrupted run would; later records are not read."""

    def __init__(self, engine: Engine, config: RtConfig, *, through: datetime | None = None,
                 fees: FeeBook | None = None):
        super().__init__(engine, config, fees)
        self.resting: dict[str, Resting] = {}
        self._rows: dict[str, dict] = {}  # client_order_id -> the whole row of each open order
        self._booked_before: int | None = None  # the first restored fill's time (``resume``)
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
             candles: pd.DataFrame) -> PaperTick:
        now = _time(now_ts)
        halted = self.halted(now, inputs)
        maker_events = self._trade_through(candles, now_ts)
        new_orders: list[dict] = []
        updates: list[dict] = []
        tickers = np.asarray(inputs.tickers, dtype=object)
        known = [self.resting.get(t) for t in tickers]
        resting_side = np.array([r.side if r else NO_SIDE for r in known], dtype=object)
        resting_price = np.array([r.price_cents if r else np.nan for r in known])
        open_ok, keep_ok = maker_gates(maker.reason, maker.math.edge_cents, maker.minutes_left, self.limits)
        taker_ok = pd.isna(taker.reason) & (taker.minutes_left >= self.limits.cancel_minutes_before_close)
        step = order_step(open_ok, keep_ok, maker.math.better, maker.math.price_cents, maker.math.edge_cents,
                          resting_side, resting_price, self.limits, halted=halted, taker_ok=taker_ok,
                          taker_edge_cents=taker.math.edge_cents)
        fills = self._allocate(maker_events, self._taker_events(inputs, taker, step.take, now_ts))
        updates += self._filled(fills, now)
        if len(fills):
            self._book_fills(fills.rename(columns={"contracts": "count"}))
        for ticker in sorted(set(self.resting) - set(tickers)):  # markets that left the tick (closed)
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
        return PaperTick(self._changed(new_orders, updates), self._fill_frame(fills), fills)

    def _changed(self, new_orders: list[dict | None], updates: list[dict | None]) -> pd.DataFrame:
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
        return pd.DataFrame(rows)

    def _allocate(self, maker_events: pd.DataFrame, taker_events: pd.DataFrame) -> pd.DataFrame:
        """Both kinds of candidate fill through the shared Allocator, each fill with its order's id."""
        candidates = [e for e in (maker_events, taker_events) if len(e)]
        if not candidates:
            return self.allocator.fill(pd.DataFrame()).assign(client_order_id=pd.Series(dtype=object))
        events = pd.concat(candidates, ignore_index=True)
        fills = self.allocator.fill(events)
        ids = events[["market_ticker", "fill_ts", "liquidity", "client_order_id"]]
        return fills.merge(ids, on=["market_ticker", "fill_ts", "liquidity"], how="left")

    def _taker_events(self, inputs: TickInputs, taker: Decision, take: np.ndarray, now_ts: int) -> pd.DataFrame:
        rows = np.flatnonzero(take)
        if not len(rows):
            return pd.DataFrame()
        tickers = np.asarray(inputs.tickers, dtype=object)[rows]
        side = taker.math.side[rows]
        return pd.DataFrame({
            "fill_ts": now_ts, "decision_ts": now_ts, "market_ticker": tickers, "city": inputs.city[rows],
            "bracket": inputs.bracket[rows], "event_date": self._event_dates(tickers), "side": side,
            "liquidity": "taker", "price_cents": taker.math.price_cents[rows],
            "target_fraction": taker.math.size_fraction[rows], "available": np.inf, "episode": -1,
            "locked": inputs.locked[rows],
            "client_order_id": [paper_order_id(t, s, now_ts) + "-t" for t, s in zip(tickers, side, strict=True)]})

    def _filled(self, fills: pd.DataFrame, now: datetime) -> list[dict]:
        """Counts and status of the resting orders that just filled (taker orders are written filled)."""
        out = []
        for f in fills[fills["liquidity"] == "maker"].itertuples(index=False):
            order = self.resting[f.market_ticker]
            order.filled += int(f.contracts)
            remaining = max(order.count - order.filled, 0)
            out.append({"client_order_id": order.client_order_id, "filled_count": order.filled,
                        "remaining_count": remaining, "updated_at": now})
        return out

    def _trade_through(self, candles: pd.DataFrame, now_ts: int) -> pd.DataFrame:
        """Candidate fills: resting orders whose market traded strictly through their price in a candle that
        began after the order's price was set (the backtest's next-minute rule).

        A candle covers (end − 60, end]: the order must have rested at its price through all of it (as the
        backtest's decision at t rests through the minute to t + 60), and each candle counts once. At
        sub-minute ticks this is conservative: an order re-pegged mid-minute fills from the next full minute.
        """
        if not self.resting or candles.empty:
            return pd.DataFrame()
        ends = candles["end_period_ts"].to_numpy()
        fresh = np.flatnonzero((ends > min(r.checked_ts for r in self.resting.values())) & (ends <= now_ts))
        rows = []
        tickers = candles["market_ticker"].to_numpy(dtype=object)
        low, high = candles["price_low"].to_numpy(dtype=float), candles["price_high"].to_numpy(dtype=float)
        volume = np.nan_to_num(candles["volume"].to_numpy(dtype=float))
        for k in fresh:  # the minute's new candles: one per market at most
            order = self.resting.get(tickers[k])
            if order is None or ends[k] <= order.checked_ts or ends[k] - MINUTE < order.set_ts:
                continue
            if trades_through(np.array([order.side]), np.array([order.price_cents]), low[k:k + 1],
                              high[k:k + 1])[0]:
                rows.append((int(ends[k]), int(ends[k]) - MINUTE, tickers[k], order.city, order.bracket,
                             order.event_date, order.side, "maker", order.price_cents, order.target_fraction,
                             volume[k], -1, order.locked, order.client_order_id))
        for order in self.resting.values():
            order.checked_ts = max(order.checked_ts, now_ts)
        return pd.DataFrame(rows, columns=EVENT_COLUMNS)

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

    def _taker_orders(self, fills: pd.DataFrame, now: datetime) -> list[dict]:
        taken = fills[fills["liquidity"] == "taker"]
        return [{"client_order_id": f.client_order_id, "exchange_order_id": None, "mode": MODE,
                 "environment": ENVIRONMENT, "market_ticker": f.market_ticker, "side": f.side, "action": "buy",
                 "limit_price_cents": float(f.price_cents), "count": int(f.contracts),
                 "filled_count": int(f.contracts), "remaining_count": 0, "post_only": False, "status": "filled",
                 "created_at": now, "updated_at": now, "cancelled_at": None, "reason": "taker fallback",
                 "signal_ts_utc": now} for f in taken.itertuples(index=False)]

    def _fill_frame(self, fills: pd.DataFrame) -> pd.DataFrame:
        if fills.empty:
            return pd.DataFrame(columns=records.FILL_COLUMNS)
        return pd.DataFrame({
            "fill_id": [f"{cid}-{int(ts)}" for cid, ts in zip(fills["client_order_id"], fills["fill_ts"], strict=True)],
            "client_order_id": fills["client_order_id"], "market_ticker": fills["market_ticker"],
            "side": fills["side"], "action": "buy", "price_cents": fills["price_cents"].astype(float),
            "count": fills["contracts"].astype(int), "fee_cents": fills["fee_cents"].astype(float),
            "liquidity": fills["liquidity"], "ts_utc": [_time(ts) for ts in fills["fill_ts"]], "mode": MODE})
