"""The dashboard's pure views: labels, loop health, the ladder grid, latest signals, banners."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwx.cities import get_city
from kwx.dashboard import views
from kwx.domain.markets import settlement_outcomes
from kwx.domain.positions import position_pnl, source_totals

T0 = datetime(2025, 7, 18, 15, 0, tzinfo=UTC)
CHICAGO = get_city("chicago")


@given(kind=st.sampled_from(["between", "greater", "less"]), strike=st.integers(-20, 120),
       high=st.integers(-30, 130))
def test_a_label_says_exactly_which_whole_degree_highs_win(kind, strike, high):
    """The label's degrees are the settlement rule's: between floor..floor+1, greater above the floor, less
    below the cap."""
    floor, cap = (strike, strike + 1) if kind == "between" else (strike, np.nan) if kind == "greater" else (
        np.nan, strike)
    label = views.bracket_label(kind, floor, cap)
    wins = settlement_outcomes([kind], [floor], [cap], [high])[0] == 1.0
    if kind == "between":
        low, top = (float(x) for x in label.rstrip("°").split("–"))
        assert wins == (low <= high <= top)
    else:
        bound = float(label.split("°")[0])
        assert wins == (high >= bound if kind == "greater" else high <= bound)


def test_an_unknown_strike_type_is_refused():
    with pytest.raises(ValueError, match="unknown strike type"):
        views.bracket_label("above", 80, None)


def _ticks(seconds_ago: list[float], latency: list[float], skips: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"ts_utc": pd.to_datetime([T0 - timedelta(seconds=s) for s in seconds_ago], utc=True),
                         "mode": "live", "skips": [json.dumps(s) for s in skips], "latency_ms": latency})


def test_health_covers_the_hour_to_the_newest_tick():
    ticks = _ticks([0, 9, 18, 3700], [1.0, 3.0, 100.0, 999.0],
                   [{"no quote": 2}, {"no quote": 1, "model is stale": 4}, {}, {"ancient": 9}])
    health = views.tick_health(ticks, T0 + timedelta(seconds=30), max_age_seconds=60)
    assert health.newest_tick == T0 and health.age_seconds == 30 and not health.stale
    assert health.ticks_last_hour == 3 and health.latency_p50_ms == 3.0
    assert health.latency_p99_ms == pytest.approx(np.percentile([1.0, 3.0, 100.0], 99), abs=0.01)
    assert health.skips == {"no quote": 3, "model is stale": 4}
    assert views.tick_health(ticks, T0 + timedelta(seconds=61), max_age_seconds=60).stale


def test_no_tick_at_all_is_stale():
    health = views.tick_health(_ticks([], [], []), T0, max_age_seconds=60)
    assert health.stale and health.newest_tick is None
    (banner,) = views.banners(health, [], max_stale_days=7, halted=None, city=CHICAGO)
    assert banner["kind"] == "stale_tick" and "has not recorded a tick" in banner["text"]


def test_banners_rank_problems_and_say_what_the_loop_does():
    health = views.tick_health(_ticks([0], [1.0], [{}]), T0 + timedelta(hours=2), max_age_seconds=120)
    rows = [views.ModelRow("chicago", "between", version="3", window="win_a", stale_days=2),
            views.ModelRow("miami", "less", version="1", window="win_b", stale_days=9),
            views.ModelRow("austin", "greater", problem="no Production version"),
            views.ModelRow("denver", "between", version="2", window="win_c", stale_days=0)]
    out = views.banners(health, rows, max_stale_days=7, halted="paper: HALTED (database): by hand",
                        city=CHICAGO)
    assert [(b["level"], b["kind"]) for b in out] == [
        ("error", "stale_tick"), ("warning", "stale_model"), ("error", "stale_model"), ("error", "no_model"),
        ("error", "halted")]
    assert "2 h old" in out[0]["text"] and "still trades" in out[1]["text"] and "skips it" in out[2]["text"]


def test_a_stale_tick_banner_tells_the_time_on_the_citys_standard_clock():
    """Chicago's clock is CST (UTC−6) all year, also in July: 15:00 UTC is 09:00 on the settlement's clock."""
    health = views.tick_health(_ticks([0], [1.0], [{}]), T0 + timedelta(hours=2), max_age_seconds=120)
    (banner,) = views.banners(health, [], max_stale_days=7, halted=None, city=CHICAGO)
    assert "at 07-18 09:00 CST (--max-age 120 s)" in banner["text"] and "UTC" not in banner["text"]


@pytest.mark.parametrize(("key", "clock"), [
    ("chicago", {"zone": "CST", "utc_offset_seconds": -6 * 3600, "label": "CST (UTC−6)"}),
    ("nyc", {"zone": "EST", "utc_offset_seconds": -5 * 3600, "label": "EST (UTC−5)"}),
    ("la", {"zone": "PST", "utc_offset_seconds": -8 * 3600, "label": "PST (UTC−8)"})])
def test_a_citys_clock_is_its_standard_time_named_with_its_offset(key, clock):
    assert views.city_clock(get_city(key)) == clock


def test_the_day_axis_is_the_climate_day_with_the_close_and_the_usual_time_of_the_high():
    """Three days whose highs came at 14:00, 15:00 and 16:00 CST (the first of two equal maxima counts): the
    usual high is 15:00 CST, 21:00 UTC; the axis runs 00:00 to 24:00 CST."""
    rows = []
    for day, peak_hour in ((15, 14), (16, 15), (17, 16)):
        start = datetime(2025, 7, day, 6, tzinfo=UTC)  # 00:00 CST
        for hour in range(24):
            rows.append((start + timedelta(hours=hour), 90.0 if hour in (peak_hour, peak_hour + 2) else 70.0))
    observations = pd.DataFrame(rows, columns=["ts_utc", "temp_f"])
    close = datetime(2025, 7, 19, 6, tzinfo=UTC)
    axis = views.day_axis(CHICAGO, datetime(2025, 7, 18).date(), close, observations)
    start = int(datetime(2025, 7, 18, 6, tzinfo=UTC).timestamp())
    assert axis == {"day_start": start, "day_end": start + 86400, "close": int(close.timestamp()),
                    "usual_high": start + 15 * 3600}
    assert views.day_axis(CHICAGO, datetime(2025, 7, 18).date(), None, observations.iloc[:0])["usual_high"] is None


def test_the_ladder_puts_signals_and_quotes_on_one_grid_of_buckets():
    step = views.LADDER_STEP_SECONDS
    markets = pd.DataFrame({"ticker": ["A", "B"], "strike_type": ["less", "between"], "floor_strike": [np.nan, 80.0],
                            "cap_strike": [80.0, 81.0], "result": ["no", "yes"], "expiration_value": [80.0, 80.0]})
    ts = pd.to_datetime([T0, T0 + timedelta(seconds=9), T0 + timedelta(seconds=step + 10)], utc=True)
    signals = pd.DataFrame({"ts_utc": ts, "market_ticker": ["B", "B", "B"], "p_model": [0.2, 0.3, 1.0],
                            "p_blend": [0.25, 0.35, 1.0], "locked": [False, False, True]})
    start = int(T0.timestamp())  # on the grid
    candles = pd.DataFrame({"market_ticker": ["A", "B", "B", "B"],
                            "end_period_ts": [start, start, start + 60, start + 2 * step],
                            "yes_bid_close": [10.0, 18.0, 20.0, np.nan], "yes_ask_close": [14.0, 26.0, 30.0, 40.0]})
    out = views.ladder(markets, signals, candles)
    b = out["series"]["B"]
    assert b["t"] == [start, start + step, start + 2 * step]
    assert b["model"] == [0.3, 1.0, None] and b["blend"] == [0.35, 1.0, None]  # the bucket's last signal
    assert b["bid"] == [0.2, None, None] and b["ask"] == [0.3, None, 0.4] and b["mid"] == [0.25, None, None]
    assert out["series"]["A"] == {"t": [start], "model": [None], "blend": [None], "bid": [0.1], "ask": [0.14],
                                  "mid": [0.12]}
    locked = {m["ticker"]: (m["locked_at"], m["locked_outcome"]) for m in out["markets"]}
    assert locked == {"A": (None, None), "B": ((T0 + timedelta(seconds=step + 10)).isoformat(), "yes")}
    assert [m["label"] for m in out["markets"]] == ["79° or below", "80–81°"]
    assert out["settlement"] == {"tmax_f": 80.0, "winner": "B"}


def test_latest_signals_keep_each_markets_newest_row_strongest_edge_first():
    rows = pd.DataFrame({
        "ts_utc": pd.to_datetime([T0, T0 + timedelta(seconds=9), T0, T0 + timedelta(seconds=9)], utc=True),
        "market_ticker": ["A", "A", "B", "B"], "city": "chicago", "bracket": "between",
        "p_model": [0.1, 0.2, 0.5, np.nan], "p_market": 0.3, "p_blend": 0.3, "edge_cents": [9.0, -1.0, 5.0, -7.0],
        "side": ["yes", None, "no", "no"], "size_fraction": [0.1, 0.0, 0.0, 0.02],
        "skip_reason": [None, "x", None, None],
        "model_id": "m/1", "wf_window": "w", "minutes_to_close": 30.0, "locked": [False, False, False, True]})
    out = views.latest_signals(rows, {"A": "a", "B": "b"})
    table = pd.DataFrame(out["rows"], columns=out["columns"])
    assert out["ts"] == (T0 + timedelta(seconds=9)).isoformat()
    assert list(table["ticker"]) == ["B", "A"] and list(table["edge_cents"]) == [-7.0, -1.0]
    first = dict(zip(out["columns"], out["rows"][0], strict=True))
    assert first["p_model"] is None and first["locked"] is True and table.loc[1, "label"] == "a"
    assert json.dumps(out)  # JSON-ready: no NaN, no numpy scalars, no Timestamps


def test_human_ages():
    assert [views.human_age(s) for s in (5, 90, 7200, 3 * 86400, None)] == ["5 s", "2 min", "2 h", "3 d", "unknown"]


def test_an_empty_table_is_json_ready():
    assert views.table(pd.DataFrame()) == {"columns": [], "rows": []}
    assert views.table(pd.DataFrame({"a": pd.Series(dtype=float)})) == {"columns": ["a"], "rows": []}


def test_the_days_pnl_is_split_into_the_models_and_the_rules():
    fills = pd.DataFrame({"market_ticker": ["A", "A", "B"], "side": ["yes", "yes", "no"], "action": "buy",
                          "price_cents": [40.0, 97.0, 96.0], "count": [2, 3, 4], "fee_cents": [1.0, 0.0, 0.0],
                          "source": ["open", "locked", "locked"]})
    held = position_pnl(fills, pd.Series({"A": 100.0}), pd.Series({"B": 2.0}), by_source=True)
    split = views.pnl_split(source_totals(held), fills)
    assert list(split) == ["open", "locked"]
    assert split["open"] == {"label": "open (model)", "realized_cents": 120.0, "unrealized_cents": 0.0,
                             "fees_cents": 1.0, "total_cents": 119.0, "positions": 1, "fills": 1, "contracts": 2}
    assert split["locked"] == {"label": "locked (rule)", "realized_cents": 9.0, "unrealized_cents": 8.0,
                               "fees_cents": 0.0, "total_cents": 17.0, "positions": 2, "fills": 2, "contracts": 7}
    json.dumps(split)  # JSON-ready: native numbers only
    none = views.pnl_split(source_totals(held.iloc[:0]), fills.iloc[:0])
    assert none["locked"]["total_cents"] == 0 and none["open"]["fills"] == 0
