"""`kwx audit time` on demo data in a temporary SQLite database."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kwx.cli import app
from tests.conftest import demo_database

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> str:
    # Spans the 2025-11-02 fall-back so the DST day shows up.
    return demo_database(tmp_path_factory.mktemp("audit-time"), ["chicago"], date(2025, 10, 20),
                         date(2025, 11, 8), seed=3)


def test_audit_time_on_demo_data_is_clean(demo_db, tmp_path):
    # The demo's weather feed has outages of up to ~2.5 h by design; a 3 h threshold leaves only alignment.
    result = runner.invoke(app, ["audit", "time", "--db-url", demo_db, "--max-gap-minutes", "180"])
    assert result.exit_code == 0, result.output
    assert "ALIGNED" in result.output and "DST fall back" in result.output
    document = json.loads((tmp_path / "audit_reports" / "time_alignment.json").read_text())
    assert document["passed"] is True and document["flags"] == []
    chicago = document["cities"]["chicago"]
    assert chicago["period"] == {"start": "2025-10-20", "end": "2025-11-08", "since_utc": "2025-10-20T06:00:00+00:00",
                                 "until_utc": "2025-11-09T06:00:00+00:00"}
    assert [(d["date"], d["change"], d["clock_day_hours"], d["climate_day_hours"]) for d in chicago["dst_days"]] == [
        ("2025-11-02", "fall back", 25.0, 24.0)]
    assert chicago["climate_days"]["climate_day_hours"] == [24.0]
    assert chicago["market_close"]["markets"] == 120 and chicago["market_close"]["mismatched"] == 0
    assert chicago["candles"]["after_close"] == chicago["candles"]["before_open"] == 0
    assert set(chicago["candles"]["by_climate_day_offset"]) == {"-1", "0"}
    agreement = chicago["settlement_agreement"]
    assert agreement["days"] == 20 and agreement["passed"] and agreement["best"] == "lst"
    assert agreement["exact"]["lst"] > agreement["exact"]["utc"]


def test_audit_time_flags_the_demo_outages_at_the_default_threshold(demo_db, tmp_path):
    out = tmp_path / "elsewhere"
    result = runner.invoke(app, ["audit", "time", "--db-url", demo_db, "--cities", "chicago",
                                 "--start", "2025-10-20", "--end", "2025-11-08", "--out", str(out)])
    assert result.exit_code == 1, result.output
    weather = json.loads((out / "time_alignment.json").read_text())["cities"]["chicago"]["weather"]
    assert weather["gaps"] >= 1 and not weather["passed"]
    assert weather["largest_gaps"][0]["minutes"] > 30
    assert "weather gap" in result.output


def test_audit_time_without_data_for_the_city_fails_clearly(demo_db):
    result = runner.invoke(app, ["audit", "time", "--db-url", demo_db, "--cities", "nyc"])
    assert result.exit_code == 2
    assert "no city to audit" in result.output and not Path("audit_reports").exists()
