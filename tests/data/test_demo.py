"""The demo generator must look like the real thing: seasons, diurnal cycle, ladders, a market of chosen skill."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from kwx.cities import get_city
from kwx.data.dataset import has_demo_settlements
from kwx.data.demo import (
    MINUTES_PER_DAY,
    OBS_ROUNDING_MARGIN_F,
    decision_minutes,
    generate,
    generate_city,
    load_demo,
)
from kwx.data.store import upsert_frames
from kwx.domain.features import epoch_seconds
from kwx.domain.markets import climate_days_from_epoch, contract_from_ticker, locked_outcomes, parse_ticker
from kwx.domain.metrics import brier

CHICAGO = get_city("chicago")


@pytest.fixture(scope="module")
def summer():
    return generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=7)


def test_deterministic_for_a_seed(summer):
    again = generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=7)
    for name, frame in summer.frames().items():
        pd.testing.assert_frame_equal(frame, again.frames()[name], obj=name)
    other = generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=8)
    assert not other.climate_daily["tmax_f"].equals(summer.climate_daily["tmax_f"])


def test_seasonal_climatology():
    jan = generate_city("chicago", date(2025, 1, 1), date(2025, 1, 31), seed=1).climate_daily["tmax_f"].mean()
    jul = generate_city("chicago", date(2025, 7, 1), date(2025, 7, 31), seed=1).climate_daily["tmax_f"].mean()
    miami_jan = generate_city("miami", date(2025, 1, 1), date(2025, 1, 31), seed=1).climate_daily["tmax_f"].mean()
    assert 20 < jan < 45 and 75 < jul < 95 and jul - jan > 30
    assert miami_jan > jan + 25


def test_diurnal_cycle_in_local_standard_time(summer):
    wx = summer.weather_minutes
    ts = pd.to_datetime(wx["ts_utc"], utc=True)
    local_hour = ((ts - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds() // 3600
                  + CHICAGO.standard_offset.total_seconds() // 3600) % 24
    by_hour = wx["temp_f"].groupby(local_hour.to_numpy()).mean()
    assert 4 <= by_hour.idxmin() <= 8
    assert 13 <= by_hour.idxmax() <= 17
    assert by_hour.max() - by_hour.min() > 10


def test_weather_is_physically_consistent(summer):
    wx = summer.weather_minutes
    assert (wx["dew_f"] <= wx["temp_f"]).all()
    assert wx["humidity_pct"].between(1, 100).all()
    assert (wx["wind_mph"] >= 0).all()
    gaps = pd.to_datetime(wx["ts_utc"]).diff().dt.total_seconds().dropna()
    assert gaps.min() == 300 and gaps.max() > 1800  # 5-minute cadence with some outages


def test_settlement_high_bounds_the_observations(summer):
    wx = summer.weather_minutes
    days = climate_days_from_epoch(epoch_seconds(wx["ts_utc"]), CHICAGO)
    obs_max = wx["temp_f"].groupby(days).max()
    tmax = summer.climate_daily.set_index(pd.to_datetime(summer.climate_daily["climate_date"]))["tmax_f"]
    joined = pd.concat([obs_max.rename("obs"), tmax.rename("tmax")], axis=1, join="inner")
    # The 5-minute observations can miss the peak minute but never exceed the report by more than
    # its whole-degree rounding plus their own 0.1 °F rounding.
    assert (joined["obs"] <= joined["tmax"] + 0.55).all()
    assert (joined["tmax"] - joined["obs"]).mean() < 1.5


def test_ladders_are_real_kalshi_shaped(summer):
    markets = summer.markets
    assert markets["event_date"].min() == date(2025, 7, 1)
    for _, event in markets.groupby("event_ticker"):
        assert sorted(event["strike_type"]) == ["between"] * 4 + ["greater", "less"]
        assert (event["result"] == "yes").sum() == 1
        for row in event.itertuples():
            contract = contract_from_ticker(row.ticker, row.strike_type)
            assert (contract.floor, contract.cap) == (
                None if np.isnan(row.floor_strike) else row.floor_strike,
                None if np.isnan(row.cap_strike) else row.cap_strike,
            )
            assert contract.wins(int(row.expiration_value)) == (row.result == "yes")
            assert row.settlement_value == (100 if row.result == "yes" else 0)  # YES payout in cents
            assert parse_ticker(row.ticker).event_date == row.event_date
    winners = markets[markets["result"] == "yes"]["strike_type"].value_counts(normalize=True)
    assert winners.get("between", 0) > 0.5  # the ladder is centred on the forecast


def test_markets_open_the_day_before_and_close_at_the_end_of_the_climate_day(summer):
    m = summer.markets
    close_local = pd.to_datetime(m["close_time"]) + CHICAGO.standard_offset
    assert (close_local.dt.hour == 0).all()
    assert (close_local.dt.date == (pd.to_datetime(m["event_date"]) + pd.Timedelta(days=1)).dt.date).all()
    open_local = pd.to_datetime(m["open_time"]) + CHICAGO.standard_offset
    assert (open_local.dt.date == (pd.to_datetime(m["event_date"]) - pd.Timedelta(days=1)).dt.date).all()


def test_candles_are_quotes_inside_market_hours(summer):
    c = summer.candles.merge(summer.markets[["ticker", "open_time", "close_time"]],
                             left_on="market_ticker", right_on="ticker")
    end = pd.to_datetime(c["end_period_ts"], unit="s", utc=True)
    assert (end > c["open_time"]).all() and (end <= c["close_time"]).all()
    assert (c["yes_bid_close"] < c["yes_ask_close"]).all()
    assert c["yes_bid_close"].between(1, 98).all() and c["yes_ask_close"].between(2, 99).all()
    no_trade = c["volume"] == 0
    assert c.loc[no_trade, "price_close"].isna().all() and c.loc[~no_trade, "price_close"].notna().all()
    per_market = c.groupby("market_ticker").size()
    assert 1000 < per_market.mean() < 1700  # ~3 million candles a year for one city


def test_uninformed_market_sharpens_through_the_day_but_knows_less_than_the_weather():
    uninformed = generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=7, market_skill=0.0)
    c = uninformed.candles.merge(uninformed.markets[["ticker", "close_time", "result"]],
                                 left_on="market_ticker", right_on="ticker")
    p = (c["yes_bid_close"] + c["yes_ask_close"]) / 200
    y = (c["result"] == "yes").astype(float)
    hours_left = (pd.to_datetime(c["close_time"]) - pd.to_datetime(c["end_period_ts"], unit="s", utc=True))
    hours_left = hours_left.dt.total_seconds() / 3600
    brier_early = ((p - y) ** 2)[hours_left > 24].mean()
    brier_late = ((p - y) ** 2)[hours_left < 6].mean()
    assert brier_late < brier_early / 2
    # Even near the close the market is not an oracle: there is something for a model to learn.
    assert brier_late > 0.005


SKILLS = (0.0, 0.5, 1.0)
QUOTE_COLUMNS = [f"yes_{side}_{part}" for side in ("bid", "ask") for part in ("open", "high", "low", "close")] + [
    f"price_{part}" for part in ("open", "high", "low", "close", "mean")]  # trades print at the bid or the ask


@pytest.fixture(scope="module")
def by_skill():
    return {skill: generate_city("chicago", date(2025, 7, 1), date(2025, 7, 20), seed=7, market_skill=skill)
            for skill in SKILLS}


def test_market_skill_changes_only_the_quotes(by_skill):
    uninformed = by_skill[0.0]
    for skill in SKILLS[1:]:
        data = by_skill[skill]
        for name in ("markets", "weather_minutes", "climate_daily", "forecasts"):
            pd.testing.assert_frame_equal(data.frames()[name], uninformed.frames()[name], obj=name)
        others = data.candles.columns.difference(QUOTE_COLUMNS)
        pd.testing.assert_frame_equal(data.candles[others], uninformed.candles[others])
        pd.testing.assert_frame_equal(data.candles[QUOTE_COLUMNS].isna(), uninformed.candles[QUOTE_COLUMNS].isna())
        assert not data.candles["yes_bid_close"].equals(uninformed.candles["yes_bid_close"])


def _market_brier(data) -> float:
    """Brier score of the quotes' mid as the probability of YES, against the settled result."""
    c = data.candles.merge(data.markets[["ticker", "result"]], left_on="market_ticker", right_on="ticker")
    mid = (c["yes_bid_close"] + c["yes_ask_close"]).to_numpy() / 200
    return brier((c["result"] == "yes").to_numpy(dtype=float), mid)


