"""The live loop: the system clock, the polling source, the same tick as replay."""

from __future__ import annotations

from collections.abc import Callable

from mlflow.tracking import MlflowClient
from sqlalchemy import Engine

from kwx.config import RtConfig
from kwx.registry.cache import RegistryCache
from kwx.rt.clock import Clock, SystemClock
from kwx.rt.loop import RegistryResolver, SignalWriter, StopFlag, TickRunner, run_loop
from kwx.rt.sources import LiveSource


def serve_live(config: RtConfig, engine: Engine, client: MlflowClient, *, kalshi, vc, clock: Clock | None = None,
               max_ticks: int | None = None, stop: StopFlag | None = None,
               on_tick: Callable | None = None) -> SignalWriter:
    """Tick every ``config.tick_seconds`` until stopped (SIGINT/SIGTERM) or ``max_ticks``."""
    clock = clock or SystemClock()
    pairs = [(m.city, m.bracket) for m in config.markets]
    source = LiveSource(engine, kalshi, vc, pairs, config.max_obs_age_minutes)
    cache = RegistryCache(client, clock, refresh_seconds=config.model_refresh_seconds,
                          max_stale_days=config.max_stale_days)
    runner = TickRunner(config, source, RegistryResolver(cache, config.stage))
    writer = SignalWriter(engine, mode="live", attempts=config.db_retry_attempts, buffer_max=config.buffer_max_ticks)
    run_loop(config, clock, runner, writer, max_ticks=max_ticks, realtime=True, stop=stop, on_tick=on_tick)
    return writer
