"""`kwx serve-rt --once` against local fake Kalshi and Visual Crossing servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from kwx.cli import app
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import generate_city
from kwx.data.schema import Market, RtSignal
from tests.data.fake_http import FakeApi, Reply
from tests.data.test_kalshi import serve_kalshi
from tests.data.test_visual_crossing import timeline_json

pytestmark = pytest.mark.integration


def test_once_writes_one_tick_and_names_what_failed(promoted, tmp_path, monkeypatch):
    today = datetime.now(UTC).date()
    demo = generate_city("chicago", today, today + timedelta(days=1), seed=5)
    db = f"sqlite:///{tmp_path / 'live.db'}"
    migrations.upgrade(db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    monkeypatch.setenv("VC_API_KEY", "k3y")
    open_now = demo.markets[(demo.markets["open_time"] <= pd.Timestamp.now(tz="UTC"))]
    broken, refused = sorted(open_now.loc[open_now["strike_type"] == "between", "ticker"])[:2]
    with FakeApi() as api:
        serve_kalshi(api, demo, page_size=100)
        api.handlers[f"/series/KXHIGHCHI/markets/{broken}/candlesticks"] = lambda q: Reply(
            {"candlesticks": [{"end_period_ts": "soon"}]})
        api.handlers[f"/series/KXHIGHCHI/markets/{refused}/candlesticks"] = lambda q: Reply({"error": "no"}, 404)
        first, last = today - timedelta(days=1), today
        api.handlers[f"/stn:KMDW/{first}/{last}"] = lambda q: Reply(timeline_json(demo.weather_minutes, first, last))
        api.scripts[f"/stn:KMDW/{first}/{last}"] = [Reply({}, status=429, headers={"Retry-After": "0"})]
        config = tmp_path / "live.yaml"
        config.write_text(f"markets: [{{city: chicago, bracket: between}}]\nkalshi_base_url: {api.url}\n"
                          f"vc_base_url: {api.url}\n")
        result = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", db])
    assert result.exit_code == 0, result.output
    engine = make_engine(db)
    with engine.connect() as conn:
        signals = pd.read_sql(select(RtSignal), conn)
        markets = pd.read_sql(select(Market.ticker), conn)
    engine.dispose()
    assert set(markets["ticker"]) >= set(open_now["ticker"])  # the live source upserted the markets
    assert signals["ts_utc"].nunique() == 1  # one tick
    between_open = set(open_now.loc[open_now["strike_type"] == "between", "ticker"])
    assert set(signals["market_ticker"]) == between_open
    reasons = signals.set_index("market_ticker")["skip_reason"]
    assert f"{broken}: candlesticks[0].end_period_ts: 'soon'" in reasons[broken]  # rejected whole, named
    assert "HTTP 404" in reasons[refused]
    modelled = signals.dropna(subset=["p_model"])
    assert set(modelled["market_ticker"]) == between_open - {broken, refused}  # the others carried on
    assert modelled["model_id"].str.startswith("kwx-chicago-between/").all()