def test_a_more_skilled_market_prices_better(by_skill):
    scores = [_market_brier(by_skill[skill]) for skill in SKILLS]
    assert scores[0] > scores[1] > scores[2], scores


@pytest.mark.parametrize("skill", [-0.1, 1.5, float("nan"), float("inf")])
def test_market_skill_outside_0_1_is_rejected(skill):
    with pytest.raises(ValueError, match=r"market_skill must be a number in \[0, 1\]"):
        generate_city("chicago", date(2025, 7, 1), date(2025, 7, 2), seed=7, market_skill=skill)
    with pytest.raises(ValueError, match="market_skill"):
        generate(["chicago"], date(2025, 7, 1), date(2025, 7, 2), seed=7, market_skill=skill)


def test_demo_settlements_are_recognised(engine):
    load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 2), seed=7)
    assert has_demo_settlements(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 2))
    assert has_demo_settlements(engine, ["nyc", "chicago"], date(2025, 7, 2), date(2025, 7, 9))
    assert not has_demo_settlements(engine, ["chicago"], date(2025, 8, 1), date(2025, 8, 9))
    real = pd.DataFrame({"station": [get_city("nyc").station], "climate_date": [date(2025, 7, 1)], "tmax_f": [88],
                         "source": ["kalshi_settlement"]})
    upsert_frames(engine, {"climate_daily": real})
    assert not has_demo_settlements(engine, ["nyc"], date(2025, 7, 1), date(2025, 7, 2))


