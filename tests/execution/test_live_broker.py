"""Live mode against the local fake Kalshi exchange: orders sized before they are sent, fills booked once,
reconciliation, restarts, unknown outcomes, halts, the caps as a property, the key kept out of everything."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import RtConfig
from kwx.data import migrations
from kwx.data.clients.http import RetryPolicy
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.data.fees import FEE_COLUMNS
from kwx.data.schema import Base, Market
from kwx.data.store import upsert_frame
from kwx.domain.signals import FeeSchedule, SignalMath
from kwx.execution import records
from kwx.execution.broker import write_paper_ticks
from kwx.execution.kalshi_trade import (
    KalshiCredentials,
    KalshiTrader,
    OrderIntent,
    ProductionNotConfirmed,
    base_client_order_id,
)
from kwx.execution.live import CID_PREFIX, LiveBroker, LiveStartError, live_order_id
from kwx.execution.modes import broker_for
from kwx.rt.engine import Decision, TickInputs
from kwx.rt.replay import ReplayError, replay_day
from tests.fakes.kalshi_exchange import ORDERS, FakeKalshiExchange

KEY_ID = "SENTINEL-live-key-id-8d2a41c7"
NOW = datetime(2025, 7, 18, 15, tzinfo=UTC)  # 09:00 in Chicago's standard time: climate day 2025-07-18
T0 = int(NOW.timestamp())
DAY = date(2025, 7, 18)
TICKERS = ["KXHIGHCHI-25JUL18-B85.5", "KXHIGHCHI-25JUL18-B87.5", "KXHIGHCHI-25JUL18-B89.5"]
AMEND = "/portfolio/orders/*/amend"
QUICK = RetryPolicy(attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.05)
# $1,000 bankroll: a 5% Kelly target at 40¢ is 121 contracts, so the 30-contract position limit binds; the
# city/day/side cap (10%: $100) holds 243 of them
EXECUTION = {"mode": "live", "bankroll_dollars": 1000, "max_position_contracts": 30, "max_open_orders": 5,
             "reconcile_seconds": 60, "max_daily_loss_dollars": 500}


def live_config(**execution) -> RtConfig:
    return RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 10,
                                    "risk": {"max_bankroll_pct_city_day_side": 0.10, "slip_per_leg_cents": 1},
                                    "execution": EXECUTION | execution})


def _column(value, n: int, dtype=float) -> np.ndarray:
    return np.array(np.broadcast_to(np.asarray(value, dtype=dtype), (n,)), dtype=dtype)


def decision(n: int, *, side="yes", price=40.0, edge=5.0, target=0.05, reason=None, minutes_left=600.0) -> Decision:
    """A maker (or taker) decision over ``n`` markets; every argument a scalar or one value per market."""
    side = _column(side, n, object)
    target = _column(target, n)
    math = SignalMath(side=side, edge_cents=_column(edge, n), kelly_fraction=target, size_fraction=target,
                      better=side, price_cents=_column(price, n), target_fraction=target)
    return Decision(_column(0.5, n), _column(0.5, n), math, _column(reason, n, object), _column(minutes_left, n),
                    _column(2.0, n))


def no_taker(n: int) -> Decision:
    return decision(n, edge=-5.0, reason="edge below tau_open_cents")


def tick_inputs(tickers: list[str], bid=40.0, ask=42.0) -> TickInputs:
    n = len(tickers)
    close_ts = T0 + 86_400
    return TickInputs(np.array(tickers, dtype=object), _column("chicago", n, object), _column("between", n, object),
                      _column(close_ts, n, np.int64), _column(T0, n), _column(bid, n), _column(ask, n),
                      _column(0.6, n), _column("m", n, object), _column("w", n, object), _column(None, n, object),
                      np.zeros(n, dtype=bool), FeeSchedule())


def add_markets(engine, tickers: list[str], event_date: date = DAY, close_time: datetime = NOW + timedelta(days=1)):
    frame = pd.DataFrame({"ticker": tickers, "event_ticker": "KXHIGHCHI-25JUL18", "series_ticker": "KXHIGHCHI",
                          "city": "chicago", "event_date": event_date, "strike_type": "between",
                          "floor_strike": 85.0, "cap_strike": 86.0, "open_time": NOW - timedelta(days=1),
                          "close_time": close_time})
    with engine.begin() as conn:
        upsert_frame(conn, "markets", frame)


def pem_of(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class Clock:
    """The test's time, shared by the broker's ticks, the exchange and the trader's signatures."""

    def __init__(self, ts: float):
        self.ts = ts

    def time(self) -> float:
        return self.ts

    def ms(self) -> int:
        return int(self.ts * 1000)


@dataclass
class World:
    engine: object
    exchange: FakeKalshiExchange
    trader: KalshiTrader
    clock: Clock
    credentials: KalshiCredentials

    def broker(self, **execution) -> LiveBroker:
        return broker_for(live_config(**execution), self.engine, environment="demo", trader=self.trader)

    def tick(self, broker: LiveBroker, seconds: int, inputs: TickInputs, maker: Decision,
             taker: Decision | None = None):
        """One tick at T0 + ``seconds``, its records written as the loop's writer writes them."""
        self.clock.ts = T0 + seconds
        out = broker.tick(T0 + seconds, inputs, maker, taker or no_taker(len(inputs.tickers)), pd.DataFrame())
        with self.engine.begin() as conn:
            write_paper_ticks(conn, [out])
        return out

    def resting(self) -> list[dict]:
        return [o for t in TICKERS for o in self.exchange.orders_of(t) if o["status"] == "resting"]


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def trader_for(exchange: FakeKalshiExchange, credentials: KalshiCredentials, clock: Clock) -> KalshiTrader:
    return KalshiTrader(credentials, exchange.url, timeout=0.4, retry=QUICK, per_second=0, clock_ms=clock.ms)


def _world(engine, rsa_key):
    clock = Clock(T0)
    credentials = KalshiCredentials.from_pem(KEY_ID, pem_of(rsa_key))
    exchange = FakeKalshiExchange(rsa_key.public_key(), KEY_ID, clock=clock.time, balance_cents=1_000_000)
    for ticker in TICKERS:
        exchange.set_book(ticker, 40, 42)
    return World(engine, exchange, trader_for(exchange, credentials, clock), clock, credentials)


