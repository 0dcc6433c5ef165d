"""The daily loss limit's book: the day's positions marked at the tick's mids (``Broker.day_pnl_cents``)."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import numpy as np
import pytest

from kwx.config import RtConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.domain.fees import FeeBook
from kwx.execution.paper import PaperBroker

DAY = date(2025, 11, 29)


@pytest.fixture
def broker(sqlite_url):
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    config = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}],
                                      "execution": {"mode": "paper"}})
    yield PaperBroker(engine, config, fees=FeeBook())
    engine.dispose()


def test_the_days_positions_are_marked_at_the_ticks_mids(broker):
    broker.book = {
        ("A", "yes"): (10, 410.0, DAY),  # mid 42: worth 420, +10
        ("A", "no"): (5, 350.0, DAY),  # NO worth 100 - 42 = 58 a contract: 290, -60
        ("B", "yes"): (2, 60.0, DAY),  # no bid: counted at cost
        ("C", "yes"): (3, 90.0, DAY),  # not in the tick: counted at cost
        ("D", "yes"): (1, 50.0, date(2025, 11, 30)),  # another day's market: not counted
    }
    tick = SimpleNamespace(tickers=np.array(["D", "B", "A"], dtype=object), bid=np.array([10.0, np.nan, 40.0]),
                           ask=np.array([12.0, 30.0, 44.0]))
    assert broker.day_pnl_cents(tick, DAY) == -50.0
    moved = SimpleNamespace(tickers=tick.tickers, bid=np.array([10.0, 20.0, 50.0]), ask=np.array([12.0, 22.0, 54.0]))
    # a new tick's inputs: mids 21 (B, -18) and 52 (A: +110, NO 48 a contract: -110)
    assert broker.day_pnl_cents(moved, DAY) == -18.0
    assert broker.day_pnl_cents(moved, date(2025, 11, 30)) == 11.0 - 50.0  # mid 11
