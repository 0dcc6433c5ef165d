"""Forecasts as point-in-time data: the as-of pick, the error scale, the physical prior and its features."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kwx.cities import get_city
from kwx.domain.features import build_features, feature_columns
from kwx.domain.forecast import (
    ERROR_LOOKBACK_DAYS,
    FORECAST_FEATURES,
    OBSERVED_MAX_SD_F,
    ForecastData,
    ScaleTable,
    censored_mass,
    consensus_history,
    error_scales,
    forecast_states,
    group_keys,
    prior_error_sd,
    remaining_day,
)
from kwx.domain.markets import LadderSpec, bracket_bounds, climate_day_bounds, locked_outcomes

CHICAGO = get_city("chicago")


def bracket_prior(lo, hi, running_max, rest_mean, rest_sd):
    """The prior at one observed maximum taken as exact: the rest of the day's normal CDFs, censored at it."""
    from scipy.special import ndtr

    return np.minimum(censored_mass(ndtr((hi - rest_mean) / rest_sd), ndtr((lo - rest_mean) / rest_sd), lo, hi,
                                    running_max), 1.0)
DAY = date(2025, 7, 18)
START, _ = climate_day_bounds(DAY, CHICAGO)
T0 = int(START.timestamp())  # 00:00 local standard time of DAY
NO_SCALES = pd.DataFrame(columns=["city", "climate_date", "horizon", "bias_f", "sd_f", "n_days"])


def _forecast(available_ts: int, high: float, model: str = "gfs_seamless", member: int = 0, lead: int = 0,
              ensemble: bool = False, day: date = DAY, city: str = "chicago") -> dict:
    return {"city": city, "climate_date": day, "model": model, "member": member, "run_ts": available_ts - 5 * 3600,
            "available_ts": available_ts, "lead_days": lead, "high_f": high, "ensemble": ensemble}


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["city", "climate_date", "model", "member", "run_ts", "available_ts",
                                       "lead_days", "high_f", "ensemble"])


def _market(bracket="between", floor=84.0, cap=85.0) -> pd.DataFrame:
    return pd.DataFrame({"ticker": ["KXHIGHCHI-25JUL18-B84.5"], "event_date": [DAY], "strike_type": [bracket],
                         "floor_strike": [floor], "cap_strike": [cap],
                         "close_time": [pd.Timestamp(T0 + 86_400, unit="s", tz="UTC")]})


def _candles(offsets_minutes) -> pd.DataFrame:
    ts = [T0 + 60 * m for m in offsets_minutes]
    return pd.DataFrame({"market_ticker": "KXHIGHCHI-25JUL18-B84.5", "end_period_ts": ts, "yes_bid_close": 40.0,
                         "yes_ask_close": 42.0, "volume": 1.0})


def _weather(offsets_minutes, temps) -> pd.DataFrame:
    return pd.DataFrame({"ts_utc": pd.to_datetime([T0 + 60 * m for m in offsets_minutes], unit="s", utc=True),
                         "temp_f": temps, "dew_f": 60.0, "humidity_pct": 50.0, "wind_mph": 5.0})


def _features(forecasts: list[dict], candle_minutes, weather=None, lock_margin_f: float = 1.0) -> pd.DataFrame:
    weather = weather if weather is not None else _weather([m - 1 for m in candle_minutes], [75.0] * len(
        candle_minutes))
    data = ForecastData(_frame(forecasts), NO_SCALES)
    return build_features(_candles(candle_minutes), _market(), weather, CHICAGO, forecasts=data,
                          lock_margin_f=lock_margin_f).set_index("end_period_ts")


def test_a_forecast_public_one_second_after_t_never_enters_the_row_at_t():
    at = T0 + 9 * 3600  # the candle ending 09:00 LST
    early = _forecast(T0, 80.0)
    planted = _forecast(at + 1, 99.0)
    rows = _features([early, planted], [9 * 60, 9 * 60 + 1])
    assert rows.loc[at, "fc_high"] == pytest.approx(80.0)
    assert rows.loc[at + 60, "fc_high"] == pytest.approx(99.0)  # public by the next minute
    exactly = _features([early, _forecast(at, 99.0)], [9 * 60])
    assert exactly.loc[at, "fc_high"] == pytest.approx(99.0)  # public at t: usable at t


