"""A Kalshi exchange on 127.0.0.1 for the trading client's tests, speaking Trade API v2's payload shapes.

It checks every request's RSA-PSS signature with the account's public key (and the timestamp's
freshness), keeps an order book per market that the test sets, fills resting orders when the test
prints a trade that goes strictly through their price (partially, if the trade is smaller), tracks
balance, positions and fills, refuses post-only orders that would cross, honours ``time_in_force``
(immediate_or_cancel cancels what did not fill at once: "canceled" unless all filled, then "executed";
fill_or_kill fills all at once or nothing; good_till_canceled, or none, rests the rest), and misbehaves
on request: rejections, 429 / 5xx, a hang past the client's timeout, an order accepted whose answer is
never sent, or ``time_in_force`` ignored (``ignore_time_in_force``: every order rests what did not fill).
Every request is recorded, so a test can count creates.

Simplifications, none of which the client relies on: fees are zero, resting orders fill in time
priority (not price priority), a marketable non-post-only order takes at the touch up to the book's
depth (all of it at the touch's price, however far its limit is), and positions net YES against NO without
paying out the pairs.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

API_PREFIX = "/trade-api/v2"
USER_ID = "fake-user-0001"
ORDERS = "/portfolio/orders"
# The bodies Kalshi sends for the rejections a test can ask for (a post-only cross is an invalid_order).
TIME_IN_FORCE = ("fill_or_kill", "good_till_canceled", "immediate_or_cancel")
REJECTIONS = {
    "insufficient_balance": {"code": "insufficient_balance", "message": "insufficient balance"},
    "market_closed": {"code": "market_closed", "message": "market closed"},
    "post_only_cross": {"code": "invalid_order", "message": "invalid order", "details": "post only cross"},
}


def _dollars(cents: int) -> str:
    return f"{Decimal(cents) / 100:.4f}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, code: str, message: str, details: str | None = None) -> tuple[int, dict]:
    error = {"code": code, "message": message} | ({"details": details} if details else {})
    return status, {"error": error}


@dataclass
class Recorded:
    """One request as the exchange saw it, and what it did with it."""

    method: str
    path: str  # without the /trade-api/v2 prefix
    query: dict[str, str]
    body: dict | None
    signed: bool = False
    status: int | None = None  # the answer's status; None when none was sent (dropped, hung unanswered)
    response: dict | None = None
    delivered: bool = False  # the answer was written to the socket


@dataclass
class _Fault:
    kind: str  # fail | reject | hang | drop
    method: str | None
    path: str | None
    times: int = 1
    status: int = 0
    retry_after: float | None = None
    code: str = ""
    seconds: float = 0.0
    accept: bool = True

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or fnmatch.fnmatchcase(path, self.path))


@dataclass
class _Book:
    yes_bid: int
    yes_ask: int
    depth: int | None  # contracts at the touch for a taker; None: unlimited
    closed: bool = False


@dataclass
class _Order:
    order_id: str
    client_order_id: str
    ticker: str
    side: str
    action: str
    price: int  # of ``side``
    post_only: bool
    initial_count: int
    remaining_count: int
    created: float
    fill_count: int = 0
    status: str = "resting"
    maker_cost: int = 0
    taker_cost: int = 0
    updated: float = 0.0

    def json(self) -> dict:
        yes = self.price if self.side == "yes" else 100 - self.price
        return {
            "order_id": self.order_id, "user_id": USER_ID, "client_order_id": self.client_order_id,
            "ticker": self.ticker, "side": self.side, "action": self.action, "type": "limit", "status": self.status,
            "yes_price": yes, "no_price": 100 - yes, "yes_price_dollars": _dollars(yes),
            "no_price_dollars": _dollars(100 - yes), "fill_count": self.fill_count,
            "remaining_count": self.remaining_count, "initial_count": self.initial_count, "taker_fees": 0,
            "maker_fees": 0, "taker_fill_cost": self.taker_cost, "maker_fill_cost": self.maker_cost,
            "taker_fill_cost_dollars": _dollars(self.taker_cost), "maker_fill_cost_dollars": _dollars(self.maker_cost),
            "queue_position": 0, "created_time": _iso(self.created), "last_update_time": _iso(self.updated or
                                                                                             self.created),
        }


@dataclass
class _Position:
    position: int = 0
    exposure: int = 0
    total_traded: int = 0
    updated: float = 0.0


@dataclass
class _Hook:
    method: str
    path: str
    action: Callable[[], object]


class FakeKalshiExchange:
    """Use as a context manager; ``url`` is the API base URL (…/trade-api/v2) to give the client."""

    def __init__(self, public_key: RSAPublicKey, key_id: str, *, balance_cents: int = 100_000,
                 max_skew_ms: int = 10_000, page_size: int = 200, clock: Callable[[], float] = time.time):
        self.public_key, self.key_id = public_key, key_id
        self.cash = balance_cents
        self.max_skew_ms, self.page_size, self.clock = max_skew_ms, page_size, clock
        self.books: dict[str, _Book] = {}
        self.orders: dict[str, _Order] = {}
        self.fills: list[dict] = []
        self.positions: dict[str, _Position] = {}
        self.requests: list[Recorded] = []
        self.ignore_time_in_force = False  # a misbehaving exchange: immediate-or-cancel orders rest what is left
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ids = 0
        exchange = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                exchange._serve(self, "GET")

            def do_POST(self):
                exchange._serve(self, "POST")

            def do_DELETE(self):
                exchange._serve(self, "DELETE")

            def log_message(self, *args):
                pass  # no access-log line per request in the test output

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # a short poll keeps shutdown (once per test) from waiting out the default half second
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{API_PREFIX}"

    def __enter__(self) -> FakeKalshiExchange:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # wakes any request still hanging
        self.server.shutdown()
        self.server.server_close()

    # --- the test drives the market ---

    def set_book(self, ticker: str, yes_bid: int, yes_ask: int, depth: int | None = None) -> None:
        with self._lock:
            closed = self.books[ticker].closed if ticker in self.books else False
            self.books[ticker] = _Book(yes_bid, yes_ask, depth, closed)

    def close_market(self, ticker: str) -> None:
        with self._lock:
            self.books[ticker].closed = True

    def trade(self, ticker: str, yes_price: int, count: int) -> int:
        """A trade of ``count`` contracts printed at YES ``yes_price``: fills resting orders it goes strictly
        through (a YES buy at P when yes_price < P, a NO buy at P when yes_price > 100 - P, sells mirrored),
        oldest first. Returns the contracts filled."""
        with self._lock:
            left = count
            for order in sorted(self.orders.values(), key=lambda o: o.created):
                if left == 0:
                    break
                if order.ticker == ticker and order.status == "resting" and self._through(order, yes_price):
                    take = min(left, order.remaining_count)
                    self._fill(order, take, order.price, is_taker=False)
                    left -= take
            return count - left

    # --- faults, each for the next matching request(s) ---

    def fail_next(self, status: int, times: int = 1, *, retry_after: float | None = None, method: str | None = None,
                  path: str | None = None) -> None:
        """Answer ``status`` (429 with Retry-After when given, 500, 503 ...) without doing anything."""
        self._add(_Fault("fail", method, path, times=times, status=status, retry_after=retry_after))

    def reject_next(self, code: str, *, method: str = "POST", path: str = ORDERS) -> None:
        """Refuse the next create: insufficient_balance, market_closed or post_only_cross."""
        self._add(_Fault("reject", method, path, code=code))

    def hang_next(self, seconds: float, *, accept: bool = True, method: str = "POST", path: str = ORDERS) -> None:
        """Answer only after ``seconds``; with ``accept`` the request is carried out first, else not at all."""
        self._add(_Fault("hang", method, path, seconds=seconds, accept=accept))

    def drop_response_next(self, *, method: str = "POST", path: str = ORDERS) -> None:
        """Carry the request out, then close the connection without answering."""
        self._add(_Fault("drop", method, path))

    def before_next(self, method: str, path: str, action: Callable[[], object]) -> None:
        """Run ``action`` (a trade, say) when the next matching request arrives, before it is carried out."""
        with self._lock:
            self._hooks.append(_Hook(method, path, action))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    # --- what the test inspects ---

    def count(self, method: str, path: str) -> int:
        """Signed requests received for ``method`` and ``path`` (a glob without the API prefix)."""
        with self._lock:
            return sum(1 for r in self.requests
                       if r.signed and r.method == method and fnmatch.fnmatchcase(r.path, path))

    def orders_of(self, ticker: str) -> list[dict]:
        with self._lock:
            return [o.json() for o in self.orders.values() if o.ticker == ticker]

    def available(self) -> int:
        with self._lock:
            held = sum(o.price * o.remaining_count for o in self.orders.values()
                       if o.status == "resting" and o.action == "buy")
            return self.cash - held

    # --- serving ---

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = parsed.path.removeprefix(API_PREFIX) or "/"
        record = Recorded(method, path, {k: v[0] for k, v in parse_qs(parsed.query).items()},
                          body if isinstance(body, dict) else None)
        with self._lock:
            self.requests.append(record)
        if not parsed.path.startswith(API_PREFIX + "/"):
            self._answer(handler, record, *_error(404, "not_found", "not found"))
            return
        refused = self._authenticate(handler, method, parsed.path)
        if refused is not None:
            self._answer(handler, record, *refused)
            return
        record.signed = True
        hook = self._take_hook(method, path)
        if hook is not None:
            hook.action()
        fault = self._take_fault(method, path)
        if fault is None:
            self._answer(handler, record, *self._carry_out(method, path, record.query, body))
        elif fault.kind == "fail":
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            self._answer(handler, record, *_error(fault.status, "service_unavailable" if fault.status >= 500
                                                  else "too_many_requests", "try again later"), headers)
        elif fault.kind == "reject":
            error = REJECTIONS.get(fault.code, {"code": fault.code, "message": fault.code.replace("_", " ")})
            self._answer(handler, record, 400, {"error": error})
        elif fault.kind == "hang":
            outcome = self._carry_out(method, path, record.query, body) if fault.accept else None
            self._stop.wait(fault.seconds)
            if outcome is None:
                handler.close_connection = True
            else:
                self._answer(handler, record, *outcome)
        else:  # drop: done, but the answer never leaves
            self._carry_out(method, path, record.query, body)
            handler.close_connection = True

    def _take_hook(self, method: str, path: str) -> _Hook | None:
        with self._lock:
            for hook in self._hooks:
                if hook.method == method and fnmatch.fnmatchcase(path, hook.path):
                    self._hooks.remove(hook)
                    return hook
            return None

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def _answer(self, handler: BaseHTTPRequestHandler, record: Recorded, status: int, payload: dict,
                headers: dict[str, str] | None = None) -> None:
        record.status, record.response = status, payload
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            record.delivered = True
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (the hang faults)

    def _authenticate(self, handler: BaseHTTPRequestHandler, method: str, full_path: str) -> tuple[int, dict] | None:
        key = handler.headers.get("KALSHI-ACCESS-KEY")
        signature = handler.headers.get("KALSHI-ACCESS-SIGNATURE")
        stamp = handler.headers.get("KALSHI-ACCESS-TIMESTAMP")
        if not (key and signature and stamp):
            return _error(401, "authentication_error", "authentication_error", "missing KALSHI-ACCESS-* headers")
        # The refusals echo the key id they were sent, as some APIs do: the client must redact it.
        if key != self.key_id:
            return _error(401, "authentication_error", "authentication_error", f"no API key {key}")
        try:
            timestamp = int(stamp)
        except ValueError:
            return _error(401, "authentication_error", "authentication_error", f"key {key}: bad timestamp")
        if abs(self.clock() * 1000 - timestamp) > self.max_skew_ms:
            return _error(401, "authentication_error", "authentication_error",
                          f"key {key}: timestamp outside the window")
        try:
            self.public_key.verify(
                base64.b64decode(signature, validate=True), f"{stamp}{method}{full_path}".encode(),
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                hashes.SHA256())
        except (InvalidSignature, ValueError, binascii.Error):
            return _error(401, "authentication_error", "authentication_error",
                          f"key {key}: INCORRECT_API_KEY_SIGNATURE")
        return None

    def _carry_out(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        with self._lock:
            if path == ORDERS and method == "POST":
                return self._create(body)
            if path == ORDERS and method == "GET":
                rows = [o for o in self._newest_first() if query.get("ticker") in (None, o.ticker)
                        and query.get("status") in (None, o.status)]
                return self._page([o.json() for o in rows], "orders", query)
            if len(parts) == 3 and parts[:2] == ["portfolio", "orders"]:
                order = self.orders.get(parts[2])
                if order is None:
                    return _error(404, "not_found", "order not found")
                if method == "GET":
                    return 200, {"order": order.json()}
                if method == "DELETE":
                    return self._cancel(order)
            if len(parts) == 4 and parts[:2] == ["portfolio", "orders"] and parts[3] == "amend" and method == "POST":
                order = self.orders.get(parts[2])
                return _error(404, "not_found", "order not found") if order is None else self._amend(order, body)
            if path == "/portfolio/fills" and method == "GET":
                rows = [f for f in reversed(self.fills) if query.get("ticker") in (None, f["ticker"])
                        and query.get("order_id") in (None, f["order_id"])
                        and f["ts"] >= int(query.get("min_ts", 0))]
                return self._page(rows, "fills", query)
            if path == "/portfolio/positions" and method == "GET":
                rows = [self._position_json(t, p) for t, p in sorted(self.positions.items())
                        if query.get("ticker") in (None, t)]
                status, page = self._page(rows, "market_positions", query)
                return status, page | {"event_positions": []}
            if path == "/portfolio/balance" and method == "GET":
                value = sum(p.exposure for p in self.positions.values())
                return 200, {"balance": self.available(), "portfolio_value": value, "updated_ts": int(self.clock())}
            return _error(404, "not_found", "not found")

    def _newest_first(self) -> list[_Order]:
        return sorted(self.orders.values(), key=lambda o: o.created, reverse=True)

    def _page(self, rows: list[dict], key: str, query: dict) -> tuple[int, dict]:
        limit = min(int(query.get("limit", self.page_size)), self.page_size)
        start = int(query.get("cursor") or 0)
        end = start + limit
        return 200, {key: rows[start:end], "cursor": str(end) if end < len(rows) else ""}

    # --- the matching engine ---

    @staticmethod
    def _touch(book: _Book, side: str, action: str) -> int:
        """The best opposing price in ``side``'s terms: what a marketable order of that side and action meets."""
        if action == "buy":
            return book.yes_ask if side == "yes" else 100 - book.yes_bid
        return book.yes_bid if side == "yes" else 100 - book.yes_ask

    @staticmethod
    def _marketable(price: int, touch: int, action: str) -> bool:
        return price >= touch if action == "buy" else price <= touch

    @staticmethod
    def _through(order: _Order, yes_price: int) -> bool:
        yes_limit = order.price if order.side == "yes" else 100 - order.price
        buys_yes = (order.side == "yes") == (order.action == "buy")  # buying YES or selling NO
        return yes_price < yes_limit if buys_yes else yes_price > yes_limit

    def _price(self, body: dict, side: str) -> int | None:
        for name, mirror in ((f"{side}_price", False), ("no_price" if side == "yes" else "yes_price", True)):
            value = body.get(name)
            if value is None and body.get(f"{name}_dollars") is not None:
                value = int(Decimal(body[f"{name}_dollars"]) * 100)
            if value is not None:
                return 100 - value if mirror else value
        return None

    def _create(self, body) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return _error(400, "bad_request", "bad request", "the body is not a JSON object")
        ticker, side, action, count = body.get("ticker"), body.get("side"), body.get("action"), body.get("count")
        if not ticker:
            return _error(400, "missing_parameters", "missing parameters", "ticker")
        price = self._price(body, side) if side in ("yes", "no") else None
        if side not in ("yes", "no") or action not in ("buy", "sell") or not isinstance(count, int) or count < 1 or (
                price is None or not 1 <= price <= 99) or body.get("type", "limit") != "limit":
            return _error(400, "invalid_order", "invalid order")
        time_in_force = body.get("time_in_force")
        if time_in_force is not None and time_in_force not in TIME_IN_FORCE:
            return _error(400, "invalid_parameters", "invalid parameters", "time_in_force")
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if any(o.client_order_id == cid and o.status == "resting" for o in self.orders.values()):
            return _error(409, "order_already_exists", "an open order already has this client_order_id")
        book = self.books.get(ticker)
        if book is None:
            return _error(404, "market_not_found", "market not found")
        if book.closed:
            return 400, {"error": REJECTIONS["market_closed"]}
        if action == "buy" and price * count > self.available():
            return 400, {"error": REJECTIONS["insufficient_balance"]}
        touch = self._touch(book, side, action)
        marketable = self._marketable(price, touch, action)
        post_only = body.get("post_only") is True
        if post_only and marketable:
            return 400, {"error": REJECTIONS["post_only_cross"]}
        self._ids += 1
        now = self.clock() + self._ids * 1e-6  # distinct creation times keep time priority strict
        order = _Order(str(uuid.UUID(int=self._ids)), cid, ticker, side, action, price, post_only, count, count, now)
        self.orders[order.order_id] = order
        if self.ignore_time_in_force:
            time_in_force = None
        if time_in_force == "fill_or_kill" and not (marketable and (book.depth is None or book.depth >= count)):
            marketable = False  # all of it at once or none of it: nothing fills, and the order is cancelled below
        if marketable:
            self._take_liquidity(order, book, touch)
        if time_in_force in ("fill_or_kill", "immediate_or_cancel") and order.status == "resting":
            order.remaining_count, order.status = 0, "canceled"
        return 201, {"order": order.json()}

    def _take_liquidity(self, order: _Order, book: _Book, touch: int) -> None:
        take = order.remaining_count if book.depth is None else min(order.remaining_count, book.depth)
        if take:
            self._fill(order, take, touch, is_taker=True)
            if book.depth is not None:
                book.depth -= take

    def _amend(self, order: _Order, body) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return _error(400, "bad_request", "bad request", "the body is not a JSON object")
        given = (body.get("ticker"), body.get("side"), body.get("action"), body.get("client_order_id"))
        if given != (order.ticker, order.side, order.action, order.client_order_id):
            return _error(400, "invalid_parameters", "invalid parameters", "does not match the order")
        updated = body.get("updated_client_order_id")
        if not isinstance(updated, str) or not updated:
            return _error(400, "missing_parameters", "missing parameters", "updated_client_order_id")
        if order.status != "resting":
            return _error(400, "invalid_order", "invalid order", "order is not resting")
        price = self._price(body, order.side)
        count = body.get("count", order.fill_count + order.remaining_count)
        if price is None or not 1 <= price <= 99 or not isinstance(count, int):
            return _error(400, "invalid_order", "invalid order")
        if count <= order.fill_count:
            return _error(400, "invalid_order", "invalid order", "count must exceed the filled count")
        book = self.books[order.ticker]
        touch = self._touch(book, order.side, order.action)
        marketable = self._marketable(price, touch, order.action)
        if order.post_only and marketable:
            return 400, {"error": REJECTIONS["post_only_cross"]}
        remaining = count - order.fill_count
        if order.action == "buy" and price * remaining - order.price * order.remaining_count > self.available():
            return 400, {"error": REJECTIONS["insufficient_balance"]}
        old = order.json()
        order.price, order.remaining_count, order.client_order_id = price, remaining, updated
        order.updated = self.clock()
        if marketable:
            self._take_liquidity(order, book, touch)
        return 200, {"old_order": old, "order": order.json()}

    def _cancel(self, order: _Order) -> tuple[int, dict]:
        if order.status != "resting":
            return _error(404, "not_found", "order not found", "the order is not resting")
        reduced, order.remaining_count, order.status = order.remaining_count, 0, "canceled"
        order.updated = self.clock()
        return 200, {"order": order.json(), "reduced_by": reduced}

    def _fill(self, order: _Order, count: int, price: int, is_taker: bool) -> None:
        order.fill_count += count
        order.remaining_count -= count
        if order.remaining_count == 0:
            order.status = "executed"
        cost = price * count
        if is_taker:
            order.taker_cost += cost
        else:
            order.maker_cost += cost
        now = self.clock()
        order.updated = now
        position = self.positions.setdefault(order.ticker, _Position())
        buys_yes = (order.side == "yes") == (order.action == "buy")
        position.position += count if buys_yes else -count
        position.total_traded += cost
        position.updated = now
        if order.action == "buy":
            self.cash -= cost
            position.exposure += cost
        else:
            self.cash += cost
            position.exposure = max(0, position.exposure - cost)
        yes = price if order.side == "yes" else 100 - price
        fill_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{order.order_id}:{len(self.fills)}"))
        self.fills.append({
            "fill_id": fill_id, "trade_id": fill_id, "order_id": order.order_id,
            "client_order_id": order.client_order_id, "ticker": order.ticker, "market_ticker": order.ticker,
            "side": order.side, "action": order.action, "count": count, "price": yes / 100, "yes_price": yes,
            "no_price": 100 - yes, "yes_price_fixed": _dollars(yes), "no_price_fixed": _dollars(100 - yes),
            "is_taker": is_taker, "created_time": _iso(now), "ts": int(now)})

    @staticmethod
    def _position_json(ticker: str, p: _Position) -> dict:
        return {"ticker": ticker, "total_traded": p.total_traded, "total_traded_dollars": _dollars(p.total_traded),
                "position": p.position, "market_exposure": p.exposure, "market_exposure_dollars": _dollars(p.exposure),
                "realized_pnl": 0, "realized_pnl_dollars": _dollars(0), "resting_orders_count": 0, "fees_paid": 0,
                "fees_paid_dollars": _dollars(0), "last_updated_ts": _iso(p.updated)}

