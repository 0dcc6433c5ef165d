"""The Kalshi trading client against a local fake exchange, its payloads held to Kalshi's SDK models."""

from __future__ import annotations

import base64
import fnmatch
import inspect
import logging
import pickle
import re
import time

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from kalshi_python_sync.api.orders_api import OrdersApi
from kalshi_python_sync.api.portfolio_api import PortfolioApi
from kalshi_python_sync.auth import KalshiAuth
from kalshi_python_sync.models.amend_order_request import AmendOrderRequest
from kalshi_python_sync.models.amend_order_response import AmendOrderResponse
from kalshi_python_sync.models.cancel_order_response import CancelOrderResponse
from kalshi_python_sync.models.create_order_request import CreateOrderRequest
from kalshi_python_sync.models.create_order_response import CreateOrderResponse
from kalshi_python_sync.models.error_response import ErrorResponse
from kalshi_python_sync.models.fill import Fill
from kalshi_python_sync.models.get_balance_response import GetBalanceResponse
from kalshi_python_sync.models.get_fills_response import GetFillsResponse
from kalshi_python_sync.models.get_order_response import GetOrderResponse
from kalshi_python_sync.models.get_orders_response import GetOrdersResponse
from kalshi_python_sync.models.get_positions_response import GetPositionsResponse
from kalshi_python_sync.models.market_position import MarketPosition
from kalshi_python_sync.models.order import Order

from kwx.data.clients.http import AuthError, FetchError, PayloadError, RetryPolicy, UnknownOutcomeError
from kwx.data.clients.kalshi import DEMO_URL, PRODUCTION_URL
from kwx.execution.kalshi_trade import (
    IMMEDIATE_OR_CANCEL,
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CredentialsError,
    KalshiCredentials,
    KalshiTrader,
    OrderIntent,
    OrderRejected,
    ProductionNotConfirmed,
    amended_client_order_id,
    base_client_order_id,
    client_order_id,
    environment_url,
    parse_fill,
    parse_order,
    parse_position,
    rejection_reason,
    sign,
    signing_message,
    trade_url,
)
from kwx.secrets import MASK, redact
from tests.fakes.kalshi_exchange import ORDERS, FakeKalshiExchange

KEY_ID = "SENTINEL-kalshi-key-id-5f1c9e"
TICKER = "KXHIGHCHI-25JUL02-B85.5"
OTHER = "KXHIGHCHI-25JUL02-B87.5"
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
AMEND = "/portfolio/orders/*/amend"