@pytest.fixture
def world(tmp_path, rsa_key):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    add_markets(engine, TICKERS)
    made = _world(engine, rsa_key)
    with made.exchange:
        yield made
    engine.dispose()


def stored_orders(engine) -> pd.DataFrame:
    return records.orders(engine, "live").set_index("client_order_id")


# --- placing, re-pegging, fills ---------------------------------------------------------------------------------

def test_orders_rest_post_only_at_the_maker_price_with_deterministic_ids(world):
    broker = world.broker()
    two = TICKERS[:2]
    world.tick(broker, 0, tick_inputs(two), decision(2, side=["yes", "no"], price=[40, 58]))
    creates = [r.body for r in world.exchange.requests if r.method == "POST" and r.path == ORDERS]
    assert len(creates) == 2 and all(body["post_only"] is True for body in creates)
    assert {(b["ticker"], b["side"], b.get(f"{b['side']}_price"), b["count"]) for b in creates} == {
        (TICKERS[0], "yes", 40, 30), (TICKERS[1], "no", 58, 30)}  # sized by the position limit before sending
    expected = {live_order_id("demo", TICKERS[0], "yes", T0), live_order_id("demo", TICKERS[1], "no", T0)}
    assert {b["client_order_id"] for b in creates} == expected and all(c.startswith(CID_PREFIX) for c in expected)
    rows = stored_orders(world.engine)
    assert set(rows.index) == expected and set(rows["status"]) == {"resting"}
    assert rows["exchange_order_id"].notna().all() and set(rows["environment"]) == {"demo"}
    # the same decisions again: nothing new is sent; a new maker price re-pegs (amends) instead of re-placing
    world.tick(broker, 10, tick_inputs(two), decision(2, side=["yes", "no"], price=[40, 58]))
    world.tick(broker, 20, tick_inputs(two), decision(2, side=["yes", "no"], price=[41, 58]))
    assert world.exchange.count("POST", ORDERS) == 2 and world.exchange.count("POST", AMEND) == 1
    yes = next(o for o in world.exchange.orders_of(TICKERS[0]) if o["status"] == "resting")
    assert yes["yes_price"] == 41 and base_client_order_id(yes["client_order_id"]) in expected
    assert stored_orders(world.engine).loc[live_order_id("demo", TICKERS[0], "yes", T0), "limit_price_cents"] == 41


def test_partial_fills_are_booked_once_and_later_orders_are_sized_by_what_is_held(world):
    broker = world.broker()
    one = TICKERS[:1]
    world.tick(broker, 0, tick_inputs(one), decision(1))
    assert world.exchange.trade(TICKERS[0], 39, 10) == 10  # through our 40¢ bid: a partial fill
    out = world.tick(broker, 10, tick_inputs(one), decision(1))
    assert len(out.fills) == 1 and broker.allocator.held[(TICKERS[0], "yes")] == 10
    cid = live_order_id("demo", TICKERS[0], "yes", T0)
    row = stored_orders(world.engine).loc[cid]
    assert (row["status"], row["filled_count"], row["remaining_count"]) == ("resting", 10, 20)
    fills = records.fills(world.engine, "live")
    assert list(fills["count"]) == [10] and fills["liquidity"].tolist() == ["maker"]
    assert broker.reconcile(NOW + timedelta(seconds=20)) == []  # the fill is known: nothing to correct
    assert len(records.fills(world.engine, "live")) == 1
    # the edge goes: cancelled; it comes back: the new order buys only what the position limit leaves
    world.tick(broker, 30, tick_inputs(one), decision(1, edge=0.0, reason="edge below tau_open_cents"))
    world.tick(broker, 40, tick_inputs(one), decision(1))
    new = live_order_id("demo", TICKERS[0], "yes", T0 + 40)
    rows = stored_orders(world.engine)
    assert rows.loc[cid, "status"] == "cancelled" and rows.loc[new, "count"] == 20


def test_live_fills_pay_their_series_fee_in_force_when_they_filled(world):
    """Kalshi's fills carry no fee: kwx prices each from the series' fee data at the fill's time."""
    change = T0 + 5  # the series starts charging makers (quadratic_with_maker_fees) 5 s after the first tick
    with world.engine.begin() as conn:
        upsert_frame(conn, "series_fees", pd.DataFrame(
            [("KXHIGHCHI", T0 - 86_400, "quadratic", 1.0, "series", T0 - 86_400),
             ("KXHIGHCHI", change, "quadratic_with_maker_fees", 1.0, "fee_change", T0 - 86_400)],
            columns=FEE_COLUMNS))
    broker = world.broker()
    one = TICKERS[:1]
    world.tick(broker, 0, tick_inputs(one), decision(1))
    world.clock.ts = T0 + 2
    world.exchange.trade(TICKERS[0], 39, 10)  # through the 40¢ bid before the change
    world.tick(broker, 10, tick_inputs(one), decision(1))
    world.exchange.trade(TICKERS[0], 39, 10)  # and after it
    world.tick(broker, 20, tick_inputs(one), decision(1))
    fills = records.fills(world.engine, "live").sort_values("ts_utc")
    assert fills["liquidity"].tolist() == ["maker", "maker"] and fills["count"].tolist() == [10, 10]
    # 0.0175 · 10 · 0.40 · 0.60 = $0.042 → 5¢
    assert fills["fee_cents"].tolist() == [0.0, 5.0]


