"""Kalshi client and ingest against a local server serving payloads in the real shapes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from kwx.data.clients.http import FetchError, JsonHttp, PayloadError, RetryPolicy
from kwx.data.clients.kalshi import KalshiClient, parse_candles, parse_market
from kwx.data.demo import generate_city
from kwx.data.ingestion import ingest_kalshi
from kwx.data.schema import Candle, ClimateDaily, Market
from tests.data.fake_http import FakeApi, Reply

SERIES = "KXHIGHCHI"
NOW = datetime(2025, 7, 10, tzinfo=UTC)
TICKER = "KXHIGHCHI-25JUL02-B85.5"


def _iso(ts) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def market_json(row) -> dict:
    return {
        "ticker": row.ticker, "event_ticker": row.event_ticker, "strike_type": row.strike_type,
        "floor_strike": None if np.isnan(row.floor_strike) else row.floor_strike,
        "cap_strike": None if np.isnan(row.cap_strike) else row.cap_strike,
        "open_time": _iso(row.open_time), "close_time": _iso(row.close_time),
        "expiration_time": _iso(row.expiration_time), "status": "finalized", "result": row.result,
        "expiration_value": str(int(row.settlement_value)), "rules_primary": row.rules_primary,
    }


def _block(values: dict, dollars: bool) -> dict:
    if dollars:
        return {f"{k}_dollars": None if v is None or np.isnan(v) else f"{v / 100:.4f}" for k, v in values.items()}
    return {k: None if v is None or np.isnan(v) else int(v) for k, v in values.items()}


def candle_json(row, dollars: bool) -> dict:
    stats = ("open", "high", "low", "close")
    traded = not np.isnan(row.price_close)
    stick = {
        "end_period_ts": int(row.end_period_ts),
        "yes_bid": _block({s: getattr(row, f"yes_bid_{s}") for s in stats}, dollars),
        "yes_ask": _block({s: getattr(row, f"yes_ask_{s}") for s in stats}, dollars),
        "price": _block({s: getattr(row, f"price_{s}") for s in (*stats, "mean")}, dollars) if traded else {},
    }
    if dollars:
        stick |= {"volume_fp": f"{row.volume:.2f}", "open_interest_fp": f"{row.open_interest:.2f}"}
    else:
        stick |= {"volume": int(row.volume), "open_interest": int(row.open_interest)}
    return stick


@pytest.fixture(scope="module")
def demo():
    return generate_city("chicago", date(2025, 7, 2), date(2025, 7, 3), seed=4)


def serve_kalshi(api: FakeApi, demo, dollars_for=lambda ticker: True, page_size: int = 5):
    markets = [market_json(r) for r in demo.markets.itertuples()]

    def list_markets(query):
        start = int(query.get("cursor") or 0)
        page = markets[start:start + page_size]
        nxt = start + page_size
        return Reply({"markets": page, "cursor": str(nxt) if nxt < len(markets) else ""})

    api.handlers["/markets"] = list_markets
    by_ticker = {t: g for t, g in demo.candles.groupby("market_ticker")}
    for ticker, group in by_ticker.items():
        def sticks(query, group=group, ticker=ticker):
            lo, hi = int(query["start_ts"]), int(query["end_ts"])
            rows = group[(group["end_period_ts"] >= lo) & (group["end_period_ts"] <= hi)]
            return Reply({"ticker": ticker,
                          "candlesticks": [candle_json(r, dollars_for(ticker)) for r in rows.itertuples()]})
        api.handlers[f"/series/{SERIES}/markets/{ticker}/candlesticks"] = sticks


def client_for(api: FakeApi, attempts: int = 4, timeout: float = 2.0) -> KalshiClient:
    http = JsonHttp(api.url, timeout=timeout, retry=RetryPolicy(attempts=attempts), per_second=0,
                    sleep=lambda _s: None)
    return KalshiClient(api.url, http=http, candle_cap=500, page_limit=5)


def _stored(engine) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with engine.connect() as conn:
        markets = pd.read_sql(select(Market).order_by(Market.ticker), conn)
        candles = pd.read_sql(select(Candle).order_by(Candle.market_ticker, Candle.end_period_ts), conn)
        climate = pd.read_sql(select(ClimateDaily).order_by(ClimateDaily.climate_date), conn)
    return markets, candles, climate


# --- pure parsing ---------------------------------------------------------------------------------

def test_both_price_formats_parse_to_the_same_cents(demo):
    rows = demo.candles[demo.candles["market_ticker"] == TICKER].head(50)
    cents = parse_candles(TICKER, [candle_json(r, dollars=False) for r in rows.itertuples()])
    dollars = parse_candles(TICKER, [candle_json(r, dollars=True) for r in rows.itertuples()])
    pd.testing.assert_frame_equal(cents, dollars)
    expected = rows.reset_index(drop=True)[cents.columns]
    pd.testing.assert_frame_equal(dollars, expected, check_dtype=False)


def test_empty_price_is_null_not_zero_or_fifty():
    frame = parse_candles(TICKER, [{"end_period_ts": 1751464860, "yes_bid": {"close_dollars": "0.4200"},
                                    "yes_ask": {"close": 45}, "price": {}, "volume_fp": "0.00"}])
    row = frame.iloc[0]
    assert row["yes_bid_close"] == 42.0 and row["yes_ask_close"] == 45.0
    assert pd.isna(row["price_close"]) and pd.isna(row["price_mean"]) and pd.isna(row["yes_bid_open"])
    assert row["volume"] == 0.0 and pd.isna(row["open_interest"])
    nulls = parse_candles(TICKER, [{"end_period_ts": 1751464860, "price": {"close": None, "close_dollars": None}}])
    assert pd.isna(nulls.iloc[0]["price_close"])


@pytest.mark.parametrize(("stick", "field"), [
    ({"end_period_ts": 1, "yes_bid": {"close_dollars": "abc"}}, "candlesticks[0].yes_bid.close_dollars: 'abc'"),
    ({"end_period_ts": "1"}, "candlesticks[0].end_period_ts"),
    ({"end_period_ts": 1, "price": {"mean": [1]}}, "candlesticks[0].price.mean"),
    ({"end_period_ts": 1, "yes_ask": "42"}, "candlesticks[0].yes_ask: expected an object"),
    ({"end_period_ts": 1, "volume_fp": "lots"}, "candlesticks[0].volume_fp"),
])
def test_malformed_candles_name_market_and_field(stick, field):
    with pytest.raises(PayloadError, match=f"{TICKER}: ") as info:
        parse_candles(TICKER, [stick])
    assert field in str(info.value)


def test_market_parsing(demo):
    row = next(demo.markets.itertuples())
    parsed = parse_market(market_json(row))
    assert parsed["city"] == "chicago" and parsed["event_date"] == row.event_date
    assert parsed["settlement_value"] == row.settlement_value
    bad = market_json(row) | {"strike_type": "above"}
    with pytest.raises(PayloadError, match=f"{row.ticker}: strike_type: 'above'"):
        parse_market(bad)
    missing = market_json(row) | {"cap_strike": None, "floor_strike": None}
    with pytest.raises(PayloadError, match="missing its floor_strike/cap_strike"):
        parse_market(missing)
    with pytest.raises(PayloadError, match="close_time"):
        parse_market(market_json(row) | {"close_time": "yesterday"})


# --- against the local server ----------------------------------------------------------------------

@pytest.mark.integration
def test_ingest_pages_formats_faults_and_is_idempotent(engine, demo):
    tickers = sorted(demo.markets["ticker"])
    with FakeApi() as api:
        serve_kalshi(api, demo, dollars_for=lambda t: tickers.index(t) % 2 == 0)  # both formats in one run
        flaky = f"/series/{SERIES}/markets/{tickers[0]}/candlesticks"
        api.scripts[flaky] = [Reply({"error": "slow down"}, status=429, headers={"Retry-After": "0"}),
                              Reply({"error": "boom"}, status=503)]
        summary = ingest_kalshi(engine, client_for(api), SERIES, date(2025, 7, 2), date(2025, 7, 3), now=NOW)
        assert summary.ok, summary.failures
        assert api.count("/markets") == 3  # 12 markets, pages of 5, cursor paging
        assert api.count(flaky) >= 2 + 4  # two faults retried, then ~1,370 candles in requests of <= 500
        first = _stored(engine)
        assert summary.markets == 12 and summary.candles == len(demo.candles) and summary.settled_days == 2
        again = ingest_kalshi(engine, client_for(api), SERIES, date(2025, 7, 2), date(2025, 7, 3), now=NOW)
        assert again.ok
    second = _stored(engine)
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a, b)  # re-running the same range changes nothing
    markets, candles, climate = first
    assert len(markets) == 12 and len(candles) == len(demo.candles)
    expected = demo.candles.sort_values(["market_ticker", "end_period_ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(candles[expected.columns], expected, check_dtype=False)
    assert climate["tmax_f"].tolist() == demo.climate_daily.set_index("climate_date").loc[
        [date(2025, 7, 2), date(2025, 7, 3)], "tmax_f"].tolist()


@pytest.mark.integration
def test_a_bad_market_writes_nothing_of_itself_and_the_rest_lands(engine, demo):
    tickers = sorted(demo.markets["ticker"])
    with FakeApi() as api:
        serve_kalshi(api, demo)
        api.handlers[f"/series/{SERIES}/markets/{tickers[1]}/candlesticks"] = lambda q: Reply(
            raw=b'{"candlesticks": [{"end_period_ts": 17')  # truncated JSON
        api.handlers[f"/series/{SERIES}/markets/{tickers[2]}/candlesticks"] = lambda q: Reply(
            {"candlesticks": [{"end_period_ts": 1751464860, "yes_bid": {"close_dollars": "n/a"}}]})
        api.handlers[f"/series/{SERIES}/markets/{tickers[3]}/candlesticks"] = lambda q: Reply({}, status=500)
        summary = ingest_kalshi(engine, client_for(api, attempts=3), SERIES, date(2025, 7, 2), date(2025, 7, 3),
                                now=NOW)
    assert not summary.ok and len(summary.failures) == 3
    text = "\n".join(summary.failures)
    assert f"{tickers[1]}: candlesticks" in text and "not valid JSON" in text
    assert f"{tickers[2]}: candlesticks[0].yes_bid.close_dollars: 'n/a' is not a number" in text
    assert f"{tickers[3]}: candlesticks" in text and "gave up after 3 attempts (HTTP 500)" in text
    markets, candles, _ = _stored(engine)
    assert set(markets["ticker"]) == set(tickers) - set(tickers[1:4])
    assert not set(candles["market_ticker"]) & set(tickers[1:4])
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Candle)).scalar_one() == len(candles)


@pytest.mark.integration
def test_timeouts_are_retried_then_reported():
    with FakeApi() as api:
        api.handlers["/markets"] = lambda q: Reply({"markets": [], "cursor": ""})
        api.scripts["/markets"] = [Reply({"markets": []}, delay=0.6)]
        assert client_for(api, timeout=0.2).markets(SERIES) == []  # the slow reply timed out, the retry answered
        api.scripts["/markets"] = [Reply({}, delay=0.6), Reply({}, delay=0.6)]
        with pytest.raises(FetchError, match=r"markets of KXHIGHCHI: gave up after 2 attempts \(timed out\)"):
            client_for(api, attempts=2, timeout=0.2).markets(SERIES)
        api.handlers["/markets"] = lambda q: Reply({"error": "unauthorized"}, status=401)
        with pytest.raises(FetchError, match="HTTP 401"):
            client_for(api).markets(SERIES)
        assert api.count("/markets") == 2 + 2 + 1  # slow+retry, two timeouts, and the 401 only once