def test_a_later_revision_does_not_rewrite_an_earlier_row():
    first = _forecast(T0 - 6 * 3600, 80.0, lead=1)
    revised = _forecast(T0 + 10 * 3600, 90.0)
    minutes = [5 * 60, 11 * 60]
    without = _features([first], minutes)
    with_revision = _features([first, revised], minutes)
    before = T0 + 5 * 3600
    pd.testing.assert_series_equal(without.loc[before, list(FORECAST_FEATURES)].astype(float),
                                   with_revision.loc[before, list(FORECAST_FEATURES)].astype(float))
    assert with_revision.loc[T0 + 11 * 3600, "fc_high"] == pytest.approx(90.0)


def test_consensus_spread_lead_age_and_ensemble_summaries():
    public = T0 + 3600
    rows = [_forecast(public, 80.0), _forecast(public, 84.0, model="ecmwf_ifs025"),
            _forecast(public - 7200, 70.0, lead=1)]  # an older gfs run, replaced by the newer one
    rows += [_forecast(public, h, model="gfs_ensemble", member=m, ensemble=True)
             for m, h in enumerate([83.0, 84.2, 84.9, 85.6, 88.0])]
    f = _features(rows, [2 * 60]).iloc[0]
    assert f["fc_high"] == pytest.approx(82.0)
    assert f["fc_source_spread"] == pytest.approx(4.0)
    assert f["fc_lead_days"] == 0
    assert f["fc_age_hours"] == pytest.approx(1.0)
    assert f["fc_ens_mean"] == pytest.approx(np.mean([83.0, 84.2, 84.9, 85.6, 88.0]))
    assert f["fc_ens_in_bracket"] == pytest.approx(2 / 5)  # [83.5, 85.5) holds 84.2 and 84.9


def test_ensemble_vote_is_censored_at_the_running_max():
    public = T0 + 3600
    members = [_forecast(public, h, model="gfs_ensemble", member=m, ensemble=True)
               for m, h in enumerate([80.0, 81.0, 84.0, 86.0])]
    # by 14:00 the day already reached 84.0: members below it will settle at least there
    minutes = [14 * 60]
    weather = _weather([13 * 60, 14 * 60 - 1], [84.0, 83.0])
    f = _features(members, minutes, weather).iloc[0]
    # 80, 81 → at least the true max so far (84.0 ± OBSERVED_MAX_SD_F, all of it inside [83.5, 85.5) but for the
    # lowest Gauss-Hermite node, 83.0): 84 in, 86 out
    assert f["fc_ens_in_bracket"] == pytest.approx(0.75 - 0.5 * 0.011257, abs=1e-4)


def test_stale_forecast_is_missing():
    rows = [_forecast(T0 - 40 * 3600, 80.0, lead=2)]
    f = _features(rows, [60], )
    assert f[list(FORECAST_FEATURES)].isna().all(axis=None)
    fresh = build_features(_candles([60]), _market(), _weather([59], [75.0]), CHICAGO,
                           forecasts=ForecastData(_frame(rows), NO_SCALES), max_forecast_age_hours=48)
    assert fresh["fc_high"].notna().all()


def test_without_forecasts_every_forecast_feature_is_nan_and_the_set_drops_missing_bounds():
    f = build_features(_candles([60]), _market(), _weather([59], [75.0]), CHICAGO)
    assert f[list(FORECAST_FEATURES)].isna().all(axis=None)
    assert "fc_to_floor" not in feature_columns("elasticnet_forecast", "less")
    assert "fc_to_cap" not in feature_columns("elasticnet_forecast", "greater")


def _ladder_bounds(lowest_cap: int, n_between: int = 4):
    contracts = LadderSpec("KXHIGHCHI", DAY, lowest_cap, n_between).contracts()
    brackets = np.array([c.bracket for c in contracts], dtype=object)
    floors = np.array([np.nan if c.floor is None else c.floor for c in contracts])
    caps = np.array([np.nan if c.cap is None else c.cap for c in contracts])
    return brackets, floors, caps


@settings(max_examples=300, deadline=None)
@given(mu=st.floats(40, 110), sd=st.floats(0.3, 8), lowest_cap=st.integers(50, 100),
       running_max=st.one_of(st.none(), st.floats(30, 120)), hour=st.floats(0, 24),
       temp_offset=st.floats(-15, 0), margin=st.sampled_from([0.0, 0.5, 1.0]))