def test_an_amend_racing_a_fill_never_exceeds_the_position(world):
    broker = world.broker()
    one = TICKERS[:1]
    world.tick(broker, 0, tick_inputs(one), decision(1))
    # a trade lands between the amend's read of the order and the amendment itself
    world.exchange.before_next("POST", AMEND, lambda: world.exchange.trade(TICKERS[0], 39, 10))
    world.tick(broker, 10, tick_inputs(one), decision(1, price=41))
    world.tick(broker, 20, tick_inputs(one), decision(1, price=41))
    (order,) = world.exchange.orders_of(TICKERS[0])
    held = broker.allocator.held[(TICKERS[0], "yes")]
    assert (order["fill_count"], order["remaining_count"], order["yes_price"], held) == (10, 20, 41, 10)
    row = stored_orders(world.engine).iloc[0]
    assert (row["filled_count"], row["remaining_count"], row["limit_price_cents"]) == (10, 20, 41)
    # the rest fills before the next amend arrives: the amendment finds nothing to amend; nothing new is placed
    world.exchange.before_next("POST", AMEND, lambda: world.exchange.trade(TICKERS[0], 38, 50))
    world.tick(broker, 30, tick_inputs(one), decision(1, price=42))
    world.tick(broker, 40, tick_inputs(one), decision(1, price=42))
    assert world.exchange.count("POST", ORDERS) == 1 and broker.allocator.held[(TICKERS[0], "yes")] == 30
    row = stored_orders(world.engine).iloc[0]
    assert (row["status"], row["filled_count"], row["remaining_count"]) == ("filled", 30, 0)
    assert records.fills(world.engine, "live")["count"].sum() == 30


def test_a_taker_fallback_is_one_immediate_or_cancel_order_and_leaves_nothing_resting(world):
    broker = world.broker(taker_fallback_cents=3.0)
    world.exchange.set_book(TICKERS[0], 40, 42, depth=12)  # 12 contracts offered at the ask
    maker = decision(1, edge=0.0, reason="edge below tau_open_cents")  # no maker order: the taker edge alone
    taker = decision(1, price=42, edge=6.0)
    world.tick(broker, 0, tick_inputs(TICKERS[:1]), maker, taker)
    (create,) = [r.body for r in world.exchange.requests if r.method == "POST" and r.path == ORDERS]
    assert (create["post_only"], create["time_in_force"], create["yes_price"], create["count"]) == (
        False, "immediate_or_cancel", 42, 30)
    # what the book could not fill at once the exchange cancelled: kwx sent no cancel
    assert world.exchange.count("DELETE", "/portfolio/orders/*") == 0 and world.resting() == []
    cid = live_order_id("demo", TICKERS[0], "yes", T0, "taker")
    row = stored_orders(world.engine).loc[cid]
    assert (row["status"], row["filled_count"], row["remaining_count"], row["post_only"]) == (
        "cancelled", 12, 0, False)
    assert row["reason"] == "taker fallback, immediate-or-cancel: the exchange cancelled what did not fill at once"
    world.tick(broker, 10, tick_inputs(TICKERS[:1]), maker)
    fills = records.fills(world.engine, "live")
    assert list(fills["liquidity"]) == ["taker"] and fills["fee_cents"].iloc[0] == FeeSchedule().order_cents(42, 12)
    assert list(fills["client_order_id"]) == [cid] and list(fills["count"]) == [12]
    assert broker.allocator.held[(TICKERS[0], "yes")] == 12
    # a restart deciding that tick again sends nothing: the intent was spent, however the book has refilled
    world.exchange.set_book(TICKERS[0], 40, 42)
    world.tick(world.broker(taker_fallback_cents=3.0), 0, tick_inputs(TICKERS[:1]), maker, taker)
    assert world.exchange.count("POST", ORDERS) == 1 and world.exchange.count("DELETE", "/portfolio/orders/*") == 0


def test_a_taker_order_the_exchange_leaves_resting_is_cancelled_with_a_warning(world, caplog):
    caplog.set_level(logging.WARNING, logger="kwx.execution.live")
    world.exchange.ignore_time_in_force = True  # a misbehaving exchange: the unfilled rest of a taker order rests
    broker = world.broker(taker_fallback_cents=3.0)
    for ticker in TICKERS[:2]:
        world.exchange.set_book(ticker, 40, 42, depth=12)
    maker = decision(1, edge=0.0, reason="edge below tau_open_cents")
    taker = decision(1, price=42, edge=6.0)
    world.tick(broker, 0, tick_inputs(TICKERS[:1]), maker, taker)
    cid = live_order_id("demo", TICKERS[0], "yes", T0, "taker")
    assert world.exchange.count("POST", ORDERS) == 1 and world.exchange.count("DELETE", "/portfolio/orders/*") == 1
    assert world.resting() == []
    row = stored_orders(world.engine).loc[cid]
    assert (row["status"], row["filled_count"], row["remaining_count"]) == ("cancelled", 12, 0)
    assert row["reason"] == "taker fallback left resting (the exchange ignored immediate_or_cancel): cancelled"
    # placed, then the process dies before it sees the answer: reconciliation after the restart cancels it
    with killed_while(world.trader, sent=True):
        world.tick(broker, 10, tick_inputs(TICKERS[1:2]), maker, taker)
    assert len(world.resting()) == 1
    world.tick(world.broker(taker_fallback_cents=3.0), 20, tick_inputs(TICKERS[1:2]), maker)
    second = live_order_id("demo", TICKERS[1], "yes", T0 + 10, "taker")
    assert world.resting() == [] and world.exchange.count("DELETE", "/portfolio/orders/*") == 2
    assert stored_orders(world.engine).loc[second, "status"] == "cancelled"
    warned = [r for r in caplog.records if '"taker order left resting"' in r.getMessage()]
    assert [(json.loads(r.getMessage())["order"], r.levelno) for r in warned] == [(cid, logging.WARNING),
                                                                                  (second, logging.WARNING)]


# --- restarts, unknown outcomes, rejections --------------------------------------------------------------------

class Killed(BaseException):
    """The process dies (not an exception any code path handles)."""


@contextmanager
def killed_while(trader: KalshiTrader, *, sent: bool):
    """The process dies placing an order: after it was ``sent`` (before the answer is seen), or before."""
    real_create = trader.create_order

    def dies(intent):
        if sent:
            real_create(intent)
        raise Killed

    trader.create_order = dies
    try:
        with pytest.raises(Killed):
            yield
    finally:
        trader.create_order = real_create


