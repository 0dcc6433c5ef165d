"""Market rules: tickers, settlement and the climate day (money-relevant, so exhaustively tested)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kwx.cities import CITIES, get_city
from kwx.domain.markets import (
    LadderSpec,
    TickerError,
    climate_day,
    climate_day_bounds,
    climate_days_from_epoch,
    contract_from_ticker,
    format_ticker,
    locked_outcomes,
    parse_ticker,
    settlement_outcomes,
    to_local_standard,
    with_locked_outcomes,
)

CHICAGO = get_city("chicago")
series = st.sampled_from(sorted(c.series for c in CITIES.values()))
event_dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
half_strikes = st.integers(-40, 130).map(lambda x: x + 0.5)
whole_strikes = st.integers(-40, 130).map(float)


# --- tickers ---------------------------------------------------------------------------------------

def test_parses_the_documented_example():
    parts = parse_ticker("KXHIGHCHI-25NOV28-B33.5")
    assert (parts.series, parts.event_date, parts.kind, parts.strike) == ("KXHIGHCHI", date(2025, 11, 28), "B", 33.5)
    assert parts.city.key == "chicago"
    assert parts.event_ticker == "KXHIGHCHI-25NOV28"


@pytest.mark.parametrize(
    ("ticker", "strike_type", "bracket", "floor", "cap"),
    [
        ("KXHIGHCHI-25NOV28-B33.5", None, "between", 33, 34),
        ("KXHIGHCHI-25NOV28-B33.5", "between", "between", 33, 34),
        ("KXHIGHNY-25JUL04-T90", "greater", "greater", 90, None),
        ("KXHIGHMIA-25JAN01-T70", "less", "less", None, 70),
        ("KXHIGHDEN-26FEB02-B-3.5", None, "between", -4, -3),
    ],
)
def test_contract_from_ticker(ticker, strike_type, bracket, floor, cap):
    contract = contract_from_ticker(ticker, strike_type)
    assert (contract.bracket, contract.floor, contract.cap) == (bracket, floor, cap)


@pytest.mark.parametrize(
    ("ticker", "message"),
    [
        ("KXHIGHCHI-25NOV28", "not of the form"),
        ("KXHIGHCHI-25NOV28-X33.5", "not of the form"),
        ("kxhighchi-25NOV28-B33.5", "not of the form"),
        ("KXHIGHCHI-25FOO28-B33.5", "unknown month 'FOO'"),
        ("KXHIGHCHI-25FEB30-B33.5", "invalid event date"),
        ("KXHIGHCHI-25NOV28-B33.5 ", "not of the form"),
    ],
)
def test_malformed_tickers_are_named(ticker, message):
    with pytest.raises(TickerError, match=message) as info:
        parse_ticker(ticker)
    assert repr(ticker) in str(info.value)


def test_tail_ticker_needs_its_direction():
    with pytest.raises(TickerError, match="strike_type must be 'greater' or 'less'"):
        contract_from_ticker("KXHIGHCHI-25NOV28-T40")
    with pytest.raises(TickerError, match="is a between bracket"):
        contract_from_ticker("KXHIGHCHI-25NOV28-B33.5", "greater")


def test_unknown_series_is_named():
    with pytest.raises(ValueError, match="unknown Kalshi series 'KXHIGHGOTHAM'"):
        contract_from_ticker("KXHIGHGOTHAM-25NOV28-B33.5")


@given(series, event_dates, st.sampled_from(["B", "T"]), st.one_of(half_strikes, whole_strikes))
def test_format_parse_round_trip(series_, day, kind, strike):
    ticker = format_ticker(series_, day, kind, strike)
    parts = parse_ticker(ticker)
    assert (parts.series, parts.event_date, parts.kind, parts.strike) == (series_, day, kind, strike)
    assert parts.ticker == ticker


# --- settlement ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("bracket", "floor", "cap", "tmax", "wins"),
    [
        ("between", 33, 34, 32, False),
        ("between", 33, 34, 33, True),  # both bounds are inclusive
        ("between", 33, 34, 34, True),
        ("between", 33, 34, 35, False),
        ("greater", 40, None, 40, False),  # strictly greater
        ("greater", 40, None, 41, True),
        ("less", None, 33, 33, False),  # strictly less
        ("less", None, 33, 32, True),
    ],
)
def test_settlement_rule_boundaries(bracket, floor, cap, tmax, wins):
    assert settlement_outcomes([bracket], [floor], [cap], [tmax])[0] == float(wins)


def test_unknown_high_is_nan_not_a_loss():
    out = settlement_outcomes(["between", "less"], [33, None], [34, 40], [np.nan, 30])
    assert np.isnan(out[0]) and out[1] == 1.0


def test_settlement_rejects_unknown_bracket_and_missing_strike():
    with pytest.raises(ValueError, match="unknown bracket"):
        settlement_outcomes(["above"], [1], [2], [3])
    with pytest.raises(ValueError, match="floor strike missing"):
        settlement_outcomes(["greater"], [None], [None], [3])


@given(
    series, event_dates, st.integers(-30, 110), st.integers(1, 10), st.integers(-60, 150)
)
def test_exactly_one_bracket_of_a_ladder_wins(series_, day, lowest_cap, n_between, tmax):
    contracts = LadderSpec(series_, day, lowest_cap, n_between).contracts()
    assert len(contracts) == n_between + 2
    assert sum(c.wins(tmax) for c in contracts) == 1
    # every ticker round-trips to the same contract given its strike type
    for c in contracts:
        assert contract_from_ticker(c.ticker, c.bracket) == c


# --- climate day -----------------------------------------------------------------------------------

def test_climate_day_runs_one_to_one_clock_time_during_dst():
    # 2025-07-15 05:30 UTC is 00:30 CDT on the 15th but 23:30 CST on the 14th: still the 14th's climate day.
    assert climate_day(datetime(2025, 7, 15, 5, 30, tzinfo=UTC), CHICAGO) == date(2025, 7, 14)
    assert climate_day(datetime(2025, 7, 15, 6, 0, tzinfo=UTC), CHICAGO) == date(2025, 7, 15)
    # In winter standard time and clock time agree: midnight CST = 06:00 UTC.
    assert climate_day(datetime(2025, 1, 15, 5, 59, tzinfo=UTC), CHICAGO) == date(2025, 1, 14)
    assert climate_day(datetime(2025, 1, 15, 6, 0, tzinfo=UTC), CHICAGO) == date(2025, 1, 15)


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="no time zone"):
        climate_day(datetime(2025, 7, 15, 5, 30), CHICAGO)


@pytest.mark.parametrize("city_key", sorted(CITIES))
@pytest.mark.parametrize("day", [date(2025, 3, 9), date(2025, 11, 2), date(2025, 3, 8), date(2025, 11, 1)])
def test_dst_transition_days_are_24_hours_of_standard_time(city_key, day):
    city = get_city(city_key)
    start, end = climate_day_bounds(day, city)
    assert end - start == timedelta(hours=24)
    local_start = start.astimezone(city.zone)
    # Starts at 00:00 clock time in standard time, 01:00 clock time while DST is in force.
    assert local_start.hour == (1 if local_start.dst() else 0)
    assert local_start.minute == 0


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)),
       st.sampled_from(sorted(CITIES)))
def test_climate_day_matches_bounds_and_vectorised_form(ts, city_key):
    city = get_city(city_key)
    day = climate_day(ts, city)
    start, end = climate_day_bounds(day, city)
    assert start <= ts < end
    local = ts.astimezone(city.zone)
    # Standard time is clock time minus the DST shift, whichever side of a transition we are on.
    assert to_local_standard(ts, city) == (local - local.dst()).replace(tzinfo=None)
    epoch = int(ts.timestamp() // 1)
    assert climate_days_from_epoch(np.array([epoch]), city)[0] == np.datetime64(day)


@given(st.datetimes(min_value=datetime(2024, 3, 9), max_value=datetime(2024, 3, 11), timezones=st.just(UTC))
       | st.datetimes(min_value=datetime(2024, 11, 2), max_value=datetime(2024, 11, 4), timezones=st.just(UTC)))
def test_climate_day_is_monotonic_across_transitions(ts):
    later = ts + timedelta(minutes=1)
    for city in CITIES.values():
        assert 0 <= (climate_day(later, city) - climate_day(ts, city)).days <= 1


# --- locked outcomes ------------------------------------------------------------------------------

def _whole(x):
    return np.floor(np.asarray(x, dtype=float) + 0.5)  # the climate report's rounding, half up


@pytest.mark.parametrize(("bracket", "floor", "cap", "running_max", "margin", "expected"), [
    # greater (T > 80): YES once the high is surely >= 81
    ("greater", 80, None, 80.4, 0, np.nan), ("greater", 80, None, 80.5, 0, 1.0), ("greater", 80, None, 81.4, 1, np.nan),
    ("greater", 80, None, 81.5, 1, 1.0),
    # less (T < 80): NO once the high is surely >= 80
    ("less", None, 80, 79.4, 0, np.nan), ("less", None, 80, 79.5, 0, 0.0), ("less", None, 80, 80.49, 1, np.nan),
    ("less", None, 80, 80.5, 1, 0.0),
    # between 80-81: NO once the high is surely >= 82; never YES before the day ends
    ("between", 80, 81, 81.4, 0, np.nan), ("between", 80, 81, 81.5, 0, 0.0), ("between", 80, 81, 80.7, 0, np.nan),
    ("between", 80, 81, 82.49, 1, np.nan), ("between", 80, 81, 82.5, 1, 0.0),
    # no observation yet: nothing is decided
    ("greater", 80, None, np.nan, 0, np.nan), ("less", None, 80, np.nan, 0, np.nan),
])
def test_lock_boundaries(bracket, floor, cap, running_max, margin, expected):
    got = locked_outcomes([bracket], [np.nan if floor is None else floor], [np.nan if cap is None else cap],
                          [running_max], margin)
    np.testing.assert_array_equal(got, [expected])


@pytest.mark.parametrize("margin", [-0.1, np.nan, np.inf])
def test_lock_margin_must_be_finite_and_non_negative(margin):
    with pytest.raises(ValueError, match="lock margin"):
        locked_outcomes(["greater"], [80.0], [np.nan], [90.0], margin)


def test_locked_probabilities_replace_only_locked_rows():
    np.testing.assert_array_equal(with_locked_outcomes([0.3, 0.6, 0.9], [np.nan, 0.0, 1.0]), [0.3, 0.0, 1.0])


def _ladder(lowest_cap: int, n_between: int):
    contracts = LadderSpec("KXHIGHCHI", date(2025, 7, 1), lowest_cap, n_between).contracts()
    return ([c.bracket for c in contracts], [np.nan if c.floor is None else c.floor for c in contracts],
            [np.nan if c.cap is None else c.cap for c in contracts])


observation_days = st.lists(st.floats(-30, 120, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=300)
@given(observation_days, st.integers(-30, 110), st.integers(1, 6), st.floats(0, 3))
def test_a_lock_always_matches_the_settlement_of_the_same_observations(temps, lowest_cap, n_between, margin):
    """At every point of a random day, whatever the margin, a locked outcome is the day's final outcome."""
    brackets, floors, caps = _ladder(lowest_cap, n_between)
    settled = settlement_outcomes(brackets, floors, caps, [_whole(max(temps))] * len(brackets))
    running = np.maximum.accumulate(temps)
    for seen in running:
        locked = locked_outcomes(brackets, floors, caps, [seen] * len(brackets), margin)
        decided = ~np.isnan(locked)
        np.testing.assert_array_equal(locked[decided], settled[decided])