@pytest.fixture(scope="module")
def season():
    return generate_city("chicago", date(2025, 5, 1), date(2025, 9, 30), seed=11)


def _errors(data) -> pd.DataFrame:
    f = data.forecasts
    tmax = data.climate_daily.set_index("climate_date")["tmax_f"]
    return f.assign(error=f["high_f"] - f["climate_date"].map(tmax).astype(float))


def test_forecast_errors_are_realistic_by_lead(season):
    det = _errors(season).query("not ensemble")
    by_lead = det.groupby(["model", "lead_days"])["error"].std()
    for model in ("gfs_seamless", "ecmwf_ifs025"):
        assert 1.2 <= by_lead[(model, 0)] <= 2.2  # same-day ≈ 1.5-2 °F
        assert 2.3 <= by_lead[(model, 1)] <= 3.6  # day-ahead ≈ 2.5-3.5 °F
        assert by_lead[(model, 3)] > by_lead[(model, 1)]
    bias = det.groupby("model")["error"].mean()
    assert bias["gfs_seamless"] > 0.5 and bias["ecmwf_ifs025"] < -0.2  # each model's own seasonal bias


def test_forecast_errors_are_correlated_day_to_day_and_between_models(season):
    det = _errors(season).query("not ensemble and lead_days == 1")
    per_day = det.groupby(["climate_date", "model"])["error"].last().unstack()
    assert per_day["gfs_seamless"].corr(per_day["ecmwf_ifs025"]) > 0.4
    gfs = per_day["gfs_seamless"] - per_day["gfs_seamless"].mean()
    assert gfs.autocorr(1) > 0.1


def test_ensembles_are_under_dispersive(season):
    ens = _errors(season).query("ensemble")
    runs = ens.groupby(["climate_date", "run_ts"])
    mean_error_sd = runs["error"].mean().std()
    member_spread = runs["high_f"].std().mean()
    assert runs.size().eq(31).all()
    assert member_spread < 0.85 * mean_error_sd


def test_every_forecast_is_public_after_its_run_and_before_or_on_its_day(season):
    f = season.forecasts
    assert (f["available_ts"] > f["run_ts"]).all()
    assert f["lead_days"].between(0, 3).all()
    day_end = pd.to_datetime(f["climate_date"]).astype("datetime64[s]").astype("int64") + 86_400 - int(
        CHICAGO.standard_offset.total_seconds())
    assert (f["available_ts"] < day_end).all()