def pem_of(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def credentials(rsa_key) -> KalshiCredentials:
    return KalshiCredentials.from_pem(KEY_ID, pem_of(rsa_key))


@pytest.fixture
def exchange(rsa_key):
    with FakeKalshiExchange(rsa_key.public_key(), KEY_ID) as fake:
        fake.set_book(TICKER, 38, 42)
        fake.set_book(OTHER, 20, 25)
        yield fake


def trader_for(exchange: FakeKalshiExchange, credentials: KalshiCredentials, **options) -> KalshiTrader:
    quick = {"timeout": 0.4, "retry": RetryPolicy(attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.05),
             "per_second": 0}
    return KalshiTrader(credentials, exchange.url, **(quick | options))


def intent(intent_id: str = "1751464860:1", side: str = "yes", count: int = 10, price: int = 40,
           ticker: str = TICKER, action: str = "buy", post_only: bool = True) -> OrderIntent:
    return OrderIntent.for_decision("kwx-test", intent_id, ticker, side, action, count, price, post_only)


# --- every payload in the SDK's shapes ------------------------------------------------------------

SDK_REQUESTS = {("POST", ORDERS): CreateOrderRequest, ("POST", AMEND): AmendOrderRequest}
SDK_RESPONSES = {("POST", ORDERS): CreateOrderResponse, ("GET", ORDERS): GetOrdersResponse,
                 ("POST", AMEND): AmendOrderResponse, ("GET", "/portfolio/orders/*"): GetOrderResponse,
                 ("DELETE", "/portfolio/orders/*"): CancelOrderResponse, ("GET", "/portfolio/fills"): GetFillsResponse,
                 ("GET", "/portfolio/positions"): GetPositionsResponse,
                 ("GET", "/portfolio/balance"): GetBalanceResponse}

# the SDK methods whose keyword arguments are the query parameters each listing accepts
SDK_QUERIES = {("GET", ORDERS): OrdersApi.get_orders, ("GET", "/portfolio/fills"): PortfolioApi.get_fills,
               ("GET", "/portfolio/positions"): PortfolioApi.get_positions}


def _model(models: dict, method: str, path: str):
    # most specific first: "/portfolio/orders/*" would also match an amend path
    for (m, pattern), model in sorted(models.items(), key=lambda kv: -len(kv[0][1])):
        if m == method and fnmatch.fnmatchcase(path, pattern):
            return model
    raise AssertionError(f"no SDK model for {method} {path}")


def assert_sdk_shapes(exchange: FakeKalshiExchange) -> int:
    """Every query and request body the client sent and every answer the exchange gave fit the SDK's
    methods and models: a drift in either shape fails here. Returns the number of payloads checked."""
    checked = 0
    for request in exchange.requests:
        if (request.method, request.path) in SDK_QUERIES:
            accepted = inspect.signature(SDK_QUERIES[request.method, request.path]).parameters
            assert set(request.query) <= set(accepted), (request.path, set(request.query) - set(accepted))
        if request.body is not None:
            model = _model(SDK_REQUESTS, request.method, request.path)
            assert set(request.body) <= set(model.model_fields), (request.path, set(request.body) - set(
                model.model_fields))
            model.model_validate(request.body)
            checked += 1
        if request.response is not None:
            if request.status >= 400:
                ErrorResponse.model_validate(request.response["error"])
            else:
                _model(SDK_RESPONSES, request.method, request.path).model_validate(request.response)
            checked += 1
    return checked


def test_kwx_signs_exactly_what_the_sdk_signs(credentials, rsa_key):
    public = rsa_key.public_key()
    path = "/trade-api/v2/portfolio/orders?status=resting"
    sdk = KalshiAuth(KEY_ID, pem_of(rsa_key)).create_auth_headers("get", f"https://demo-api.kalshi.co{path}")
    # the SDK's signature verifies over kwx's message: same parts, same order, query string left out
    public.verify(base64.b64decode(sdk[SIGNATURE_HEADER]), signing_message(int(sdk[TIMESTAMP_HEADER]), "GET", path),
                  PSS, hashes.SHA256())
    ours = sign(credentials, 1_700_000_000_000, "get", path)
    assert set(ours) == set(sdk) and ours[KEY_HEADER] == sdk[KEY_HEADER] == KEY_ID
    assert ours[TIMESTAMP_HEADER] == "1700000000000"
    public.verify(base64.b64decode(ours[SIGNATURE_HEADER]), b"1700000000000GET/trade-api/v2/portfolio/orders", PSS,
                  hashes.SHA256())


def test_the_exchange_verifies_every_signature_and_refuses_a_wrong_key(exchange, credentials, rsa_key):
    trader = trader_for(exchange, credentials)
    assert trader.balance().balance_cents == 100_000 and trader.orders() == []
    assert all(r.signed for r in exchange.requests) and len(exchange.requests) == 2
    assert httpx.get(f"{exchange.url}/portfolio/balance").status_code == 401  # unsigned
    impostor = KalshiCredentials(KEY_ID, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    late = trader_for(exchange, credentials, clock_ms=lambda: time.time_ns() // 1_000_000 - 60_000)
    for refused in (trader_for(exchange, impostor), late):
        with pytest.raises(AuthError, match=r"^balance: Kalshi rejected the API key or its signature \(HTTP 401\)"
                           ) as caught:
            refused.balance()
        assert KEY_ID not in str(caught.value) and MASK in str(caught.value)  # the exchange echoed the key id
    details = [r.response["error"]["details"] for r in exchange.requests if r.status == 401]
    assert [d.split(": ")[-1] for d in details] == ["missing KALSHI-ACCESS-* headers", "INCORRECT_API_KEY_SIGNATURE",
                                                    "timestamp outside the window"]


def test_credentials_come_from_the_environment_with_clear_errors(tmp_path, rsa_key):
    key_file = tmp_path / "kalshi.pem"
    key_file.write_text(pem_of(rsa_key))
    credentials = KalshiCredentials.from_env({"KALSHI_API_KEY_ID": f" {KEY_ID}\n",
                                              "KALSHI_PRIVATE_KEY_PATH": str(key_file)})
    assert credentials.key_id == KEY_ID
    assert repr(credentials) == str(credentials) == f"KalshiCredentials(key_id={MASK}, private_key={MASK})"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nSENTINEL-not-really-a-key-material\n-----END PRIVATE KEY-----\n")
    ec_key = tmp_path / "ec.pem"
    ec_key.write_text(pem_of(ec.generate_private_key(ec.SECP256R1())))
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"pw")))
    cases = [
        ({}, r"^KALSHI_API_KEY_ID is not set"),
        ({"KALSHI_API_KEY_ID": KEY_ID}, r"^KALSHI_PRIVATE_KEY_PATH is not set"),
        ({"KALSHI_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem")}, r"cannot read .*missing\.pem \(No such file"),
        ({"KALSHI_PRIVATE_KEY_PATH": str(tmp_path)}, r"cannot read .* \(Is a directory\)"),
        ({"KALSHI_PRIVATE_KEY_PATH": str(garbage)}, r"garbage\.pem\) is not a PEM private key \(PKCS#1 or PKCS#8\)$"),
        ({"KALSHI_PRIVATE_KEY_PATH": str(ec_key)}, r"ec\.pem\) is not an RSA key \(\w+\): Kalshi signs with RSA keys "
                                                   r"only$"),
        ({"KALSHI_PRIVATE_KEY_PATH": str(encrypted)}, r"encrypted\.pem\) is encrypted; kwx needs the unencrypted"),
    ]
    for env, message in cases:
        with pytest.raises(CredentialsError, match=message) as caught:
            KalshiCredentials.from_env({"KALSHI_API_KEY_ID": KEY_ID} | env if env else env)
        assert "SENTINEL-not-really" not in str(caught.value) and "\n" not in str(caught.value)
        # no chained exception: a traceback would show nothing of the key either
        assert caught.value.__cause__ is None and (caught.value.__context__ is None
                                                   or caught.value.__suppress_context__)


