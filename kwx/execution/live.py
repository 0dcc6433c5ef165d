"""Live trading on Kalshi inside the real-time loop: the paper broker's policy, caps and halts, with the exchange
as the source of truth.

Per tick, in this order:
1. the book is brought up to date: a full reconciliation at the first tick and every ``reconcile_seconds``
   (``reconcile``), otherwise the fills since the newest one seen, and a lookup (by client_order_id) of every
   order sent without a known outcome;
2. the halt checks the paper broker makes (kill switch, halt file, cancel-all, daily loss limit);
3. ``order_step`` over the exchange-mirrored resting book: cancels first (a halt cancels every resting order),
   then taker fallbacks (immediate-or-cancel: what the book holds fills at once, the exchange cancels the rest) and
   new maker orders, each sized *before* it is sent and written ``pending`` before it is sent, then re-pegs
   (amendments).

An order's size is what the shared caps still allow: the Kelly target less what is held, the position limit less
what is held and what open orders may still fill, and the room left under the city/day/side cap once every open
order is counted as filled (fees and slippage as the Allocator counts them). Fills come only from the exchange;
each is booked once (by fill id) into the Allocator's ``held``/``spent``, the loss limit's book and its order's
counts. An exchange error on one market is logged and recorded on the order, and the policy retries next tick.

Records: an order's row is written ``pending`` (in its own transaction) before the order is sent; every later
change rides with the tick's ``PaperTick``, which the loop's writer stores in the tick's transaction.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from kwx.config import RtConfig
from kwx.data.clients.http import AuthError, FetchError, PayloadError, RetryPolicy
from kwx.data.schema import Fill, Market, Order
from kwx.domain.fees import FeeBook
from kwx.domain.orders import NO_SIDE, maker_gates, order_step
from kwx.execution import records
from kwx.execution.broker import Broker, PaperTick
from kwx.execution.kalshi_trade import (
    API_KEY_ID_ENV,
    PRIVATE_KEY_PATH_ENV,
    ExchangeFill,
    ExchangeOrder,
    KalshiCredentials,
    KalshiTrader,
    OrderIntent,
    OrderRejected,
    base_client_order_id,
    client_order_id,
    trade_url,
)
from kwx.rt.engine import Decision, TickInputs
from kwx.secrets import redact

log = logging.getLogger("kwx.execution.live")

MODE = "live"
# Every order kwx places carries this prefix: reconciliation adopts such an order the database lacks, and leaves
# alone the account's other orders (placed by hand, say).
CID_PREFIX = "kwx-"
# Reconciliation's fill listing starts this much before its horizon: kwx's clock (orders' creation) and the
# exchange's (fills' times) may differ by seconds, and Kalshi's ``min_ts`` may exclude the second it names. A fill
# read twice is booked once.
FILL_MARGIN_SECONDS = 60
# A tick's requests must not outlast the tick: short timeouts and backoffs, few attempts.
LOOP_RETRY = RetryPolicy(attempts=3, backoff_seconds=0.25, max_backoff_seconds=2.0)
EXCHANGE_STATUS = {"resting": "resting", "executed": "filled", "canceled": "cancelled"}
EXCHANGE_ERRORS = (FetchError, PayloadError, OrderRejected)
_REASON_CHARS = 200
TAKER_PLACED = "taker fallback: edge above taker_fallback_cents"
TAKER_DONE = "taker fallback, immediate-or-cancel: the exchange cancelled what did not fill at once"
TAKER_LEFT_RESTING = "taker fallback left resting (the exchange ignored immediate_or_cancel): cancelled"


class LiveStartError(RuntimeError):
    """Live trading cannot start: the exchange refused the API key. The message names the variables, never a value."""


def live_order_id(environment: str, ticker: str, side: str, decision_ts: int, kind: str = "maker") -> str:
    """Fixed by the decision (mode, environment, market, side, decision time, maker or taker): a restart or a retry
    of the same decision finds the order it placed instead of placing another."""
    intent = str(decision_ts) if kind == "maker" else f"{decision_ts}:{kind}"
    return CID_PREFIX + client_order_id(f"kwx:{MODE}:{environment}", ticker, side, "buy", intent)


def is_kwx_order(cid: str | None) -> bool:
    return bool(cid) and cid.startswith(CID_PREFIX)


def live_trader(environment: str = "demo", confirm_production: bool = False, *, tick_seconds: float = 9.0,
                url: str | None = None, env: Mapping[str, str] = os.environ) -> KalshiTrader:
    """A trading client for the loop: $KWX_KALSHI_TRADE_URL, else ``url`` (``execution.trade_api_url``), else the
    environment's URL (production refused before any key is read unless confirmed), the keys from
    KALSHI_API_KEY_ID / KALSHI_PRIVATE_KEY_PATH, timeouts a tick can afford."""
    url, _where = trade_url(environment, confirm_production, url, env)
    credentials = KalshiCredentials.from_env(env)
    return KalshiTrader(credentials, url, confirm_production=confirm_production,
                        timeout=min(10.0, max(1.0, tick_seconds / 3)), retry=LOOP_RETRY)


def _text(exc: BaseException) -> str:
    """An exception as one short line for a log or an order's reason (the client redacts already; again here)."""
    return " ".join(redact(str(exc) or type(exc).__name__).split())[:_REASON_CHARS]


