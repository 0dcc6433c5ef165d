"""Visual Crossing client and ingest against a local server."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from kwx.cities import get_city
from kwx.cli import app
from kwx.data import migrations
from kwx.data.clients.http import AuthError, JsonHttp, PayloadError, RetryPolicy
from kwx.data.clients.visual_crossing import MissingApiKeyError, VisualCrossingClient, api_key_from_env, parse_timeline
from kwx.data.db import make_engine
from kwx.data.demo import generate_city
from kwx.data.ingestion import ingest_vc
from kwx.data.schema import WeatherMinute
from tests.data.fake_http import FakeApi, Reply

CHICAGO = get_city("chicago")


@pytest.fixture(scope="module")
def weather():
    return generate_city("chicago", date(2025, 7, 2), date(2025, 7, 4), seed=9).weather_minutes


def timeline_json(weather: pd.DataFrame, first: date, last: date, nest_in_hours: bool = True) -> dict:
    ts = pd.to_datetime(weather["ts_utc"], utc=True)
    days = []
    for day in pd.date_range(first, last).date:
        rows = weather[ts.dt.date == day]
        minutes = [{"datetime": t.strftime("%H:%M:%S"), "datetimeEpoch": int(t.timestamp()), "temp": r.temp_f,
                    "dew": r.dew_f, "humidity": r.humidity_pct, "windspeed": r.wind_mph}
                   for t, r in zip(pd.to_datetime(rows["ts_utc"], utc=True), rows.itertuples(), strict=True)]
        entry = {"datetime": str(day), "tempmax": 90.0}
        if nest_in_hours:
            entry["hours"] = [{"datetime": f"{h:02d}:00:00",
                               "minutes": [m for m in minutes if m["datetime"].startswith(f"{h:02d}:")]}
                              for h in range(24)]
        else:
            entry["minutes"] = minutes
        days.append(entry)
    return {"resolvedAddress": "stn:KMDW", "days": days}


def serve(api: FakeApi, weather: pd.DataFrame, nest_in_hours: bool = True):
    def handler_for(path_first: str, path_last: str):
        return lambda q: Reply(timeline_json(weather, date.fromisoformat(path_first), date.fromisoformat(path_last),
                                             nest_in_hours))

    for first, last in (("2025-07-01", "2025-07-03"), ("2025-07-04", "2025-07-05")):
        api.handlers[f"/stn:KMDW/{first}/{last}"] = handler_for(first, last)


def client(api: FakeApi) -> VisualCrossingClient:
    return VisualCrossingClient("k3y", api.url, chunk_days=3,
                                http=JsonHttp(api.url, retry=RetryPolicy(attempts=3), sleep=lambda _s: None))


@pytest.mark.parametrize("nest_in_hours", [True, False])
def test_parse_timeline_round_trips(weather, nest_in_hours):
    frame = parse_timeline("KMDW", timeline_json(weather, date(2025, 7, 2), date(2025, 7, 2), nest_in_hours))
    day = weather[pd.to_datetime(weather["ts_utc"], utc=True).dt.date == date(2025, 7, 2)].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame.drop(columns="source"), day.drop(columns="source"), check_dtype=False)
    assert (frame["source"] == "visualcrossing").all()


def test_malformed_timeline_names_station_day_and_field():
    with pytest.raises(PayloadError, match="KMDW: timeline payload has no 'days' list"):
        parse_timeline("KMDW", {"error": "x"})
    bad = {"days": [{"datetime": "2025-07-02", "hours": [{"minutes": [{"datetimeEpoch": 1751432400, "temp": "hot"}]}]}]}
    with pytest.raises(PayloadError, match=r"KMDW 2025-07-02\.hours\[0\]\.minutes\[0\]\.temp: 'hot'"):
        parse_timeline("KMDW", bad)


def test_api_key_only_from_the_environment(monkeypatch):
    with pytest.raises(MissingApiKeyError, match="set VC_API_KEY"):
        api_key_from_env()
    monkeypatch.setenv("VC_API_KEY", " abc ")
    assert api_key_from_env() == "abc"


@pytest.mark.integration
def test_ingest_is_station_locked_idempotent_and_all_or_nothing(db_url, weather):
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    with FakeApi() as api:
        serve(api, weather)
        api.scripts["/stn:KMDW/2025-07-01/2025-07-03"] = [Reply({}, status=429, headers={"Retry-After": "0"})]
        summary = ingest_vc(engine, client(api), "chicago", date(2025, 7, 2), date(2025, 7, 4))
        assert summary.ok and summary.weather > 0
        _, query = api.requests[-1]
        assert (query["unitGroup"], query["include"], query["maxStations"], query["maxDistance"], query["key"]) == (
            "us", "minutes", "1", "0", "k3y")
        again = ingest_vc(engine, client(api), "chicago", date(2025, 7, 2), date(2025, 7, 4))
        with engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(WeatherMinute)).scalar_one()
        assert count == summary.weather == again.weather  # upserts: the re-run added nothing
        # a malformed second chunk: nothing of the request is written
        api.handlers["/stn:KMDW/2025-07-04/2025-07-05"] = lambda q: Reply(raw=b'{"days": [')
        fresh = make_engine(db_url)
        with fresh.begin() as conn:
            conn.execute(WeatherMinute.__table__.delete())
        with pytest.raises(PayloadError, match="not valid JSON"):
            ingest_vc(fresh, client(api), "chicago", date(2025, 7, 2), date(2025, 7, 4))
        with fresh.connect() as conn:
            assert conn.execute(select(func.count()).select_from(WeatherMinute)).scalar_one() == 0
        fresh.dispose()
    engine.dispose()


@pytest.mark.integration
def test_ingest_cli_commands(tmp_path, monkeypatch, weather):
    from tests.data.test_kalshi import serve_kalshi

    runner = CliRunner()
    demo = generate_city("chicago", date(2025, 7, 2), date(2025, 7, 2), seed=4)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    with FakeApi() as api:
        serve_kalshi(api, demo)
        serve(api, weather)
        result = runner.invoke(app, ["ingest", "kalshi", "--series", "KXHIGHCHI", "--start", "2025-07-02",
                                     "--end", "2025-07-02", "--base-url", api.url])
        assert result.exit_code == 0, result.output
        assert "6 markets" in result.output and "1 settled days" in result.output
        no_key = runner.invoke(app, ["ingest", "vc", "--city", "chicago", "--start", "2025-07-02", "--end",
                                     "2025-07-02", "--base-url", api.url])
        assert no_key.exit_code == 2 and "set VC_API_KEY" in no_key.output
        monkeypatch.setenv("VC_API_KEY", "k3y")
        api.handlers["/stn:KMDW/2025-07-01/2025-07-03"] = lambda q: Reply(timeline_json(
            weather, date(2025, 7, 1), date(2025, 7, 3)))
        ok = runner.invoke(app, ["ingest", "vc", "--city", "chicago", "--start", "2025-07-02", "--end",
                                 "2025-07-02", "--base-url", api.url])
        assert ok.exit_code == 0, ok.output
    bad_series = runner.invoke(app, ["ingest", "kalshi", "--series", "KXHIGHGOTHAM", "--start", "2025-07-02",
                                     "--end", "2025-07-02"])
    assert bad_series.exit_code == 2 and "unknown Kalshi series" in bad_series.output


@pytest.mark.integration
def test_a_rejected_key_is_named_not_retried_and_never_quoted():
    key = "SENTINEL-vc-key-0001"
    with FakeApi() as api:
        api.handlers["/stn:KMDW/2025-07-01/2025-07-03"] = lambda q: Reply(
            raw=f"Invalid API key {q['key']} for this account. ".encode() * 40, status=401)
        vc = VisualCrossingClient(key, api.url, chunk_days=3,
                                  http=JsonHttp(api.url, retry=RetryPolicy(attempts=3), sleep=lambda _s: None))
        with pytest.raises(AuthError) as info:
            vc.timeline(CHICAGO, date(2025, 7, 1), date(2025, 7, 3))
        assert api.count("/stn:KMDW/2025-07-01/2025-07-03") == 1
    message = str(info.value)
    assert message.startswith("KMDW weather 2025-07-01..2025-07-03: Visual Crossing rejected the API key "
                              "(VC_API_KEY) (HTTP 401): Invalid API key *** for this account.")
    assert key not in message and len(message) < 250  # the body is redacted and cut, not quoted whole
