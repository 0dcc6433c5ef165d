"""The real-time loop's broker for each execution mode: none, paper or live."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from kwx.config import RtConfig
from kwx.domain.fees import FeeBook
from kwx.execution.broker import Broker
from kwx.execution.live import LiveBroker, live_trader
from kwx.execution.paper import PaperBroker


class ExecutionModeError(ValueError):
    """An execution mode this loop cannot run."""


def broker_for(config: RtConfig, engine: Engine, *, environment: str = "demo", confirm_production: bool = False,
               trader=None, through: datetime | None = None, fees: FeeBook | None = None) -> Broker | None:
    """The loop's broker for ``execution.mode``: None for signals (the dry run), a ``PaperBroker`` for paper (its state
    as the records stood after the tick at ``through``, see ``PaperBroker``), a ``LiveBroker`` on Kalshi's
    ``environment`` for live (production only with ``confirm_production``; at $KWX_KALSHI_TRADE_URL or
    ``execution.trade_api_url`` when set; the keys from KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH unless a
    ``trader`` is given, as tests do). ``fees``: the series' fee book, else the
    config's (``load_fee_book``)."""
    mode = config.execution.mode
    if mode == "signals":
        return None
    if mode == "paper":
        return PaperBroker(engine, config, through=through, fees=fees)
    if mode == "live":
        if trader is None:
            trader = live_trader(environment, confirm_production, tick_seconds=config.tick_seconds,
                                 url=config.execution.trade_api_url)
        broker = LiveBroker(engine, config, trader, environment, fees=fees)
        broker.check_access()
        return broker
    raise ExecutionModeError(f"execution.mode {mode!r}: the loop runs signals, paper or live")
