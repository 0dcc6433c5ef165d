"""Kalshi series fee data: read in the SDK's shapes, stored as a timeline, refreshed by the live loop."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kalshi_python_sync.models.get_series_fee_changes_response import GetSeriesFeeChangesResponse
from kalshi_python_sync.models.get_series_response import GetSeriesResponse
from sqlalchemy import func, select
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import FeeConfig
from kwx.data import migrations
from kwx.data.clients.http import PayloadError
from kwx.data.fees import LiveFees, load_fee_book, refresh_series_fees, stored_fee_changes
from kwx.data.schema import SeriesFeeRecord
from kwx.domain.fees import FeeChange, SeriesFee
from tests.data.fake_http import FakeApi, Reply
from tests.data.test_kalshi import SERIES, client_for, fee_change_json, series_json, serve_fees

NOW = int(datetime(2025, 7, 10, tzinfo=UTC).timestamp())
CHANGE_AT = "2025-07-20T00:00:00Z"
CHANGE_TS = int(datetime(2025, 7, 20, tzinfo=UTC).timestamp())
WITH_MAKER_FEES = SeriesFee("quadratic_with_maker_fees", 1.0)


def test_the_fake_payloads_are_the_sdks_shapes():
    assert GetSeriesResponse.from_dict({"series": series_json()}).series.fee_type == "quadratic"
    listed = GetSeriesFeeChangesResponse.from_dict(
        {"series_fee_change_arr": [fee_change_json(CHANGE_AT, "quadratic_with_maker_fees", 1)]})
    assert listed.series_fee_change_arr[0].scheduled_ts == datetime(2025, 7, 20, tzinfo=UTC)


def test_the_client_reads_a_series_fee_and_its_announced_changes():
    with FakeApi() as api:
        serve_fees(api, series_json(fee_multiplier=1.5),
                   [fee_change_json(CHANGE_AT, "quadratic_with_maker_fees", 1),
                    fee_change_json(CHANGE_AT, "quadratic", 3, series="KXHIGHNY")])
        client = client_for(api)
        assert client.series_fee(SERIES) == SeriesFee("quadratic", 1.5)
        assert client.fee_changes(SERIES) == [FeeChange(SERIES, CHANGE_TS, WITH_MAKER_FEES)]
        assert api.requests[-1] == ("/series/fee_changes", {"series_ticker": SERIES, "show_historical": "true"})


@pytest.mark.parametrize("series, changes, message", [
    (series_json(fee_type="tiered"), [], "series KXHIGHCHI: unknown Kalshi fee type 'tiered'"),
    ({k: v for k, v in series_json().items() if k != "fee_multiplier"}, [],
     "series KXHIGHCHI: fee_type and fee_multiplier are required"),
    (series_json(fee_multiplier=-1), [], "fee multiplier must be a finite number >= 0"),
    (None, [fee_change_json("next tuesday", "quadratic", 1)], "scheduled_ts: 'next tuesday' is not an RFC 3339"),
    (None, [fee_change_json("2025-07-20T00:00:00", "quadratic", 1)], "is not an RFC 3339 time"),
])
def test_a_malformed_fee_payload_is_one_named_error(series, changes, message):
    with FakeApi() as api:
        serve_fees(api, series, changes)
        client = client_for(api)
        with pytest.raises(PayloadError, match=message):
            client.fee_changes(SERIES) if changes else client.series_fee(SERIES)


def _records(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(SeriesFeeRecord)).scalar_one()


def test_refreshing_stores_the_timeline_once_and_only_what_changed(engine):
    with FakeApi() as api:
        changes = [fee_change_json(CHANGE_AT, "quadratic_with_maker_fees", 1)]
        serve_fees(api, series_json(), changes)
        client = client_for(api)
        assert refresh_series_fees(engine, client, [SERIES], NOW) == 2  # the fee as read now, the announced change
        assert refresh_series_fees(engine, client, [SERIES], NOW + 3600) == 0
        # after the change took effect the series reports the new fee: the stored change already says so
        serve_fees(api, series_json(fee_type="quadratic_with_maker_fees"), changes)
        assert refresh_series_fees(engine, client, [SERIES], CHANGE_TS + 60) == 0
        # a fee that differs from every stored record, with no change announced: recorded from when it was read
        serve_fees(api, series_json(fee_multiplier=2), changes)
        assert refresh_series_fees(engine, client, [SERIES], CHANGE_TS + 7200) == 1
    assert stored_fee_changes(engine) == [FeeChange(SERIES, NOW, SeriesFee("quadratic", 1.0)),
                                          FeeChange(SERIES, CHANGE_TS, WITH_MAKER_FEES),
                                          FeeChange(SERIES, CHANGE_TS + 7200, SeriesFee("quadratic", 2.0))]
    book = load_fee_book(engine, FeeConfig())
    assert [book.rates(SERIES, ts) for ts in (NOW - 86_400, CHANGE_TS - 1, CHANGE_TS, CHANGE_TS + 7200)] == [
        (0.07, 0.0), (0.07, 0.0), (0.07, 0.0175), (0.14, 0.0)]
    assert load_fee_book(engine, FeeConfig(taker_rate=0.1, maker_rate=0.0)).rates(SERIES, CHANGE_TS) == (0.1, 0.0)


class Clock:
    def __init__(self, ts: float):
        self.ts = ts


def test_the_live_loop_rereads_fees_every_six_hours_and_keeps_the_stored_ones_when_it_cannot(engine, caplog):
    with FakeApi() as api:
        serve_fees(api, series_json())
        fees = LiveFees(engine, client_for(api, attempts=1), [SERIES], FeeConfig())
        first = fees.book(NOW)
        assert first is not None and first.rates(SERIES, NOW) == (0.07, 0.0)
        assert fees.book(NOW + 6 * 3600 - 1) is None and api.count(f"/series/{SERIES}") == 1
        serve_fees(api, series_json(fee_type="quadratic_with_maker_fees"))
        assert fees.book(NOW + 6 * 3600).rates(SERIES, NOW + 6 * 3600) == (0.07, 0.0175)
        api.handlers[f"/series/{SERIES}"] = lambda _q: Reply({"error": "down"}, status=404)
        with caplog.at_level(logging.WARNING, logger="kwx.data.fees"):
            kept = fees.book(NOW + 12 * 3600)
        assert kept.rates(SERIES, NOW + 12 * 3600) == (0.07, 0.0175)  # what was stored before
        assert f"fees of {SERIES}:" in caplog.text and "pricing with the fee data stored before" in caplog.text
        # the config's override is never fetched over
        overridden = LiveFees(engine, client_for(api), [SERIES], FeeConfig(taker_rate=0.05, maker_rate=0.0))
        requests = len(api.requests)
        assert overridden.book(NOW).rates(SERIES, NOW) == (0.05, 0.0) and len(api.requests) == requests


def test_kwx_ingest_fees_stores_and_lists_the_timeline(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fees.db'}"
    migrations.upgrade(url)
    runner = CliRunner()
    with FakeApi() as api:
        serve_fees(api, series_json(), [fee_change_json(CHANGE_AT, "quadratic_with_maker_fees", 1)])
        done = runner.invoke(app, ["ingest", "fees", "--city", "chicago", "--base-url", api.url, "--db-url", url])
        again = runner.invoke(app, ["ingest", "fees", "--city", "chicago", "--base-url", api.url, "--db-url", url])
        api.handlers[f"/series/{SERIES}"] = lambda _q: Reply({"series": series_json(fee_type="flat")})
        refused = runner.invoke(app, ["ingest", "fees", "--city", "chicago", "--base-url", api.url, "--db-url", url])
    assert done.exit_code == 0, done.output
    assert "1 series: 2 new fee records" in done.output and "1 series: 0 new fee records" in again.output
    assert "2025-07-20 00:00" in done.output and "quadratic_with_maker_fees" in done.output
    assert "0.0175" in done.output
    listed = runner.invoke(app, ["data", "fees", "--city", "chicago", "--db-url", url])
    assert listed.exit_code == 0 and "quadratic_with_maker_fees" in listed.output
    # a flat series is stored (it is the exchange's word) and shown as not modelled
    assert refused.exit_code == 0 and "not modelled: set fees rates" in refused.output
    # and pricing from it is refused in one line, wherever fees are loaded
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    demo = runner.invoke(app, ["data", "demo", "--start", "2025-07-01", "--end", "2025-07-01", "--db-url", url])
    assert demo.exit_code == 0, demo.output
    replay = runner.invoke(app, ["serve-rt", "--replay", "2025-07-01", "--max-ticks", "2", "--db-url", url,
                                 "--config", str(Path(__file__).parents[2] / "configs" / "rt.yaml")])
    assert replay.exit_code == 2 and "Traceback" not in replay.output
    assert "series KXHIGHCHI: fee type 'flat' follows Kalshi's specific trading fees table" in replay.output
