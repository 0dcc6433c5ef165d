"""Replay a stored trading day through the live loop's code path on a simulated clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, func, select

from kwx.cities import get_city
from kwx.clock import SimulatedClock, SystemClock
from kwx.config import RtConfig
from kwx.data.fees import load_fee_book
from kwx.data.schema import RtTick
from kwx.domain.markets import climate_day_bounds
from kwx.execution.broker import MINUTE
from kwx.execution.modes import broker_for
from kwx.registry.cache import RegistryCache
from kwx.rt.engine import Resolver, SignalRows
from kwx.rt.loop import RegistryResolver, SignalWriter, StopFlag, TickResult, TickRunner, run_loop
from kwx.rt.retry import Backoff, DbRetry
from kwx.rt.sources import ReplaySource

PAPER_REPLAY = "paper-replay"  # rt_ticks.mode of a paper replay's ticks, apart from a signals replay's


class ReplayError(RuntimeError):
    """A replay that cannot run: no stored markets for the configured cities around the day, or live mode."""


@dataclass
class ReplayResult:
    ticks: int
    tick_seconds: float
    seconds: float
    rows: int
    sized: int
    strongest: pd.DataFrame
    resumed_after: int = 0  # ticks an earlier run of a paper replay had stored: this one went on after them
    stopped: bool = False  # a stop signal ended it before the day's last tick (every tick it ran is written)

    @property
    def simulated_minutes_per_second(self) -> float:
        return 0.0 if self.seconds == 0 else self.ticks * self.tick_seconds / 60 / self.seconds


class StrongestSignals:
    """Each market's largest-edge sized signal of a session, kept as ticks go by (not every row)."""

    def __init__(self):
        self.sized = 0
        self._best: dict[str, tuple[float, SignalRows]] = {}

    def add(self, rows: SignalRows) -> None:
        sized = np.flatnonzero(rows.columns["size_fraction"] > 0)
        self.sized += len(sized)
        edges, tickers = rows.columns["edge_cents"], rows.columns["market_ticker"]
        for row in sized:  # the few sized rows of one tick
            if edges[row] > self._best.get(tickers[row], (-np.inf,))[0]:
                self._best[tickers[row]] = (edges[row], rows.take([row]))

    def table(self) -> pd.DataFrame:
        """One row per market that was ever sized, strongest edge first (empty if none was)."""
        if not self._best:
            return pd.DataFrame()
        rows = SignalRows.concat([row for _, row in self._best.values()]).frame()
        return rows.sort_values("edge_cents", ascending=False, kind="stable").reset_index(drop=True)


def replay_day(config: RtConfig, engine: Engine, client: MlflowClient, day: date, *, speed: float | None = None,
               max_ticks: int | None = None, on_tick: Callable | None = None,
               resolver: Resolver | None = None, stop: StopFlag | None = None) -> ReplayResult:
    """Every tick of ``day``'s climate day (the first configured city's), at ``config.tick_seconds``.

    ``speed`` None runs as fast as possible; a number sleeps so that simulated time runs that many
    times faster than real time. ``resolver`` defaults to the registry at ``config.stage``. ``stop`` (its
    ``install()`` ties it to SIGINT and SIGTERM) ends the replay after the tick in flight, cutting a ``speed``
    wait short, with every tick it ran written: a paper replay run again goes on from there.
    """
    stop = stop or StopFlag()
    if config.execution.mode == "live":
        # a past day's decisions must never reach an exchange: replays trade on paper or only write signals
        raise ReplayError("execution.mode live cannot be replayed: a replay trades paper or writes signals only "
                          "(set execution.mode to paper or signals)")
    pairs = [(m.city, m.bracket) for m in config.markets]
    source = ReplaySource(engine, pairs, day, config.max_obs_age_minutes)
    if source.markets.empty:
        raise ReplayError(f"no stored markets for {', '.join(f'{c}/{b}' for c, b in pairs)} around {day}")
    start, end = climate_day_bounds(day, get_city(pairs[0][0]))
    step = timedelta(seconds=config.tick_seconds)
    first = start + step
    paper = config.execution.mode == "paper"
    mode = PAPER_REPLAY if paper else "replay"
    # A paper replay goes on from the first tick not yet stored: the ticks before it, with their orders and
    # fills, were written together; a replay that finished has nothing left to do.
    resume_at = first + (_ticks_stored(engine, mode, first, end) if paper else 0) * step
    clock = SimulatedClock(resume_at)
    # The registry changes in real time, not in the replayed day's: re-reading it every simulated
    # minute (1,440 queries a day) would cost a third of a replay and could show nothing new.
    cache = RegistryCache(client, SystemClock(), refresh_seconds=config.model_refresh_seconds,
                          max_stale_days=config.max_stale_days)
    through = resume_at - step
    fees = load_fee_book(engine, config.fees)  # the stored fee data: each series' fee in force at each tick
    runner = TickRunner(config, source, resolver or RegistryResolver(cache, config.stage),
                        broker=broker_for(config, engine, through=through if paper else None, fees=fees), fees=fees)
    if paper and resume_at < end:
        # the ticks of the last minute and one more: when each resting order's price was set (PaperBroker.resume)
        back = math.ceil((MINUTE + config.tick_seconds) / config.tick_seconds)
        runner.resume([int((through - k * step).timestamp()) for k in range(back, -1, -1)], config.tick_seconds)
    writer = SignalWriter(engine, mode=mode, retry=DbRetry(Backoff(config.db_retry_attempts)),
                          buffer_max=max(config.buffer_max_ticks, 100))
    strongest = StrongestSignals()

    def tick_done(tick: dict, result: TickResult) -> None:
        strongest.add(result.rows)
        if speed:
            stop.wait(config.tick_seconds / speed)
        if on_tick is not None:
            on_tick(tick, result)

    started = time.perf_counter()
    ticks = run_loop(config, clock, runner, writer, until_ts=int(end.timestamp()) - 1, max_ticks=max_ticks,
                     realtime=False, stop=stop, on_tick=tick_done)
    seconds = time.perf_counter() - started
    return ReplayResult(ticks, config.tick_seconds, seconds, writer.rows_written, strongest.sized, strongest.table(),
                        resumed_after=(resume_at - first) // step, stopped=stop.stopped)


def _ticks_stored(engine: Engine, mode: str, first: datetime, end: datetime) -> int:
    """How many of the day's ticks from ``first`` on a replay of ``mode`` stored: they are written in order, each
    batch in one transaction, so they are the first ones."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(RtTick).where(
            RtTick.mode == mode, RtTick.ts_utc >= first, RtTick.ts_utc < end)).scalar()