def _log_correction(correction: Correction | None) -> None:
    if correction is not None and correction.before != correction.after:
        log.warning(correction.line())


def _time(ts: int | float) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


@dataclass
class LiveOrder:
    """An order as the broker mirrors it between ticks: open, or done with fills still to book."""

    client_order_id: str  # the id it was created with (amendments add ``:a<n>`` at the exchange)
    ticker: str
    side: str
    price_cents: int
    count: int  # contracts it may fill in all (filled + remaining), as last sent or read
    post_only: bool  # a maker order (the market's resting order); taker fallbacks are not
    city: str
    bracket: str
    event_date: object
    status: str  # records.ORDER_STATUSES
    created_ts: int
    target_fraction: float = 0.0  # the Kelly target of the decision that last kept it
    exchange_order_id: str | None = None
    filled: int = 0  # the exchange's fill count, as last read
    booked: int = 0  # contracts of its fills stored and counted in held/spent

    @property
    def open(self) -> bool:
        return self.status in records.OPEN_STATUSES

    @property
    def commitment(self) -> int:
        """Contracts that may still land in ``held``: all it may fill while open (a pending or unknown order may be
        at the exchange), what the exchange says it filled once done, less the fills already booked."""
        return max((self.count if self.open else self.filled) - self.booked, 0)

    def state(self) -> dict:
        return {"status": self.status, "price_cents": self.price_cents, "count": self.count, "filled": self.filled}


@dataclass(frozen=True)
class Correction:
    """One difference reconciliation found and corrected: an order, a fill or a position, before and after."""

    kind: str  # order | fill | position
    key: str  # client_order_id, fill id or market ticker
    before: dict | None
    after: dict | None

    def line(self) -> str:
        return json.dumps({"reconcile": self.kind, "key": self.key, "before": self.before, "after": self.after},
                          default=str)