def test_production_needs_the_prod_environment_and_an_explicit_confirmation(credentials):
    assert environment_url() == environment_url("demo") == DEMO_URL
    assert environment_url("prod", confirm_production=True) == PRODUCTION_URL
    with pytest.raises(ProductionNotConfirmed, match="real money"):
        environment_url("prod")
    with pytest.raises(ValueError, match=r"unknown Kalshi environment 'production': use one of demo, prod"):
        environment_url("production", confirm_production=True)
    for url in (PRODUCTION_URL, "https://trading-api.kalshi.com/trade-api/v2"):
        with pytest.raises(ProductionNotConfirmed, match="production exchange"):
            KalshiTrader(credentials, url)
    with pytest.raises(ProductionNotConfirmed):
        KalshiTrader.for_environment(credentials, "prod")
    with KalshiTrader.for_environment(credentials, "prod", confirm_production=True) as live, \
            KalshiTrader(credentials) as default:
        assert (live.base_url, default.base_url) == (PRODUCTION_URL, DEMO_URL)  # no request was made


def test_the_trading_url_comes_from_the_variable_then_the_setting_then_the_environment():
    proxy, sandbox = "http://127.0.0.1:8123/trade-api/v2", "https://sandbox.example/trade-api/v2"
    assert trade_url("demo", variables={}) == (DEMO_URL, None)
    assert trade_url("prod", True, variables={}) == (PRODUCTION_URL, None)
    assert trade_url("demo", configured=sandbox, variables={}) == (sandbox, "execution.trade_api_url")
    assert trade_url("demo", configured=sandbox, variables={"KWX_KALSHI_TRADE_URL": proxy}) == (
        proxy, "$KWX_KALSHI_TRADE_URL")
    assert trade_url("prod", True, configured=PRODUCTION_URL, variables={}) == (PRODUCTION_URL,
                                                                               "execution.trade_api_url")
    with pytest.raises(ProductionNotConfirmed, match="real money"):  # a proxy does not lift the confirmation
        trade_url("prod", configured=proxy, variables={})
    for env, configured, variables, where in [
            ("demo", PRODUCTION_URL, {}, "execution.trade_api_url"),
            ("demo", None, {"KWX_KALSHI_TRADE_URL": "https://trading-api.kalshi.com/trade-api/v2"},
             "$KWX_KALSHI_TRADE_URL")]:
        with pytest.raises(ProductionNotConfirmed, match=rf"^{re.escape(where)} https://\S+ is Kalshi's "
                           rf"production exchange \(real money\): it needs --env prod and --confirm-production$"):
            trade_url(env, True, configured, variables)
    with pytest.raises(ValueError, match=r"^\$KWX_KALSHI_TRADE_URL: must be an http\(s\) URL with a host, such as "
                                         r"https://host/path; got 'http://user:\*\*\*@/x'$"):
        trade_url("demo", variables={"KWX_KALSHI_TRADE_URL": "http://user:SENTINEL-pw@/x"})