def test_the_market_reads_the_public_forecast_not_the_outcome(season):
    """Before the event day the market's implied mean tracks the newest GFS run's error, not the truth: a day
    GFS ran warm, the market's greater tail is priced high."""
    c = season.candles.merge(season.markets[["ticker", "strike_type", "event_date"]], left_on="market_ticker",
                             right_on="ticker")
    day_start = pd.to_datetime(c["event_date"]).astype("datetime64[s]").astype("int64") - int(
        CHICAGO.standard_offset.total_seconds())
    evening_before = c[(c["strike_type"] == "greater") & (c["end_period_ts"] < day_start)
                       & (c["end_period_ts"] > day_start - 4 * 3600)]
    price = evening_before.groupby("event_date")["yes_bid_close"].mean()
    gfs = _errors(season).query("model == 'gfs_seamless' and lead_days == 1").groupby("climate_date")["error"].last()
    joined = pd.concat([price.rename("price"), gfs.rename("gfs_error")], axis=1, join="inner")
    assert joined["price"].corr(joined["gfs_error"]) > 0.2


def test_the_market_prices_a_ladder_that_sums_to_one():
    """The market reads the settlement rule's rounding: a tail pays beyond its strike (greater than 85 is 86 and
    up), so its brackets tile the line; an earlier version priced each tail from its strike's own degree on and
    overpriced both tails by their neighbour's mass."""
    from kwx.data.demo import _bracket_probability
    from kwx.domain.markets import LadderSpec

    contracts = LadderSpec("KXHIGHCHI", date(2025, 7, 18), 80, 4).contracts()
    bracket = np.array([c.bracket for c in contracts], dtype=object)
    floor = np.array([np.nan if c.floor is None else c.floor for c in contracts])
    cap = np.array([np.nan if c.cap is None else c.cap for c in contracts])
    rng = np.random.default_rng(5)
    mus = rng.uniform(70, 95, 50)
    for mu, sigma, seen in zip(mus, rng.uniform(0.3, 5, 50), mus - rng.uniform(0, 10, 50), strict=True):
        p = _bracket_probability(bracket, np.full(6, mu), np.full(6, sigma), floor, cap, np.full(6, seen))
        assert p.sum() == pytest.approx(1.0, abs=1e-9)


def test_a_bracket_is_decided_by_the_first_public_observation_that_settles_it():
    """Planted observations: on climate day 1, 85.5 °F at 09:55 may be a rounded 85.45 (a report of 85), so it
    decides nothing; 85.6 at 10:00 proves a high of 86 or more; 90.0 at 15:00 proves 90. Day 0's 99 °F decides
    only day 0's market (the running max restarts with the climate day), and day 2 has no observations."""
    day = MINUTES_PER_DAY
    obs_minute = [600, day + 595, day + 600, day + 605, day + 900]
    obs_temp_f = [99.0, 85.5, 85.6, 80.0, 90.0]
    bracket = np.array(["greater", "less", "between", "between", "greater", "between", "greater"], dtype=object)
    floor = np.array([85, np.nan, 84, 86, 90, 84, 85], dtype=float)
    cap = np.array([np.nan, 86, 85, 87, np.nan, 85, np.nan], dtype=float)
    day_start = np.array([day] * 5 + [2 * day, 0])
    minute, outcome = decision_minutes(bracket, floor, cap, day_start, obs_minute, obs_temp_f)
    np.testing.assert_array_equal(minute, [day + 600, day + 600, day + 600, day + 900, np.inf, np.inf, 600])
    np.testing.assert_array_equal(outcome, [1, 0, 0, 0, np.nan, np.nan, 1])


def _deciding_observations(data) -> pd.DataFrame:
    """Per market the public weather table decides: the Unix time of the first stored observation of its climate
    day that does (``locked_outcomes``), and the outcome, read as kwx's lock reads the table."""
    wx = data.weather_minutes
    ts = epoch_seconds(wx["ts_utc"])
    day = pd.Series(climate_days_from_epoch(ts, CHICAGO)).dt.date
    obs = pd.DataFrame({"event_date": day, "obs_ts": ts,
                        "seen_max": wx["temp_f"].groupby(day.to_numpy()).cummax().to_numpy()})
    rows = data.markets.merge(obs, on="event_date")
    locked = locked_outcomes(rows["strike_type"].to_numpy(), rows["floor_strike"].to_numpy(),
                             rows["cap_strike"].to_numpy(), rows["seen_max"].to_numpy(), OBS_ROUNDING_MARGIN_F)
    rows = rows.assign(outcome=locked)[~np.isnan(locked)]
    return rows.sort_values("obs_ts").groupby("ticker")[["obs_ts", "outcome", "result"]].first()


