"""The live loop's wait between ticks: none after its last tick, and a stop signal cuts it short."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from kwx.clock import SystemClock
from kwx.config import RtConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.rt.engine import SignalRows
from kwx.rt.loop import SignalWriter, StopFlag, TickResult, run_loop

MINUTE_TICKS = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 60})


class IdleTicks:
    """A tick runner with no markets: each tick takes no time, so the loop's own wait is all that is measured."""

    def run(self, now_ts: int) -> TickResult:
        return TickResult(SignalRows({"ts_utc": np.zeros(0, np.int64), "market_ticker": np.zeros(0, object)}), 0,
                          {}, [])


@pytest.fixture
def writer(sqlite_url):
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield SignalWriter(engine, mode="test")
    engine.dispose()


def test_the_last_tick_is_not_followed_by_a_wait(writer):
    started = time.monotonic()
    assert run_loop(MINUTE_TICKS, SystemClock(), IdleTicks(), writer, max_ticks=1) == 1
    assert time.monotonic() - started < 10  # `serve-rt --once` waited out the rest of its tick before exiting
    assert writer.written_ticks == 1


def test_a_stop_signal_cuts_the_wait_between_ticks_short(writer):
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = StopFlag()
    stop.install()
    started = time.monotonic()
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()  # during the wait after the first tick
    try:
        ticks = run_loop(MINUTE_TICKS, SystemClock(), IdleTicks(), writer, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert ticks == 1 and writer.written_ticks == 1
    assert time.monotonic() - started < 10  # not the minute's remaining 59 s