def test_client_order_ids_are_fixed_by_the_decision():
    cid = client_order_id("kwx-live", TICKER, "yes", "buy", "1751464860:3")
    assert cid == "48b82d73-e200-5a24-8508-372bed81d84b"  # the same in every process, on every machine
    variants = {client_order_id(*parts) for parts in [("kwx-paper", TICKER, "yes", "buy", "1751464860:3"),
                                                      ("kwx-live", OTHER, "yes", "buy", "1751464860:3"),
                                                      ("kwx-live", TICKER, "no", "buy", "1751464860:3"),
                                                      ("kwx-live", TICKER, "yes", "sell", "1751464860:3"),
                                                      ("kwx-live", TICKER, "yes", "buy", "1751464860:4")]}
    assert len(variants) == 5 and cid not in variants
    assert amended_client_order_id(cid) == f"{cid}:a1" and amended_client_order_id(f"{cid}:a1") == f"{cid}:a2"
    assert base_client_order_id(f"{cid}:a7") == cid
    for bad in [{"price_cents": 0}, {"price_cents": 100}, {"price_cents": 40.0}, {"count": 0}, {"count": True},
                {"side": "maybe"}, {"action": "hold"}, {"client_order_id": f"{cid}:a1"},
                {"client_order_id": "spaces are not allowed"}, {"client_order_id": "x" * 59}, {"ticker": ""},
                {"time_in_force": "ioc"}, {"time_in_force": IMMEDIATE_OR_CANCEL},  # post-only cannot be immediate
                {"time_in_force": "fill_or_kill", "post_only": True}]:
        fields = {"ticker": TICKER, "side": "yes", "action": "buy", "count": 1, "price_cents": 40,
                  "client_order_id": cid} | bad
        with pytest.raises(ValueError):
            OrderIntent(**fields)


def test_create_list_amend_and_cancel_in_the_sdks_shapes(exchange, credentials):
    trader = trader_for(exchange, credentials)
    yes, no = intent(), intent("1751464860:2", side="no", count=5, price=55)
    order = trader.create_order(yes)
    assert (order.status, order.price_cents, order.remaining_count, order.fill_count) == ("resting", 40, 10, 0)
    assert order.client_order_id == yes.client_order_id and order.side == "yes" and order.created_ts is not None
    no_order = trader.create_order(no)
    assert (no_order.side, no_order.price_cents) == ("no", 55)
    exchange.page_size = 1  # listings follow the cursor
    assert {o.order_id for o in trader.orders(status="resting", ticker=TICKER)} == {order.order_id,
                                                                                   no_order.order_id}
    assert trader.orders(ticker=OTHER) == [] and trader.order(order.order_id) == order
    assert trader.order("no-such-order") is None
    amended = trader.amend_order(order.order_id, price_cents=41)
    assert (amended.order_id, amended.price_cents, amended.remaining_count) == (order.order_id, 41, 10)
    assert amended.client_order_id == f"{yes.client_order_id}:a1"
    assert trader.order_by_client_id(yes.client_order_id, TICKER) == amended  # still found by the intent's id
    resized = trader.amend_order(order.order_id, count=6)
    assert (resized.price_cents, resized.remaining_count, resized.client_order_id) == (
        41, 6, f"{yes.client_order_id}:a2")
    canceled = trader.cancel_order(order.order_id)
    assert (canceled.status, canceled.remaining_count) == ("canceled", 0)
    assert trader.cancel_order(order.order_id) == canceled  # cancelling twice is not an error
    with pytest.raises(OrderRejected, match=r"^amend order .*: order .* is canceled, filled 0/0; nothing to amend"
                       ) as caught:
        trader.amend_order(order.order_id, price_cents=39)
    assert caught.value.reason_code == "not_resting" and caught.value.order == canceled
    assert trader.balance().balance_cents == 100_000 - 5 * 55  # the resting NO order holds its cost
    assert trader.fills() == [] and trader.positions() == []
    assert assert_sdk_shapes(exchange) >= 20


def test_partial_fills_positions_and_balance(exchange, credentials):
    trader = trader_for(exchange, credentials)
    order = trader.create_order(intent())  # YES buy 10 @ 40
    assert exchange.trade(TICKER, 40, 5) == 0  # a trade at our price touches it, it does not go through
    assert exchange.trade(TICKER, 39, 4) == 4
    partial = trader.order(order.order_id)
    assert (partial.status, partial.fill_count, partial.remaining_count) == ("resting", 4, 6)
    assert exchange.trade(TICKER, 30, 20) == 6
    assert trader.order(order.order_id).status == "executed"
    no = trader.create_order(intent("1751464860:2", side="no", count=3, price=55))  # NO at 55 = YES at 45
    assert exchange.trade(TICKER, 45, 3) == 0 and exchange.trade(TICKER, 46, 2) == 2
    fills = trader.fills(ticker=TICKER)
    assert [(f.order_id, f.side, f.count, f.price_cents, f.is_taker) for f in fills] == [
        (no.order_id, "no", 2, 55, False), (order.order_id, "yes", 6, 40, False),
        (order.order_id, "yes", 4, 40, False)]
    assert fills[0].client_order_id == no.client_order_id and fills[0].ts is not None
    assert trader.fills(order_id=no.order_id) == fills[:1] and trader.fills(min_ts=int(time.time()) + 3600) == []
    [position] = trader.positions()
    assert (position.ticker, position.position, position.market_exposure_cents) == (TICKER, 10 - 2, 400 + 110)
    assert trader.balance().balance_cents == 100_000 - 400 - 110 - 55  # the NO order's last contract is held
    # a marketable order without post-only takes the touch, as deep as the book goes, and rests the rest
    exchange.set_book(OTHER, 20, 25, depth=2)
    taker = trader.create_order(intent("1751464860:3", ticker=OTHER, count=5, price=26, post_only=False))
    assert (taker.fill_count, taker.remaining_count, taker.status) == (2, 3, "resting")
    [taken] = trader.fills(ticker=OTHER)
    assert (taken.count, taken.price_cents, taken.is_taker) == (2, 25, True)
    assert assert_sdk_shapes(exchange) > 0


