"""Tables that list markets print each ticker whole, however narrow the terminal: a ticker cut to
`KXHIGHCHI-25SEP15-…` hides the bracket, the one part that tells the rows apart."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from kwx.cli import rt
from kwx.execution import records

TICKERS = ["KXHIGHCHI-25SEP15-B72.5", "KXHIGHCHI-25SEP15-T80"]
WIDTHS = [40, 60, 100]


@pytest.fixture
def narrow_console(monkeypatch):
    def at(width: int) -> Console:
        console = Console(width=width, soft_wrap=True, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        monkeypatch.setattr(rt, "console", console)
        return console

    return at


def _printed(console: Console) -> str:
    text = console.export_text()
    console.file.close()
    return text


@pytest.mark.parametrize("width", WIDTHS)
def test_signals_table_prints_whole_tickers(narrow_console, width):
    console = narrow_console(width)
    frame = pd.DataFrame({"ts_utc": datetime(2025, 9, 15, 14, tzinfo=UTC), "market_ticker": TICKERS,
                          "side": ["yes", None], "p_model": 0.41, "p_market": 0.35, "p_blend": 0.39,
                          "edge_cents": 3.5, "size_fraction": 0.012, "wf_window": 7})
    rt._print_signals(frame, "last tick")
    text = _printed(console)
    assert all(ticker in text for ticker in TICKERS), text


@pytest.mark.parametrize("width", WIDTHS)
def test_positions_table_prints_whole_tickers(narrow_console, width):
    console = narrow_console(width)
    frame = pd.DataFrame({"event_date": date(2025, 9, 15), "market_ticker": TICKERS, "side": "yes",
                          "source": ["open", "locked"], "contracts": 123, "avg_cost_cents": 45.25,
                          "cost_cents": 123456.0, "fees_cents": 1234.0, "mark_cents": 99.0, "settled": [True, False],
                          "market_value_cents": 123456.0, "realized_cents": 123456.0, "unrealized_cents": 0.0,
                          "pnl_cents": 123456.0})
    rt._print_positions(frame, "paper positions of 2025-09-15")
    text = _printed(console)
    assert all(ticker in text for ticker in TICKERS), text


@pytest.mark.parametrize("width", WIDTHS)
def test_orders_table_prints_whole_tickers(narrow_console, monkeypatch, width):
    console = narrow_console(width)
    created = datetime(2025, 9, 15, 14, tzinfo=UTC)
    frame = pd.DataFrame({"created_at": created, "client_order_id": [f"paper-{'a' * 24}", f"paper-{'b' * 24}-t"],
                          "environment": "paper", "market_ticker": TICKERS, "side": "yes", "action": "buy",
                          "limit_price_cents": 45.0, "filled_count": 3, "count": 10, "remaining_count": 7,
                          "post_only": True, "status": "resting", "reason": "policy: edge above tau_open"})
    monkeypatch.setattr(records, "orders", lambda engine, mode, open_only, since: frame)
    monkeypatch.setattr(rt, "open_engine", lambda url: type("Engine", (), {"dispose": lambda self: None})())
    rt.rt_orders(open_only=False, since=None, mode="paper", config=Path("configs") / "rt.yaml", db_url=None)
    text = _printed(console)
    assert all(ticker in text for ticker in TICKERS), text
