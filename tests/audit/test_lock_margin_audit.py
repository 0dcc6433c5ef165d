"""`kwx audit lock-margin` on constructed days stored in a temporary SQLite database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kwx.cities import get_city
from kwx.cli import app
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.store import upsert_frames
from kwx.domain.markets import climate_day_bounds, format_event_ticker, format_ticker
from tests.audit.test_lock_margin import FIRST, OVERSHOOTS, constructed_days

runner = CliRunner()
CHICAGO = get_city("chicago")


def _markets(city_key: str, days: list) -> pd.DataFrame:
    """One settled *greater* market per day (the audit finds a city's days through its markets)."""
    city = get_city(city_key)
    rows = []
    for day in days:
        start, end = climate_day_bounds(day, city)
        rows.append({"ticker": format_ticker(city.series, day, "T", 80), "event_ticker": format_event_ticker(
            city.series, day), "series_ticker": city.series, "city": city.key, "event_date": day,
            "strike_type": "greater", "floor_strike": 80.0, "open_time": start - timedelta(hours=10),
            "close_time": end})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    """Chicago 2025-07-01..05 with OVERSHOOTS (the largest, +1.23 °F, on 07-02); one Austin market without
    observations or settlement."""
    url = f"sqlite:///{tmp_path_factory.mktemp('lock-margin') / 'kwx.db'}"
    migrations.upgrade(url)
    weather, settled = constructed_days(OVERSHOOTS)
    engine = make_engine(url)
    upsert_frames(engine, {
        "markets": pd.concat([_markets("chicago", list(settled.index)), _markets("austin", [FIRST])]),
        "weather_minutes": weather.assign(station=CHICAGO.station, source="constructed"),
        "climate_daily": pd.DataFrame({"station": CHICAGO.station, "climate_date": list(settled.index),
                                       "tmax_f": settled.astype(int).to_numpy(), "source": "kalshi_settlement"}),
    })
    engine.dispose()
    return url


def _document(out: Path) -> dict:
    return json.loads((out / "lock_margin.json").read_text())


def test_a_margin_that_misjudged_a_day_fails_and_names_it(db, tmp_path):
    result = runner.invoke(app, ["audit", "lock-margin", "--db-url", db, "--city", "chicago", "--margin", "0.5"])
    assert result.exit_code == 1, result.output
    assert "UNSAFE" in result.output and "2025-07-02 observed 82.23 vs settled 81 (+1.23)" in result.output
    document = _document(tmp_path / "audit_reports")
    assert document["margin_f"] == 0.5 and document["margin_source"] == "--margin" and document["passed"] is False
    chicago = document["cities"]["chicago"]
    assert chicago["period"] == {"start": "2025-07-01", "end": "2025-07-05"} and chicago["days"] == 5
    assert chicago["current"]["misjudged_days"] == 1
    assert chicago["current"]["worst_misjudged"] == [
        {"date": "2025-07-02", "observed_max_f": 82.23, "settled_f": 81.0, "gap_f": 1.23}]
    assert chicago["recommendation"]["margin_f"] == 0.8 and chicago["recommendation"]["thin_sample"] is True
    assert chicago["gap_f"]["max"] == 1.23 and chicago["rounded"]["above"] == 0.4
    assert "raise it to 0.8" in chicago["verdict"]


def test_a_margin_that_misjudged_nothing_passes_with_the_recommendation_beside_it(db, tmp_path):
    out = tmp_path / "elsewhere"
    result = runner.invoke(app, ["audit", "lock-margin", "--db-url", db, "--margin", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "recommended lock_margin_f = 0.8 °F" in result.output and "SAFE" in result.output
    document = _document(out)
    assert document["passed"] is True and set(document["cities"]) == {"chicago"}
    assert document["skipped"] == {"austin": "no settled day in 2025-07-01..2025-07-01 has observations"}
    assert document["cities"]["chicago"]["current"]["misjudged_days"] == 0
    assert document["cities"]["chicago"]["verdict"] == (
        "safe: 1 °F misjudged none of 5 days; 0.8 would have too, and locked the settled high before the close on "
        "1 more day(s); only 5 days (< 90): a thin sample, re-run as data accrues")


def test_the_range_limits_the_days(db, tmp_path):
    result = runner.invoke(app, ["audit", "lock-margin", "--db-url", db, "--city", "chicago", "--margin", "0.5",
                                 "--start", "2025-07-03", "--end", "2025-07-05"])
    assert result.exit_code == 0, result.output  # the +1.23 °F day, 07-02, is outside
    chicago = _document(tmp_path / "audit_reports")["cities"]["chicago"]
    assert chicago["days"] == 3 and chicago["recommendation"]["margin_f"] == 0.0


def test_the_margin_judged_is_the_rt_configs(db, tmp_path):
    (tmp_path / "rt.yaml").write_text("markets:\n  - {city: chicago, bracket: between}\nlock_margin_f: 0.15\n")
    result = runner.invoke(app, ["audit", "lock-margin", "--db-url", db, "--city", "chicago", "-c", "rt.yaml"])
    assert result.exit_code == 1, result.output
    document = _document(tmp_path / "audit_reports")
    assert document["margin_f"] == 0.15 and document["margin_source"] == "rt.yaml"
    assert document["cities"]["chicago"]["current"]["misjudged_days"] == 2  # +0.7 and +1.23 reach 0.65


def test_without_an_rt_config_the_default_margin_is_judged(db, tmp_path):
    result = runner.invoke(app, ["audit", "lock-margin", "--db-url", db, "--city", "chicago"])
    assert result.exit_code == 0, result.output
    document = _document(tmp_path / "audit_reports")
    assert document["margin_f"] == 1.0 and document["margin_source"] == "kwx default; no configs/rt.yaml"


@pytest.mark.parametrize(("city", "reason"), [
    ("austin", "austin: no settled day in 2025-07-01..2025-07-01 has observations"),
    ("nyc", "nyc: no markets with event dates in"),
])
def test_a_city_without_data_is_one_error_line(db, tmp_path, city, reason):
    result = runner.invoke(app, ["audit", "lock-margin", "--db-url", db, "--city", city])
    assert result.exit_code == 2, result.output
    assert f"error: no city to audit: {reason}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "audit_reports").exists()


def test_observations_are_cut_into_local_standard_time_days_when_stored(tmp_path):
    """A reading at 00:30 CDT counts toward the previous climate day, through the database too."""
    url = f"sqlite:///{tmp_path / 'kwx.db'}"
    migrations.upgrade(url)
    weather, settled = constructed_days([0.0, 0.0])
    late = pd.DataFrame({"ts_utc": [pd.Timestamp(datetime(2025, 7, 2, 5, 30, tzinfo=UTC))], "temp_f": [81.0]})
    engine = make_engine(url)
    upsert_frames(engine, {
        "markets": _markets("chicago", list(settled.index)),
        "weather_minutes": pd.concat([weather, late]).assign(station=CHICAGO.station, source="constructed"),
        "climate_daily": pd.DataFrame({"station": CHICAGO.station, "climate_date": list(settled.index),
                                       "tmax_f": settled.astype(int).to_numpy()}),
    })
    engine.dispose()
    result = runner.invoke(app, ["audit", "lock-margin", "--db-url", url, "--margin", "0.4"])
    assert result.exit_code == 1, result.output
    chicago = _document(tmp_path / "audit_reports")["cities"]["chicago"]
    assert chicago["current"]["worst_misjudged"] == [
        {"date": "2025-07-01", "observed_max_f": 81.0, "settled_f": 80.0, "gap_f": 1.0}]
