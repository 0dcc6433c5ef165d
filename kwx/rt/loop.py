"""The real-time loop: each tick, snapshot → features → model → signals → one upsert transaction.

Live and replay differ only in the clock and the source; everything in between is shared.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property

import numpy as np
import pandas as pd
from sqlalchemy import Engine, bindparam, update

from kwx.cities import get_city
from kwx.clock import Clock, SimulatedClock
from kwx.config import RtConfig
from kwx.data.schema import Candle
from kwx.data.store import upsert_columns, upsert_frame
from kwx.domain.features import feature_arrays, weather_arrays
from kwx.domain.fees import FeeBook
from kwx.execution.broker import write_paper_ticks
from kwx.registry.cache import RegistryCache
from kwx.registry.resolution import NoModelError
from kwx.rt.engine import (
    ModelHandle,
    ModelUnavailable,
    SignalRows,
    TickResolutions,
    decide,
    prepare_inputs,
    price,
    reads_forecasts,
    signal_rows,
    unavailable_inputs,
)
from kwx.rt.retry import UNPACED, DatabaseUnavailable, DbRetry
from kwx.rt.sources import Snapshot

log = logging.getLogger("kwx.rt")


class RegistryResolver:
    """Models from the registry cache, as the engine's resolver (no registry query per tick).

    A registry whose database stays unreachable through ``db`` skips the markets it would have served.
    """

    def __init__(self, cache: RegistryCache, stage: str, db: DbRetry = UNPACED):
        self.cache, self.stage, self.db = cache, stage, db

    def __call__(self, city: str, bracket: str, day: date) -> ModelHandle:
        try:
            choice = self.db(self.cache.load_model_for_date, city, bracket, day, self.stage)
        except NoModelError as exc:
            raise ModelUnavailable(str(exc)) from None
        except DatabaseUnavailable as exc:
            raise ModelUnavailable(f"registry unavailable: {exc}") from None
        meta = choice.metadata
        return ModelHandle(choice.model, meta["model_id"], choice.window, meta["feature_set"])


def snapshot_features(snap: Snapshot, config: RtConfig, weather_features: dict[str, np.ndarray] | None = None, *,
                      with_forecasts: bool = True) -> dict[str, np.ndarray]:
    """The features training used of each market's newest candle at the snapshot's clock (the row a tick keeps;
    the older candles are their history), every city in one pass, one array per column.
    ``weather_features``: ``weather_arrays`` of the snapshot's weather, when the caller kept it;
    ``with_forecasts=False``: the forecast features are NaN, not built (no model of the tick reads them)."""
    weather = {get_city(key): frame for key, frame in snap.weather.items()}
    return feature_arrays(snap.candles, snap.markets, weather, max_obs_age_minutes=config.max_obs_age_minutes,
                          forecasts=snap.forecasts if with_forecasts else None,
                          max_forecast_age_hours=config.max_forecast_age_hours,
                          lock_margin_f=config.lock_margin_f, weather_features=weather_features,
                          newest_as_of=snap.now_ts)


@dataclass(frozen=True)
class TickResult:
    rows: SignalRows
    sized: int
    skips: dict[str, int]  # skip reason -> markets
    complete: list[tuple[str, int]]  # candles (ticker, end_period_ts) that became complete this tick
    execution: object | None = None  # paper mode: the tick's orders and fills (``PaperTick``; None: it had none)

    @cached_property
    def signals(self) -> pd.DataFrame:
        return self.rows.frame()


class TickRunner:
    def __init__(self, config: RtConfig, source, resolve, broker=None, fees: FeeBook | None = None):
        """``broker``: paper mode's ``PaperBroker``, which turns each tick's decisions into orders and fills;
        ``fees``: the series' fees (``load_fee_book``), the broker's when it has them, else Kalshi's general ones."""
        self.config, self.source, self.resolve, self.broker = config, source, resolve, broker
        self.fees = fees if fees is not None else broker.fees if broker is not None else FeeBook()
        self._memo: tuple | None = None
        self._weather: tuple[list, dict[str, np.ndarray]] | None = None  # (weather frames, their weather_arrays)
        self._marked: dict[str, int] = {}  # market -> newest candle already marked complete
        self.unreadable: str | None = None  # the last tick's reason when it could not read the database

    def set_fees(self, fees: FeeBook) -> None:
        """Price from the next tick on with ``fees`` (the live loop's refreshed fee data), the broker's fills too."""
        self.fees = fees
        self._memo = None  # the memoised pricing used the old rates
        if self.broker is not None:
            self.broker.fees = self.broker.allocator.fees = fees

    def run(self, now_ts: int) -> TickResult:
        snap, latest, decision, maker = self._decide(now_ts)
        complete = [] if latest is None else self._newly_complete(latest)
        execution = None
        if self.broker is not None:
            execution = self.broker.tick(now_ts, self._memo[1], maker, decision, snap.candles)
        self.unreadable = None
        return TickResult(signal_rows(now_ts, self._memo[1], decision), decision.sized(), decision.skip_counts(),
                          complete, execution)

    def resume(self, ticks: list[int], tick_seconds: float) -> None:
        """Before a paper replay goes on after the last of ``ticks``: the broker takes what the records do not
        hold from those ticks' maker decisions (``PaperBroker.resume``); nothing is traded or written."""
        decided = []
        for ts in ticks:
            maker = self._decide(ts)[3]
            decided.append((ts, self._memo[1], maker))
        self.broker.resume(decided, tick_seconds)

    def _decide(self, now_ts: int):
        """The tick's snapshot, its newest feature rows (None when the data did not change since the last
        tick), the decision and, with a broker, the maker decision."""
        snap = self.source.snapshot(now_ts)
        key = snap.signature()
        latest = None
        if self._memo is None or self._memo[0] != key:
            # Candles are minute bars: most ticks see the same data as the last one, and the same data
            # gives the same features and model probabilities, so those are computed once per change
            # (a promotion therefore reaches the loop with the next new candle, well inside the
            # registry refresh interval); the clock-dependent gates and the math run every tick.
            # already each market's newest row (``latest_rows`` of the full build, as tests/rt hold it)
            resolve = TickResolutions(self.resolve)
            latest = snapshot_features(snap, self.config, self._weather_features(snap),
                                       with_forecasts=reads_forecasts(snap.markets, resolve))
            inputs = prepare_inputs(snap.markets, latest, resolve, snap.failed,
                                    lock_margin_f=self.config.lock_margin_f, fees=self.fees)
            maker = price(inputs, self.config, maker=True) if self.broker is not None else None
            self._memo = (key, inputs, price(inputs, self.config), maker)
        decision = decide(now_ts, self._memo[1], self.config, pricing=self._memo[2])
        maker = None
        if self.broker is not None:
            maker = decide(now_ts, self._memo[1], self.config, maker=True, pricing=self._memo[3])
        return snap, latest, decision, maker

    def _weather_features(self, snap: Snapshot) -> dict[str, np.ndarray]:
        """The snapshot's weather features, computed again only when the source hands out other weather frames
        (observations come every few minutes, candles every minute). The frames are kept, so an id is not reused."""
        frames = list(snap.weather.items())
        kept = self._weather[0] if self._weather is not None else []
        if [(key, id(frame)) for key, frame in frames] != [(key, id(frame)) for key, frame in kept]:
            self._weather = (frames, weather_arrays({get_city(key): frame for key, frame in frames}))
        return self._weather[1]

    def skipped(self, now_ts: int, reason: str) -> TickResult:
        """A tick whose data could not be read: every market last seen and still open, skipped with ``reason``.

        The skip counts always name the reason (with 0 markets before any tick has read the database).
        """
        self.unreadable = reason
        inputs = unavailable_inputs(self._memo[1] if self._memo else None, now_ts, reason)
        rows = signal_rows(now_ts, inputs, decide(now_ts, inputs, self.config))
        return TickResult(rows, 0, {reason: len(rows)}, [])

    def _newly_complete(self, latest: dict[str, np.ndarray]) -> list[tuple[str, int]]:
        """Newest candles with a two-sided quote and a fresh enough weather observation, not marked before."""
        done = ~np.isnan(np.column_stack([latest[name].astype(float)
                                          for name in ("yes_bid", "yes_ask", "temp_now")])).any(axis=1)
        keys = zip(latest["market_ticker"][done], latest["end_period_ts"].astype(np.int64)[done].tolist(),
                   strict=True)
        fresh = [(ticker, ts) for ticker, ts in keys if ts > self._marked.get(ticker, -1)]
        self._marked.update(fresh)
        return fresh