def taker(intent_id: str, ticker: str = OTHER, side: str = "yes", count: int = 5, price: int = 26) -> OrderIntent:
    return OrderIntent.taker(ticker, side, "buy", count, price, client_order_id("kwx-test", ticker, side, "buy",
                                                                                 intent_id))


def test_a_taker_order_is_immediate_or_cancel_and_never_rests(exchange, credentials):
    trader = trader_for(exchange, credentials)
    exchange.set_book(OTHER, 20, 25, depth=2)  # 2 contracts offered at the 25¢ ask
    partial = trader.create_order(taker("ioc:1"))  # buy 5 up to 26¢: 2 fill at once, the exchange cancels 3
    assert (partial.status, partial.fill_count, partial.remaining_count, partial.price_cents) == ("canceled", 2, 0, 26)
    whole = trader.create_order(taker("ioc:2", TICKER, "no", 3, 62))  # NO at 62 meets the 38¢ YES bid: all fill
    assert (whole.status, whole.fill_count, whole.remaining_count) == ("executed", 3, 0)
    missed = trader.create_order(taker("ioc:3", TICKER, "yes", 4, 41))  # below the 42¢ ask: nothing crosses
    assert (missed.status, missed.fill_count, missed.remaining_count) == ("canceled", 0, 0)
    assert [(f.ticker, f.count, f.is_taker) for f in trader.fills()] == [(TICKER, 3, True), (OTHER, 2, True)]
    # fill_or_kill: all at once or nothing
    exchange.set_book(OTHER, 20, 25, depth=2)
    fok = {"ticker": OTHER, "side": "yes", "action": "buy", "price_cents": 25, "post_only": False,
           "time_in_force": "fill_or_kill"}
    killed = trader.create_order(OrderIntent(count=3, client_order_id="fok-1", **fok))
    filled = trader.create_order(OrderIntent(count=2, client_order_id="fok-2", **fok))
    assert [(o.status, o.fill_count) for o in (killed, filled)] == [("canceled", 0), ("executed", 2)]
    assert trader.orders(status="resting") == []
    assert exchange.count("DELETE", "/portfolio/orders/*") == 0 and exchange.count("POST", ORDERS) == 5
    bodies = [r.body for r in exchange.requests if r.method == "POST"]
    assert [b["time_in_force"] for b in bodies] == [IMMEDIATE_OR_CANCEL] * 3 + ["fill_or_kill"] * 2
    assert all(b["post_only"] is False for b in bodies)
    assert assert_sdk_shapes(exchange) >= 10  # each body a valid CreateOrderRequest, each answer an Order


def test_a_restart_never_resends_a_taker_order_the_exchange_executed_or_cancelled(exchange, credentials):
    trader = trader_for(exchange, credentials)
    exchange.set_book(OTHER, 20, 25, depth=2)
    cancelled = taker("ioc:1")
    exchange.drop_response_next()  # carried out (2 filled, 3 cancelled), the answer lost: found by looking
    order = trader.create_order(cancelled)
    assert (order.status, order.fill_count) == ("canceled", 2) and exchange.count("POST", ORDERS) == 1
    executed = taker("ioc:2", TICKER, "no", 3, 62)
    done = trader.create_order(executed)
    exchange.set_book(OTHER, 20, 25, depth=50)  # the book refilled: an order sent again would fill now
    restarted = trader_for(exchange, credentials)
    assert restarted.ensure_order(cancelled) == order and restarted.ensure_order(executed) == done
    assert exchange.count("POST", ORDERS) == 2 and len(exchange.orders) == 2
    assert sum(f["count"] for f in exchange.fills) == 2 + 3  # the intents were spent once each