def test_a_restart_mid_order_neither_duplicates_nor_loses_an_order(world, caplog):
    caplog.set_level(logging.WARNING, logger="kwx.execution.live")
    one = TICKERS[:1]
    first = world.broker()
    with killed_while(first.trader, sent=True):
        world.tick(first, 0, tick_inputs(one), decision(1))
    cid = live_order_id("demo", TICKERS[0], "yes", T0)
    assert stored_orders(world.engine).loc[cid, "status"] == "pending"  # written before it was sent
    world.exchange.trade(TICKERS[0], 39, 5)  # it fills a little while kwx is down
    second = world.broker()
    world.tick(second, 0, tick_inputs(one), decision(1))  # even the very same decision again
    assert world.exchange.count("POST", ORDERS) == 1
    row = stored_orders(world.engine).loc[cid]
    assert (row["status"], row["filled_count"], row["remaining_count"]) == ("resting", 5, 25)
    assert second.allocator.held[(TICKERS[0], "yes")] == 5 and len(records.fills(world.engine, "live")) == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('{"reconcile"')]
    assert any(cid in line and '"pending"' in line and '"resting"' in line for line in lines)
    # killed before sending: the pending row is found nowhere at the exchange, closed, and the decision re-placed
    third_cid = live_order_id("demo", TICKERS[1], "yes", T0 + 10)
    with killed_while(second.trader, sent=False):
        world.tick(second, 10, tick_inputs(TICKERS[:2]), decision(2))
    third = world.broker()
    world.tick(third, 80, tick_inputs(TICKERS[:2]), decision(2))
    rows = stored_orders(world.engine)
    assert rows.loc[third_cid, "status"] == "rejected" and "never reached" in rows.loc[third_cid, "reason"]
    assert rows.loc[live_order_id("demo", TICKERS[1], "yes", T0 + 80), "status"] == "resting"
    assert world.exchange.count("POST", ORDERS) == 2


def test_fills_made_while_the_loop_was_down_for_days_are_all_booked_and_logged(world, caplog, tmp_path):
    """A long weekend: the loop places orders and dies, the exchange fills them over the next day in more fills
    than one page of the listing holds, and the loop restarts four days later, past any fixed look-back window."""
    caplog.set_level(logging.WARNING, logger="kwx.execution.live")
    later = DAY + timedelta(days=4)  # Tuesday's markets, bought on Friday
    tickers = [t.replace("25JUL18", "25JUL22") for t in TICKERS[:2]]
    add_markets(world.engine, tickers, event_date=later, close_time=NOW + timedelta(days=5))
    for ticker in tickers:
        world.exchange.set_book(ticker, 40, 42)
    world.exchange.page_size = 5
    world.tick(world.broker(), 0, tick_inputs(tickers), decision(2))  # then the process is killed
    for k in range(8):  # 16 contracts of the first market and 4 of the second, in 12 fills
        world.clock.ts = T0 + 600 * (k + 1)
        world.exchange.trade(tickers[0], 39, 2)
        if k % 2:
            world.exchange.trade(tickers[1], 39, 1)
    assert len(world.exchange.fills) == 12 and records.fills(world.engine, "live").empty
    down = 4 * 86_400
    restarted = world.broker(max_daily_loss_dollars=5)
    world.tick(restarted, down, tick_inputs(tickers, bid=5, ask=7), decision(2, price=5))
    fills = records.fills(world.engine, "live")
    assert sorted(fills["fill_id"]) == sorted(f["fill_id"] for f in world.exchange.fills)
    assert fills.groupby("market_ticker")["count"].sum().to_dict() == {tickers[0]: 16, tickers[1]: 4}
    missed = [r.getMessage() for r in caplog.records if r.getMessage().startswith('{"reconcile": "fill"')]
    assert len(missed) == 12 and {f["fill_id"] for f in world.exchange.fills} == {
        f["fill_id"] for f in world.exchange.fills for line in missed if f["fill_id"] in line}
    # the day's loss limit counts them: 20 contracts bought at 40¢ now marked at a 6¢ mid is beyond $5
    state = records.halt_state(world.engine, "live")
    assert state.halted and state.reason.startswith("daily loss limit")
    url = str(world.engine.url)
    shown = CliRunner().invoke(app, ["rt", "positions", "--mode", "live", "--db-url", url])
    assert shown.exit_code == 0, shown.output
    assert tickers[0] in shown.output and tickers[1] in shown.output and "no open" not in shown.output


def test_a_fill_made_since_the_last_read_is_booked_by_reconciliation_but_not_reported_missed(world):
    broker = world.broker()
    world.tick(broker, 0, tick_inputs(TICKERS[:1]), decision(1))
    world.clock.ts = T0 + 30
    world.exchange.trade(TICKERS[0], 39, 2)  # while the loop runs: the next read would have found it anyway
    corrections = broker.reconcile(NOW + timedelta(seconds=60))
    assert broker.allocator.held[(TICKERS[0], "yes")] == 2 and not [c for c in corrections if c.kind == "fill"]


def test_an_unknown_outcome_create_is_resolved_by_lookup_without_a_duplicate(world):
    broker = world.broker()
    one = TICKERS[:1]
    # the answer is lost, and so are the lookups the client tries at once: the order's outcome stays unknown
    world.exchange.before_next("POST", ORDERS, lambda: world.exchange.fail_next(
        503, times=QUICK.attempts, method="GET", path=ORDERS))
    world.exchange.drop_response_next()
    world.tick(broker, 0, tick_inputs(one), decision(1))
    cid = live_order_id("demo", TICKERS[0], "yes", T0)
    row = stored_orders(world.engine).loc[cid]
    assert row["status"] == "unknown" and "outcome unknown" in row["reason"]
    world.tick(broker, 10, tick_inputs(one), decision(1))  # looked up: there it is; nothing sent again
    assert world.exchange.count("POST", ORDERS) == 1 and len(world.exchange.orders_of(TICKERS[0])) == 1
    row = stored_orders(world.engine).loc[cid]
    assert row["status"] == "resting" and row["exchange_order_id"] == world.exchange.orders_of(TICKERS[0])[0][
        "order_id"]
    # a lost answer alone the client resolves itself
    world.exchange.drop_response_next()
    world.tick(broker, 20, tick_inputs(TICKERS[1:2]), decision(1))
    assert world.exchange.count("POST", ORDERS) == 2 and len(world.exchange.orders_of(TICKERS[1])) == 1
    assert stored_orders(world.engine).loc[live_order_id("demo", TICKERS[1], "yes", T0 + 20), "status"] == "resting"


