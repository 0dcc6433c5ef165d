"""Kalshi series fee data in the database: stored from the exchange, read back as a ``FeeBook``."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pandas as pd
from sqlalchemy import Engine, select

from kwx.config import FeeConfig
from kwx.data.clients.http import FetchError, PayloadError
from kwx.data.schema import SeriesFeeRecord
from kwx.data.store import upsert_frame
from kwx.domain.fees import FeeBook, FeeChange, SeriesFee

log = logging.getLogger(__name__)

# Kalshi announces fee changes days ahead: four reads a day catch one long before it takes effect.
FEE_REFRESH_SECONDS = 6 * 3600
FEE_COLUMNS = ["series_ticker", "effective_ts", "fee_type", "fee_multiplier", "source", "fetched_ts"]


def stored_fee_changes(engine: Engine, series: Iterable[str] | None = None) -> list[FeeChange]:
    """Every stored fee record (of ``series``, when given) as FeeChanges."""
    query = select(SeriesFeeRecord.series_ticker, SeriesFeeRecord.effective_ts, SeriesFeeRecord.fee_type,
                   SeriesFeeRecord.fee_multiplier)
    if series is not None:
        query = query.where(SeriesFeeRecord.series_ticker.in_(list(series)))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(SeriesFeeRecord.series_ticker, SeriesFeeRecord.effective_ts)).all()
    return [FeeChange(name, int(ts), SeriesFee(fee_type, float(multiplier))) for name, ts, fee_type, multiplier in rows]


def load_fee_book(engine: Engine, fees: FeeConfig) -> FeeBook:
    """The rt config's fees: its override rates, else every series' stored timeline."""
    if fees.override is not None:
        return FeeBook.fixed(*fees.override, fees.contracts)
    return FeeBook(stored_fee_changes(engine), contracts=fees.contracts)


def store_series_fees(engine: Engine, series: str, current: SeriesFee, changes: list[FeeChange], fetched_ts: int
                      ) -> int:
    """Store a series' announced changes, and its current fee where the stored timeline does not already say
    it applies at ``fetched_ts`` (so refreshing an unchanged series writes nothing). Returns the records written."""
    stored = stored_fee_changes(engine, [series])
    rows = [(series, c.effective_ts, c.fee.fee_type, c.fee.multiplier, "fee_change", fetched_ts) for c in changes
            if c not in stored]
    timeline = sorted({c.effective_ts: c for c in [*stored, *changes]}.values(), key=lambda c: c.effective_ts)
    in_force = [c.fee for c in timeline if c.effective_ts <= fetched_ts]
    if not in_force or in_force[-1] != current:
        rows.append((series, fetched_ts, current.fee_type, current.multiplier, "series", fetched_ts))
    if not rows:
        return 0
    with engine.begin() as conn:
        upsert_frame(conn, "series_fees", pd.DataFrame(rows, columns=FEE_COLUMNS))
    return len(rows)


def refresh_series_fees(engine: Engine, client, series: Iterable[str], now_ts: int) -> int:
    """Read each series' fee and announced changes from the exchange (``KalshiClient``) and store them."""
    written = 0
    for name in series:
        written += store_series_fees(engine, name, client.series_fee(name), client.fee_changes(name), now_ts)
    return written


class LiveFees:
    """The live loop's fee book: the exchange's fee data read at start and every ``refresh_seconds`` (Kalshi
    announces changes ahead, with the time they take effect), stored, and read back as a ``FeeBook``. A read
    that fails keeps what is stored and says so; the config's override rates are never fetched over."""

    def __init__(self, engine: Engine, client, series: Iterable[str], fees: FeeConfig, *,
                 refresh_seconds: float = FEE_REFRESH_SECONDS):
        self.engine, self.client, self.series, self.config = engine, client, list(series), fees
        self.refresh_seconds = refresh_seconds
        self._refreshed_ts: float | None = None

    def book(self, now_ts: float) -> FeeBook | None:
        """A new book when a refresh is due at ``now_ts`` (the first call always), else None."""
        if self._refreshed_ts is not None and now_ts - self._refreshed_ts < self.refresh_seconds:
            return None
        self._refreshed_ts = now_ts
        if self.config.override is None:
            for name in self.series:
                try:
                    refresh_series_fees(self.engine, self.client, [name], int(now_ts))
                except (FetchError, PayloadError) as exc:
                    log.warning("fees of %s: %s; pricing with the fee data stored before", name, exc)
        book = load_fee_book(self.engine, self.config)
        log.info("fees: %s", book.describe(self.series))
        return book
