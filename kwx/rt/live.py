"""The live loop: the system clock, the polling source, the same tick as replay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from sqlalchemy import Engine

from kwx.cities import get_city
from kwx.clock import Clock, SystemClock
from kwx.config import RtConfig
from kwx.data.fees import LiveFees
from kwx.execution.modes import broker_for
from kwx.registry.cache import RegistryCache
from kwx.rt.loop import RegistryResolver, SignalWriter, StopFlag, TickRunner, run_loop
from kwx.rt.retry import LIVE_WAIT_SHARE, Backoff, DbRetry
from kwx.rt.sources import LiveSource


@dataclass(frozen=True)
class LiveRun:
    writer: SignalWriter
    rejected: dict[str, str]  # source -> why it refused kwx's credentials, still so when the loop stopped
    unreadable: str | None  # why the last tick could not read the database (None: it could)


def serve_live(config: RtConfig, engine: Engine, client: MlflowClient, *, kalshi, vc, forecaster=None,
               clock: Clock | None = None,
               max_ticks: int | None = None, stop: StopFlag | None = None, on_tick: Callable | None = None,
               environment: str = "demo", confirm_production: bool = False, trader=None) -> LiveRun:
    """Tick every ``config.tick_seconds`` until stopped (SIGINT/SIGTERM) or ``max_ticks``.

    With ``execution.mode: live`` orders go to Kalshi's ``environment`` (production only with
    ``confirm_production``), through ``trader`` when given (else one built from the environment's keys)."""
    clock = clock or SystemClock()
    pairs = [(m.city, m.bracket) for m in config.markets]
    # One policy for every database touch of the loop, paced by the tick.
    db = DbRetry(Backoff(config.db_retry_attempts, budget=config.tick_seconds * LIVE_WAIT_SHARE))
    source = LiveSource(engine, kalshi, vc, pairs, config.max_obs_age_minutes, db=db,
                        fetch_deadline_seconds=config.tick_seconds * config.fetch_deadline_fraction,
                        forecaster=forecaster, forecast_refresh_seconds=config.forecast_refresh_seconds)
    cache = RegistryCache(client, clock, refresh_seconds=config.model_refresh_seconds,
                          max_stale_days=config.max_stale_days)
    fees = LiveFees(engine, kalshi, sorted({get_city(city).series for city, _ in pairs}), config.fees)
    book = fees.book(clock.now().timestamp())
    broker = broker_for(config, engine, environment=environment, confirm_production=confirm_production, trader=trader,
                        fees=book)
    runner = TickRunner(config, source, RegistryResolver(cache, config.stage, db), broker=broker, fees=book)

    def ticked(tick: dict, result) -> None:
        refreshed = fees.book(clock.now().timestamp())
        if refreshed is not None:
            runner.set_fees(refreshed)
        if on_tick is not None:
            on_tick(tick, result)

    writer = SignalWriter(engine, mode="live", retry=db, buffer_max=config.buffer_max_ticks)
    run_loop(config, clock, runner, writer, max_ticks=max_ticks, realtime=True, stop=stop, on_tick=ticked)
    return LiveRun(writer, {name: why for name, (_city, why) in source.rejected.items()}, runner.unreadable)