@settings(max_examples=300)
@given(observation_days, st.integers(-30, 110), st.integers(1, 6))
def test_at_the_close_with_no_margin_every_outcome_the_maximum_decides_is_locked(temps, lowest_cap, n_between):
    """Exactly the outcomes a rising maximum can settle are locked: greater YES, less NO, between NO above."""
    brackets, floors, caps = _ladder(lowest_cap, n_between)
    high = _whole(max(temps))
    locked = locked_outcomes(brackets, floors, caps, [max(temps)] * len(brackets), 0.0)
    b, f, c = np.asarray(brackets), np.asarray(floors), np.asarray(caps)
    decidable = ((b == "greater") & (high > f)) | ((b == "less") & (high >= c)) | ((b == "between") & (high > c))
    np.testing.assert_array_equal(~np.isnan(locked), decidable)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.floats(-30, 120, allow_nan=False), st.floats(0, 1)), min_size=1, max_size=60),
       st.integers(-30, 110), st.integers(1, 6), st.floats(0, 1.5), st.floats(0, 1.5))
def test_observations_off_by_at_most_the_margin_never_lock_wrongly(truth, lowest_cap, n_between, error, extra):
    """Stored observations may read up to ``error`` °F above the report's sensor (°C rounding, 5-minute
    samples); with a margin of at least that, a lock still agrees with the official settlement."""
    true_temps = np.array([t for t, _ in truth])
    observed = true_temps + np.array([u for _, u in truth]) * error  # never more than `error` above the truth
    brackets, floors, caps = _ladder(lowest_cap, n_between)
    settled = settlement_outcomes(brackets, floors, caps, [_whole(true_temps.max())] * len(brackets))
    for seen in np.maximum.accumulate(observed):
        locked = locked_outcomes(brackets, floors, caps, [seen] * len(brackets), error + extra)
        decided = ~np.isnan(locked)
        np.testing.assert_array_equal(locked[decided], settled[decided])
