"""The execution records: orders, fills and the kill switch in the database; positions and P&L derived from them.

Fills, markets' settlements and candles are the only inputs of positions and P&L (``kwx.domain.positions``
does the arithmetic), so there is no second record of a position to drift from the fills. Each fill's source
(open: the model priced its row; locked: the settlement rule had decided it) is the ``locked`` flag of the
``rt_signals`` row its order was placed on (``orders.signal_ts_utc`` and the market); an order without that row
(adopted from the exchange, or its signal never written) counts as open. The halt state
lives in ``execution_control`` (one row per mode) so a halt survives restarts; a halt file, if configured,
halts as well, for operators without a shell into the container.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sqlalchemy import Compiled, Connection, Dialect, Engine, and_, bindparam, func, select, update

from kwx.data.schema import Candle, ExecutionControl, Fill, Market, Order, RtSignal
from kwx.data.store import chunks, driver_parameters, rows_frame, upsert_frame, upsert_rows
from kwx.domain.positions import (
    FILL_INPUT_COLUMNS,
    POSITION_KEYS,
    VALUE_COLUMNS,
    pnl_by_source,
    pnl_totals,
    position_pnl,
    source_totals,
    sources,
)

MODES = ("paper", "live")
ENVIRONMENTS = ("paper", "demo", "prod")
SIDES = ("yes", "no")
ACTIONS = ("buy", "sell")
LIQUIDITY = ("maker", "taker")
ORDER_STATUSES = ("pending", "resting", "filled", "cancelled", "rejected", "unknown")
# An order that may still trade: decided, resting, or sent without a known outcome.
OPEN_STATUSES = ("pending", "resting", "unknown")
ORDER_COLUMNS = [c.name for c in Order.__table__.columns]
FILL_COLUMNS = [c.name for c in Fill.__table__.columns]
MARKET_INFO_COLUMNS = ["city", "event_date"]
POSITION_SOURCE_KEYS = [*POSITION_KEYS, "source"]  # positions are split by source
EXPOSURE_COLUMNS = ["city", "side", "open_orders", "open_notional_cents", "contracts", "position_cost_cents",
                    "exposure_cents"]
_REASON_CHARS = 200
_BY_CHARS = 64


class RecordError(ValueError):
    """Rows or arguments the execution records refuse; the message names the column and the values."""


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise RecordError(f"unknown execution mode {mode!r}; known modes: {', '.join(MODES)}")
    return mode


def _check_values(data: pd.DataFrame | list[dict], table: str, allowed: dict[str, tuple[str, ...]]) -> None:
    """A clear error before the database's CHECK constraint gives an opaque one (``data`` a frame or rows)."""
    framed = isinstance(data, pd.DataFrame)
    columns = data.columns if framed else data[0].keys() if data else ()
    for column, values in allowed.items():
        if column in columns:
            # a batch holds a few values
            seen = data[column].unique() if framed else dict.fromkeys(row[column] for row in data)
            bad = [value for value in seen if value not in values]
            if bad:
                raise RecordError(f"{table}.{column}: {', '.join(map(repr, bad[:5]))} not one of {', '.join(values)}")


_ORDER_VALUES = {"mode": MODES, "environment": ENVIRONMENTS, "side": SIDES, "action": ACTIONS,
                 "status": ORDER_STATUSES}
_FILL_VALUES = {"mode": MODES, "side": SIDES, "action": ACTIONS, "liquidity": LIQUIDITY}


def _clipped(frame: pd.DataFrame) -> pd.DataFrame:
    """Reasons cut to the column's 200 characters: PostgreSQL refuses longer text, and the start says enough."""
    if "reason" not in frame.columns:
        return frame
    reason = frame["reason"]
    return frame.assign(reason=reason.where(reason.isna(), reason.astype(str).str.slice(0, _REASON_CHARS)))


def _clipped_row(row: dict) -> dict:
    """``_clipped`` of one row."""
    reason = row.get("reason")
    if reason is None or (isinstance(reason, str) and len(reason) <= _REASON_CHARS):
        return row
    return {**row, "reason": str(reason)[:_REASON_CHARS]}