class LiveBroker(Broker):
    mode = MODE

    def __init__(self, engine: Engine, config: RtConfig, trader: KalshiTrader, environment: str, *,
                 fees: FeeBook | None = None):
        if environment not in ("demo", "prod"):
            raise ValueError(f"environment must be demo or prod, got {environment!r}")
        super().__init__(engine, config, fees)
        self.trader, self.environment = trader, environment
        self.orders: dict[str, LiveOrder] = {}  # client_order_id -> open orders, and done ones with fills to book
        self.maker: dict[str, str] = {}  # market -> client_order_id of its resting maker order
        self._rows: dict[str, dict] = {}  # client_order_id -> whole row of each order in ``orders``
        self._changed: dict[str, dict] = {}  # rows changed since the last tick's output (a copy each)
        self._fill_rows: list[dict] = []
        self._seen: set[str] = set()  # fill ids booked (or found not to be kwx's)
        self._booked: dict[str, int] = {}  # client_order_id -> contracts of its booked fills
        self._fill_cursor: int | None = None  # newest fill time seen (exchange clock)
        self._fills_from: int | None = None  # where the last reconciliation's fill listing started
        self._fills_read_ts: int | None = None  # when this process last read the exchange's fills
        self._reconciled_ts: int | None = None
        self.synced = False  # a reconciliation has succeeded: until then nothing new is sent
        self._restore()

    # --- start ---

    def _restore(self) -> None:
        """After a restart: what the stored fills hold and spent, and the open orders (reconciliation at the first
        tick then checks every one of them at the exchange)."""
        restored = self._restored_records()
        if restored is None:
            return
        booked, open_rows, info = restored
        if len(booked):
            self._seen.update(booked["fill_id"])
            self._booked = {k: int(v) for k, v in booked.groupby("client_order_id")["count"].sum().items()}
            self._fill_cursor = int(booked["ts_utc"].max().timestamp())
        self._load(open_rows, info)

    def _load(self, frame: pd.DataFrame, info: pd.DataFrame) -> list[LiveOrder]:
        """Orders from their stored rows (``records.orders``), tracked from now on."""
        loaded = []
        for row in frame[records.ORDER_COLUMNS].to_dict("records"):  # a restart's few open orders
            market = info.loc[row["market_ticker"]]
            exchange_id = row["exchange_order_id"]
            order = LiveOrder(row["client_order_id"], row["market_ticker"], row["side"],
                              round(float(row["limit_price_cents"])), int(row["count"]), bool(row["post_only"]),
                              market["city"], market["bracket"], market["event_date"], row["status"],
                              int(row["created_at"].timestamp()),
                              exchange_order_id=None if pd.isna(exchange_id) else exchange_id,
                              filled=int(row["filled_count"]), booked=self._booked.get(row["client_order_id"], 0))
            self._track(order, row)
            loaded.append(order)
        return loaded

    def check_access(self) -> None:
        """One signed read before the loop starts: a refused key stops it here (``LiveStartError``); an exchange
        that does not answer only delays the first reconciliation."""
        try:
            balance = self.trader.balance()
        except AuthError as exc:
            raise LiveStartError(f"{_text(exc)}: check {API_KEY_ID_ENV} and {PRIVATE_KEY_PATH_ENV}") from None
        except (FetchError, PayloadError) as exc:
            log.warning(json.dumps({"live": "exchange unreachable at start; reconciliation retries every tick",
                                    "reason": _text(exc)}))
            return
        log.info(json.dumps({"live": "connected", "environment": self.environment, "url": self.trader.base_url,
                             "balance_cents": balance.balance_cents}))

    # --- the tick ---

    def tick(self, now_ts: int, inputs: TickInputs, maker: Decision, taker: Decision,
             candles: pd.DataFrame) -> PaperTick:
        """One tick (``candles`` are the paper broker's business: live fills come from the exchange). The
        changes ride in the returned ``PaperTick``, for the loop's writer."""
        try:
            self._tick(now_ts, inputs, maker, taker)
        except SQLAlchemyError as exc:
            # the kill switch or a pending order's row could not be read or written: the rest of the tick sends
            # nothing; what was done so far is in the output, which the loop's writer keeps until it can write
            log.warning(json.dumps({"live": "database unavailable: nothing more sent this tick",
                                    "reason": _text(exc)}))
        return self._output()

    def _tick(self, now_ts: int, inputs: TickInputs, maker: Decision, taker: Decision) -> None:
        now = _time(now_ts)
        self._refresh(now)
        halted, cancel_all = self._halt(now, inputs)
        if cancel_all and self._reconciled_ts != now_ts:
            self._reconcile_logged(now)  # adopt any kwx order the book lacks, so that this tick cancels it too
        tickers = np.asarray(inputs.tickers, dtype=object)
        mine = [self._maker_of(t) for t in tickers]
        resting_side = np.array([o.side if o else NO_SIDE for o in mine], dtype=object)
        resting_price = np.array([o.price_cents if o else np.nan for o in mine], dtype=float)
        open_ok, keep_ok = maker_gates(maker.reason, maker.math.edge_cents, maker.minutes_left, self.limits)
        taker_ok = pd.isna(taker.reason) & (taker.minutes_left >= self.limits.cancel_minutes_before_close)
        step = order_step(open_ok, keep_ok, maker.math.better, maker.math.price_cents, maker.math.edge_cents,
                          resting_side, resting_price, self.limits, halted=halted, taker_ok=taker_ok,
                          taker_edge_cents=taker.math.edge_cents)
        for ticker in sorted(set(self.maker) - set(tickers)):  # markets that left the tick (closed)
            self._cancel(self.orders[self.maker[ticker]], now, "market closed")
        for i in np.flatnonzero(step.cancel):
            if (order := self._maker_of(tickers[i])) is not None:
                self._cancel(order, now, "halted" if halted else "policy: gates, edge or side")
        for i in np.flatnonzero(step.rest & (resting_side == maker.math.better)):
            if (order := self._maker_of(tickers[i])) is not None:  # the Kelly target a re-peg is sized by
                order.target_fraction = float(maker.math.target_fraction[i])
        if halted:
            return
        if not self.synced:
            if step.place.any() or step.take.any():
                log.warning(json.dumps({"live": "not reconciled with the exchange yet: no new order this tick"}))
            return
        self._event_dates(tickers[step.place | step.take])  # read now: planning must not stop halfway on the database
        planned = self._takers(inputs, taker, step.take, now_ts) + self._places(inputs, maker, step.place, now_ts)
        self._send(planned, now)
        for i in np.flatnonzero(step.repeg):
            if (order := self._maker_of(tickers[i])) is not None:
                self._repeg(order, maker.math.price_cents[i], now)

    def _refresh(self, now: datetime) -> None:
        """Reconcile when due; otherwise the new fills and a lookup of each order of unknown outcome."""
        now_ts = int(now.timestamp())
        if self._reconciled_ts is None or now_ts - self._reconciled_ts >= self.config.execution.reconcile_seconds:
            self._reconcile_logged(now)
            return
        try:
            for order in [o for o in self.orders.values() if o.status == "unknown"]:
                _log_correction(self._resolve(order, now))
                self._cancel_resting_taker(order, now)
            since = self._fills_from if self._fill_cursor is None else self._fill_cursor
            self._book(self.trader.fills(min_ts=since), now)
            self._fills_read_ts = now_ts
        except EXCHANGE_ERRORS as exc:
            log.warning(json.dumps({"live": "exchange read failed; retried next tick", "reason": _text(exc)}))

    def _reconcile_logged(self, now: datetime) -> None:
        try:
            self.reconcile(now)
        except EXCHANGE_ERRORS as exc:
            log.warning(json.dumps({"live": "reconciliation failed; retried next tick", "reason": _text(exc)}))

    def _output(self) -> PaperTick:
        orders = list(self._changed.values())
        fills = self._fill_rows
        self._changed, self._fill_rows = {}, []
        return PaperTick(orders, fills)

    # --- sizing and sending ---

    def _maker_of(self, ticker: str) -> LiveOrder | None:
        cid = self.maker.get(ticker)
        return None if cid is None else self.orders.get(cid)

    def _size(self, ticker: str, side: str, city: str, event_date, price: int, target_fraction: float, maker: bool,
              ts: float, exclude: str | None = None) -> int:
        """Contracts an order at ``price`` may still buy, before it is sent: the least of the Kelly target, the
        position limit and the city/day/side cap, each less what is held and what the other open orders (all but
        ``exclude``) may still fill; each contract costs price, slippage and the fee of one at ``ts`` (a bound on
        what partial fills pay, since the fee rounds up per fill)."""
        caps, fees = self.allocator.caps, self.allocator.fees
        slip = caps.slip_per_leg_cents
        held = self.allocator.held.get((ticker, side), 0)
        same_position, same_group = 0, 0.0
        for order in self.orders.values():  # the few open orders
            if order.client_order_id == exclude or not order.commitment:
                continue
            if (order.ticker, order.side) == (ticker, side):
                same_position += order.commitment
            if (order.city, order.event_date, order.side) == (city, event_date, side):
                same_group += order.commitment * (order.price_cents + slip + fees.order_cents(
                    order.ticker, ts, order.price_cents, 1, order.post_only))
        unit = price + slip
        target = min(int(target_fraction * caps.bankroll_cents // unit), caps.max_position_contracts)
        room = (caps.max_fraction_city_day_side * caps.bankroll_cents
                - self.allocator.spent.get((city, event_date, side), 0.0) - same_group)
        per_contract = unit + fees.order_cents(ticker, ts, price, 1, maker)
        return int(max(min(target - held - same_position, caps.max_position_contracts - held - same_position,
                           room // per_contract), 0))

    def _plan(self, inputs: TickInputs, i: int, side: str, price_cents: float, target_fraction: float, now_ts: int,
              kind: str) -> tuple[LiveOrder, OrderIntent] | None:
        """A sized order for market ``i`` of the tick, tracked as pending (so the next one's sizing counts it), or
        None when nothing may be bought."""
        ticker = inputs.tickers[i]
        price = round(float(price_cents))
        open_orders = sum(o.open for o in self.orders.values())
        if not 1 <= price <= 99 or open_orders >= self.limits.max_open_orders:
            return None
        cid = live_order_id(self.environment, ticker, side, now_ts, kind)
        if cid in self.orders:
            return None  # this decision's order exists already (a restart within the tick it was placed)
        event_date = self._event_date[ticker]
        maker = kind == "maker"
        count = self._size(ticker, side, inputs.city[i], event_date, price, target_fraction, maker, now_ts)
        if count <= 0:
            return None
        order = LiveOrder(cid, ticker, side, price, count, maker, inputs.city[i], inputs.bracket[i], event_date,
                          "pending", now_ts, target_fraction=target_fraction)
        now = _time(now_ts)
        reason = "policy: edge above tau_open" if maker else TAKER_PLACED
        self._track(order, {
            "client_order_id": cid, "exchange_order_id": None, "mode": MODE, "environment": self.environment,
            "market_ticker": ticker, "side": side, "action": "buy", "limit_price_cents": float(price), "count": count,
            "filled_count": 0, "remaining_count": count, "post_only": maker, "status": "pending", "created_at": now,
            "updated_at": now, "cancelled_at": None, "reason": reason, "signal_ts_utc": now})
        self._changed[cid] = dict(self._rows[cid])
        intent = OrderIntent(ticker, side, "buy", count, price, cid) if maker else OrderIntent.taker(
            ticker, side, "buy", count, price, cid)
        return order, intent

    def _takers(self, inputs: TickInputs, taker: Decision, take: np.ndarray, now_ts: int) -> list:
        """Taker fallbacks, the largest edges first: an immediate-or-cancel limit order at the taker price, which takes
        what the book holds up to it at once and never rests."""
        rows = np.flatnonzero(take)
        rows = rows[np.argsort(-np.asarray(taker.math.edge_cents, dtype=float)[rows], kind="stable")]
        planned = (self._plan(inputs, i, str(taker.math.side[i]), taker.math.price_cents[i],
                              float(taker.math.size_fraction[i]), now_ts, "taker") for i in rows)
        return [p for p in planned if p is not None]

    def _places(self, inputs: TickInputs, maker: Decision, place: np.ndarray, now_ts: int) -> list:
        """New maker orders, the largest edges first; none where the market's old order is still there (its
        cancel failed: the next tick tries again)."""
        rows = np.flatnonzero(place)
        rows = rows[np.argsort(-np.asarray(maker.math.edge_cents, dtype=float)[rows], kind="stable")]
        planned = (self._plan(inputs, i, str(maker.math.better[i]), maker.math.price_cents[i],
                              float(maker.math.target_fraction[i]), now_ts, "maker")
                   for i in rows if inputs.tickers[i] not in self.maker)
        return [p for p in planned if p is not None]

    def _send(self, planned: list[tuple[LiveOrder, OrderIntent]], now: datetime) -> None:
        """Write the orders' rows as pending (their own transaction, so a crash after sending still finds them),
        then send each; an id the database holds already is never sent again."""
        if not planned:
            return
        cids = [order.client_order_id for order, _ in planned]
        try:
            with self.engine.begin() as conn:
                taken = set(conn.execute(select(Order.client_order_id).where(Order.client_order_id.in_(cids)))
                            .scalars())
                fresh = [self._rows[cid] for cid in cids if cid not in taken]
                if fresh:
                    records.save_orders(conn, pd.DataFrame(fresh, columns=records.ORDER_COLUMNS))
        except SQLAlchemyError as exc:
            for order, _ in planned:
                self._forget(order)
            log.warning(json.dumps({"live": f"database unavailable: {len(planned)} new order(s) not sent",
                                    "reason": _text(exc)}))
            return
        for order, intent in planned:
            if order.client_order_id in taken:
                self._forget(order)  # a restart re-decided a tick whose order is stored: reconciliation tracks it
                continue
            self._create(order, intent, now)

    def _create(self, order: LiveOrder, intent: OrderIntent, now: datetime) -> None:
        try:
            placed = self.trader.create_order(intent)
        except (OrderRejected, AuthError) as exc:  # refused: nothing rests at the exchange
            self._sync(order, now, status="rejected", reason=f"rejected: {_text(exc)}")
            self._log(logging.WARNING, "rejected", order, _text(exc))
            return
        except (FetchError, PayloadError) as exc:  # it may rest there: looked up by its id from the next tick on
            self._sync(order, now, status="unknown", reason=f"outcome unknown (looked up next tick): {_text(exc)}")
            self._log(logging.WARNING, "outcome unknown", order, _text(exc))
            return
        self._apply(order, placed, now, reason=TAKER_DONE if not order.post_only and placed.status == "canceled"
                    else None)
        self._log(logging.INFO, "placed", order)
        self._cancel_resting_taker(order, now)

    def _cancel_resting_taker(self, order: LiveOrder, now: datetime) -> None:
        """A taker fallback is immediate-or-cancel, so it never rests; one that does (the exchange ignored
        time_in_force, or an older kwx placed it) is no maker order the policy manages: warned about and cancelled."""
        if order.post_only or order.status != "resting":
            return
        self._log(logging.WARNING, "taker order left resting", order, TAKER_LEFT_RESTING)
        self._cancel(order, now, TAKER_LEFT_RESTING)

    def _repeg(self, order: LiveOrder, price_cents: float, now: datetime) -> None:
        """Move a resting order to the current maker price, re-sized under the caps at that price (cancelled when
        nothing may be bought there); an order of unknown outcome waits for its lookup."""
        price = round(float(price_cents))
        if order.status != "resting" or order.exchange_order_id is None or price == order.price_cents:
            return
        if not 1 <= price <= 99:
            self._cancel(order, now, "re-peg: the maker price is outside 1..99")
            return
        allowed = self._size(order.ticker, order.side, order.city, order.event_date, price, order.target_fraction,
                             True, now.timestamp(), exclude=order.client_order_id)
        total = order.booked + allowed  # its unbooked fills count against ``allowed`` too
        if allowed <= 0 or total <= order.filled:
            self._cancel(order, now, "re-peg: no room under the caps at the new price")
            return
        try:
            amended = self.trader.amend_order(order.exchange_order_id, price_cents=price, count=total)
        except OrderRejected as exc:
            if exc.order is not None and not exc.order.is_resting:  # a fill (or the exchange) finished it first
                self._apply(order, exc.order, now, reason=f"re-peg: {_text(exc)}")
            elif exc.reason_code == "count_not_above_filled":
                self._cancel(order, now, "re-peg: filled up to what the caps allow")
            else:
                self._failed(order, now, "re-peg", exc)
            return
        except (FetchError, PayloadError) as exc:
            self._failed(order, now, "re-peg", exc)
            return
        self._apply(order, amended, now, reason="re-pegged to the maker price")
        self._log(logging.INFO, "re-pegged", order)

    def _cancel(self, order: LiveOrder, now: datetime, reason: str) -> None:
        try:
            if order.exchange_order_id is None:  # sent without a known outcome: find it first
                _log_correction(self._resolve(order, now))
                if not order.open or order.exchange_order_id is None:
                    return
            cancelled = self.trader.cancel_order(order.exchange_order_id)
        except OrderRejected as exc:
            if exc.order is not None and not exc.order.is_resting:
                self._apply(order, exc.order, now, reason=reason)
            else:
                self._failed(order, now, "cancel", exc)
            return
        except (FetchError, PayloadError) as exc:
            self._failed(order, now, "cancel", exc)
            return
        self._apply(order, cancelled, now, reason=reason)
        self._log(logging.INFO, "cancelled", order, reason)

    def _failed(self, order: LiveOrder, now: datetime, action: str, exc: BaseException) -> None:
        """An exchange error on one order: recorded on it and logged; the policy asks again next tick."""
        self._sync(order, now, reason=f"{action} failed (retried next tick): {_text(exc)}")
        self._log(logging.WARNING, f"{action} failed", order, _text(exc))

    def _log(self, level: int, event: str, order: LiveOrder, reason: str | None = None) -> None:
        log.log(level, json.dumps({"live": event, "order": order.client_order_id, "market": order.ticker,
                                   "side": order.side, "price_cents": order.price_cents, "count": order.count,
                                   "filled": order.filled, "status": order.status,
                                   **({"reason": reason} if reason else {})}))

    # --- the mirror: orders and rows ---

    def _track(self, order: LiveOrder, row: dict) -> None:
        """Mirror ``order``; an open maker order becomes its market's resting order unless the market has one."""
        self.orders[order.client_order_id] = order
        self._rows[order.client_order_id] = row
        if order.post_only and order.open:
            self.maker.setdefault(order.ticker, order.client_order_id)

    def _forget(self, order: LiveOrder) -> None:
        """An order planned but never sent."""
        cid = order.client_order_id
        self.orders.pop(cid, None)
        self._rows.pop(cid, None)
        self._changed.pop(cid, None)
        if self.maker.get(order.ticker) == cid:
            del self.maker[order.ticker]

    def _sync(self, order: LiveOrder, now: datetime, *, status: str | None = None, reason: str | None = None) -> None:
        """The order's row from its state (and a new ``status``/``reason``); a done order whose fills are all booked
        leaves the broker's memory."""
        if status is not None:
            order.status = status
        row = self._rows[order.client_order_id]
        filled = max(order.filled, order.booked)
        row.update(exchange_order_id=order.exchange_order_id, limit_price_cents=float(order.price_cents),
                   count=order.count, filled_count=filled,
                   remaining_count=max(order.count - filled, 0) if order.open else 0, status=order.status,
                   updated_at=now)
        if order.status == "cancelled" and pd.isna(row.get("cancelled_at")):
            row["cancelled_at"] = now
        if reason is not None:
            row["reason"] = redact(reason)[:_REASON_CHARS]
        self._changed[order.client_order_id] = dict(row)
        if not order.open:
            if self.maker.get(order.ticker) == order.client_order_id:
                del self.maker[order.ticker]
            if order.commitment == 0:
                self.orders.pop(order.client_order_id, None)
                self._rows.pop(order.client_order_id, None)

    def _apply(self, order: LiveOrder, placed: ExchangeOrder, now: datetime, reason: str | None = None, *,
               if_changed: bool = False) -> bool:
        """The exchange's state of the order onto the mirror and its row (with ``reason``, or with it only when
        something changed); whether anything changed."""
        before = order.state()
        order.exchange_order_id = placed.order_id
        order.price_cents = placed.price_cents
        order.filled = placed.fill_count
        if placed.is_resting:
            order.count = placed.fill_count + placed.remaining_count
        elif order.status in records.OPEN_STATUSES and placed.status == "executed":
            order.count = max(order.count, placed.fill_count)
        status = EXCHANGE_STATUS[placed.status]
        changed = {**order.state(), "status": status} != before
        self._sync(order, now, status=status, reason=reason if changed or not if_changed else None)
        return changed

    def _resolve(self, order: LiveOrder, now: datetime) -> Correction | None:
        """An order whose outcome is unknown (or pending from before a restart), looked up at the exchange by its
        client_order_id. Not there: after ``reconcile_seconds`` it is taken as never placed (if it shows up later,
        reconciliation adopts it); sooner, it stays unknown and keeps its market and its share of the caps."""
        before = order.state()
        found = (self.trader.order(order.exchange_order_id) if order.exchange_order_id
                 else self.trader.order_by_client_id(order.client_order_id, order.ticker))
        if found is not None:
            self._apply(order, found, now, reason="outcome resolved by lookup")
        elif int(now.timestamp()) - order.created_ts >= self.config.execution.reconcile_seconds:
            self._sync(order, now, status="rejected", reason="not at the exchange: the order never reached it")
        else:
            return None
        return Correction("order", order.client_order_id, before, order.state())

    # --- fills ---

    def _book(self, fills: list[ExchangeFill], now: datetime) -> list[dict]:
        """Book each fill not seen before: its row (stored once by fill id), held and spent, the loss limit's book
        and its order's counts. A fill of an order that is not kwx's is left to the position reconciliation.
        Returns the new fill rows."""
        new = []
        for fill in sorted((f for f in fills if f.fill_id not in self._seen), key=lambda f: (f.ts or 0, f.fill_id)):
            try:
                order = self._order_of(fill, now)
            except EXCHANGE_ERRORS as exc:  # its order could not be looked up: this fill and later ones next time
                log.warning(json.dumps({"live": "fill's order lookup failed; booked later", "fill": fill.fill_id,
                                        "reason": _text(exc)}))
                break
            self._seen.add(fill.fill_id)
            if fill.ts is not None:
                self._fill_cursor = max(self._fill_cursor or 0, fill.ts)
            if order is None or fill.action != "buy":
                log.info(json.dumps({"live": "fill of an order that is not kwx's: left to the position check",
                                     "fill": fill.fill_id, "market": fill.ticker}))
                continue
            maker = not fill.is_taker
            row = {"fill_id": fill.fill_id, "client_order_id": order.client_order_id, "market_ticker": fill.ticker,
                   "side": fill.side, "action": "buy", "price_cents": float(fill.price_cents), "count": fill.count,
                   "fee_cents": self.fees.order_cents(fill.ticker, fill.ts or now.timestamp(), fill.price_cents,
                                                      fill.count, maker),
                   "liquidity": "maker" if maker else "taker", "ts_utc": _time(fill.ts) if fill.ts else now,
                   "mode": MODE}
            new.append((row, order))
        if not new:
            return []
        rows = [row for row, _ in new]
        self._hold(pd.DataFrame([{**row, "city": order.city, "event_date": order.event_date} for row, order in new]))
        for row, order in new:
            order.booked += row["count"]
            self._booked[order.client_order_id] = self._booked.get(order.client_order_id, 0) + row["count"]
            order.filled = max(order.filled, order.booked)
            status = "filled" if order.open and order.booked >= order.count else None
            self._sync(order, now, status=status)
        self._fill_rows += rows
        return rows

    def _order_of(self, fill: ExchangeFill, now: datetime) -> LiveOrder | None:
        """The kwx order a fill belongs to: in memory, stored (a finished order), or adopted from the exchange."""
        base = base_client_order_id(fill.client_order_id) if fill.client_order_id else None
        if base in self.orders:
            return self.orders[base]
        for order in self.orders.values():
            if order.exchange_order_id == fill.order_id:
                return order
        with self.engine.connect() as conn:
            stored = conn.execute(select(Order.__table__).where(Order.mode == MODE, (
                Order.exchange_order_id == fill.order_id) | (Order.client_order_id == (base or "")))).mappings().first()
        if stored is not None:  # a finished order (or one a restart did not load): tracked again for its fills
            frame = pd.DataFrame([dict(stored)], columns=records.ORDER_COLUMNS)
            return self._load(frame, self._market_info([stored["market_ticker"]]))[0]
        if base is not None and not is_kwx_order(base):
            return None
        placed = self.trader.order(fill.order_id)
        if placed is None or not is_kwx_order(placed.base_client_order_id):
            return None
        return self._adopt(placed, now)

    def _adopt(self, placed: ExchangeOrder, now: datetime) -> LiveOrder | None:
        """A kwx order at the exchange that the database lacks (or holds as finished): tracked and written whole.
        Only in the markets this loop trades (the configured cities and brackets)."""
        info = self._market_info([placed.ticker])
        traded = {(m.city, m.bracket) for m in self.config.markets}
        if placed.ticker not in info.index or tuple(info.loc[placed.ticker, ["city", "bracket"]]) not in traded:
            log.warning(json.dumps({"live": "exchange order of a market this loop does not trade: left alone",
                                    "order": placed.client_order_id, "market": placed.ticker}))
            return None
        cid = placed.base_client_order_id
        market = info.loc[placed.ticker]
        created = _time(placed.created_ts) if placed.created_ts else now
        count = placed.fill_count + placed.remaining_count if placed.is_resting else placed.initial_count
        order = LiveOrder(cid, placed.ticker, placed.side, placed.price_cents, count, True, market["city"],
                          market["bracket"], market["event_date"], EXCHANGE_STATUS[placed.status],
                          int(created.timestamp()), exchange_order_id=placed.order_id, filled=placed.fill_count,
                          booked=self._booked.get(cid, 0))
        self._track(order, {
            "client_order_id": cid, "exchange_order_id": placed.order_id, "mode": MODE,
            "environment": self.environment, "market_ticker": placed.ticker, "side": placed.side, "action": "buy",
            "limit_price_cents": float(placed.price_cents), "count": count, "filled_count": placed.fill_count,
            "remaining_count": placed.remaining_count, "post_only": True, "status": order.status,
            "created_at": created, "updated_at": now, "cancelled_at": None, "signal_ts_utc": None,
            "reason": "adopted by reconciliation: at the exchange, not open in the database"})
        self._sync(order, now)
        return order

    # --- reconciliation ---

    def reconcile(self, now: datetime) -> list[Correction]:
        """Correct the database to the exchange: its resting orders against the open ones here (an order open here
        but not resting there takes the exchange's status; a resting kwx order unknown here is adopted; status,
        price and count differences are corrected), its fills (every page since ``_fills_horizon``, however long ago;
        missing ones booked), its positions against the fills' (a difference is logged and the exchange's count is
        what the caps use from then on). Each correction is one warning line with before and after; a fill made
        before this process last read the fills (or before it started) is such a correction, one line per fill.
        Raises the client's errors (nothing is half-done that the next reconciliation would not finish)."""
        corrections: list[Correction] = []

        def correct(correction: Correction | None) -> None:  # logged at once: a failure later loses no line
            if correction is not None and correction.before != correction.after:
                corrections.append(correction)
                log.warning(correction.line())

        resting: dict[str, ExchangeOrder] = {}
        for placed in self.trader.orders(status="resting"):
            resting.setdefault(placed.base_client_order_id, placed)
        for order in [o for o in self.orders.values() if o.open]:
            placed = resting.pop(order.client_order_id, None)
            if placed is None:
                correct(self._resolve(order, now))
                continue
            before = order.state()
            if self._apply(order, placed, now, reason="corrected by reconciliation", if_changed=True):
                correct(Correction("order", order.client_order_id, before, order.state()))
        for cid, placed in resting.items():
            if not is_kwx_order(cid):
                continue  # the account's other orders are not kwx's to manage
            stored = self._stored_state(cid)
            if (order := self._adopt(placed, now)) is not None:
                correct(Correction("order", cid, stored, order.state()))
        for order in [o for o in self.orders.values() if o.status == "resting"]:
            if not order.post_only:
                self._cancel_resting_taker(order, now)
            elif self.maker.get(order.ticker) != order.client_order_id:  # one resting order per market
                self._cancel(order, now, "reconciliation: a second resting kwx order on the market")
        now_ts = int(now.timestamp())
        horizon = self._fills_horizon()
        since = (now_ts if horizon is None else horizon) - FILL_MARGIN_SECONDS
        read_before = self._fills_read_ts
        for row in self._book(self.trader.fills(min_ts=since), now):
            # a fill made before this process last looked (or before it started) was missed: money moved unseen
            if read_before is None or row["ts_utc"].timestamp() < read_before:
                correct(Correction("fill", row["fill_id"], None, {
                    "order": row["client_order_id"], "market": row["market_ticker"], "side": row["side"],
                    "count": row["count"], "price_cents": row["price_cents"], "filled_at": row["ts_utc"]}))
        self._fills_from, self._fills_read_ts = since, now_ts
        for correction in self._reconcile_positions(now):
            correct(correction)
        self._reconciled_ts = now_ts
        self.synced = True
        return corrections

    def _fills_horizon(self) -> int | None:
        """Where the exchange's fills must be read from for none of kwx's to be missed, however long the loop was
        down: the newest stored fill, or the creation of the oldest order whose fills may not all be stored (open,
        or filled beyond its stored fills; stored or only in memory), whichever is older. None when there is
        neither: no order of kwx's can have filled unseen."""
        booked = (select(Fill.client_order_id, func.sum(Fill.count).label("contracts"))
                  .where(Fill.mode == MODE).group_by(Fill.client_order_id).subquery())
        unbooked = (Order.status.in_(records.OPEN_STATUSES)
                    | (Order.filled_count > func.coalesce(booked.c.contracts, 0)))
        with self.engine.connect() as conn:
            newest_fill = conn.execute(select(func.max(Fill.ts_utc)).where(Fill.mode == MODE)).scalar()
            oldest_order = conn.execute(
                select(func.min(Order.created_at))
                .select_from(Order.__table__.outerjoin(booked, booked.c.client_order_id == Order.client_order_id))
                .where(Order.mode == MODE, unbooked)).scalar()
        starts = [int(t.timestamp()) for t in (newest_fill, oldest_order) if t is not None]
        starts += [o.created_ts for o in self.orders.values() if o.open or o.commitment]
        return min(starts, default=None)

    def _stored_state(self, cid: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(Order.status, Order.limit_price_cents, Order.count, Order.filled_count)
                               .where(Order.client_order_id == cid)).first()
        return None if row is None else {"status": row[0], "price_cents": row[1], "count": row[2], "filled": row[3]}

    def _reconcile_positions(self, now: datetime) -> list[Correction]:
        """Net contracts per open market (YES less NO, as Kalshi nets them): the exchange's against the fills'.
        Markets already closed are left out (settlement clears the exchange's position, not the fills)."""
        exchange = {p.ticker: p.position for p in self.trader.positions()}
        tickers = sorted(set(exchange) | {ticker for ticker, _side in self.allocator.held})
        if not tickers:
            return []
        with self.engine.connect() as conn:  # the markets still open: a few dozen, however long kwx has traded
            trading = set(conn.execute(select(Market.ticker).where(Market.close_time > now)).scalars()) & set(tickers)
        held = self.allocator.held
        corrections = []
        for ticker in sorted(trading):  # the open markets kwx holds or the account holds
            yes, no = held.get((ticker, "yes"), 0), held.get((ticker, "no"), 0)
            theirs = exchange.get(ticker, 0)
            if yes - no != theirs:
                held[(ticker, "yes")], held[(ticker, "no")] = max(theirs, 0), max(-theirs, 0)
                corrections.append(Correction("position", ticker, {"yes": yes, "no": no, "net": yes - no},
                                              {"yes": max(theirs, 0), "no": max(-theirs, 0), "net": theirs}))
        return corrections