def test_kwx_parses_what_the_sdk_models_hold(exchange, credentials):
    trader = trader_for(exchange, credentials)
    order = trader.create_order(intent())
    exchange.trade(TICKER, 35, 3)
    raw_order, raw_fill = exchange.orders_of(TICKER)[0], exchange.fills[0]
    raw_position = exchange._position_json(TICKER, exchange.positions[TICKER])
    for model, raw, parse in ((Order, raw_order, parse_order), (Fill, raw_fill, parse_fill),
                              (MarketPosition, raw_position, parse_position)):
        through_sdk = model.model_validate(raw).model_dump(mode="json", exclude_none=True)
        assert parse(through_sdk) == parse(raw)
    assert parse_order(raw_order).fill_count == 3 and parse_order(raw_order).order_id == order.order_id


def test_an_amend_racing_a_fill_reports_what_is_left_or_a_clear_error(exchange, credentials):
    trader = trader_for(exchange, credentials)
    # some contracts fill between kwx's read and the amendment: the answer shows them and the smaller rest
    first = trader.create_order(intent("race:1"))
    exchange.before_next("POST", AMEND, lambda: exchange.trade(TICKER, 35, 4))
    amended = trader.amend_order(first.order_id, price_cents=39)
    assert (amended.status, amended.price_cents, amended.fill_count, amended.remaining_count) == ("resting", 39, 4, 6)
    # everything fills first: nothing is left to amend, and the error says so with the order's state
    second = trader.create_order(intent("race:2"))
    exchange.before_next("POST", AMEND, lambda: exchange.trade(TICKER, 30, 100))
    with pytest.raises(OrderRejected, match=r"^amend order \S+: order .* is executed, filled 10/10 before the "
                                            r"amendment arrived$") as caught:
        trader.amend_order(second.order_id, price_cents=41)
    assert caught.value.reason_code == "not_resting" and caught.value.order.fill_count == 10
    # shrinking below what has meanwhile filled: the exchange refuses, and the order is reported as it stands
    third = trader.create_order(intent("race:3"))
    exchange.before_next("POST", AMEND, lambda: exchange.trade(TICKER, 30, 6))
    with pytest.raises(OrderRejected, match=r"rejected \(invalid_order, HTTP 400\): invalid order; count must exceed "
                                            r"the filled count \(order .* is resting, filled 6/10\)") as caught:
        trader.amend_order(third.order_id, count=5)
    assert caught.value.reason_code == "invalid_order" and caught.value.order.remaining_count == 4
    with pytest.raises(OrderRejected, match="count 5 leaves nothing to rest: 6 are filled already"):
        trader.amend_order(third.order_id, count=5)
    # a cancel racing the last fill reports the fill instead of failing
    exchange.before_next("DELETE", "/portfolio/orders/*", lambda: exchange.trade(TICKER, 30, 100))
    done = trader.cancel_order(third.order_id)
    assert (done.status, done.fill_count) == ("executed", 10)
    assert assert_sdk_shapes(exchange) > 0


@pytest.mark.parametrize(("fault", "posts"), [
    (lambda ex: ex.drop_response_next(), 1),
    (lambda ex: ex.hang_next(1.5), 1),
    (lambda ex: ex.hang_next(1.5, accept=False), 2),
    (lambda ex: ex.fail_next(500, method="POST", path=ORDERS), 2),
    (lambda ex: ex.fail_next(503, times=2, method="POST", path=ORDERS), 3),
], ids=["dropped-after-accepting", "hung-after-accepting", "hung-unprocessed", "500", "503-twice"])
def test_a_create_with_no_answer_is_resolved_without_a_duplicate(exchange, credentials, caplog, fault, posts):
    trader = trader_for(exchange, credentials)
    wanted = intent()
    fault(exchange)
    order = trader.create_order(wanted)
    [placed] = exchange.orders_of(TICKER)  # exactly one order, whatever happened to the answers
    assert (order.order_id, order.client_order_id, order.status) == (placed["order_id"], wanted.client_order_id,
                                                                    "resting")
    assert exchange.count("POST", ORDERS) == posts
    assert exchange.count("GET", ORDERS) >= 1  # looked up before anything was re-sent
    assert any("no answer" in r.getMessage() for r in caplog.records)


def test_an_amend_or_cancel_with_no_answer_is_resolved_by_looking(exchange, credentials):
    trader = trader_for(exchange, credentials)
    order = trader.create_order(intent())
    exchange.drop_response_next(method="POST", path=AMEND)  # carried out, unanswered: found by its new client id
    assert trader.amend_order(order.order_id, price_cents=39).client_order_id.endswith(":a1")
    exchange.hang_next(1.5, accept=False, method="POST", path=AMEND)  # never carried out: sent again
    assert trader.amend_order(order.order_id, price_cents=38).price_cents == 38
    assert exchange.count("POST", AMEND) == 3 and trader.order(order.order_id).client_order_id.endswith(":a2")
    exchange.hang_next(1.5, method="DELETE", path="/portfolio/orders/*")  # cancelled; the retry finds it so
    assert trader.cancel_order(order.order_id).status == "canceled"
    assert exchange.count("DELETE", "/portfolio/orders/*") == 2 and len(exchange.orders) == 1