def save_orders(conn: Connection, orders: pd.DataFrame | list[dict]) -> int:
    """Insert whole orders, or replace the given columns of stored ones, on ``client_order_id``: a frame, or rows
    (dicts with the same keys, the last row of an order its newest; what a loop writes, a few at a time). Every
    row must carry the non-null columns (the database checks them before it sees the conflict); ``update_orders``
    changes a few columns of known orders. Returns the rows sent."""
    _check_values(orders, "orders", _ORDER_VALUES)
    if isinstance(orders, pd.DataFrame):
        return upsert_frame(conn, "orders", _clipped(orders))
    return upsert_rows(conn, "orders", [_clipped_row(row) for row in orders])


def update_orders(conn: Connection, frame: pd.DataFrame) -> int:
    """Set the columns of ``frame`` (say status, counts, ``updated_at``) on the stored orders its
    ``client_order_id`` names; other columns keep their values. Returns the rows the database matched, so a
    caller can tell an update of an order it never saved."""
    if "client_order_id" not in frame.columns:
        raise RecordError("update_orders needs the client_order_id column")
    changed = [c for c in frame.columns if c != "client_order_id"]
    unknown = [c for c in changed if c not in ORDER_COLUMNS]
    if unknown:
        raise RecordError(f"orders has no column(s) {unknown}")
    if frame.empty or not changed:
        return 0
    _check_values(frame, "orders", _ORDER_VALUES)
    frame = _clipped(frame)
    # Python objects with None for every missing value: the types SQLAlchemy's UTCDateTime and drivers accept.
    rows = frame.astype(object).where(frame.notna(), None).rename(columns={"client_order_id": "_cid"})
    statement = (update(Order.__table__).where(Order.__table__.c.client_order_id == bindparam("_cid"))
                 .values({c: bindparam(c) for c in changed}))
    return conn.execute(statement, rows.to_dict("records")).rowcount


def save_fills(conn: Connection, fills: pd.DataFrame | list[dict]) -> int:
    """Insert fills (a frame, or rows as ``save_orders`` takes them); a fill whose ``fill_id`` is stored already
    is skipped, so an exchange (or a reconciliation) reporting it twice stores it once. Returns the rows sent."""
    _check_values(fills, "fills", _FILL_VALUES)
    if isinstance(fills, pd.DataFrame):
        return upsert_frame(conn, "fills", fills, on_conflict="nothing")
    return upsert_rows(conn, "fills", fills, on_conflict="nothing")


def _records(conn: Connection, statement, columns: list[str]) -> pd.DataFrame:
    return rows_frame(conn.execute(statement), columns)


