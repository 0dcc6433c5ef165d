"""Kalshi client and ingest against a local server serving payloads in the real shapes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from typer.testing import CliRunner

from kwx.cli import app
from kwx.data.clients.http import AuthError, FetchError, JsonHttp, PagingError, PayloadError, RetryPolicy
from kwx.data.clients.kalshi import (
    CANDLE_CLOSE_GRACE_SECONDS,
    KalshiClient,
    check_candles,
    parse_candles,
    parse_market,
)
from kwx.data.db import make_engine
from kwx.data.demo import generate_city
from kwx.data.ingestion import ingest_kalshi
from kwx.data.schema import Candle, ClimateDaily, Market
from kwx.domain.markets import contract_from_ticker
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
        "expiration_value": str(int(row.expiration_value)), "settlement_value": int(row.settlement_value),
        "settlement_value_dollars": f"{row.settlement_value / 100:.4f}", "rules_primary": row.rules_primary,
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


def series_json(series: str = SERIES, fee_type: str = "quadratic", fee_multiplier: float = 1) -> dict:
    """A Series object as GET /series/{ticker} returns it (every field the SDK's model requires)."""
    return {"ticker": series, "frequency": "daily", "title": "Highest temperature in Chicago today?",
            "category": "Climate and Weather", "tags": ["Weather"],
            "settlement_sources": [{"name": "National Weather Service", "url": "https://www.weather.gov/"}],
            "contract_url": "https://kalshi.com/contract.pdf", "contract_terms_url": "https://kalshi.com/terms.pdf",
            "fee_type": fee_type, "fee_multiplier": fee_multiplier, "additional_prohibitions": []}


def fee_change_json(scheduled: str, fee_type: str, fee_multiplier: float, series: str = SERIES) -> dict:
    """A SeriesFeeChange as GET /series/fee_changes lists it."""
    return {"id": f"fc-{series}-{scheduled}", "series_ticker": series, "fee_type": fee_type,
            "fee_multiplier": fee_multiplier, "scheduled_ts": scheduled}


def serve_fees(api: FakeApi, series: dict | None = None, changes: list[dict] = ()) -> None:
    """The series' fee data: GET /series/{SERIES} and GET /series/fee_changes (filtered as Kalshi filters)."""
    api.handlers[f"/series/{SERIES}"] = lambda _query: Reply({"series": series or series_json()})
    api.handlers["/series/fee_changes"] = lambda query: Reply({"series_fee_change_arr": [
        c for c in changes if c["series_ticker"] == query.get("series_ticker", c["series_ticker"])]})


def serve_kalshi(api: FakeApi, demo, dollars_for=lambda ticker: True, page_size: int = 5):
    serve_fees(api)
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
    assert (parsed["expiration_value"], parsed["settlement_value"]) == (row.expiration_value, row.settlement_value)
    assert parsed["expiration_value"] not in (0.0, 100.0)  # the temperature, not the payout (~90 °F in July)
    bad = market_json(row) | {"strike_type": "above"}
    with pytest.raises(PayloadError, match=f"{row.ticker}: strike_type: 'above'"):
        parse_market(bad)
    missing = market_json(row) | {"cap_strike": None, "floor_strike": None}
    with pytest.raises(PayloadError, match="missing its floor_strike/cap_strike"):
        parse_market(missing)
    with pytest.raises(PayloadError, match="close_time"):
        parse_market(market_json(row) | {"close_time": "yesterday"})


def _demo_market(demo, strike_type: str, result: str) -> dict:
    row = demo.markets[(demo.markets["strike_type"] == strike_type) & (demo.markets["result"] == result)].iloc[0]
    return market_json(row)


@pytest.mark.parametrize(("result", "payout"), [("yes", 100), ("no", 0)])
def test_payout_in_cents_and_settled_high_keep_kalshis_names(demo, result, payout):
    market = _demo_market(demo, "between", result) | {"expiration_value": "84"}
    cents_only = {k: v for k, v in market.items() if k != "settlement_value_dollars"}
    for payload in (market, cents_only):
        parsed = parse_market(payload)
        assert (parsed["expiration_value"], parsed["settlement_value"]) == (84.0, payout)
    open_market = market | {"result": "", "expiration_value": "", "settlement_value": None,
                            "settlement_value_dollars": None}
    parsed = parse_market(open_market)
    assert parsed["expiration_value"] is None and parsed["settlement_value"] is None
    wrong = market | {"settlement_value": 100 - payout, "settlement_value_dollars": f"{(100 - payout) / 100:.4f}"}
    with pytest.raises(PayloadError, match=rf"^{market['ticker']}: settlement_value {100 - payout}¢ contradicts "
                                           rf"result '{result}'"):
        parse_market(wrong)


@pytest.mark.parametrize(("strike_type", "strikes", "denoted"), [
    ("between", {"floor_strike": 90, "cap_strike": 91}, "floor 85, cap 86"),
    ("between", {"floor_strike": 85, "cap_strike": 87}, "floor 85, cap 86"),
    ("greater", {"floor_strike": 91}, "floor 90, cap none"),
    ("greater", {"cap_strike": 95}, "floor 90, cap none"),  # a tail has no second bound
    ("less", {"cap_strike": 82.5}, "floor none, cap 83"),
    ("less", {"floor_strike": 70}, "floor none, cap 83"),
])
def test_strikes_that_disagree_with_the_ticker_reject_the_market(strike_type, strikes, denoted):
    ticker = {"between": "KXHIGHCHI-25JUL02-B85.5", "greater": "KXHIGHCHI-25JUL02-T90",
              "less": "KXHIGHCHI-25JUL02-T83"}[strike_type]
    contract = contract_from_ticker(ticker, strike_type)
    market = {"ticker": ticker, "strike_type": strike_type, "floor_strike": contract.floor,
              "cap_strike": contract.cap, "open_time": "2025-07-01T15:00:00Z", "close_time": "2025-07-03T05:00:00Z"}
    parsed = parse_market(market)
    assert (parsed["floor_strike"], parsed["cap_strike"]) == (contract.floor, contract.cap)
    with pytest.raises(PayloadError, match=rf"^{ticker}: floor_strike/cap_strike .* disagree with the ticker, "
                                           rf"which denotes a {strike_type} market with {denoted}$"):
        parse_market(market | strikes)


@pytest.mark.parametrize("strike_type", ["greater_or_equal", "less_or_equal"])
def test_inclusive_tails_are_refused_with_the_market_named(demo, strike_type):
    market = _demo_market(demo, strike_type.split("_")[0], "no") | {"strike_type": strike_type}
    with pytest.raises(PayloadError, match=rf"^{market['ticker']}: strike_type '{strike_type}' is not supported"):
        parse_market(market)


@pytest.mark.integration
def test_markets_whose_strikes_or_strike_type_cannot_be_trusted_are_rejected_and_the_rest_land(engine, demo):
    tickers = sorted(demo.markets["ticker"])
    between = demo.markets[demo.markets["strike_type"] == "between"]["ticker"].iloc[0]
    tail = demo.markets[demo.markets["strike_type"] == "greater"]["ticker"].iloc[0]
    with FakeApi() as api:
        serve_kalshi(api, demo)
        listing = api.handlers["/markets"]

        def tampered(query):
            reply = listing(query)
            for market in reply.body["markets"]:
                if market["ticker"] == between:
                    market |= {"floor_strike": 90, "cap_strike": 91}
                elif market["ticker"] == tail:
                    market["strike_type"] = "greater_or_equal"
            return reply

        api.handlers["/markets"] = tampered
        summary = ingest_kalshi(engine, client_for(api), SERIES, date(2025, 7, 2), date(2025, 7, 3), now=NOW)
        fetched = {path for path, _ in api.requests if path.endswith("/candlesticks")}
    text = "\n".join(summary.failures)
    assert len(summary.failures) == 2
    assert f"{between}: floor_strike/cap_strike floor 90, cap 91 disagree with the ticker" in text
    assert f"{tail}: strike_type 'greater_or_equal' is not supported" in text
    assert not any(between in path or tail in path for path in fetched)  # rejected before any candle is asked for
    markets, candles, climate = _stored(engine)
    assert set(markets["ticker"]) == set(tickers) - {between, tail}
    assert set(candles["market_ticker"]) == set(tickers) - {between, tail}
    assert len(climate) == 2  # the rest of each event still settles its day
    stored = markets.set_index("ticker")
    expected = demo.markets.set_index("ticker").loc[stored.index]
    pd.testing.assert_series_equal(stored["expiration_value"], expected["expiration_value"])
    pd.testing.assert_series_equal(stored["settlement_value"], expected["settlement_value"])


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
        assert summary.fee_records == 1  # the series' fee, read with its markets
        again = ingest_kalshi(engine, client_for(api), SERIES, date(2025, 7, 2), date(2025, 7, 3), now=NOW)
        assert again.ok and again.fee_records == 0
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


# --- impossible candles: the rule, then the ingest -------------------------------------------------

OPEN_TS, CLOSE_TS = 1_751_385_600, 1_751_522_400
GRACE = CANDLE_CLOSE_GRACE_SECONDS


def _sticks(rows: list[tuple[int, int | None, int | None, int | None]]) -> list[dict]:
    """Candlesticks in the older cent format from (end_period_ts, bid close, ask close, last trade)."""
    return [{"end_period_ts": ts, "yes_bid": {"close": bid}, "yes_ask": {"close": ask},
             "price": {"close": trade} if trade is not None else {}} for ts, bid, ask, trade in rows]


prices = st.none() | st.integers(-60, 500)


@given(st.lists(st.tuples(st.integers(OPEN_TS - 7200, CLOSE_TS + GRACE + 7200), prices, prices, prices),
                max_size=6))
def test_a_batch_passes_iff_within_the_markets_life_and_0_le_bid_le_ask_le_100(rows):
    def in_range(value):
        return value is None or 0 <= value <= 100

    valid = all(OPEN_TS <= ts <= CLOSE_TS + GRACE and in_range(bid) and in_range(ask) and in_range(trade)
                and (bid is None or ask is None or bid <= ask) for ts, bid, ask, trade in rows)
    candles = parse_candles(TICKER, _sticks(rows))
    if valid:
        check_candles(TICKER, candles, OPEN_TS, CLOSE_TS)
    else:
        with pytest.raises(PayloadError, match=f"^{TICKER}: candle at "):
            check_candles(TICKER, candles, OPEN_TS, CLOSE_TS)


@pytest.mark.parametrize(("row", "rule"), [
    ((OPEN_TS - 60, 40, 45, None), "is before the market opened (2025-07-01T16:00:00Z)"),
    ((CLOSE_TS + GRACE + 60, 40, 45, None), "is after the market closed (2025-07-03T06:00:00Z)"),
    ((OPEN_TS + 60, 420, 450, None), "yes_bid_close 420¢ is outside 0..100"),
    ((OPEN_TS + 60, 20, -30, None), "yes_ask_close -30¢ is outside 0..100"),
    ((OPEN_TS + 60, 60, 40, None), "yes_bid_close 60¢ is above yes_ask_close 40¢"),
])
def test_impossible_candles_are_named(row, rule):
    with pytest.raises(PayloadError) as info:
        check_candles(TICKER, parse_candles(TICKER, _sticks([row])), OPEN_TS, CLOSE_TS)
    assert str(info.value).startswith(f"{TICKER}: candle at ") and rule in str(info.value)


@pytest.mark.integration
def test_impossible_candles_reject_that_markets_batch_only(engine, demo):
    tickers = sorted(demo.markets["ticker"])
    life = demo.markets.set_index("ticker")
    broken = {  # ticker -> (a candle it serves, the rule its batch breaks)
        tickers[0]: ((int(life.loc[tickers[0], "open_time"].timestamp()) - 3600, 40, 45, None), "before the market"),
        tickers[1]: ((int(life.loc[tickers[1], "close_time"].timestamp()) + 86_400, 40, 45, None), "after the market"),
        tickers[2]: ((int(life.loc[tickers[2], "open_time"].timestamp()) + 60, 420, 450, None), "yes_bid_close 420¢"),
        tickers[3]: ((int(life.loc[tickers[3], "open_time"].timestamp()) + 60, 20, -30, None), "yes_ask_close -30¢"),
        tickers[4]: ((int(life.loc[tickers[4], "open_time"].timestamp()) + 60, 60, 40, None), "above yes_ask_close"),
    }
    with FakeApi() as api:
        serve_kalshi(api, demo)
        for ticker, (row, _rule) in broken.items():
            served = [candle_json(r, dollars=True) for r in demo.candles[demo.candles["market_ticker"] == ticker]
                      .head(5).itertuples()] + _sticks([row])
            api.handlers[f"/series/{SERIES}/markets/{ticker}/candlesticks"] = (
                lambda q, sticks=served: Reply({"candlesticks": sticks}))
        summary = ingest_kalshi(engine, client_for(api), SERIES, date(2025, 7, 2), date(2025, 7, 3), now=NOW)
    assert len(summary.failures) == len(broken)
    for failure, (ticker, (_row, rule)) in zip(sorted(summary.failures), sorted(broken.items()), strict=True):
        assert failure.startswith(f"{ticker}: candle at ") and rule in failure
    markets, candles, _ = _stored(engine)
    assert set(markets["ticker"]) == set(tickers) - set(broken)  # nothing of a rejected market, all of the rest
    assert set(candles["market_ticker"]) == set(tickers) - set(broken)


@pytest.mark.integration
def test_a_nul_byte_in_a_text_field_is_stripped_and_every_market_lands(engine, demo):
    tickers = sorted(demo.markets["ticker"])
    with FakeApi() as api:
        serve_kalshi(api, demo)
        listing = api.handlers["/markets"]

        def with_nul(query):
            reply = listing(query)
            for market in reply.body["markets"]:
                if market["ticker"] == tickers[0]:
                    market["rules_primary"] = "If the high\x00 is above 85.5°F"
                    market["status"] = "final\x00ized"
            return reply

        api.handlers["/markets"] = with_nul
        summary = ingest_kalshi(engine, client_for(api), SERIES, date(2025, 7, 2), date(2025, 7, 3), now=NOW)
    assert summary.ok, summary.failures
    markets, _, _ = _stored(engine)
    assert set(markets["ticker"]) == set(tickers)
    stored = markets.set_index("ticker").loc[tickers[0]]
    assert (stored["rules_primary"], stored["status"]) == ("If the high is above 85.5°F", "finalized")


# --- servers that misbehave ------------------------------------------------------------------------

@pytest.mark.integration
def test_a_repeated_cursor_stops_paging_with_the_series_named():
    page = {"markets": [], "cursor": "c-1"}
    with FakeApi() as api:
        api.handlers["/markets"] = lambda q: Reply(page)
        with pytest.raises(PagingError, match=r"^markets of KXHIGHCHI: the server repeated cursor 'c-1' after 2"):
            client_for(api).markets(SERIES)
        assert api.count("/markets") == 2
        # cursors that never repeat and never end: bounded by max_pages
        api.handlers["/markets"] = lambda q: Reply({"markets": [],
                                                    "cursor": f"c-{int(q.get('cursor', 'c-0')[2:]) + 1}"})
        client = KalshiClient(api.url, http=client_for(api).http, max_pages=7)
        with pytest.raises(PagingError, match="markets of KXHIGHCHI: still more pages after 7"):
            client.markets(SERIES)
        assert api.count("/markets") == 2 + 7


@pytest.mark.integration
def test_ingest_cli_stops_on_a_repeated_cursor_and_writes_nothing(tmp_path, demo):
    db = f"sqlite:///{tmp_path / 'kwx.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--db-url", db]).exit_code == 0
    with FakeApi() as api:
        serve_kalshi(api, demo)  # a full first page of 5 markets, then the same cursor forever
        listing = api.handlers["/markets"]
        api.handlers["/markets"] = lambda q: Reply({**listing({}).body, "cursor": "again"})
        result = runner.invoke(app, ["ingest", "kalshi", "--series", SERIES, "--start", "2025-07-02", "--end",
                                     "2025-07-03", "--base-url", api.url, "--db-url", db])
        requests = len(api.requests)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: markets of KXHIGHCHI: the server repeated cursor 'again' after 2 pages"]
    assert requests == 2
    engine = make_engine(db)
    markets, candles, climate = _stored(engine)
    engine.dispose()
    assert markets.empty and candles.empty and climate.empty