def test_a_rejection_is_recorded_with_its_reason_and_the_tick_goes_on(world):
    broker = world.broker()
    two = TICKERS[:2]
    world.exchange.reject_next("insufficient_balance")
    world.tick(broker, 0, tick_inputs(two), decision(2))
    rows = stored_orders(world.engine)
    first, second = (live_order_id("demo", t, "yes", T0) for t in two)
    assert rows.loc[first, "status"] == "rejected" and "insufficient_balance" in rows.loc[first, "reason"]
    assert rows.loc[second, "status"] == "resting"
    world.tick(broker, 10, tick_inputs(two), decision(2))  # the rejected market is tried again
    assert stored_orders(world.engine).loc[live_order_id("demo", two[0], "yes", T0 + 10), "status"] == "resting"


def test_an_order_whose_row_cannot_be_written_is_not_sent(world, monkeypatch):
    broker = world.broker()

    def unreachable(conn, frame):
        raise OperationalError("INSERT INTO orders", {}, ConnectionError("database went away"))

    save_orders = records.save_orders
    monkeypatch.setattr(records, "save_orders", unreachable)
    out = broker.tick(T0, tick_inputs(TICKERS[:2]), decision(2), no_taker(2), pd.DataFrame())
    assert world.exchange.count("POST", ORDERS) == 0 and not out.orders and not broker.orders
    monkeypatch.setattr(records, "save_orders", save_orders)
    world.tick(broker, 10, tick_inputs(TICKERS[:2]), decision(2))
    assert world.exchange.count("POST", ORDERS) == 2 and set(stored_orders(world.engine)["status"]) == {"resting"}


def test_reconciliation_corrects_the_database_to_the_exchange_and_logs_each_change(world, caplog):
    caplog.set_level(logging.WARNING, logger="kwx.execution.live")
    broker = world.broker()
    world.tick(broker, 0, tick_inputs(TICKERS[:1]), decision(1))
    cid = live_order_id("demo", TICKERS[0], "yes", T0)
    # behind kwx's back: its order is cancelled at the exchange, a kwx order the database lacks rests, a hand-placed
    # order rests and fills
    world.trader.cancel_order(stored_orders(world.engine).loc[cid, "exchange_order_id"])
    stray = live_order_id("demo", TICKERS[1], "yes", T0 - 600)
    world.trader.create_order(OrderIntent(TICKERS[1], "yes", "buy", 3, 35, stray))
    world.trader.create_order(OrderIntent(TICKERS[2], "yes", "buy", 4, 41, "manual-order-1", post_only=False))
    world.exchange.trade(TICKERS[2], 39, 4)
    corrections = broker.reconcile(NOW + timedelta(seconds=5))
    kinds = {(c.kind, c.key) for c in corrections}
    assert {("order", cid), ("order", stray), ("position", TICKERS[2])} <= kinds
    assert not any(c.key == "manual-order-1" for c in corrections)  # not kwx's: left alone
    by_key = {c.key: c for c in corrections}
    assert by_key[cid].before["status"] == "resting" and by_key[cid].after["status"] == "cancelled"
    assert by_key[stray].before is None and by_key[stray].after["status"] == "resting"
    assert by_key[TICKERS[2]].before["net"] == 0 and by_key[TICKERS[2]].after["net"] == 4
    assert broker.allocator.held[(TICKERS[2], "yes")] == 4  # the exchange's count is what the caps use
    world.tick(broker, 10, tick_inputs([]), decision(0))  # no market trades: the adopted order is cancelled
    rows = stored_orders(world.engine)
    assert rows.loc[cid, "status"] == "cancelled" and rows.loc[stray, "status"] == "cancelled"
    assert "manual-order-1" not in rows.index
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('{"reconcile"')]
    assert len(lines) == len(corrections) and all('"before"' in line and '"after"' in line for line in lines)


# --- halts ------------------------------------------------------------------------------------------------------

def test_a_halt_with_cancel_all_cancels_every_resting_order_within_one_tick(world):
    broker = world.broker()
    world.tick(broker, 0, tick_inputs(TICKERS[:2]), decision(2))
    stray = live_order_id("demo", TICKERS[2], "yes", T0 - 600)  # a kwx order the database lost
    world.trader.create_order(OrderIntent(TICKERS[2], "yes", "buy", 3, 35, stray))
    assert len(world.resting()) == 3
    records.halt(world.engine, "live", reason="test: operator halt", by="pytest", now=NOW, cancel_all=True)
    world.tick(broker, 10, tick_inputs(TICKERS[:2]), decision(2))
    assert world.resting() == [] and world.exchange.count("POST", ORDERS) == 3
    rows = stored_orders(world.engine)
    assert set(rows["status"]) == {"cancelled"} and len(rows) == 3
    world.tick(broker, 20, tick_inputs(TICKERS), decision(3))  # still halted: nothing placed
    assert world.exchange.count("POST", ORDERS) == 3
    records.resume(world.engine, "live", by="pytest", now=NOW)
    world.tick(broker, 30, tick_inputs(TICKERS), decision(3))
    assert len(world.resting()) == 3


def test_the_daily_loss_limit_trips_the_halt_and_cancels(world):
    broker = world.broker(max_daily_loss_dollars=5)
    world.tick(broker, 0, tick_inputs(TICKERS[:2]), decision(2))
    world.exchange.trade(TICKERS[0], 39, 30)  # 30 YES at 40¢ filled
    world.tick(broker, 60, tick_inputs(TICKERS[:2]), decision(2))
    assert not records.halt_state(world.engine, "live").halted
    # the market falls to a 6¢ mid: 30 × 34¢ lost, beyond $5
    world.tick(broker, 120, tick_inputs(TICKERS[:2], bid=5, ask=7), decision(2, price=5))
    state = records.halt_state(world.engine, "live")
    assert state.halted and state.reason.startswith("daily loss limit") and state.changed_by == "kwx:daily-loss-limit"
    assert world.resting() == []
    posts = world.exchange.count("POST", ORDERS)
    world.tick(broker, 180, tick_inputs(TICKERS), decision(3))
    assert world.exchange.count("POST", ORDERS) == posts