_MARK_COMPLETE = (update(Candle).where(Candle.market_ticker == bindparam("t"), Candle.end_period_ts == bindparam("ts"))
                  .values(complete=True))


class BufferFullError(RuntimeError):
    """The database has been away so long that the bounded tick buffer is full: stop rather than drop."""


@dataclass
class SignalWriter:
    """Upserts each tick in one transaction; on a lost connection retries (``retry``), then buffers.

    Nothing is dropped silently: ticks wait in a bounded buffer until the database is back, and a
    full buffer stops the loop with an error.
    """

    engine: Engine
    mode: str
    retry: DbRetry = UNPACED
    buffer_max: int = 200
    pending: deque = field(default_factory=deque)
    written_ticks: int = 0
    rows_written: int = 0

    def submit(self, signals: SignalRows, tick: dict, complete: list[tuple[str, int]] = (),
               execution=None) -> None:
        """``execution``: paper mode's orders and fills of the tick, written in the same transaction."""
        if len(self.pending) >= self.buffer_max:
            raise BufferFullError(f"{len(self.pending)} ticks unwritten: the database has been unreachable too long")
        self.pending.append((signals, tick, list(complete), execution))

    def flush(self) -> bool:
        """Write every pending tick (oldest first); False if the database is still unreachable."""
        if not self.pending:
            return True
        # All pending ticks in one transaction: each tick is wholly written or not at all (live, that
        # is one tick per transaction, or the whole backlog after an outage; a replay batches 100).
        batch = list(self.pending)
        signals = SignalRows.concat([s for s, _, _, _ in batch])
        ticks = pd.DataFrame([t for _, t, _, _ in batch])
        complete = [{"t": t, "ts": ts} for _, _, keys, _ in batch for t, ts in keys]

        def write() -> None:
            with self.engine.begin() as conn:
                upsert_columns(conn, "rt_signals", signals.stored())
                upsert_frame(conn, "rt_ticks", ticks)
                if complete:
                    conn.execute(_MARK_COMPLETE, complete)
                executions = [e for _, _, _, e in batch if e is not None]
                if executions:
                    write_paper_ticks(conn, executions)

        try:
            self.retry(write)
        except DatabaseUnavailable as exc:
            log.warning("database unreachable (%s): %d ticks buffered", exc, len(self.pending))
            return False
        for _ in batch:
            self.pending.popleft()
        self.written_ticks += len(batch)
        self.rows_written += len(signals)
        return True