def _with_times(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def orders(engine: Engine, mode: str, *, open_only: bool = False, since: datetime | None = None,
           event_date: date | None = None) -> pd.DataFrame:
    """The orders of ``mode`` (``ORDER_COLUMNS`` plus the market's city), oldest first; ``open_only`` keeps
    those that may still trade; ``since`` those created at or after it; ``event_date`` those in that climate
    day's markets."""
    check_mode(mode)
    statement = (select(*(Order.__table__.c[c] for c in ORDER_COLUMNS), Market.city)
                 .join(Market, Market.ticker == Order.market_ticker).where(Order.mode == mode))
    if open_only:
        statement = statement.where(Order.status.in_(OPEN_STATUSES))
    if since is not None:
        statement = statement.where(Order.created_at >= since)
    if event_date is not None:
        statement = statement.where(Market.event_date == event_date)
    with engine.connect() as conn:
        frame = _records(conn, statement.order_by(Order.created_at, Order.client_order_id), [*ORDER_COLUMNS, "city"])
    return _with_times(frame, ("created_at", "updated_at", "cancelled_at", "signal_ts_utc"))


def open_orders(engine: Engine, mode: str) -> pd.DataFrame:
    """Orders of ``mode`` that may still trade (pending, resting or of unknown outcome)."""
    return orders(engine, mode, open_only=True)


def latest_environment(engine: Engine, mode: str) -> str | None:
    """The environment (paper, demo or prod) of the newest order of ``mode``; None before the first order."""
    check_mode(mode)
    statement = (select(Order.environment).where(Order.mode == mode)
                 .order_by(Order.created_at.desc(), Order.client_order_id.desc()).limit(1))
    with engine.connect() as conn:
        return conn.execute(statement).scalar()


def fills(engine: Engine, mode: str, *, until: datetime | None = None, event_date: date | None = None,
          with_source: bool = False) -> pd.DataFrame:
    """The fills of ``mode`` (``FILL_COLUMNS``) up to ``until`` inclusive, oldest first; ``event_date``: only
    in that climate day's markets; ``with_source``: with each fill's ``source`` (open or locked, see above)."""
    check_mode(mode)
    statement = select(*(Fill.__table__.c[c] for c in FILL_COLUMNS)).where(Fill.mode == mode)
    columns = FILL_COLUMNS
    if with_source:
        # the order's signal row by its primary key; none: the order counts as open
        placed_on = and_(RtSignal.market_ticker == Order.market_ticker, RtSignal.ts_utc == Order.signal_ts_utc)
        statement = (statement.add_columns(RtSignal.locked).join(Order, Order.client_order_id == Fill.client_order_id)
                     .outerjoin(RtSignal, placed_on))
        columns = [*FILL_COLUMNS, "locked"]
    if until is not None:
        statement = statement.where(Fill.ts_utc <= until)
    if event_date is not None:
        statement = statement.join(Market, Market.ticker == Fill.market_ticker).where(Market.event_date == event_date)
    with engine.connect() as conn:
        frame = _records(conn, statement.order_by(Fill.ts_utc, Fill.fill_id), columns)
    if with_source:
        frame["source"] = sources(frame.pop("locked"))
    return _with_times(frame, ("ts_utc",))


def _markets(conn: Connection, tickers: list[str]) -> pd.DataFrame:
    columns = ["ticker", "city", "event_date", "close_time", "settlement_value", "result"]
    frames = [_records(conn, select(*(Market.__table__.c[c] for c in columns)).where(Market.ticker.in_(chunk)),
                       columns) for chunk in chunks(tickers)]
    return _with_times(pd.concat(frames, ignore_index=True), ("close_time",)).set_index("ticker")


def _latest_mids(conn: Connection, tickers: list[str], as_of: datetime) -> pd.Series:
    """YES mid ((bid + ask) / 2) of each market's newest candle with both quotes at or before ``as_of``:
    one grouped query per chunk of markets, on the candles' (market, end time) primary key."""
    until = int(as_of.timestamp())
    quoted = and_(Candle.yes_bid_close.is_not(None), Candle.yes_ask_close.is_not(None))
    frames = []
    for chunk in chunks(tickers):
        newest = (select(Candle.market_ticker, func.max(Candle.end_period_ts).label("ts"))
                  .where(Candle.market_ticker.in_(chunk), Candle.end_period_ts <= until, quoted)
                  .group_by(Candle.market_ticker).subquery())
        statement = select(Candle.market_ticker, (Candle.yes_bid_close + Candle.yes_ask_close) / 2).join(
            newest, and_(Candle.market_ticker == newest.c.market_ticker, Candle.end_period_ts == newest.c.ts))
        frames.append(_records(conn, statement, ["market_ticker", "mid_cents"]))
    mids = pd.concat(frames, ignore_index=True)
    return pd.Series(mids["mid_cents"].to_numpy(dtype=float), index=mids["market_ticker"].to_numpy())


def _settlements(markets: pd.DataFrame, as_of: datetime) -> pd.Series:
    """YES payout in cents of markets settled by ``as_of``: ``settlement_value``, else 100/0 from ``result``.
    A market is never settled before its close, so an ``as_of`` in the past values it at the mid instead."""
    payout = markets["settlement_value"].astype(float).fillna(markets["result"].map({"yes": 100.0, "no": 0.0}))
    return payout.where(markets["close_time"] <= pd.Timestamp(as_of))


def positions(engine: Engine, mode: str, as_of: datetime, *, event_date: date | None = None) -> pd.DataFrame:
    """Every (market, side, source) the fills of ``mode`` up to ``as_of`` opened, with the market's city and event
    date: contracts, average cost, cost, fees, and either the settlement payout and realized P&L or the mark at
    the mid and unrealized P&L (``kwx.domain.positions.VALUE_COLUMNS``). Sorted by event date, market, side and
    source; ``event_date``: only that climate day's markets."""
    check_mode(mode)
    if as_of.tzinfo is None:
        raise RecordError(f"as_of {as_of.isoformat()} has no time zone; positions need an aware UTC instant")
    recorded = fills(engine, mode, until=as_of, event_date=event_date, with_source=True)
    columns = [*POSITION_SOURCE_KEYS, *VALUE_COLUMNS, *MARKET_INFO_COLUMNS]
    inputs = recorded[[*FILL_INPUT_COLUMNS, "source"]]
    if recorded.empty:
        return position_pnl(inputs, pd.Series(dtype=float), pd.Series(dtype=float), by_source=True).assign(
            city=pd.Series(dtype=object), event_date=pd.Series(dtype=object))[columns]
    tickers = sorted(recorded["market_ticker"].unique())
    with engine.connect() as conn:
        markets = _markets(conn, tickers)
        mids = _latest_mids(conn, tickers, as_of)
    held = position_pnl(inputs, _settlements(markets, as_of), mids, by_source=True)
    held = held.join(markets[MARKET_INFO_COLUMNS], on="market_ticker")
    order = ["event_date", *POSITION_SOURCE_KEYS]
    return held.sort_values(order, kind="stable").reset_index(drop=True)[columns]


@dataclass(frozen=True)
class DailyPnl:
    """The P&L of one climate day's markets: per position, in total and per source (cents; realized and
    unrealized before fees, ``pnl_cents`` after them). ``unmarked`` positions hold contracts but have no mid
    yet. ``by_source`` holds ``kwx.domain.positions.source_totals``: one row per source, summing to the total."""

    day: date
    city: str | None
    positions: pd.DataFrame
    realized_cents: float
    unrealized_cents: float
    fees_cents: float
    pnl_cents: float
    unmarked: int
    by_source: pd.DataFrame


def daily_pnl(engine: Engine, mode: str, day: date, city: str | None = None, *,
              as_of: datetime | None = None) -> DailyPnl:
    """Realized and mark-to-market P&L of the positions whose market's event date (its climate day) is ``day``,
    in ``city`` only if given, valued at ``as_of`` (default now)."""
    held = positions(engine, mode, as_of or datetime.now(UTC), event_date=day)
    chosen = held[(held["city"] == city) if city else np.ones(len(held), dtype=bool)].reset_index(drop=True)
    total = pnl_totals(chosen).iloc[0]
    return DailyPnl(day, city, chosen, float(total["realized_cents"]), float(total["unrealized_cents"]),
                    float(total["fees_cents"]), float(total["pnl_cents"]), int(total["unmarked"]),
                    source_totals(chosen))


def pnl_by_day(engine: Engine, mode: str, *, as_of: datetime | None = None) -> pd.DataFrame:
    """``kwx.domain.positions.pnl_totals`` per event date (climate day), oldest first, with each source's P&L
    (``open_pnl_cents``, ``locked_pnl_cents``)."""
    return pnl_by_source(positions(engine, mode, as_of or datetime.now(UTC)), ["event_date"])


def exposure(engine: Engine, mode: str, *, as_of: datetime | None = None) -> pd.DataFrame:
    """Money at risk per city and side: the notional of open buy orders (remaining contracts × limit price) plus
    the cost of contracts held in markets not yet settled (``EXPOSURE_COLUMNS``, cents)."""
    as_of = as_of or datetime.now(UTC)
    resting = open_orders(engine, mode)
    buying = resting["action"] == "buy"
    notional = (resting["remaining_count"] * resting["limit_price_cents"]).where(buying, 0.0)
    by_orders = resting.assign(open_orders=1, open_notional_cents=notional.astype(float)).groupby(
        ["city", "side"])[["open_orders", "open_notional_cents"]].sum()
    held = positions(engine, mode, as_of)
    held = held[~held["settled"] & (held["contracts"] > 0)]
    by_positions = held.rename(columns={"cost_cents": "position_cost_cents"}).groupby(
        ["city", "side"])[["contracts", "position_cost_cents"]].sum()
    out = by_orders.join(by_positions, how="outer").fillna(0.0).reset_index()
    out = out.astype({"open_orders": int, "contracts": int})
    out["exposure_cents"] = out["open_notional_cents"] + out["position_cost_cents"]
    return out[EXPOSURE_COLUMNS].sort_values(["city", "side"]).reset_index(drop=True)


# --- the kill switch ------------------------------------------------------------------------------

@dataclass(frozen=True)
class HaltState:
    """Whether ``mode`` may place new orders. ``source`` says what halts it (or, when not halted, that the
    database row was read); ``since`` is when the database state last changed, or the halt file's time."""

    mode: str
    halted: bool
    reason: str | None
    since: datetime | None
    source: Literal["database", "file"]
    cancel_all_requested: bool
    changed_by: str | None = None
    halt_file: Path | None = None

    def describe(self) -> str:
        cancel = "; cancel-all pending" if self.cancel_all_requested else ""
        if not self.halted:
            return f"{self.mode}: trading (not halted){cancel}"
        when = f" since {self.since:%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        by = f" by {self.changed_by}" if self.source == "database" and self.changed_by else ""
        where = f"halt file {self.halt_file}" if self.source == "file" else "database"
        return f"{self.mode}: HALTED{when}{by} ({where}): {self.reason or 'no reason given'}{cancel}"


# Built once: the loop reads the row every tick, and building the statement cost more than reading it.
_CONTROL_ROW = select(ExecutionControl.__table__).where(ExecutionControl.mode == bindparam("mode"))


def _control_row(conn: Connection, mode: str):
    return conn.execute(_CONTROL_ROW, {"mode": mode}).first()


def _set_control(engine: Engine, mode: str, values: dict) -> None:
    with engine.begin() as conn:
        upsert_frame(conn, "execution_control", pd.DataFrame([{"mode": mode, **values}]))


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise RecordError(f"now {now.isoformat()} has no time zone; the halt state stores aware UTC instants")
    return now.astimezone(UTC)


def halt(engine: Engine, mode: str, *, reason: str | None, by: str, now: datetime, cancel_all: bool = False,
         halt_file: Path | None = None) -> HaltState:
    """Halt ``mode``: no new order from the next tick on, until ``resume``. ``cancel_all`` also asks the loop to
    cancel every resting order at its next tick; halting again without it leaves a pending request in place."""
    check_mode(mode)
    values = {"halted": True, "reason": (reason or "")[:_REASON_CHARS] or None, "changed_at": _aware(now),
              "changed_by": by[:_BY_CHARS]}
    if cancel_all:
        values["cancel_all_requested"] = True
    _set_control(engine, mode, values)
    return halt_state(engine, mode, halt_file)


def resume(engine: Engine, mode: str, *, by: str, now: datetime, halt_file: Path | None = None) -> HaltState:
    """Clear the database halt of ``mode``. A halt file that exists still halts (the returned state says so):
    only removing the file clears it. A pending cancel-all stays, since cancelling orders is never unsafe."""
    check_mode(mode)
    _set_control(engine, mode, {"halted": False, "reason": None, "changed_at": _aware(now),
                                "changed_by": by[:_BY_CHARS]})
    return halt_state(engine, mode, halt_file)


def _file_reason(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline(_REASON_CHARS).strip()
    except OSError as exc:  # a directory or an unreadable file halts all the same
        return f"halt file {path} exists (unreadable: {exc.strerror})"
    return first or f"halt file {path} exists"


def _halt_file_present(halt_file: Path | None) -> bool:
    """A halt file halts whatever the database says (``halt_state`` and ``halt_flags`` alike)."""
    return halt_file is not None and halt_file.exists()


def halt_state(engine: Engine, mode: str, halt_file: Path | None = None) -> HaltState:
    """The halt state of ``mode``: a halt file that exists halts whatever the database says (its first line, if
    any, is the reason); otherwise the ``execution_control`` row (none: never halted)."""
    check_mode(mode)
    with engine.connect() as conn:
        row = _control_row(conn, mode)
    cancel_all = bool(row and row.cancel_all_requested)
    if _halt_file_present(halt_file):
        try:
            since = datetime.fromtimestamp(halt_file.stat().st_mtime, UTC)
        except OSError:
            since = None
        return HaltState(mode, True, _file_reason(halt_file), since, "file", cancel_all, None, halt_file)
    if row is None:
        return HaltState(mode, False, None, None, "database", False, None, halt_file)
    return HaltState(mode, bool(row.halted), row.reason, row.changed_at, "database", cancel_all, row.changed_by,
                     halt_file)


# (halted, cancel_all_requested) of one mode: what the loop needs of the row every tick
_CONTROL_FLAGS = select(ExecutionControl.halted, ExecutionControl.cancel_all_requested).where(
    ExecutionControl.mode == bindparam("mode"))


@functools.cache
def _control_flags_compiled(dialect: Dialect) -> Compiled:
    return _CONTROL_FLAGS.compile(dialect=dialect)


def halt_flags(engine: Engine, mode: str, halt_file: Path | None = None) -> tuple[bool, bool]:
    """(halted, cancel-all requested) as ``halt_state`` has them, for the loop, which asks every tick.

    Read through the driver on a pooled connection, holding nothing between calls: a SQLAlchemy connection and
    result cost about three times as much (~40 against ~13 us on SQLite, most of paper trading's cost beyond
    signals in a replayed day), and two booleans need none of their type handling."""
    check_mode(mode)
    compiled = _control_flags_compiled(engine.dialect)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(compiled.string, driver_parameters(compiled, {"mode": mode}))
        row = cursor.fetchone()
        cursor.close()
    finally:
        connection.close()  # back to the pool, its transaction rolled back
    halted = bool(row and row[0]) or _halt_file_present(halt_file)
    return halted, bool(row and row[1])


def clear_cancel_all(engine: Engine, mode: str, *, read_at: datetime | None = None) -> bool:
    """Mark the cancel-all request of ``mode`` done. With ``read_at`` (when the caller read the request it
    carried out) a request made after that stays pending. Returns whether a request was cleared."""
    check_mode(mode)
    statement = (update(ExecutionControl).where(ExecutionControl.mode == mode, ExecutionControl.cancel_all_requested)
                 .values(cancel_all_requested=False))
    if read_at is not None:
        statement = statement.where(ExecutionControl.changed_at <= _aware(read_at))
    with engine.begin() as conn:
        return conn.execute(statement).rowcount > 0


def trip_daily_loss_limit(engine: Engine, mode: str, *, day: date, max_loss_dollars: float, now: datetime,
                          halt_file: Path | None = None) -> HaltState | None:
    """Halt ``mode`` when ``day``'s P&L (realized + mark-to-market, after fees) is a loss beyond
    ``max_loss_dollars``; returns the new state if it tripped, None otherwise. An existing halt is left as it
    is, so an operator's reason is never overwritten."""
    state = halt_state(engine, mode, halt_file)
    if state.halted:
        return None
    result = daily_pnl(engine, mode, day, as_of=now)
    if not np.isfinite(result.pnl_cents) or result.pnl_cents >= -max_loss_dollars * 100:
        return None
    reason = (f"daily loss limit: {day} P&L {result.pnl_cents / 100:+,.2f} $ beyond "
              f"-{max_loss_dollars:,.2f} $")
    return halt(engine, mode, reason=reason, by="kwx:daily-loss-limit", now=now, halt_file=halt_file)