# --- the caps, whatever the decisions and the fills -------------------------------------------------------------

@pytest.fixture(scope="module")
def property_world(tmp_path_factory, rsa_key):
    url = f"sqlite:///{tmp_path_factory.mktemp('live-caps') / 'live.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    add_markets(engine, TICKERS)
    yield engine
    engine.dispose()


_market_step = st.tuples(st.sampled_from(["yes", "no"]), st.integers(5, 95), st.floats(-1.0, 8.0),
                         st.floats(0.0, 0.2))
_trade = st.tuples(st.integers(0, len(TICKERS) - 1), st.integers(1, 99), st.integers(1, 40))
_steps = st.lists(st.tuples(st.lists(_market_step, min_size=len(TICKERS), max_size=len(TICKERS)),
                            st.lists(_trade, max_size=3), st.booleans()), min_size=2, max_size=7)


@settings(max_examples=20, deadline=None)
@given(steps=_steps)
def test_caps_are_never_exceeded(property_world, rsa_key, steps):
    engine = property_world
    with engine.begin() as conn:
        for table in ("fills", "orders", "execution_control"):
            conn.execute(text(f"DELETE FROM {table}"))
    made = _world(engine, rsa_key)
    config = live_config(max_position_contracts=25, max_open_orders=2, taker_fallback_cents=3.0)
    caps_cents = config.risk.max_bankroll_pct_city_day_side * config.execution.bankroll_dollars * 100
    fees = FeeSchedule(contracts=config.fees.contracts)  # no fee data stored: Kalshi's general schedule
    with made.exchange as exchange:
        broker = broker_for(config, engine, trader=made.trader)
        for k, (markets, trades, take) in enumerate(steps):
            side = [m[0] for m in markets]
            price = [float(m[1]) for m in markets]  # the maker price of each market's better side
            for ticker, s, p in zip(TICKERS, side, price, strict=True):  # a book the maker price rests in
                bid = p if s == "yes" else 100 - p - 2
                exchange.set_book(ticker, int(bid), int(bid) + 2)
            maker = decision(3, side=side, price=price, edge=[m[2] for m in markets], target=[m[3] for m in markets])
            taker = decision(3, side=side, price=[p + 2 for p in price], edge=[m[2] for m in markets],
                             target=[m[3] for m in markets]) if take else None
            made.tick(broker, 10 * k, tick_inputs(TICKERS), maker, taker)
            for market, yes_price, count in trades:
                exchange.trade(TICKERS[market], yes_price, count)
            # what the exchange holds and what may still fill, per market and side; its open orders; the spend
            filled = pd.DataFrame(exchange.fills, columns=["ticker", "side", "count", "yes_price", "is_taker"])
            resting = pd.DataFrame([o for o in made.resting()], columns=["ticker", "side", "remaining_count"])
            held = filled.groupby(["ticker", "side"])["count"].sum()
            waiting = resting.groupby(["ticker", "side"])["remaining_count"].sum()
            exposure = held.add(waiting, fill_value=0)
            assert (exposure <= config.execution.max_position_contracts).all(), exposure
            assert len(resting) <= config.execution.max_open_orders
            paid = np.where(filled["side"] == "yes", filled["yes_price"], 100 - filled["yes_price"]).astype(float)
            count = filled["count"].to_numpy(dtype=float)
            fee = np.where(filled["is_taker"].to_numpy(dtype=bool), fees.order_cents(paid, count, maker=False),
                           fees.order_cents(paid, count, maker=True))
            cost = count * (paid + config.risk.slip_per_leg_cents) + fee
            spend = pd.Series(cost).groupby(filled["side"].to_numpy()).sum()
            assert (spend <= caps_cents + 1e-9).all(), spend


# --- the key ----------------------------------------------------------------------------------------------------