@pytest.fixture(scope="module")
def never_repriced():
    """``summer`` from a book that never reprices (a whole day's lag): the demo market before issue 24."""
    return generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=7, reprice_minutes=MINUTES_PER_DAY)


@pytest.mark.parametrize(("reprice_minutes", "quote_cents"), [(3, 1), (0, 5)])
def test_a_decided_bracket_quotes_the_decided_book_after_the_observation_that_decides_it(
        summer, never_repriced, reprice_minutes, quote_cents):
    data = (summer if (reprice_minutes, quote_cents) == (3, 1) else  # the defaults
            generate_city("chicago", date(2025, 7, 1), date(2025, 7, 28), seed=7, reprice_minutes=reprice_minutes,
                          decided_quote_cents=quote_cents))
    for name in ("markets", "weather_minutes", "climate_daily", "forecasts"):
        pd.testing.assert_frame_equal(data.frames()[name], never_repriced.frames()[name], obj=name)
    decided = _deciding_observations(data)
    assert set(decided["outcome"]) == {0.0, 1.0} and len(decided) > 50
    # Never wrong: the observations bound the settlement from below.
    assert (decided["outcome"] == (decided["result"] == "yes")).all()

    c = data.candles.join(decided, on="market_ticker")
    candle_start = c["end_period_ts"] - 60
    repriced = (candle_start >= c["obs_ts"] + 60 * reprice_minutes).to_numpy()  # NaN obs_ts: never decided
    won = (c["outcome"] == 1).to_numpy()
    book = c[repriced]
    np.testing.assert_array_equal(book["yes_bid_close"], np.where(won[repriced], 99 - quote_cents, quote_cents))
    assert (book["yes_ask_close"] == book["yes_bid_close"] + 1).all()
    traded = book["price_close"].notna()
    assert traded.mean() > 0.2
    assert (book["price_close"][traded].isin([99 - quote_cents, 100 - quote_cents]) == won[repriced][traded]).all()
    assert book["price_close"][traded].isin([quote_cents, quote_cents + 1, 99 - quote_cents,
                                             100 - quote_cents]).all()
    # No lookahead: every candle starting before the repricing (those ending by the deciding observation among
    # them) and every candle of an undecided bracket is the never-repricing book's, draw for draw.
    pd.testing.assert_frame_equal(data.candles[~repriced], never_repriced.candles[~repriced])
    assert (c["end_period_ts"] <= c["obs_ts"]).sum() > 10_000  # ... a test with candles before decisions in it
    before = never_repriced.candles[repriced]
    lazy = (before["yes_bid_close"] != book["yes_bid_close"]) | (before["yes_ask_close"] != book["yes_ask_close"])
    assert lazy.mean() > 0.3  # which quoted about half the decided minutes lazily
    others = data.candles.columns.difference(QUOTE_COLUMNS)
    pd.testing.assert_frame_equal(data.candles[others], never_repriced.candles[others])


@pytest.mark.parametrize(("option", "value"), [("reprice_minutes", -1), ("reprice_minutes", 1441),
                                               ("reprice_minutes", 2.5), ("decided_quote_cents", 0),
                                               ("decided_quote_cents", 50), ("decided_quote_cents", 1.0)])
def test_a_bad_decided_book_is_rejected(option, value):
    with pytest.raises(ValueError, match=rf"^{option} must be a whole number of (minutes|cents) in \["):
        generate(["chicago"], date(2025, 7, 1), date(2025, 7, 2), seed=7, **{option: value})


@pytest.mark.parametrize(("option", "value", "rule"), [
    ("--reprice-minutes", "1441", "a whole number of minutes in [0, 1440]"),
    ("--decided-quote-cents", "0", "a whole number of cents in [1, 49]"),
    ("--decided-quote-cents", "50", "a whole number of cents in [1, 49]")])
def test_a_bad_decided_book_option_is_one_clear_line(tmp_path, option, value, rule):
    from typer.testing import CliRunner

    from kwx.cli import app

    result = CliRunner().invoke(app, ["data", "demo", option, value])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: {option} must be {rule} (") and line.endswith(f"got {value}")
    assert not (tmp_path / "kwx.db").exists()  # rejected before anything is written