@pytest.mark.integration
def test_a_refused_request_is_not_retried_and_stops_the_ingest(engine, demo):
    with FakeApi() as api:
        serve_kalshi(api, demo)
        for path in [p for p in api.handlers if p.endswith("/candlesticks")]:
            api.handlers[path] = lambda q: Reply({"error": "unauthorized"}, status=403)
        with pytest.raises(AuthError, match=r"candlesticks .*: Kalshi refused the request \(HTTP 403\)"):
            ingest_kalshi(engine, client_for(api), SERIES, date(2025, 7, 2), date(2025, 7, 3), now=NOW)
        # one refusal: no retry, and no other market asked only to be refused the same way
        assert sum(path.endswith("/candlesticks") for path, _ in api.requests) == 1
    markets, candles, _ = _stored(engine)
    assert markets.empty and candles.empty


@pytest.mark.parametrize("source", [["kalshi", "--series", SERIES], ["vc", "--city", "chicago"]])
def test_ingest_end_before_start_is_one_line_and_writes_nothing(tmp_path, monkeypatch, source):
    monkeypatch.setenv("VC_API_KEY", "k3y")
    db = tmp_path / "kwx.db"
    with FakeApi() as api:
        result = CliRunner().invoke(app, ["ingest", *source, "--start", "2025-07-03", "--end", "2025-07-02",
                                          "--base-url", api.url, "--db-url", f"sqlite:///{db}"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --end (2025-07-02) is before --start (2025-07-03)"
    assert api.requests == [] and not db.exists()