def test_a_restart_finds_the_order_it_placed_and_places_none(exchange, credentials, rsa_key):
    wanted = intent()
    dying = trader_for(exchange, credentials)
    exchange.drop_response_next()
    exchange.fail_next(503, times=4, method="GET", path=ORDERS)  # its lookup fails too: it stops, not knowing
    with pytest.raises(UnknownOutcomeError, match="nothing was re-sent, ensure_order resolves it"):
        dying.create_order(wanted)
    dying.close()
    assert exchange.count("POST", ORDERS) == 1

    def restarted() -> KalshiTrader:  # a new process: credentials read again, a new connection
        return trader_for(exchange, KalshiCredentials.from_pem(KEY_ID, pem_of(rsa_key)))

    order = restarted().ensure_order(wanted)
    assert exchange.count("POST", ORDERS) == 1 and len(exchange.orders) == 1
    restarted().amend_order(order.order_id, price_cents=39)
    assert restarted().ensure_order(wanted).order_id == order.order_id  # found by the intent's id when amended
    restarted().cancel_order(order.order_id)
    assert restarted().ensure_order(wanted).status == "canceled"  # a cancelled intent is not placed again
    assert exchange.count("POST", ORDERS) == 1 and len(exchange.orders) == 1
    # create_order (no lookup first) of a resting intent: the exchange refuses the taken id, the order comes back
    other = intent("1751464860:9", ticker=OTHER, price=21)
    resting = restarted().create_order(other)
    assert restarted().create_order(other) == resting
    assert exchange.count("POST", ORDERS) == 3 and len(exchange.orders) == 2
    # an id that belongs to another side of the market is not taken for this intent's order
    clash = OrderIntent(OTHER, "no", "buy", 1, 50, other.client_order_id)
    with pytest.raises(OrderRejected, match=r"belongs to order .* not to buy 1 NO") as caught:
        restarted().ensure_order(clash)
    assert caught.value.reason_code == "client_order_id_conflict"


def test_429_and_5xx_are_retried_and_a_create_answered_429_is_simply_resent(exchange, credentials):
    sleeps: list[float] = []
    trader = trader_for(exchange, credentials, sleep=sleeps.append)
    exchange.fail_next(429, retry_after=0.04, path="/portfolio/balance")
    exchange.fail_next(503, times=2, path="/portfolio/balance")
    assert trader.balance().balance_cents == 100_000
    assert exchange.count("GET", "/portfolio/balance") == 4 and sleeps[0] == 0.04  # Retry-After honoured
    exchange.fail_next(429, retry_after=0, method="POST", path=ORDERS)
    trader.create_order(intent())
    assert exchange.count("POST", ORDERS) == 2 and exchange.count("GET", ORDERS) == 0  # 429: nothing was done
    exchange.fail_next(500, times=4, path="/portfolio/positions")
    with pytest.raises(FetchError, match=r"^positions: gave up after 4 attempts \(HTTP 500\)$"):
        trader.positions()


@pytest.mark.parametrize(("setup", "wanted", "code"), [
    (lambda ex: setattr(ex, "cash", 1_000), {"count": 30}, "insufficient_balance"),
    (lambda ex: ex.close_market(TICKER), {}, "market_closed"),
    (lambda ex: None, {"price": 42}, "post_only_cross"),  # a YES bid at the ask would take liquidity
    (lambda ex: ex.reject_next("insufficient_balance"), {}, "insufficient_balance"),
    (lambda ex: ex.reject_next("market_closed"), {}, "market_closed"),
    (lambda ex: ex.reject_next("post_only_cross"), {}, "post_only_cross"),
    (lambda ex: None, {"ticker": "KXHIGHCHI-25JUL02-B99.5"}, "market_not_found"),
], ids=["real-insufficient-balance", "real-market-closed", "real-post-only-cross", "injected-insufficient-balance",
        "injected-market-closed", "injected-post-only-cross", "unknown-market"])
def test_rejections_become_one_exception_with_a_reason_code(exchange, credentials, setup, wanted, code):
    trader = trader_for(exchange, credentials)
    setup(exchange)
    refused = intent(**wanted)
    with pytest.raises(OrderRejected) as caught:
        trader.create_order(refused)
    message = str(caught.value)
    assert caught.value.reason_code == code and "\n" not in message
    assert message.startswith(f"create {refused.client_order_id} ({refused.describe()}): rejected ({code}, HTTP 4")
    assert exchange.orders == {} and exchange.count("POST", ORDERS) == 1
    assert assert_sdk_shapes(exchange) > 0