def test_the_key_never_appears_in_logs_records_or_errors(world, rsa_key, caplog, tmp_path, monkeypatch):
    caplog.set_level(logging.DEBUG)
    pem = pem_of(rsa_key)
    secret_lines = [line for line in pem.splitlines() if len(line) > 20 and "PRIVATE KEY" not in line]
    broker = world.broker()
    # the exchange echoes the key id in a rejection, and (with a key it does not know) in a refusal
    world.exchange.reject_next(f"rejected_for_{KEY_ID}")
    world.tick(broker, 0, tick_inputs(TICKERS[:2]), decision(2))
    world.exchange.trade(TICKERS[1], 39, 5)
    world.tick(broker, 10, tick_inputs(TICKERS[:2]), decision(2, price=41))
    errors = []
    stranger = KalshiCredentials.from_pem("SENTINEL-unknown-key-id-31f9", pem)
    with pytest.raises(LiveStartError) as refused:
        broker_for(live_config(), world.engine, trader=trader_for(world.exchange, stranger, world.clock))
    errors.append(str(refused.value))
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem.replace("MII", "XXX", 1))  # a damaged key file
    monkeypatch.setenv("KALSHI_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("KALSHI_PRIVATE_KEY_PATH", str(key_file))
    result = CliRunner().invoke(app, ["serve-rt", "--config", str(_config_file(tmp_path, "live")), "--once"])
    assert result.exit_code == 2 and "KALSHI_PRIVATE_KEY_PATH" in result.output
    errors.append(result.output)
    assert "Kalshi rejected the API key" in errors[0] and "KALSHI_API_KEY_ID" in errors[0]
    with world.engine.connect() as conn:
        dumped = [str(tuple(row)) for table in Base.metadata.sorted_tables
                  for row in conn.execute(select(table)).all()]
    texts = dumped + errors + [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    # the rejection was recorded and the broker logged its orders: there was something for a secret to leak into
    assert any("rejected" in t for t in dumped) and any('"live": "placed"' in r.getMessage() for r in caplog.records)
    for secret in (KEY_ID, "SENTINEL-unknown-key-id-31f9", *secret_lines):
        assert not [t for t in texts if secret in t], secret


# --- the CLI and the loop's entry points ------------------------------------------------------------------------

def _config_file(tmp_path, mode: str):
    path = tmp_path / f"rt-{mode}.yaml"
    path.write_text(f"markets: [{{city: chicago, bracket: between}}]\nexecution: {{mode: {mode}}}\n")
    return path


def test_serve_rt_refuses_production_without_confirmation_and_live_without_keys(tmp_path, monkeypatch):
    cli = CliRunner()
    live = str(_config_file(tmp_path, "live"))
    prod = cli.invoke(app, ["serve-rt", "--config", live, "--env", "prod"])
    assert prod.exit_code == 2 and "--confirm-production" in prod.output and "real money" in prod.output
    paper_prod = cli.invoke(app, ["serve-rt", "--config", str(_config_file(tmp_path, "paper")), "--env", "prod"])
    assert paper_prod.exit_code == 2 and "--confirm-production" in paper_prod.output
    unknown = cli.invoke(app, ["serve-rt", "--config", live, "--env", "staging"])
    assert unknown.exit_code == 2 and "--env must be one of demo, prod" in unknown.output
    no_key = cli.invoke(app, ["serve-rt", "--config", live, "--env", "prod", "--i-understand-this-trades-real-money"])
    assert no_key.exit_code == 2 and "KALSHI_API_KEY_ID is not set" in no_key.output
    monkeypatch.setenv("KALSHI_API_KEY_ID", KEY_ID)
    no_file = cli.invoke(app, ["serve-rt", "--config", live])
    assert no_file.exit_code == 2 and "KALSHI_PRIVATE_KEY_PATH is not set" in no_file.output
    assert KEY_ID not in no_file.output
    replayed = cli.invoke(app, ["serve-rt", "--config", live, "--replay", "2025-07-18"])
    assert replayed.exit_code == 2 and "cannot be replayed" in replayed.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt-live.yaml", "rt-paper.yaml"]  # nothing opened


def _error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_serve_rt_checks_the_trading_url_before_the_keys(tmp_path, monkeypatch):
    cli = CliRunner()
    live = ["serve-rt", "--config", str(_config_file(tmp_path, "live"))]
    monkeypatch.setenv("KWX_KALSHI_TRADE_URL", "javascript:alert(1)")
    assert _error_line(cli.invoke(app, live)) == ("error: $KWX_KALSHI_TRADE_URL: must be an http(s) URL with a host, "
                                                  "such as https://host/path; got 'javascript:alert(1)'")
    monkeypatch.setenv("KWX_KALSHI_TRADE_URL", "https://proxy:SENTINEL-proxy-pw@/trade-api/v2")
    hidden = cli.invoke(app, live)
    assert "$KWX_KALSHI_TRADE_URL" in _error_line(hidden) and "SENTINEL-proxy-pw" not in hidden.output
    monkeypatch.delenv("KWX_KALSHI_TRADE_URL")
    production = ["--set", "execution.trade_api_url=https://api.elections.kalshi.com/trade-api/v2"]
    for flags in ([], ["--confirm-production"]):  # Kalshi's production host needs --env prod as well
        assert _error_line(cli.invoke(app, [*live, *production, *flags])) == (
            "error: execution.trade_api_url https://api.elections.kalshi.com/trade-api/v2 is Kalshi's production "
            "exchange (real money): it needs --env prod and --confirm-production")
    not_http = _error_line(cli.invoke(app, [*live, "--set", "execution.trade_api_url=ftp://example.com/v2"]))
    assert "execution.trade_api_url: must be an http(s) URL with a host" in not_http
    confirmed = cli.invoke(app, [*live, *production, "--env", "prod", "--confirm-production"])
    assert "KALSHI_API_KEY_ID is not set" in _error_line(confirmed)  # the URL passed: the keys are next
    monkeypatch.setenv("KWX_KALSHI_TRADE_URL", "https://trading-api.kalshi.com/trade-api/v2")
    assert "$KWX_KALSHI_TRADE_URL https://trading-api.kalshi.com/trade-api/v2 is Kalshi's production exchange" in (
        _error_line(cli.invoke(app, live)))


def test_the_loop_builds_live_brokers_only_as_asked(world, tmp_path):
    config = live_config()
    with pytest.raises(ProductionNotConfirmed):  # refused before any key is read
        broker_for(config, world.engine, environment="prod")
    assert isinstance(broker_for(config, world.engine, trader=world.trader), LiveBroker)
    with pytest.raises(ReplayError, match="cannot be replayed"):
        replay_day(config, world.engine, None, DAY)


def _serve_today(api, exchange: FakeKalshiExchange, demo, today: date) -> None:
    """Today's chicago markets and the station's weather at ``api``; any maker price rests at ``exchange``."""
    from tests.data.fake_http import Reply
    from tests.data.test_kalshi import serve_kalshi
    from tests.data.test_visual_crossing import timeline_json

    serve_kalshi(api, demo, page_size=100)
    first, last = today - timedelta(days=1), today
    api.handlers[f"/stn:KMDW/{first}/{last}"] = lambda q: Reply(timeline_json(demo.weather_minutes, first, last))
    for ticker in demo.markets["ticker"]:
        exchange.set_book(ticker, 1, 99)


@pytest.mark.integration
def test_the_live_loop_trades_through_its_trader(promoted, tmp_path, monkeypatch, rsa_key):
    """serve_live with execution.mode live: one tick of today's demo markets, orders at the (fake) exchange."""
    from kwx.data.clients.http import JsonHttp
    from kwx.data.clients.kalshi import KalshiClient
    from kwx.data.clients.visual_crossing import VisualCrossingClient
    from kwx.data.demo import generate_city
    from kwx.rt.live import serve_live
    from tests.data.fake_http import FakeApi

    today = datetime.now(UTC).date()
    demo = generate_city("chicago", today, today + timedelta(days=1), seed=5)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    credentials = KalshiCredentials.from_pem(KEY_ID, pem_of(rsa_key))
    with FakeApi() as api, FakeKalshiExchange(rsa_key.public_key(), KEY_ID, balance_cents=10_000_000) as exchange:
        _serve_today(api, exchange, demo, today)
        config = RtConfig.model_validate({
            "markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 2, "fetch_deadline_fraction": 0.9,
            "kalshi_base_url": api.url, "vc_base_url": api.url,
            "risk": {"tau_open_cents": 0.0, "tau_close_cents": 0.0, "max_spread_cents": 100},
            "execution": {"mode": "live", "max_open_orders": 3, "max_position_contracts": 20}})
        run = serve_live(config, engine, promoted["client"],
                         kalshi=KalshiClient(api.url, http=JsonHttp(api.url, per_second=0)),
                         vc=VisualCrossingClient("k3y", api.url, http=JsonHttp(api.url, per_second=0)),
                         max_ticks=1, trader=KalshiTrader(credentials, exchange.url, retry=QUICK, per_second=0))
        at_exchange = {o["client_order_id"]: o for t in demo.markets["ticker"] for o in exchange.orders_of(t)}
    orders = records.orders(engine, "live")
    engine.dispose()
    assert run.writer.written_ticks == 1 and exchange.count("GET", "/portfolio/balance") == 1
    assert 0 < len(orders) <= 3 and set(orders["status"]) == {"resting"} and orders["post_only"].all()
    assert set(orders["client_order_id"]) == set(at_exchange)
    assert all(at_exchange[r.client_order_id]["order_id"] == r.exchange_order_id for r in orders.itertuples())


@pytest.mark.integration
@pytest.mark.parametrize("given_by", ["KWX_KALSHI_TRADE_URL", "execution.trade_api_url"])
def test_serve_rt_trades_at_the_trading_url_it_is_given(promoted, tmp_path, monkeypatch, rsa_key, given_by):
    """`kwx serve-rt --once` in live mode reaches the fake exchange through the setting (or its variable) alone:
    the start line names the URL and where it came from, every request is signed, the orders rest there."""
    from kwx.data.demo import generate_city
    from tests.data.fake_http import OFFLINE_FORECASTS, FakeApi

    today = datetime.now(UTC).date()
    demo = generate_city("chicago", today, today + timedelta(days=1), seed=5)
    db = f"sqlite:///{tmp_path / 'live.db'}"
    migrations.upgrade(db)
    key_file = tmp_path / "kalshi.pem"
    key_file.write_text(pem_of(rsa_key))
    for name, value in {"MLFLOW_TRACKING_URI": promoted["tracking_uri"], "VC_API_KEY": "k3y",
                        "KALSHI_API_KEY_ID": KEY_ID, "KALSHI_PRIVATE_KEY_PATH": str(key_file)}.items():
        monkeypatch.setenv(name, value)
    with FakeApi() as api, FakeKalshiExchange(rsa_key.public_key(), KEY_ID, balance_cents=10_000_000) as exchange:
        _serve_today(api, exchange, demo, today)
        config = tmp_path / "live.yaml"
        config.write_text(
            f"markets: [{{city: chicago, bracket: between}}]\ntick_seconds: 2\nfetch_deadline_fraction: 0.9\n"
            f"kalshi_base_url: {api.url}\nvc_base_url: {api.url}\n{OFFLINE_FORECASTS.format(url=api.url)}"
            "risk: {tau_open_cents: 0.0, tau_close_cents: 0.0, max_spread_cents: 100}\n"
            "execution: {mode: live, max_open_orders: 3, max_position_contracts: 20}\n")
        args = ["serve-rt", "--config", str(config), "--once", "--db-url", db]
        if given_by == "KWX_KALSHI_TRADE_URL":
            monkeypatch.setenv("KWX_KALSHI_TRADE_URL", exchange.url)
            where = "$KWX_KALSHI_TRADE_URL"
        else:
            args += ["--set", f"execution.trade_api_url={exchange.url}"]
            where = "execution.trade_api_url"
        result = CliRunner().invoke(app, args)
        at_exchange = {o["client_order_id"]: o for t in demo.markets["ticker"] for o in exchange.orders_of(t)}
    assert result.exit_code == 0, result.output
    assert f"mode live, environment demo ({exchange.url}, from {where})" in result.output
    assert exchange.requests and all(r.signed for r in exchange.requests)
    assert exchange.count("GET", "/portfolio/balance") == 1 and exchange.count("POST", ORDERS) == len(at_exchange) > 0
    engine = make_engine(db)
    orders = records.orders(engine, "live")
    engine.dispose()
    assert set(orders["client_order_id"]) == set(at_exchange) and set(orders["status"]) == {"resting"}
    assert all(at_exchange[r.client_order_id]["order_id"] == r.exchange_order_id for r in orders.itertuples())


def test_live_records_on_both_databases(engine, rsa_key):
    """Orders, fills and positions of live mode written through the loop's writer, on SQLite and PostgreSQL."""
    load_demo(engine, ["chicago"], DAY, DAY, seed=1)
    with engine.connect() as conn:
        tickers = sorted(conn.execute(select(Market.ticker).where(Market.event_date == DAY,
                                                                  Market.strike_type == "between")).scalars())[:2]
    made = _world(engine, rsa_key)
    for ticker in tickers:
        made.exchange.set_book(ticker, 40, 42)
    with made.exchange:
        broker = made.broker()
        made.tick(broker, 0, tick_inputs(tickers), decision(2))
        made.exchange.trade(tickers[0], 39, 12)
        made.tick(broker, 10, tick_inputs(tickers), decision(2, price=[40, 41]))
        made.tick(broker, 20, tick_inputs(tickers), decision(2, edge=0.0, reason="edge below tau_open_cents"))
    orders = records.orders(engine, "live")
    assert len(orders) == 2 and set(orders["status"]) == {"cancelled"} and set(orders["environment"]) == {"demo"}
    assert orders.set_index("market_ticker").loc[tickers[0], "filled_count"] == 12
    fills = records.fills(engine, "live")
    assert list(fills["count"]) == [12] and set(fills["mode"]) == {"live"}
    held = records.positions(engine, "live", NOW + timedelta(minutes=1))
    assert held.set_index("market_ticker").loc[tickers[0], "contracts"] == 12
    assert records.exposure(engine, "live", as_of=NOW)["open_orders"].sum() == 0