def test_prior_over_a_ladder_sums_to_one_and_agrees_with_every_lock(mu, sd, lowest_cap, running_max, hour,
                                                                     temp_offset, margin):
    brackets, floors, caps = _ladder_bounds(lowest_cap)
    lo, hi = bracket_bounds(brackets, floors, caps)
    n = len(brackets)
    seen = np.full(n, np.nan if running_max is None else running_max)
    started = ~np.isnan(seen)
    temp_now = np.where(started, np.nan_to_num(seen) + temp_offset, np.nan)
    mean, spread = remaining_day(np.full(n, mu), np.full(n, sd), np.full(n, hour), temp_now, started)
    p = bracket_prior(lo, hi, seen, mean, spread)
    assert np.all((p >= 0) & (p <= 1))
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    decided = locked_outcomes(brackets, floors, caps, seen, margin)
    locked = ~np.isnan(decided)
    assert np.array_equal(p[locked], decided[locked])
    if running_max is not None:
        assert np.all(p[hi <= running_max] == 0)  # a bracket wholly below the running max


def _mass_at_bound(below_hi, below_lo, lo, hi, bound):
    """The definition, one bound at a time: mass below the bound piles onto it (NaN: nothing bounds the high)."""
    floor_seen = np.where(np.isnan(bound), -np.inf, bound)
    below = np.where(floor_seen >= lo, 0.0, below_lo)
    return np.where(floor_seen >= hi, 0.0, np.clip(below_hi - below, 0.0, None))


@settings(max_examples=300, deadline=None)
@given(quarters=st.lists(st.tuples(st.integers(300, 420), st.integers(0, 12),
                                   st.one_of(st.none(), st.integers(280, 440)), st.floats(0, 1), st.floats(0, 1)),
                         min_size=1, max_size=20),
       eighths=st.lists(st.integers(-12, 12), min_size=1, max_size=6, unique=True),
       weights=st.lists(st.floats(0.01, 1), min_size=6, max_size=6))
def test_censored_mass_over_shifts_is_the_weighted_mass_at_each_shifted_bound(quarters, eighths, weights):
    """The closed form (two lookups in the cumulative weights) is the sum over shifts it replaces. Values on
    quarter and eighth degrees keep the sums exact, so a bound exactly at a bracket's edge is tested too."""
    lo = np.array([q[0] / 4 for q in quarters])
    hi = lo + np.array([q[1] / 4 + 0.25 for q in quarters])
    lo[::3], hi[1::4] = -np.inf, np.inf  # the ladder's open-ended brackets
    running_max = np.array([np.nan if q[2] is None else q[2] / 4 for q in quarters])
    # masses as a CDF gives them: none below -inf, all below +inf
    below_lo = np.where(np.isinf(lo), 0.0, np.array([min(q[3], q[4]) for q in quarters]))
    below_hi = np.where(np.isinf(hi), 1.0, np.array([max(q[3], q[4]) for q in quarters]))
    shifts = np.sort(np.array(eighths) / 8)
    w = np.array(weights[:len(shifts)])
    expected = sum(weight * _mass_at_bound(below_hi, below_lo, lo, hi, running_max + shift)
                   for shift, weight in zip(shifts, w, strict=True))
    np.testing.assert_allclose(censored_mass(below_hi, below_lo, lo, hi, running_max, shifts, w), expected,
                               rtol=1e-12, atol=1e-12)


def test_prior_rounds_like_settlement():
    # a high of exactly 84.5 settles 85 (half up): between 84-85 pays, greater-than-85 does not
    lo, hi = bracket_bounds(np.array(["between", "greater", "less"], dtype=object), np.array([84.0, 85.0, np.nan]),
                            np.array([85.0, np.nan, 84.0]))
    assert list(lo) == [83.5, 85.5, -np.inf] and list(hi) == [85.5, np.inf, 83.5]


def test_prior_narrows_after_the_peak():
    mu, sd = np.array([90.0]), np.array([3.0])
    morning = remaining_day(mu, sd, np.array([9.0]), np.array([70.0]), np.array([True]))
    evening = remaining_day(mu, sd, np.array([19.0]), np.array([80.0]), np.array([True]))
    assert morning == (pytest.approx(mu), pytest.approx(np.sqrt(9 + 0.36)))
    assert evening[0][0] == pytest.approx(80.5) and evening[1][0] < 1
    # in the evening a day that peaked at 82 settles at 82 whatever the morning forecast said
    p = bracket_prior(np.array([81.5]), np.array([83.5]), np.array([82.0]), *evening)
    assert p[0] > 0.99