class StopFlag:
    """SIGINT/SIGTERM finish the current tick, then the loop exits cleanly: at once, not after the time left to
    the next tick (up to ``tick_seconds``, which may be an hour)."""

    def __init__(self):
        self._event = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._event.set())

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """``install`` for a block, the handlers before it restored after it: a replay inside `kwx demo` must
        not leave Ctrl-C setting a flag nothing reads any more."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.install()
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once stopped."""
        self._event.wait(seconds)


def run_loop(config: RtConfig, clock: Clock, runner: TickRunner, writer: SignalWriter, *, until_ts: int | None = None,
             max_ticks: int | None = None, realtime: bool = True, stop: StopFlag | None = None,
             on_tick: Callable[[dict, TickResult], None] | None = None) -> int:
    """Run ticks until ``until_ts``/``max_ticks``/a stop signal; returns the number of ticks run.

    ``on_tick(tick, result)`` sees each tick's log record and its ``TickResult`` (``result.signals``
    frames the rows on demand).
    """
    stop = stop or StopFlag()
    # Models, stored history and caches live as long as the loop: a permanent GC generation keeps the
    # collector from rescanning them every few ticks (measured: most of the collector's time in a replay).
    gc.freeze()
    ticks = 0
    step = timedelta(seconds=config.tick_seconds)
    while not stop.stopped and (max_ticks is None or ticks < max_ticks):
        now = clock.now()
        now_ts = int(now.timestamp())
        if until_ts is not None and now_ts > until_ts:
            break
        started = time.perf_counter()
        try:
            result = runner.run(now_ts)
        except DatabaseUnavailable as exc:
            result = runner.skipped(now_ts, f"database unavailable: {exc}"[:200])
        skips = result.skips
        latency_ms = (time.perf_counter() - started) * 1000
        tick = {"ts_utc": now, "mode": writer.mode, "markets": len(result.rows), "signals": result.sized,
                "skips": json.dumps(skips), "latency_ms": latency_ms}
        writer.submit(result.rows, tick, result.complete, result.execution)
        if realtime or len(writer.pending) >= 100:
            writer.flush()
        log.info(json.dumps({"tick": now.isoformat(), "markets": tick["markets"], "signals": tick["signals"],
                             "skips": skips, "latency_ms": round(latency_ms, 2),
                             "unwritten_ticks": len(writer.pending)}))
        if on_tick is not None:
            on_tick(tick, result)
        ticks += 1
        if isinstance(clock, SimulatedClock):
            clock.advance(step)
        elif max_ticks is None or ticks < max_ticks:  # no wait after the last tick (`serve-rt --once`)
            stop.wait(max(0.0, config.tick_seconds - (time.perf_counter() - started)))
    if not writer.flush():
        raise BufferFullError(f"stopped with {len(writer.pending)} ticks unwritten: the database is unreachable")
    return ticks
