"""Open-Meteo client, parsing and ingest against a local server serving payloads in the real shapes.

The payloads follow Open-Meteo's JSON writer (JsonWriter.swift / ForecastApiResult.swift in open-meteo/open-meteo):
``hourly.time`` in Unix seconds (``timeformat=unixtime``), one list per variable, null for a missing value,
``temperature_2m_previous_dayN`` for the Previous Runs API and ``temperature_2m`` / ``temperature_2m_memberNN`` for
the ensemble's control and members; the values are generated from fixed seeds.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime, timedelta
from functools import partial

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from typer.testing import CliRunner

from kwx.cities import CITIES, get_city
from kwx.cli import app
from kwx.data.clients.http import Deadline, PayloadError, RetryPolicy
from kwx.data.clients.open_meteo import (
    COLUMNS,
    CONSISTENCY_SECONDS,
    MODELS,
    OpenMeteoClient,
    RunMeta,
    UnknownModelError,
    model_spec,
    parse_ensemble,
    parse_forecast,
    parse_previous_runs,
    previous_run_timing,
    utc_days_for,
)
from kwx.data.ingestion import ingest_forecasts
from kwx.data.schema import Forecast
from tests.data.fake_http import FakeApi, Reply

CHICAGO, NYC = get_city("chicago"), get_city("nyc")
NOW = datetime(2025, 8, 1, tzinfo=UTC)  # every July row of history is public by then
HOUR, DAY = 3600, 86_400
SEED = 20250702


def _ts(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


# --- payloads in Open-Meteo's shapes ---------------------------------------------------------------

def truth_f(city, times: np.ndarray) -> np.ndarray:
    """A plausible 2 m temperature (°F): a diurnal cycle peaking mid-afternoon local standard time, a season."""
    offset = city.standard_offset.total_seconds()
    local_hour = ((times + offset) % DAY) / HOUR
    day_of_year = (times // DAY) % 365
    return (68 + 18 * np.cos(2 * math.pi * (day_of_year - 200) / 365)
            + 9 * np.cos(2 * math.pi * (local_hour - 15) / 24) + city.latitude / 10)


def _hours(first: date, last: date) -> np.ndarray:
    """Every UTC hour of the UTC dates [first, last]."""
    start = _ts(first.year, first.month, first.day)
    return np.arange(start, start + ((last - first).days + 1) * DAY, HOUR, dtype=np.int64)


def _envelope(city, hourly: dict, unit: str = "°F") -> dict:
    return {"latitude": round(city.latitude, 2), "longitude": round(city.longitude, 2), "generationtime_ms": 0.3,
            "utc_offset_seconds": 0, "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 190.0,
            "hourly_units": {"time": "unixtime", **{k: unit for k in hourly if k != "time"}}, "hourly": hourly}


def _values(values: np.ndarray) -> list:
    return [None if np.isnan(v) else round(float(v), 1) for v in values]


def previous_runs_json(city, model: str, first: date, last: date, seed: int = SEED) -> dict:
    times = _hours(first, last)
    hourly: dict = {"time": times.tolist()}
    for n in range(1, 8):
        rng = np.random.default_rng([seed, n, sorted(CITIES).index(city.key), sorted(MODELS).index(model)])
        hourly[f"temperature_2m_previous_day{n}"] = _values(truth_f(city, times) + rng.normal(0, 0.4 * n, len(times)))
    return _envelope(city, hourly)


def live_json(city, first: date, days: int, members: int, horizon_ts: int | None = None, seed: int = SEED) -> dict:
    times = _hours(first, first + timedelta(days=days - 1))
    hourly: dict = {"time": times.tolist()}
    for member in range(members):
        rng = np.random.default_rng([seed, member, sorted(CITIES).index(city.key)])
        values = truth_f(city, times) + rng.normal(0, 1.5, len(times))
        if horizon_ts is not None:
            values[times > horizon_ts] = np.nan  # beyond the model's horizon: null
        hourly["temperature_2m" if member == 0 else f"temperature_2m_member{member:02d}"] = _values(values)
    return _envelope(city, hourly)


def meta_json(init_ts: int, available_ts: int) -> dict:
    return {"last_run_initialisation_time": init_ts, "last_run_modification_time": available_ts,
            "last_run_availability_time": available_ts, "temporal_resolution_seconds": 3600,
            "data_end_time": init_ts + 16 * DAY, "update_interval_seconds": 21600}


def _city_of(query: dict):
    lat = float(query["latitude"])
    return min(CITIES.values(), key=lambda c: abs(c.latitude - lat))


RUN = _ts(2025, 7, 2, 12)  # the live run: 12 UTC = 06:00 LST in Chicago
RUN_AVAILABLE = RUN + int(5.5 * HOUR)
LIVE_NOW = datetime(2025, 7, 2, 18, 30, tzinfo=UTC)
GEFS_HORIZON = RUN + 240 * HOUR


def serve(api: FakeApi, seed: int = SEED, run: tuple[int, int] = (RUN, RUN_AVAILABLE)) -> None:
    """The three APIs and the run metadata on one local server, answering from the query as Open-Meteo would."""
    def forecast(query):
        city = _city_of(query)
        if "previous_day" in query["hourly"]:
            return Reply(previous_runs_json(city, query["models"], date.fromisoformat(query["start_date"]),
                                            date.fromisoformat(query["end_date"]), seed))
        return Reply(live_json(city, date(2025, 7, 1), 17, 1, seed=seed))

    def ensemble(query):
        members = {"ncep_gefs025": 31, "ecmwf_ifs025_ensemble": 51}[query["models"]]
        horizon = GEFS_HORIZON if query["models"] == "ncep_gefs025" else None
        return Reply(live_json(_city_of(query), date(2025, 7, 1), 17, members, horizon, seed=seed))

    api.handlers["/v1/forecast"] = forecast
    api.handlers["/v1/ensemble"] = ensemble
    for spec in MODELS.values():
        for domain in spec.domains:
            api.handlers[f"/data/{domain}/static/meta.json"] = lambda q: Reply(meta_json(*run))


def client_for(api: FakeApi, attempts: int = 3, timeout: float = 2.0, chunk_days: int = 31,
               sleeps: list | None = None) -> OpenMeteoClient:
    record = sleeps.append if sleeps is not None else (lambda _s: None)
    return OpenMeteoClient(api.url, api.url, api.url, chunk_days=chunk_days, timeout=timeout,
                           retry=RetryPolicy(attempts=attempts), per_second=0, sleep=record)


def _stored(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(select(Forecast).order_by(Forecast.city, Forecast.model, Forecast.climate_date,
                                                     Forecast.member, Forecast.run_ts), conn)


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Forecast)).scalar_one()


# --- pure parsing ----------------------------------------------------------------------------------

def _july_payload(values_at: dict[int, float], unixtime: bool = True) -> dict:
    """Chicago, UTC hours of 2025-07-02 and -03: 70 °F everywhere but at ``values_at``, in every previous_dayN."""
    times = _hours(date(2025, 7, 2), date(2025, 7, 3))
    values = np.full(len(times), 70.0)
    for ts, value in values_at.items():
        values[np.flatnonzero(times == ts)] = value
    hourly: dict = {"time": times.tolist() if unixtime else
                    [datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M") for t in times]}
    for n in range(1, 8):
        hourly[f"temperature_2m_previous_day{n}"] = _values(values)
    return _envelope(CHICAGO, hourly)


@pytest.mark.parametrize("unixtime", [True, False])
def test_the_high_counts_the_hours_of_the_lst_climate_day_not_the_dst_one(unixtime):
    # July: Chicago keeps CDT (UTC-5) but the climate day is CST (UTC-6): 2025-07-02 is 06:00 UTC Jul 2 to 06:00
    # UTC Jul 3. 05:00 UTC Jul 3 is 00:00 on the clock (Jul 3) but 23:00 LST Jul 2: it counts for Jul 2.
    payload = _july_payload({_ts(2025, 7, 3, 5): 95.0, _ts(2025, 7, 3, 6): 99.0, _ts(2025, 7, 2, 5): 97.0},
                            unixtime)
    frame = parse_previous_runs(CHICAGO, "gfs_seamless", payload)
    # Jul 1 (6 of its hours in the answer) and Jul 3 (18) are incomplete: dropped, not half-computed
    assert set(frame["climate_date"]) == {date(2025, 7, 2)}
    assert (frame["high_f"] == 95.0).all()  # 99 (00:00 LST Jul 3) and 97 (23:00 LST Jul 1) are other days
    assert sorted(frame["lead_days"]) == [1, 2, 3, 4, 5, 6, 7]
    assert list(frame.columns) == COLUMNS == [c.name for c in Forecast.__table__.columns]
    row = frame.iloc[0]
    assert (row["city"], row["model"], row["member"], row["ensemble"], row["source"]) == (
        "chicago", "gfs_seamless", 0, False, "open-meteo")


def test_the_documented_availability_examples():
    payload = _july_payload({})
    gfs = parse_previous_runs(CHICAGO, "gfs_seamless", payload).set_index("lead_days")
    # previous_day1: the last hour (05 UTC Jul 3) minus 24 h floors to the 00 UTC Jul 2 run; public 7 h later
    assert gfs.loc[1, "run_ts"] == _ts(2025, 7, 2, 0) and gfs.loc[1, "available_ts"] == _ts(2025, 7, 2, 7)
    assert gfs.loc[2, "run_ts"] == _ts(2025, 7, 1, 0)
    ecmwf = parse_previous_runs(CHICAGO, "ecmwf_ifs025", payload).sort_values("run_ts", ascending=False)
    # ECMWF is stored 3-hourly: 05 UTC is interpolated from stored steps up to 09 UTC, whose previous_day1 value
    # comes from the 06 UTC Jul 2 run (00:00 LST Jul 2: lead 0); public 10 h later
    first = ecmwf.iloc[0]
    assert (first["run_ts"], first["available_ts"], first["lead_days"]) == (
        _ts(2025, 7, 2, 6), _ts(2025, 7, 2, 16), 0)
    assert sorted(ecmwf["lead_days"]) == [0, 1, 2, 3, 4, 5, 6]
    assert (ecmwf["available_ts"] >= ecmwf["run_ts"]).all()


def test_a_missing_hour_is_tolerated_two_drop_the_day():
    one = _july_payload({})
    one["hourly"]["temperature_2m_previous_day1"][10] = None  # 10 UTC Jul 2: inside the Jul 2 climate day
    assert len(parse_previous_runs(CHICAGO, "gfs_seamless", one).query("lead_days == 1")) == 1
    two = _july_payload({})
    two["hourly"]["temperature_2m_previous_day1"][10:12] = [None, None]
    frame = parse_previous_runs(CHICAGO, "gfs_seamless", two)
    assert 1 not in set(frame["lead_days"]) and len(frame) == 6  # the other leads' days are whole
    short = _july_payload({})
    for key in list(short["hourly"]):
        short["hourly"][key] = short["hourly"][key][:-20]  # the answer ends at 03 UTC Jul 3: 2 hours short
    assert parse_previous_runs(CHICAGO, "gfs_seamless", short).empty


def _brute_force_newest_run(city, model: str, day: date, n: int) -> int:
    """The newest run any hourly value of the climate day's previous_dayN series can come from, hour by hour, as
    Open-Meteo builds it: a stored step p holds the latest run r <= p - n days; an hour between stored steps is
    interpolated (hermite) from the two steps on each side."""
    spec = MODELS[model]
    step, cycle = spec.step_hours * HOUR, spec.cycle_hours * HOUR
    start = _ts(day.year, day.month, day.day) - int(city.standard_offset.total_seconds())
    newest = None
    for t in range(start, start + DAY, HOUR):
        points = [t] if t % step == 0 else [t // step * step + k * step for k in (-1, 0, 1, 2)]
        for p in points:
            run = (p - n * DAY) // cycle * cycle
            newest = run if newest is None else max(newest, run)
    return newest


@given(st.sampled_from(sorted(CITIES)), st.sampled_from(["gfs_seamless", "gfs_global", "ecmwf_ifs025"]),
       st.dates(date(2024, 1, 1), date(2026, 12, 31)), st.integers(1, 7))
def test_the_rule_is_the_newest_run_any_hour_can_come_from_plus_the_delay(city_key, model, day, n):
    city = get_city(city_key)
    days = np.array([(day - date(1970, 1, 1)).days])
    run_ts, available_ts = previous_run_timing(city, model, days, n)
    assert run_ts[0] == _brute_force_newest_run(city, model, day, n)  # conservative, and no later than needed
    assert available_ts[0] - run_ts[0] == MODELS[model].delay_hours * HOUR >= 7 * HOUR
    assert run_ts[0] % (6 * HOUR) == 0
    run_day = datetime.fromtimestamp(int(run_ts[0]), UTC) + city.standard_offset
    assert 0 <= (day - run_day.date()).days <= n


def test_live_forecast_rows_take_the_run_from_the_metadata():
    payload = live_json(CHICAGO, date(2025, 7, 1), 17, 1)
    run = RunMeta(RUN, RUN_AVAILABLE)
    frame = parse_forecast(CHICAGO, "gfs_seamless", payload, run)
    # Jul 1 is over before the run's own day (lead -1): dropped; Jul 17 ends past the answer: dropped
    assert frame["climate_date"].min() == date(2025, 7, 2) and frame["climate_date"].max() == date(2025, 7, 16)
    assert (frame["run_ts"] == RUN).all() and (frame["available_ts"] == RUN_AVAILABLE + CONSISTENCY_SECONDS).all()
    assert list(frame["lead_days"]) == list(range(15)) and (frame["member"] == 0).all()
    assert not frame["ensemble"].any() and list(frame.columns) == COLUMNS
    hours = np.array(payload["hourly"]["time"])
    day = (hours >= _ts(2025, 7, 2, 6)) & (hours < _ts(2025, 7, 3, 6))
    assert frame.iloc[0]["high_f"] == max(np.array(payload["hourly"]["temperature_2m"])[day])


def test_every_ensemble_member_is_a_row_and_days_beyond_the_horizon_are_dropped():
    payload = live_json(CHICAGO, date(2025, 7, 1), 17, 31, GEFS_HORIZON)
    frame = parse_ensemble(CHICAGO, "gfs025", payload, RunMeta(RUN, RUN_AVAILABLE))
    assert sorted(set(frame["member"])) == list(range(31))
    assert frame["model"].unique().tolist() == ["ncep_gefs025"] and frame["ensemble"].all()
    # the 240 h horizon ends 12 UTC Jul 12, inside the Jul 12 climate day: Jul 2..11 stay
    assert frame.groupby("member")["climate_date"].agg(["min", "max", "size"]).drop_duplicates().values.tolist() == [
        [date(2025, 7, 2), date(2025, 7, 11), 10]]
    suffixed = {**payload, "hourly": {(k if k == "time" else f"{k}_ncep_gefs025"): v
                                      for k, v in payload["hourly"].items()}}
    pd.testing.assert_frame_equal(parse_ensemble(CHICAGO, "ncep_gefs025", suffixed, RunMeta(RUN, RUN_AVAILABLE)),
                                  frame)


def _break(path: str, value):
    def apply(payload: dict) -> dict:
        keys = path.split(".")
        target = payload
        for key in keys[:-1]:
            target = target[key]
        if value is KeyError:
            del target[keys[-1]]
        elif callable(value):
            target[keys[-1]] = value(target[keys[-1]])
        else:
            target[keys[-1]] = value
        return payload
    return apply


@pytest.mark.parametrize(("breakage", "message"), [
    (_break("hourly", KeyError), "chicago gfs_seamless previous runs: 'hourly' is missing or not an object"),
    (_break("hourly.time", "soon"), "hourly.time is missing or not a list"),
    (_break("hourly.time", lambda t: [*t[:3], "noon", *t[4:]]), "hourly.time[3]: 'noon' is not a time"),
    (_break("hourly.time", lambda t: [*t[:3], True, *t[4:]]), "hourly.time[3]: True is not a time"),
    (_break("hourly.time", lambda t: [t[0] + 60, *t[1:]]), "hourly.time[0] (1751414460) is not on the hour"),
    (_break("hourly.time", lambda t: [t[1], *t[1:]]), "hourly.time[1] (1751418000) does not follow"),
    (_break("hourly.temperature_2m_previous_day3", lambda v: v[:-1]),
     "hourly.temperature_2m_previous_day3 has 47 values for 48 times"),
    (_break("hourly.temperature_2m_previous_day2", lambda v: [*v[:5], "hot", *v[6:]]),
     "hourly.temperature_2m_previous_day2[5]: 'hot' is not a number"),
    (_break("hourly.temperature_2m_previous_day2", lambda v: [*v[:5], False, *v[6:]]),
     "hourly.temperature_2m_previous_day2[5]: False is not a number"),
    (_break("hourly.temperature_2m_previous_day1", {"a": 1}), "hourly.temperature_2m_previous_day1 is missing"),
    (_break("hourly_units.temperature_2m_previous_day1", "°C"), "is '°C', expected '°F'"),
    (_break("utc_offset_seconds", -18000), "utc_offset_seconds is -18000, expected 0 (timezone=GMT)"),
    (lambda p: {"error": True, "reason": "Cannot initialize WeatherVariable from invalid String value x"},
     "Open-Meteo answered with an error: 'Cannot initialize"),
    (lambda p: {**p, "hourly": {"time": p["hourly"]["time"]}}, "no hourly.temperature_2m_previous_dayN series"),
])
def test_malformed_answers_name_the_city_model_and_field(breakage, message):
    with pytest.raises(PayloadError) as info:
        parse_previous_runs(CHICAGO, "gfs_seamless", breakage(_july_payload({})))
    assert str(info.value).startswith("chicago gfs_seamless previous runs: ") and message in str(info.value)


def test_malformed_live_answers_and_metadata():
    good = live_json(NYC, date(2025, 7, 1), 3, 2)
    with pytest.raises(PayloadError, match=r"nyc ecmwf_ifs025_ensemble ensemble: hourly\.temperature_2m_member01 "
                                           r"has 71 values for 72 times"):
        bad = {**good, "hourly": {**good["hourly"], "temperature_2m_member01": good["hourly"]["temperature_2m"][1:]}}
        parse_ensemble(NYC, "ecmwf_ifs025", bad, RunMeta(RUN, RUN_AVAILABLE))
    with pytest.raises(PayloadError, match=r"nyc ncep_gefs025 ensemble: no hourly\.temperature_2m"):
        parse_ensemble(NYC, "gfs025", {**good, "hourly": {"time": good["hourly"]["time"]}}, RunMeta(RUN, RUN))
    with pytest.raises(PayloadError, match=r"nyc gfs_seamless forecast: hourly\.temperature_2m is missing"):
        parse_forecast(NYC, "gfs_seamless", {**good, "hourly": {"time": good["hourly"]["time"]}}, RunMeta(RUN, RUN))


def test_unknown_models_are_named_with_the_known_ones():
    with pytest.raises(UnknownModelError, match=r"unknown deterministic Open-Meteo model 'gfs9'; known: "
                                                r"ecmwf_ifs025, gfs_global, gfs_seamless"):
        model_spec("gfs9", ensemble=False)
    with pytest.raises(UnknownModelError, match="unknown ensemble Open-Meteo model 'gfs_seamless'"):
        model_spec("gfs_seamless", ensemble=True)
    assert model_spec("ecmwf_ifs025", ensemble=True).name == "ecmwf_ifs025_ensemble"


def test_request_dates_cover_the_climate_days_in_utc():
    assert utc_days_for(CHICAGO, date(2025, 7, 1), date(2025, 7, 31)) == (date(2025, 7, 1), date(2025, 8, 1))
    assert utc_days_for(get_city("la"), date(2025, 1, 1), date(2025, 1, 1)) == (date(2025, 1, 1), date(2025, 1, 2))


# --- the client and the ingest against a local server ---------------------------------------------

@pytest.mark.integration
def test_history_ingest_asks_the_documented_query_is_idempotent_and_never_stores_the_future(engine):
    with FakeApi() as api:
        serve(api)
        client = client_for(api, chunk_days=10)
        summary = ingest_forecasts(engine, client, "chicago", date(2025, 7, 1), date(2025, 7, 20),
                                   models=["gfs_seamless", "ecmwf_ifs025"], now=NOW)
        assert summary.ok and summary.forecasts == 20 * 7 * 2
        path, query = api.requests[0]
        assert path == "/v1/forecast" and query == {
            "latitude": str(CHICAGO.latitude), "longitude": str(CHICAGO.longitude), "temperature_unit": "fahrenheit",
            "timezone": "GMT", "timeformat": "unixtime", "models": "gfs_seamless", "start_date": "2025-07-01",
            "end_date": "2025-07-11",
            "hourly": ",".join(f"temperature_2m_previous_day{n}" for n in range(1, 8))}
        assert api.count("/v1/forecast") == 4  # two models × two chunks of 10 climate days
        again = ingest_forecasts(engine, client, "chicago", date(2025, 7, 1), date(2025, 7, 20),
                                 models=["gfs_seamless", "ecmwf_ifs025"], now=NOW)
        assert again.forecasts == summary.forecasts == _count(engine)  # upserts: the re-run added nothing
        stored = _stored(engine)
        assert (stored["available_ts"] >= stored["run_ts"]).all() and (stored["lead_days"] >= 0).all()
        # the stored highs are the answer's: the maximum over the LST climate day of the served hourly values
        payload = previous_runs_json(CHICAGO, "gfs_seamless", date(2025, 7, 1), date(2025, 7, 11))
        hours = np.array(payload["hourly"]["time"])
        in_day = (hours >= _ts(2025, 7, 5, 6)) & (hours < _ts(2025, 7, 6, 6))
        high = max(np.array(payload["hourly"]["temperature_2m_previous_day3"])[in_day])
        row = stored.query("model == 'gfs_seamless' and climate_date == @date(2025, 7, 5) and lead_days == 3")
        assert row["high_f"].tolist() == [high]

        # as of the evening of Jul 3, only what was public by then: no row of a later day's short leads
        engine_now = datetime(2025, 7, 3, 23, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(Forecast.__table__.delete())
        early = ingest_forecasts(engine, client, "chicago", date(2025, 7, 1), date(2025, 7, 20),
                                 models=["gfs_seamless"], now=engine_now)
        stored = _stored(engine)
        assert early.ok and 0 < len(stored) < 20 * 7
        assert stored["available_ts"].max() <= engine_now.timestamp()
        assert stored["climate_date"].max() <= date(2025, 7, 10)  # 7 days ahead at most


@pytest.mark.integration
def test_5xx_and_429_are_retried_honouring_retry_after(engine):
    sleeps: list[float] = []
    with FakeApi() as api:
        serve(api)
        api.scripts["/v1/forecast"] = [Reply({"error": True, "reason": "busy"}, status=503),
                                       Reply({"error": True, "reason": "Minutely API request limit exceeded"},
                                             status=429, headers={"Retry-After": "7"})]
        summary = ingest_forecasts(engine, client_for(api, attempts=3, sleeps=sleeps), "chicago", date(2025, 7, 2),
                                   date(2025, 7, 2), models=["gfs_seamless"], now=NOW)
        assert summary.ok and summary.forecasts == 7
        assert api.count("/v1/forecast") == 3 and sleeps[1] == 7.0  # the 429 waited what the server asked


@pytest.mark.integration
def test_a_hung_server_is_one_failure_in_bounded_time(engine):
    with FakeApi() as api:
        serve(api)
        api.scripts["/v1/forecast"] = [Reply({}, delay=3.0) for _ in range(4)]
        started = time.monotonic()
        summary = ingest_forecasts(engine, client_for(api, attempts=2, timeout=0.3, chunk_days=5), "chicago",
                                   date(2025, 7, 1), date(2025, 7, 20), models=["gfs_seamless", "ecmwf_ifs025"],
                                   now=NOW)
        assert time.monotonic() - started < 2.0
        assert summary.failures == ["Open-Meteo previous runs gfs_seamless for chicago 2025-07-01..2025-07-05: "
                                    "gave up after 2 attempts (timed out)"]
        assert api.count("/v1/forecast") == 2  # no other chunk or model waited for the same server
        # the live loop's deadline cuts the wait short the same way
        client = client_for(api, attempts=5, timeout=10.0)
        started = time.monotonic()
        with client.within(Deadline(0.5)):
            cut = ingest_forecasts(engine, client, "nyc", date(2025, 7, 1), date(2025, 7, 2), models=["gfs_seamless"],
                                   now=NOW)
        assert time.monotonic() - started < 2.0
        assert len(cut.failures) == 1 and "did not answer within the tick deadline" in cut.failures[0]
    assert _count(engine) == 0


@pytest.mark.integration
def test_truncated_json_fails_its_chunk_and_the_rest_is_written(engine):
    with FakeApi() as api:
        serve(api)
        api.scripts["/v1/forecast"] = [Reply(raw=b'{"latitude": 41.78, "hourly": {"time": [1751414400,')]
        summary = ingest_forecasts(engine, client_for(api, chunk_days=5), "chicago", date(2025, 7, 1),
                                   date(2025, 7, 10), models=["gfs_seamless"], now=NOW)
    assert summary.failures == ["Open-Meteo previous runs gfs_seamless for chicago 2025-07-01..2025-07-05: "
                                "response is not valid JSON (Expecting value: line 1 column 52 (char 51))"]
    stored = _stored(engine)
    assert summary.forecasts == len(stored) == 5 * 7
    assert sorted(set(stored["climate_date"])) == [date(2025, 7, d) for d in range(6, 11)]


@pytest.mark.integration
def test_one_bad_city_is_named_and_the_other_is_written(engine):
    with FakeApi() as api:
        serve(api)
        good = api.handlers["/v1/forecast"]

        def nyc_is_broken(query):
            if _city_of(query) is NYC:
                payload = good(query).body
                payload["hourly"]["temperature_2m_previous_day4"][30] = "NaN"
                return Reply(payload)
            return good(query)

        api.handlers["/v1/forecast"] = nyc_is_broken
        client = client_for(api)
        results = {key: ingest_forecasts(engine, client, key, date(2025, 7, 1), date(2025, 7, 3),
                                         models=["gfs_seamless"], now=NOW) for key in ("nyc", "chicago")}
    assert results["nyc"].failures == ["nyc gfs_seamless previous runs: hourly.temperature_2m_previous_day4[30]: "
                                       "'NaN' is not a number"]
    assert results["chicago"].ok and results["chicago"].forecasts == 3 * 7
    assert set(_stored(engine)["city"]) == {"chicago"}


@pytest.mark.integration
def test_live_ingest_stores_every_member_once_with_the_metadata_run(engine):
    with FakeApi() as api:
        serve(api)
        client = client_for(api)
        summary = ingest_forecasts(engine, client, "chicago", None, None, models=["gfs_seamless", "ecmwf_ifs025"],
                                   now=LIVE_NOW, live=True, ensemble_models=["gfs025", "ecmwf_ifs025"])
        assert summary.ok
        stored = _stored(engine)
        counts = stored.groupby("model").size().to_dict()
        assert counts == {"gfs_seamless": 15, "ecmwf_ifs025": 15, "ncep_gefs025": 31 * 10,
                          "ecmwf_ifs025_ensemble": 51 * 15}
        assert summary.forecasts == len(stored)
        assert (stored["run_ts"] == RUN).all() and (stored["available_ts"] == RUN_AVAILABLE + 600).all()
        assert stored.groupby("model")["ensemble"].first().to_dict() == {
            "ecmwf_ifs025": False, "ecmwf_ifs025_ensemble": True, "gfs_seamless": False, "ncep_gefs025": True}
        _, query = next(r for r in api.requests if r[0] == "/v1/ensemble")
        assert (query["models"], query["past_days"], query["forecast_days"], query["timeformat"]) == (
            "ncep_gefs025", "1", "16", "unixtime")
        # metadata before and after each answer: gfs_seamless has three domains
        assert api.count("/data/ncep_hrrr_conus/static/meta.json") == 2
        # fetched again (another seed: the values moved): the first sighting of the run stays as it was
        serve(api, seed=SEED + 1)
        ingest_forecasts(engine, client, "chicago", None, None, models=["gfs_seamless"], now=LIVE_NOW, live=True)
        pd.testing.assert_frame_equal(_stored(engine), stored)
        # too soon after the run's publication (servers may still answer with the previous run): nothing stored
        with engine.begin() as conn:
            conn.execute(Forecast.__table__.delete())
        soon = ingest_forecasts(engine, client, "chicago", None, None, models=["gfs_seamless"],
                                now=datetime.fromtimestamp(RUN_AVAILABLE + 300, UTC), live=True)
        assert soon.ok and soon.forecasts == 0 == _count(engine)


@pytest.mark.integration
def test_a_run_published_while_fetching_is_not_stored(engine):
    with FakeApi() as api:
        serve(api)
        runs = iter([RUN, RUN + 6 * HOUR] * 10)
        api.handlers["/data/ecmwf_ifs025/static/meta.json"] = lambda q: Reply(meta_json(
            (r := next(runs)), r + 5 * HOUR))
        summary = ingest_forecasts(engine, client_for(api), "chicago", None, None, models=["ecmwf_ifs025"],
                                   now=LIVE_NOW + timedelta(days=1), live=True)
    assert summary.failures == ["Open-Meteo forecast ecmwf_ifs025 for chicago: a new run was published during each "
                                "of 2 fetches; the values' run is unknown, nothing stored (try again)"]
    assert _count(engine) == 0


@pytest.mark.integration
def test_the_cli_ingests_reports_and_fails_one_line_per_failure(tmp_path):
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'kwx.db'}"
    assert runner.invoke(app, ["db", "upgrade", "--db-url", db]).exit_code == 0
    with FakeApi() as api:
        serve(api)
        urls = ["--base-url", api.url, "--ensemble-base-url", api.url, "--previous-runs-base-url", api.url]
        args = ["ingest", "forecasts", "--city", "chicago", "--city", "nyc", "--start", "2025-07-01", "--end",
                "2025-07-03", *urls, "--db-url", db]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        assert "forecasts 2025-07-01..2025-07-03 for chicago, nyc: 84 rows" in first.output
        assert "chicago ecmwf_ifs025 2025-07-01..2025-07-03 [2/2]" in first.output  # a progress line per request
        again = runner.invoke(app, args)
        assert again.exit_code == 0 and "84 rows" in again.output

        good = api.handlers["/v1/forecast"]
        api.handlers["/v1/forecast"] = lambda q: Reply(raw=b'{"hourly": {"ti') if _city_of(q) is NYC else good(q)
        broken = runner.invoke(app, args)
        assert broken.exit_code == 1 and "Traceback" not in broken.output and broken.exception is not None
        failed = [line for line in broken.output.splitlines() if line.startswith("failed:")]
        assert failed == [f"failed: Open-Meteo previous runs {m} for nyc 2025-07-01..2025-07-03: response is not "
                          "valid JSON (Unterminated string starting at: line 1 column 13 (char 12))"
                          for m in ("gfs_seamless", "ecmwf_ifs025")]
        assert "for chicago, nyc: 42 rows" in broken.output  # chicago was written

        live = runner.invoke(app, ["ingest", "forecasts", "--city", "chicago", "--live", "--ensemble-models", "",
                                   *urls, "--db-url", db])
        # the fake run is from July 2025: public long ago, so stored
        assert live.exit_code == 0 and "forecasts live for chicago: 30 rows" in live.output, live.output


@pytest.mark.parametrize(("args", "message"), [
    (["--start", "2025-07-01"], "error: --start and --end are required without --live"),
    (["--start", "2025-07-03", "--end", "2025-07-02"], "error: --end (2025-07-02) is before --start (2025-07-03)"),
    (["--start", "2025-07-01", "--end", "2025-07-02", "--models", "gfs_seamless,gfs9"],
     "error: --models: unknown deterministic Open-Meteo model 'gfs9'; known: ecmwf_ifs025, gfs_global, gfs_seamless"),
    (["--live", "--ensemble-models", "icon"], "error: --ensemble-models: unknown ensemble Open-Meteo model 'icon'"),
    (["--city", "gotham", "--live"], "error: --city: unknown city 'gotham'"),
])
def test_bad_options_are_one_line_and_touch_nothing(tmp_path, args, message):
    with FakeApi() as api:
        result = CliRunner().invoke(app, ["ingest", "forecasts", *args, "--base-url", api.url,
                                          "--db-url", f"sqlite:///{tmp_path / 'kwx.db'}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith(message), result.output
    assert api.requests == [] and not (tmp_path / "kwx.db").exists()


@pytest.mark.integration
def test_an_unreachable_server_is_a_failure_line_not_a_traceback(tmp_path, monkeypatch):
    from kwx.data.clients import open_meteo

    # the CLI's own client, with its default retries, but no real waiting between them
    monkeypatch.setattr(open_meteo, "OpenMeteoClient", partial(OpenMeteoClient, sleep=lambda _s: None))
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'kwx.db'}"
    assert runner.invoke(app, ["db", "upgrade", "--db-url", db]).exit_code == 0
    with FakeApi() as api:
        url = api.url
    # nothing listens there any more: connection refused, retried, then one failure per city
    result = runner.invoke(app, ["ingest", "forecasts", "--city", "chicago,nyc", "--start", "2025-07-01", "--end",
                                 "2025-07-01", "--previous-runs-base-url", url, "--db-url", db])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert [line for line in result.output.splitlines() if line.startswith("failed:")] == [
        f"failed: Open-Meteo previous runs gfs_seamless for {city} 2025-07-01..2025-07-01: gave up after 5 attempts "
        "(connection failed (ConnectError))" for city in ("chicago", "nyc")]