def test_payloads_are_validated_and_both_price_formats_read():
    dollars_only = {"order_id": "o1", "client_order_id": "c1", "ticker": TICKER, "side": "no", "action": "buy",
                    "status": "resting", "no_price_dollars": "0.5500", "fill_count_fp": "2.00",
                    "remaining_count_fp": "3.00"}
    order = parse_order(dollars_only)
    assert (order.price_cents, order.fill_count, order.remaining_count, order.initial_count) == (55, 2, 3, 5)
    cents_only = dollars_only | {"no_price_dollars": None, "no_price": 55, "fill_count": 2, "remaining_count": 3}
    assert parse_order(cents_only) == order
    for change, message in [
        ({"side": None}, r"^order o1: side is missing$"),
        ({"status": "pending"}, r"^order o1: status: 'pending' is not one of \['resting', 'canceled', 'executed'\]$"),
        ({"no_price_dollars": "0.555"}, r"^order o1\.no_price_dollars: '0\.555' is not a whole number of cents$"),
        ({"no_price_dollars": "1.5000"}, r"^order o1\.no_price_dollars: '1\.5000' is outside 0\.\.100 cents$"),
        ({"fill_count_fp": "1.5"}, r"^order o1\.fill_count_fp: '1\.5' is not a whole number$"),
        ({"remaining_count_fp": "-1"}, r"^order o1\.remaining_count_fp: '-1' is negative$"),
        ({"created_time": "yesterday"}, r"^order o1\.created_time: 'yesterday' is not an ISO timestamp$"),
        ({"client_order_id": 7}, r"^order o1: client_order_id: 7 is not text$"),
    ]:
        with pytest.raises(PayloadError, match=message):
            parse_order(dollars_only | change)
    with pytest.raises(PayloadError, match=r"^order: expected an object, got NoneType$"):
        parse_order(None)
    with pytest.raises(PayloadError, match=r"is_taker: 'yes' is not true/false"):
        parse_fill({"fill_id": "f1", "order_id": "o1", "ticker": TICKER, "side": "yes", "action": "buy",
                    "count": 1, "yes_price": 40, "is_taker": "yes"})
    assert rejection_reason({"error": {"code": "invalid_order", "message": "invalid order",
                                       "details": "post only cross"}}, 400) == ("post_only_cross",
                                                                                "invalid order; post only cross")
    assert rejection_reason({"code": "bad_request", "message": "bad request"}, 400) == ("bad_request", "bad request")
    assert rejection_reason(None, 418) == ("http_418", "http_418")


def test_the_key_never_reaches_a_log_an_exception_or_a_repr(exchange, tmp_path, caplog, rsa_key):
    caplog.set_level(logging.DEBUG)
    pem = pem_of(rsa_key)
    key_file = tmp_path / "kalshi.pem"
    key_file.write_text(pem)
    credentials = KalshiCredentials.from_env({"KALSHI_API_KEY_ID": KEY_ID, "KALSHI_PRIVATE_KEY_PATH": str(key_file)})
    trader = trader_for(exchange, credentials)
    texts = [repr(credentials), str(credentials), repr(trader)]
    exchange.drop_response_next()
    order = trader.create_order(intent())  # logs its unknown outcome
    exchange.hang_next(1.5, accept=False, method="GET", path=ORDERS)
    exchange.drop_response_next()
    exchange.fail_next(503, times=3, method="GET", path=ORDERS)  # with the hang: every lookup attempt fails
    failures = []
    for action in (lambda: trader.create_order(intent("2")), lambda: trader.amend_order(order.order_id, count=0),
                   lambda: trader.amend_order("nope", price_cents=39),
                   lambda: trader_for(exchange, credentials, clock_ms=lambda: 0).balance(),
                   lambda: pickle.dumps(credentials)):
        with pytest.raises(Exception) as caught:  # each failure's text is what is checked
            action()
        failures.append(caught.value)
    assert [type(e) for e in failures] == [UnknownOutcomeError, ValueError, OrderRejected, AuthError, TypeError]
    assert MASK in str(failures[3])  # the exchange echoed the key id; kwx masked it
    texts += [str(e) for e in failures] + [repr(e) for e in failures]
    texts += [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    body_lines = [line for line in pem.splitlines() if "PRIVATE KEY" not in line]
    assert caplog.records and len(body_lines) > 20
    for text in texts:
        assert KEY_ID not in text and pem not in text and not any(line in text for line in body_lines), text
    # what slips into a message anyway (a repr shows the PEM with escaped newlines) is masked by kwx's redaction
    masked = redact(f"key {KEY_ID}, pem {pem!r}")
    assert masked.startswith(f"key {MASK}, pem '{MASK}") and not any(line in masked for line in body_lines)