def _history(days: int, sd: float, bias: float, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2025-03-01", periods=days, freq="D").date
    truth = 70 + 10 * rng.standard_normal(days)
    rows = []
    for d, t in zip(dates, truth, strict=True):
        start = int(climate_day_bounds(d, CHICAGO)[0].timestamp())
        rows.append(_forecast(start - 3600, t - bias + sd * rng.standard_normal(), day=d))
    settled = pd.DataFrame({"city": "chicago", "climate_date": dates, "tmax_f": np.round(truth)})
    return _frame(rows), settled


def test_error_scale_learns_bias_and_sd_from_settled_days_only():
    forecasts, settled = _history(200, sd=2.5, bias=1.5)
    offsets = {"chicago": int(CHICAGO.standard_offset.total_seconds())}
    history = consensus_history(forecasts, offsets)
    target = date(2025, 9, 1)
    scales = error_scales(history, settled, [target])
    at_start = scales[scales["horizon"] == 0].iloc[0]
    assert at_start["n_days"] == ERROR_LOOKBACK_DAYS - 1  # [D-90, D-2]
    assert at_start["bias_f"] == pytest.approx(1.5, abs=0.5)
    assert at_start["sd_f"] == pytest.approx(2.5, abs=0.5)
    # no lookahead: the target day's own settlement and the day before's change nothing
    moved = settled.copy()
    moved.loc[moved["climate_date"] >= date(2025, 8, 31), "tmax_f"] += 40
    pd.testing.assert_frame_equal(scales, error_scales(history, moved, [target]))


def test_scale_lookup_of_runs_of_rows_equals_a_lookup_per_row():
    scales = pd.DataFrame({"city": "chicago", "climate_date": [DAY, DAY, date(2025, 7, 19)], "horizon": [-1, 0, 0],
                           "bias_f": [0.5, -0.25, 1.0], "sd_f": [2.0, 1.5, 1.25], "n_days": 30})
    table = ScaleTable(scales, {"chicago": 0})
    day, next_day = (pd.Timestamp(d).to_datetime64().astype("datetime64[D]").astype(np.int64)
                     for d in (DAY, date(2025, 7, 19)))
    # runs of one key, a key met again after another, a day and a horizon the table lacks (the prior)
    group = group_keys(np.zeros(9, np.int64), np.array([day, day, day, day, next_day, day, day, day + 5, day]))
    horizon = np.array([-1, -1, 0, 0, 0, -1, 3, 0, 0])
    bias, sd = table.lookup(group, horizon)
    for i in range(len(group)):
        assert (bias[i], sd[i]) == tuple(x[0] for x in table.lookup(group[i:i + 1], horizon[i:i + 1]))
    np.testing.assert_array_equal(bias, [0.5, 0.5, -0.25, -0.25, 1.0, 0.5, 0.0, 0.0, -0.25])
    np.testing.assert_array_equal(sd[[6, 7]], prior_error_sd(np.array([3, 0])))
    assert table.lookup(group[:0], horizon[:0])[0].shape == (0,)


def test_error_scale_without_history_is_the_climatological_prior():
    forecasts, settled = _history(5, sd=2.5, bias=0.0)
    history = consensus_history(forecasts, {"chicago": int(CHICAGO.standard_offset.total_seconds())})
    scales = error_scales(history, settled.iloc[:0], [date(2025, 3, 5)])
    assert (scales["n_days"] == 0).all() and (scales["bias_f"] == 0).all()
    assert np.allclose(scales["sd_f"], prior_error_sd(scales["horizon"]))
    assert prior_error_sd(0) < prior_error_sd(-4) < prior_error_sd(-8)  # the day vs a day ahead vs two


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_streaming_equals_batch(seed):
    """A row computed from only what was public at its time equals the same row of the whole-history batch."""
    rng = np.random.default_rng(seed)
    publish = np.sort(T0 - 30 * 3600 + rng.integers(0, 50 * 3600, 12))
    rows = [_forecast(int(t), float(80 + 5 * rng.standard_normal()), model=str(rng.choice(["a", "b", "e"])),
                      member=int(rng.integers(0, 3)), ensemble=False) for t in publish]
    for r in rows:
        r["ensemble"] = r["model"] == "e"
    minutes = sorted(set(rng.integers(-600, 1400, 15).tolist()))
    batch = _features(rows, minutes)
    for m in minutes:
        ts = T0 + 60 * m
        seen = [r for r in rows if r["available_ts"] <= ts]
        if not seen:
            assert batch.loc[ts, list(FORECAST_FEATURES)].isna().all()
            continue
        streamed = _features(seen, minutes).loc[ts]
        np.testing.assert_allclose(batch.loc[ts, list(FORECAST_FEATURES)].to_numpy(dtype=float),
                                   streamed[list(FORECAST_FEATURES)].to_numpy(dtype=float), equal_nan=True)


def test_states_of_several_cities_and_days_do_not_mix():
    austin = get_city("austin")
    a_start = int(climate_day_bounds(DAY, austin)[0].timestamp())
    rows = _frame([_forecast(T0, 80.0), _forecast(a_start, 99.0, city="austin"),
                   _forecast(T0, 60.0, day=date(2025, 7, 19))])
    states = forecast_states(rows, {"chicago": 0, "austin": 1})
    assert len(states.key) == 3
    assert datetime.fromtimestamp(int(states.time[0]), UTC) == START


def test_the_observed_max_bounds_the_prior_give_or_take_its_error_never_past_the_lock():
    """Observations peaked at 85.4, a tenth below the edge of 84-85: the true maximum may have been 85.5 between
    two samples, so the evening's prior keeps a share on 86-87 and most on 84-85, where an exact 0/1 would be
    wrong on the day the report reads 86; with no margin (the station is the settlement source) it never goes
    below the reading."""
    rows = [_forecast(T0, 84.0)]
    weather = _weather([15 * 60, 19 * 60 - 1], [85.4, 80.0])  # the afternoon's peak, then the evening
    here = _features(rows, [19 * 60], weather).iloc[0]["p_forecast"]
    assert 0.55 < here < 0.95
    above = build_features(_candles([19 * 60]), _market(floor=86.0, cap=87.0), weather, CHICAGO,
                           forecasts=ForecastData(_frame(rows), NO_SCALES)).iloc[0]["p_forecast"]
    assert 0.05 < above < 0.45 and here + above == pytest.approx(1, abs=0.01)
    below = build_features(_candles([19 * 60]), _market(floor=82.0, cap=83.0), weather, CHICAGO,
                           forecasts=ForecastData(_frame(rows), NO_SCALES), lock_margin_f=0.0).iloc[0]
    assert below["p_forecast"] == 0.0 and OBSERVED_MAX_SD_F > 0


def test_the_priors_log_odds_split_by_phase():
    rows = [_forecast(T0 - 3 * 3600, 84.0, lead=1)]
    f = _features(rows, [-60, 0, 60, 12 * 60 + 59, 13 * 60, 20 * 60])
    # the candle ending at 00:00 LST is the previous day's last minute; 13:00 LST starts the afternoon
    expected = ["forecast_logit_ahead"] * 2 + ["forecast_logit_morning"] * 2 + ["forecast_logit_late"] * 2
    names = ["forecast_logit_ahead", "forecast_logit_morning", "forecast_logit_late"]
    for (_, row), phase in zip(f.iterrows(), expected, strict=True):
        assert row[phase] == row["forecast_logit"] != 0
        assert all(row[other] == 0 for other in names if other != phase)


@settings(max_examples=60, deadline=None)
@given(forecast=st.floats(60, 100), lowest_cap=st.integers(65, 95), peak=st.floats(55, 105),
       minute=st.integers(-300, 1430), margin=st.sampled_from([0.0, 1.0]))
def test_the_features_prior_over_a_ladder_sums_to_one_and_agrees_with_every_lock(forecast, lowest_cap, peak, minute,
                                                                                 margin):
    contracts = LadderSpec("KXHIGHCHI", DAY, lowest_cap, 4).contracts()
    markets = pd.DataFrame({"ticker": [c.ticker for c in contracts], "event_date": DAY,
                            "strike_type": [c.bracket for c in contracts],
                            "floor_strike": [np.nan if c.floor is None else c.floor for c in contracts],
                            "cap_strike": [np.nan if c.cap is None else c.cap for c in contracts],
                            "close_time": pd.Timestamp(T0 + 86_400, unit="s", tz="UTC")})
    candles = pd.concat([_candles([minute]).assign(market_ticker=c.ticker) for c in contracts], ignore_index=True)
    weather = _weather([minute - 61, minute - 1], [peak, peak - 3])
    rows = build_features(candles, markets, weather, CHICAGO, lock_margin_f=margin,
                          forecasts=ForecastData(_frame([_forecast(T0 - 6 * 3600, forecast, lead=1)]), NO_SCALES))
    assert rows["p_forecast"].sum() == pytest.approx(1.0, abs=1e-9)
    decided = locked_outcomes(rows["bracket"], rows["floor_strike"], rows["cap_strike"], rows["day_max_so_far"],
                              margin)
    locked = ~np.isnan(decided)
    np.testing.assert_allclose(rows["p_forecast"].to_numpy()[locked], decided[locked], rtol=0, atol=1e-12)
