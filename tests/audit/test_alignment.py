"""Pure time-alignment checks on hand-made frames (and the demo generator, in memory)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from kwx.cities import get_city
from kwx.data.demo import generate_city
from kwx.domain import alignment

CHICAGO = get_city("chicago")


def _utc(*args) -> pd.Timestamp:
    return pd.Timestamp(datetime(*args, tzinfo=UTC))


def test_dst_days_of_2025_in_chicago():
    days = alignment.dst_transition_days(CHICAGO, date(2025, 1, 1), date(2025, 12, 31))
    assert days["date"].tolist() == [date(2025, 3, 9), date(2025, 11, 2)]
    assert days["clock_day_hours"].tolist() == [23.0, 25.0]
    assert days["change"].tolist() == ["spring forward", "fall back"]
    # The climate day stays 24 h; on the clock it starts at midnight CST / 01:00 CDT.
    assert days["climate_day_hours"].tolist() == [24.0, 24.0]
    assert days["climate_day_start_clock"].tolist() == ["00:00 CST", "01:00 CDT"]
    assert days["climate_day_end_clock"].tolist() == ["01:00 CDT", "00:00 CST"]
    whole_year = alignment.clock_days(CHICAGO, date(2025, 1, 1), date(2025, 12, 31))
    assert len(whole_year) == 365 and set(whole_year["climate_day_hours"]) == {24.0}
    # Climate days that start in daylight time: 03-10 through 11-02 (which starts at 01:00 CDT).
    assert whole_year["daylight_time"].sum() == (date(2025, 11, 3) - date(2025, 3, 10)).days


def test_no_dst_days_in_summer():
    assert alignment.dst_transition_days(CHICAGO, date(2025, 6, 1), date(2025, 8, 31)).empty


def _markets() -> pd.DataFrame:
    # Climate day 2025-07-10 (CST, UTC-6) ends 2025-07-11 06:00 UTC = 01:00 CDT on the clock.
    return pd.DataFrame({
        "ticker": ["OK-JUL", "LATE-JUL", "CLOCK-MIDNIGHT-JUL", "OK-JAN"],
        "event_date": [date(2025, 7, 10)] * 3 + [date(2025, 1, 10)],
        "open_time": [_utc(2025, 7, 9, 16)] * 3 + [_utc(2025, 1, 9, 16)],
        "close_time": [_utc(2025, 7, 11, 6), _utc(2025, 7, 11, 7), _utc(2025, 7, 11, 5), _utc(2025, 1, 11, 6)],
    })


def test_market_closing_an_hour_late_is_flagged():
    bad = alignment.close_time_mismatches(_markets(), CHICAGO)
    # Closing at clock midnight during daylight time is the classic DST slip: an hour early in LST.
    assert dict(zip(bad["ticker"], bad["offset_minutes"], strict=True)) == {"LATE-JUL": 60.0,
                                                                           "CLOCK-MIDNIGHT-JUL": -60.0}
    assert bad["expected_close"].tolist() == [_utc(2025, 7, 11, 6)] * 2
    assert alignment.close_time_mismatches(_markets(), CHICAGO, tolerance=timedelta(hours=1)).empty


def test_candle_after_close_and_before_open_are_flagged():
    markets = _markets().iloc[[0]]
    open_s, close_s = int(_utc(2025, 7, 9, 16).timestamp()), int(_utc(2025, 7, 11, 6).timestamp())
    candles = pd.DataFrame({"market_ticker": "OK-JUL",
                            "end_period_ts": [open_s, open_s + 60, close_s - 60, close_s, close_s + 60]})
    result = alignment.candle_alignment(candles, markets, CHICAGO)
    assert result["candles"] == 5
    assert result["after_close"] == 1 and result["before_open"] == 1
    offenders = result["offenders"]
    assert offenders["ticker"].tolist() == ["OK-JUL"]
    assert offenders["max_seconds_after_close"].tolist() == [60]
    # Minute starts: 09 10:00 CST (x2: the day before), 10 23:58 and 23:59 CST (event day), 11 00:00 (after).
    assert result["climate_day_offset"] == {-1: 2, 0: 2, 1: 1}
    clean = alignment.candle_alignment(candles.iloc[1:4], markets, CHICAGO)
    assert clean["after_close"] == clean["before_open"] == 0 and clean["offenders"].empty


def test_two_hour_weather_gap_is_flagged():
    stamps = pd.Series(pd.date_range(_utc(2025, 7, 10, 0), _utc(2025, 7, 10, 6), freq="5min"))
    observed = stamps[(stamps <= _utc(2025, 7, 10, 1)) | (stamps >= _utc(2025, 7, 10, 3))]
    gaps = alignment.weather_gaps(observed, timedelta(minutes=30))
    assert len(gaps) == 1
    assert gaps.iloc[0].to_dict() == {"gap_start": _utc(2025, 7, 10, 1), "gap_end": _utc(2025, 7, 10, 3),
                                      "minutes": 120.0}
    assert alignment.weather_gaps(observed, timedelta(minutes=120)).empty
    # A period that starts 45 minutes before the first observation has a leading gap too, listed first if largest.
    edged = alignment.weather_gaps(observed, timedelta(minutes=30), since=_utc(2025, 7, 9, 23, 15),
                                   until=_utc(2025, 7, 10, 6, 10))
    assert edged["minutes"].tolist() == [120.0, 45.0]


def test_the_three_day_cuts_on_a_hand_made_day():
    # July: clock = CDT (UTC-5), LST = CST (UTC-6).
    weather = pd.DataFrame({
        "ts_utc": [_utc(2025, 7, 10, 5, 30),  # 23:30 CST on the 9th = 00:30 CDT on the 10th: LST day 9
                   _utc(2025, 7, 10, 21),      # 15:00 CST on the 10th
                   _utc(2025, 7, 11, 2)],      # 20:00 CST on the 10th = 11th in UTC
        "temp_f": [90.4, 80.6, 84.5],
    })
    settlements = pd.Series([90.0, 85.0], index=[date(2025, 7, 9), date(2025, 7, 10)])
    frame = alignment.settlement_agreement(weather, settlements, CHICAGO)
    # Only the 10th has observations under every cut; 84.5 rounds half up to 85 like the climate report.
    assert frame.index.tolist() == [date(2025, 7, 10)]
    assert frame.iloc[0].to_dict() == {"settlement": 85.0, "lst": 85.0, "clock": 90.0, "utc": 90.0}
    rates = alignment.agreement_rates(frame)
    assert rates["exact"] == {"lst": 1.0, "clock": 0.0, "utc": 0.0}
    assert rates["decisive"]["clock"] == {"days": 1, "lst_matches": 1, "clock_matches": 0}
    assert rates["best"] == "lst" and rates["passed"]


def test_agreement_fails_when_the_settlement_follows_utc_days():
    frame = pd.DataFrame({"settlement": [70.0, 71.0], "lst": [69.0, 71.0], "clock": [69.0, 71.0],
                          "utc": [70.0, 71.0]})
    rates = alignment.agreement_rates(frame)
    assert rates["best"] == "utc" and not rates["passed"]
    assert alignment.agreement_rates(frame.iloc[:0])["passed"] is False


def test_no_observations_means_no_agreement_measured():
    weather = pd.DataFrame({"ts_utc": pd.Series([], dtype="datetime64[ns, UTC]"), "temp_f": pd.Series([], dtype=float)})
    frame = alignment.settlement_agreement(weather, pd.Series([85.0], index=[date(2025, 7, 10)]), CHICAGO)
    assert frame.empty
    rates = alignment.agreement_rates(frame)
    assert rates["days"] == 0 and rates["best"] is None and rates["passed"] is False
    assert len(alignment.weather_gaps(weather["ts_utc"], timedelta(minutes=30), since=_utc(2025, 7, 10, 6),
                                      until=_utc(2025, 7, 11, 6))) == 1


def test_whole_degrees_round_half_up():
    np.testing.assert_array_equal(alignment.whole_degrees([84.5, 85.5, 84.49, -0.5]), [85, 86, 84, 0])


@pytest.fixture(scope="module")
def demo_summer():
    return generate_city("chicago", date(2025, 6, 1), date(2025, 8, 31), seed=7)


def test_lst_agreement_beats_utc_on_demo_data(demo_summer):
    settled = pd.Series(demo_summer.climate_daily["tmax_f"].to_numpy(dtype=float),
                        index=list(demo_summer.climate_daily["climate_date"]))
    frame = alignment.settlement_agreement(demo_summer.weather_minutes, settled, CHICAGO)
    rates = alignment.agreement_rates(frame)
    assert rates["days"] >= 90
    assert rates["exact"]["lst"] > rates["exact"]["utc"]
    assert rates["exact"]["lst"] >= rates["exact"]["clock"]
    assert rates["passed"] and rates["best"] == "lst"
    utc = rates["decisive"]["utc"]
    assert utc["days"] > 0 and utc["lst_matches"] > utc["utc_matches"]


def test_demo_markets_and_candles_line_up(demo_summer):
    assert alignment.close_time_mismatches(demo_summer.markets, CHICAGO).empty
    result = alignment.candle_alignment(demo_summer.candles, demo_summer.markets, CHICAGO)
    assert result["after_close"] == result["before_open"] == 0
    assert set(result["climate_day_offset"]) == {-1, 0}


def test_lock_margin_evidence_measures_the_observed_excess_over_the_settlement():
    # climate day 2025-07-01 in Chicago (LST = UTC-6): observed max 80.7, settled 80 -> 0.7 above
    weather = pd.DataFrame({"ts_utc": [_utc(2025, 7, 1, 18), _utc(2025, 7, 1, 21)], "temp_f": [79.0, 80.7]})
    settlements = pd.Series({date(2025, 7, 1): 80.0})
    tight = alignment.lock_margin_evidence(weather, settlements, CHICAGO, 0.1)
    assert tight["days"] == 1 and tight["max_above_settlement_f"] == pytest.approx(0.7)
    assert tight["margin_needed_f"] == pytest.approx(0.2) and not tight["passed"]  # 80.7 - 0.1 rounds to 81 > 80
    assert tight["days_a_lock_would_misjudge"] == 1
    assert alignment.lock_margin_evidence(weather, settlements, CHICAGO, 0.3)["passed"]


def test_demo_data_needs_far_less_than_the_default_lock_margin(demo_summer):
    evidence = alignment.lock_margin_evidence(demo_summer.weather_minutes, demo_summer.climate_daily.set_index(
        "climate_date")["tmax_f"], CHICAGO, 1.0)
    assert evidence["passed"] and evidence["days"] > 20
    assert evidence["margin_needed_f"] < 0.1  # 0.1 °F reports of a smooth curve: at most 0.05 above its maximum
