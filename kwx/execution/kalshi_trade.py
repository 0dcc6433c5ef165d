"""Kalshi Trade API v2 trading: signed requests for orders, fills, positions and balance.

A thin client on kwx's JsonHttp (retries, rate limit, deadlines, redacted errors) rather than Kalshi's
SDK (``kalshi-python-sync``): the SDK costs ~0.5 s of import, brings a second HTTP stack (urllib3)
without kwx's retry and redaction rules, and is proprietary-licensed. Its model classes stay the
reference: the tests build them from every request this client sends and every response it reads.

Safety rails kept here:

* the demo exchange is the default; production needs ``env="prod"`` *and* ``confirm_production``
  (and ``KalshiTrader`` refuses a kalshi.com URL without the confirmation, however it was built);
* every order carries a deterministic ``client_order_id``; a create whose answer never arrives is
  resolved by looking the order up before anything is re-sent, so neither a retry nor a restart
  places an order twice (an immediate-or-cancel order the exchange already executed or cancelled
  included: its intent is spent);
* the key id and the PEM are registered with ``kwx.secrets`` the moment they are read, and appear in
  no repr, log line or exception.

Prices are integer cents of the order's own side (a NO order at 30 costs 30¢ a contract); the API's
``*_dollars`` strings and older integer-cent fields are both read.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlparse

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from kwx.config import check_http_url
from kwx.data.clients.http import (
    FetchError,
    JsonHttp,
    PayloadError,
    RetryPolicy,
    StatusError,
    UnknownOutcomeError,
    all_pages,
)
from kwx.data.clients.kalshi import DEMO_URL, PRODUCTION_URL
from kwx.secrets import MASK, mask_url, register_secret, snippet

log = logging.getLogger(__name__)

API_KEY_ID_ENV = "KALSHI_API_KEY_ID"
PRIVATE_KEY_PATH_ENV = "KALSHI_PRIVATE_KEY_PATH"
TRADE_URL_ENV = "KWX_KALSHI_TRADE_URL"
TRADE_URL_SETTING = "execution.trade_api_url"
KEY_HEADER = "KALSHI-ACCESS-KEY"
SIGNATURE_HEADER = "KALSHI-ACCESS-SIGNATURE"
TIMESTAMP_HEADER = "KALSHI-ACCESS-TIMESTAMP"
REJECTED = "Kalshi rejected the API key or its signature"
PAGE_LIMIT = 200  # Kalshi's cap for the portfolio listings
MAX_PAGES = 500
SIDES = ("yes", "no")
ACTIONS = ("buy", "sell")
ORDER_STATUSES = ("resting", "canceled", "executed")
IMMEDIATE_OR_CANCEL = "immediate_or_cancel"
TIME_IN_FORCE = ("fill_or_kill", "good_till_canceled", IMMEDIATE_OR_CANCEL)
# Kalshi's rule for client order ids (at most 64 of these characters); kwx keeps room for an amend suffix.
_CLIENT_ID_RE = re.compile(r"^[-\w:+=/]{1,58}$")
AMEND_MARK = ":a"
_CID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "kwx:kalshi:client_order_id")
_PRODUCTION_HOST_SUFFIX = "kalshi.com"  # api.elections.kalshi.com and the legacy hosts; demo is kalshi.co


# --- credentials and signing --------------------------------------------------------------------

class CredentialsError(ValueError):
    """The key id or the private key cannot be used; the message names the variable, never the key."""


class KalshiCredentials:
    """An API key id and its RSA private key. Masked in every repr; refuses to be pickled."""

    __slots__ = ("_key_id", "_private_key")

    def __init__(self, key_id: str, private_key: RSAPrivateKey):
        if not isinstance(private_key, RSAPrivateKey):
            raise CredentialsError("Kalshi signs with RSA keys only")
        register_secret(key_id)
        self._key_id = key_id
        self._private_key = private_key

    @classmethod
    def from_pem(cls, key_id: str, pem: str | bytes, *, source: str = "the private key") -> KalshiCredentials:
        """Credentials from PEM text; ``source`` names where it came from in errors (never its content)."""
        key_id = key_id.strip()
        if not key_id:
            raise CredentialsError("the Kalshi API key id is empty")
        register_secret(key_id)
        data = pem.encode() if isinstance(pem, str) else pem
        register_secret(data.decode("utf-8", "replace"))  # masked even if it turns out not to be a key
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise CredentialsError(f"{source} is encrypted; kwx needs the unencrypted PEM Kalshi issued") from None
        except (ValueError, UnsupportedAlgorithm):
            raise CredentialsError(f"{source} is not a PEM private key (PKCS#1 or PKCS#8)") from None
        if not isinstance(key, RSAPrivateKey):
            raise CredentialsError(f"{source} is not an RSA key ({type(key).__name__}): Kalshi signs with RSA "
                                   f"keys only") from None
        return cls(key_id, key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> KalshiCredentials:
        """The key id from ``KALSHI_API_KEY_ID`` and the key from the PEM file ``KALSHI_PRIVATE_KEY_PATH`` names."""
        key_id = (env.get(API_KEY_ID_ENV) or "").strip()
        if not key_id:
            raise CredentialsError(f"{API_KEY_ID_ENV} is not set: the id of the Kalshi API key to trade with")
        register_secret(key_id)
        location = (env.get(PRIVATE_KEY_PATH_ENV) or "").strip()
        if not location:
            raise CredentialsError(f"{PRIVATE_KEY_PATH_ENV} is not set: the path of the PEM file holding the "
                                   f"private key of {API_KEY_ID_ENV}")
        path = Path(location).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CredentialsError(f"{PRIVATE_KEY_PATH_ENV}: cannot read {path} "
                                   f"({exc.strerror or type(exc).__name__})") from None
        return cls.from_pem(key_id, data, source=f"{PRIVATE_KEY_PATH_ENV} ({path})")

    @property
    def key_id(self) -> str:
        return self._key_id

    def _sign(self, message: bytes) -> bytes:
        # RSA-PSS with SHA-256 and a digest-length salt: what Kalshi documents and its SDK sends.
        return self._private_key.sign(
            message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256())

    def __repr__(self) -> str:
        return f"KalshiCredentials(key_id={MASK}, private_key={MASK})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("KalshiCredentials cannot be pickled: a private key is never written anywhere")


def signing_message(timestamp_ms: int, method: str, path: str) -> bytes:
    """What Kalshi signs: timestamp + METHOD + the URL path (base path included, query string excluded)."""
    return f"{timestamp_ms}{method.upper()}{path.split('?', 1)[0]}".encode()


def sign(credentials: KalshiCredentials, timestamp_ms: int, method: str, path: str) -> dict[str, str]:
    """The three KALSHI-ACCESS-* headers of one request."""
    signature = credentials._sign(signing_message(timestamp_ms, method, path))
    return {KEY_HEADER: credentials.key_id, SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: str(timestamp_ms)}


# --- environments ---------------------------------------------------------------------------------

class Environment(StrEnum):
    DEMO = "demo"
    PROD = "prod"


ENVIRONMENT_URLS = {Environment.DEMO: DEMO_URL, Environment.PROD: PRODUCTION_URL}


class ProductionNotConfirmed(ValueError):
    """Production was asked for without the explicit confirmation that real money is at stake."""


def environment_url(env: str = Environment.DEMO, confirm_production: bool = False) -> str:
    """The API base URL of ``env``; production only with ``confirm_production``."""
    try:
        environment = Environment(env)
    except ValueError:
        raise ValueError(f"unknown Kalshi environment {env!r}: use one of "
                         f"{', '.join(e.value for e in Environment)}") from None
    if environment is Environment.PROD and not confirm_production:
        raise ProductionNotConfirmed("the prod environment trades real money: it needs --env prod together with "
                                     "the explicit production confirmation flag")
    return ENVIRONMENT_URLS[environment]


def is_production_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host == _PRODUCTION_HOST_SUFFIX or host.endswith("." + _PRODUCTION_HOST_SUFFIX)


def trade_url(env: str = Environment.DEMO, confirm_production: bool = False, configured: str | None = None,
              variables: Mapping[str, str] = os.environ) -> tuple[str, str | None]:
    """The trading API base URL live mode uses, and where it came from: ``$KWX_KALSHI_TRADE_URL``, else
    ``execution.trade_api_url`` (``configured``), else ``env``'s URL (where: None). A recording proxy or a sandbox
    goes there; Kalshi's production host, however given, still needs ``env="prod"`` and ``confirm_production``.
    A variable that is not an http(s) URL is a ValueError naming it."""
    default = environment_url(env, confirm_production)  # prod without the confirmation is refused whatever the URL
    value = (variables.get(TRADE_URL_ENV) or "").strip()
    if value:
        try:
            url, where = check_http_url(value), f"${TRADE_URL_ENV}"
        except ValueError as exc:
            raise ValueError(f"${TRADE_URL_ENV}: {exc}; got {mask_url(value)!r}") from None
    elif configured:
        url, where = configured, TRADE_URL_SETTING
    else:
        return default, None
    if is_production_url(url) and env != Environment.PROD:
        raise ProductionNotConfirmed(f"{where} {mask_url(url)} is Kalshi's production exchange (real money): it "
                                     f"needs --env prod and --confirm-production")
    return url, where


# --- client order ids -----------------------------------------------------------------------------

def client_order_id(strategy: str, ticker: str, side: str, action: str, intent_id: str) -> str:
    """A UUID fixed by the decision: the same strategy, market, side, action and intent id give the
    same id in every process, so a restart or a retry asks about the order instead of placing another.

    ``intent_id`` names the decision, e.g. ``f"{signal_ts}:{episode}"``; include the mode or the
    environment in ``strategy`` when one decision may be placed in several.
    """
    parts = [strategy, ticker, side, action, intent_id]
    if not all(isinstance(p, str) and p for p in parts):
        raise ValueError("client_order_id needs non-empty strategy, ticker, side, action and intent_id")
    return str(uuid.uuid5(_CID_NAMESPACE, json.dumps(parts)))


def base_client_order_id(cid: str) -> str:
    """The id the order was created with: amendments append ``:a<n>`` to it."""
    return cid.split(AMEND_MARK, 1)[0]


def _amend_number(cid: str) -> int:
    _, mark, number = cid.partition(AMEND_MARK)
    return int(number) if mark and number.isdigit() else 0


def amended_client_order_id(cid: str) -> str:
    """The id an amendment gives the order: Kalshi wants a new one, and ``base:a<n+1>`` stays traceable
    to the intent, so a lookup by the original id still finds an amended order."""
    return f"{base_client_order_id(cid)}{AMEND_MARK}{_amend_number(cid) + 1}"


# --- what is sent and what comes back -------------------------------------------------------------

@dataclass(frozen=True)
class OrderIntent:
    """One limit order kwx wants at the exchange: ``price_cents`` is the price of ``side`` (1..99). A taker order
    (``taker``) is immediate-or-cancel: it takes what crosses at once and the exchange cancels the rest."""

    ticker: str
    side: str
    action: str
    count: int
    price_cents: int
    client_order_id: str
    post_only: bool = True  # a maker order: the exchange refuses it rather than let it take liquidity
    time_in_force: str | None = None  # None: the exchange's default (the order rests until filled or cancelled)

    def __post_init__(self):
        if not self.ticker:
            raise ValueError("an order needs a market ticker")
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"count must be a whole number of contracts >= 1, got {self.count!r}")
        if isinstance(self.price_cents, bool) or not isinstance(self.price_cents, int) or not (
                1 <= self.price_cents <= 99):
            raise ValueError(f"price_cents must be a whole number of cents in 1..99, got {self.price_cents!r}")
        if not _CLIENT_ID_RE.match(self.client_order_id) or AMEND_MARK in self.client_order_id:
            raise ValueError(f"client_order_id {self.client_order_id!r} must be 1..58 of A-Z a-z 0-9 _ - : + = / "
                             f"without {AMEND_MARK!r} (kwx appends that when amending)")
        if self.time_in_force is not None and self.time_in_force not in TIME_IN_FORCE:
            raise ValueError(f"time_in_force must be one of {TIME_IN_FORCE} or None, got {self.time_in_force!r}")
        if self.post_only and self.time_in_force in ("fill_or_kill", IMMEDIATE_OR_CANCEL):
            raise ValueError(f"a post-only order cannot be {self.time_in_force}: it rests or it is refused")

    @classmethod
    def taker(cls, ticker: str, side: str, action: str, count: int, price_cents: int,
              client_order_id: str) -> OrderIntent:
        """An order that takes liquidity: what crosses at ``price_cents`` fills at once, the rest never rests."""
        return cls(ticker, side, action, count, price_cents, client_order_id, post_only=False,
                   time_in_force=IMMEDIATE_OR_CANCEL)

    @classmethod
    def for_decision(cls, strategy: str, intent_id: str, ticker: str, side: str, action: str, count: int,
                     price_cents: int, post_only: bool = True) -> OrderIntent:
        return cls(ticker, side, action, count, price_cents,
                   client_order_id(strategy, ticker, side, action, intent_id), post_only)

    def request_body(self) -> dict:
        """The CreateOrderRequest JSON."""
        body = {"ticker": self.ticker, "client_order_id": self.client_order_id, "side": self.side,
                "action": self.action, "count": self.count, "type": "limit",
                f"{self.side}_price": self.price_cents, "post_only": self.post_only}
        if self.time_in_force is not None:
            body["time_in_force"] = self.time_in_force
        return body

    def describe(self) -> str:
        shown = f"{self.action} {self.count} {self.side.upper()} {self.ticker} @ {self.price_cents}¢"
        return shown if self.time_in_force is None else f"{shown} {self.time_in_force}"


@dataclass(frozen=True)
class ExchangeOrder:
    order_id: str
    client_order_id: str
    ticker: str
    side: str
    action: str
    status: str  # resting | canceled | executed
    price_cents: int  # of ``side``
    initial_count: int
    fill_count: int
    remaining_count: int
    fees_cents: int
    created_ts: int | None

    @property
    def is_resting(self) -> bool:
        return self.status == "resting"

    @property
    def base_client_order_id(self) -> str:
        return base_client_order_id(self.client_order_id)

    def describe(self) -> str:
        return (f"order {self.order_id} ({self.action} {self.side.upper()} {self.ticker} @ {self.price_cents}¢) is "
                f"{self.status}, filled {self.fill_count}/{self.fill_count + self.remaining_count}")


@dataclass(frozen=True)
class ExchangeFill:
    fill_id: str
    order_id: str
    client_order_id: str | None
    ticker: str
    side: str
    action: str
    count: int
    price_cents: int  # of ``side``
    is_taker: bool
    ts: int | None


@dataclass(frozen=True)
class ExchangePosition:
    ticker: str
    position: int  # contracts: positive YES, negative NO
    market_exposure_cents: int
    realized_pnl_cents: int
    fees_paid_cents: int
    total_traded_cents: int


@dataclass(frozen=True)
class ExchangeBalance:
    balance_cents: int  # available for trading
    portfolio_value_cents: int


class OrderRejected(RuntimeError):
    """The exchange refused an order request (``reason_code``: e.g. insufficient_balance, market_closed,
    post_only_cross, not_resting); ``order`` is the order's state afterwards, when there is one."""

    def __init__(self, reason_code: str, message: str, order: ExchangeOrder | None = None):
        super().__init__(message)
        self.reason_code = reason_code
        self.order = order


# --- payload parsing (pure) -----------------------------------------------------------------------

def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _decimal(value, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(f"{where}: {value!r} is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PayloadError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite():
        raise PayloadError(f"{where}: {value!r} is not a number")
    return number


def _whole(number: Decimal, value, where: str) -> int:
    if number != number.to_integral_value():
        raise PayloadError(f"{where}: {value!r} is not a whole number")
    return int(number)


def _text(obj: dict, field: str, where: str, required: bool = True) -> str | None:
    value = obj.get(field)
    if value is None or value == "":
        if required:
            raise PayloadError(f"{where}: {field} is missing")
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where}: {field}: {value!r} is not text")
    return value


def _choice(obj: dict, field: str, where: str, choices: tuple[str, ...]) -> str:
    value = _text(obj, field, where)
    if value not in choices:
        raise PayloadError(f"{where}: {field}: {value!r} is not one of {list(choices)}")
    return value


def _count(obj: dict, field: str, where: str) -> int:
    """A contract count from ``{field}_fp`` ("3.00") or the integer ``{field}``."""
    for name in (f"{field}_fp", field):
        value = obj.get(name)
        if value is not None and value != "":
            count = _whole(_decimal(value, f"{where}.{name}"), value, f"{where}.{name}")
            if count < 0:
                raise PayloadError(f"{where}.{name}: {value!r} is negative")
            return count
    raise PayloadError(f"{where}: {field} is missing")


def _signed_count(obj: dict, field: str, where: str) -> int:
    for name in (f"{field}_fp", field):
        value = obj.get(name)
        if value is not None and value != "":
            return _whole(_decimal(value, f"{where}.{name}"), value, f"{where}.{name}")
    raise PayloadError(f"{where}: {field} is missing")


def _cents_of_dollars(value, where: str) -> int:
    cents = _decimal(value, where) * 100
    if cents != cents.to_integral_value():
        raise PayloadError(f"{where}: {value!r} is not a whole number of cents")
    return int(cents)


def _price(obj: dict, field: str, where: str) -> int:
    """A price in cents from ``{field}_dollars`` / ``{field}_fixed`` ("0.4200") or the integer ``{field}``."""
    for name in (f"{field}_dollars", f"{field}_fixed"):
        value = obj.get(name)
        if value is not None and value != "":
            cents = _cents_of_dollars(value, f"{where}.{name}")
            break
    else:
        value = obj.get(field)
        if value is None or value == "":
            raise PayloadError(f"{where}: {field} is missing")
        name = field
        cents = _whole(_decimal(value, f"{where}.{field}"), value, f"{where}.{field}")
    if not 0 <= cents <= 100:
        raise PayloadError(f"{where}.{name}: {value!r} is outside 0..100 cents")
    return cents


def _money(obj: dict, field: str, where: str, required: bool = True) -> int:
    """Cents from the integer ``{field}`` (exact), else from ``{field}_dollars``."""
    value = obj.get(field)
    if value is not None and value != "":
        return _whole(_decimal(value, f"{where}.{field}"), value, f"{where}.{field}")
    dollars = obj.get(f"{field}_dollars")
    if dollars is not None and dollars != "":
        return _cents_of_dollars(dollars, f"{where}.{field}_dollars")
    if required:
        raise PayloadError(f"{where}: {field} is missing")
    return 0


def _unix(obj: dict, where: str, iso_field: str, ts_field: str | None = None) -> int | None:
    if ts_field is not None and obj.get(ts_field) is not None:
        value = obj[ts_field]
        if isinstance(value, bool) or not isinstance(value, int):
            raise PayloadError(f"{where}.{ts_field}: {value!r} is not a Unix timestamp")
        return value
    value = obj.get(iso_field)
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{where}.{iso_field}: {value!r} is not an ISO timestamp") from None
    if parsed.tzinfo is None:
        raise PayloadError(f"{where}.{iso_field}: {value!r} has no time zone")
    return int(parsed.timestamp())


def parse_order(value, where: str = "order") -> ExchangeOrder:
    order = _object(value, where)
    order_id = _text(order, "order_id", where)
    where = f"{where} {order_id}"
    side = _choice(order, "side", where, SIDES)
    fill, remaining = _count(order, "fill_count", where), _count(order, "remaining_count", where)
    initial = order.get("initial_count", order.get("initial_count_fp"))
    return ExchangeOrder(
        order_id=order_id, client_order_id=_text(order, "client_order_id", where),
        ticker=_text(order, "ticker", where), side=side, action=_choice(order, "action", where, ACTIONS),
        status=_choice(order, "status", where, ORDER_STATUSES), price_cents=_price(order, f"{side}_price", where),
        initial_count=fill + remaining if initial is None else _count(order, "initial_count", where),
        fill_count=fill, remaining_count=remaining,
        fees_cents=_money(order, "taker_fees", where, required=False) + _money(order, "maker_fees", where,
                                                                                required=False),
        created_ts=_unix(order, where, "created_time"))


def parse_fill(value, where: str = "fill") -> ExchangeFill:
    fill = _object(value, where)
    fill_id = _text(fill, "fill_id", where, required=False) or _text(fill, "trade_id", where)
    where = f"{where} {fill_id}"
    side = _choice(fill, "side", where, SIDES)
    is_taker = fill.get("is_taker")
    if not isinstance(is_taker, bool):
        raise PayloadError(f"{where}: is_taker: {is_taker!r} is not true/false")
    return ExchangeFill(
        fill_id=fill_id, order_id=_text(fill, "order_id", where),
        client_order_id=_text(fill, "client_order_id", where, required=False),
        ticker=_text(fill, "ticker", where, required=False) or _text(fill, "market_ticker", where),
        side=side, action=_choice(fill, "action", where, ACTIONS), count=_count(fill, "count", where),
        price_cents=_price(fill, f"{side}_price", where), is_taker=is_taker,
        ts=_unix(fill, where, "created_time", ts_field="ts"))


def parse_position(value, where: str = "market position") -> ExchangePosition:
    position = _object(value, where)
    ticker = _text(position, "ticker", where)
    where = f"{where} {ticker}"
    return ExchangePosition(
        ticker=ticker, position=_signed_count(position, "position", where),
        market_exposure_cents=_money(position, "market_exposure", where),
        realized_pnl_cents=_money(position, "realized_pnl", where),
        fees_paid_cents=_money(position, "fees_paid", where, required=False),
        total_traded_cents=_money(position, "total_traded", where, required=False))


def parse_balance(value, where: str = "balance") -> ExchangeBalance:
    body = _object(value, where)
    return ExchangeBalance(balance_cents=_money(body, "balance", where),
                           portfolio_value_cents=_money(body, "portfolio_value", where, required=False))


def rejection_reason(payload: dict | None, status: int) -> tuple[str, str]:
    """(reason code, human text) of an error body: ``{"error": {code, message, details}}`` or the same keys at
    the top level (Kalshi's shape for a body it could not parse). A post-only cross, which Kalshi reports as
    invalid_order with details "post only cross", gets its own code."""
    payload = payload or {}
    error = payload.get("error") if isinstance(payload.get("error"), dict) else payload
    code = error.get("code") if isinstance(error.get("code"), str) and error.get("code") else f"http_{status}"
    words = [str(error[k]) for k in ("message", "details") if isinstance(error.get(k), str) and error.get(k)]
    text = "; ".join(dict.fromkeys(words)) or code
    if "post only" in text.lower().replace("-", " ").replace("_", " "):
        code = "post_only_cross"
    return code, text


# --- the client -----------------------------------------------------------------------------------

class KalshiTrader:
    """Orders, fills, positions and balance of one Kalshi account (demo unless production is confirmed)."""

    def __init__(self, credentials: KalshiCredentials, base_url: str = DEMO_URL, *, confirm_production: bool = False,
                 timeout: float = 10.0, retry: RetryPolicy | None = None, per_second: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep, clock_ms: Callable[[], int] | None = None,
                 page_limit: int = PAGE_LIMIT, max_pages: int = MAX_PAGES):
        if is_production_url(base_url) and not confirm_production:
            raise ProductionNotConfirmed(f"{base_url} is Kalshi's production exchange (real money): it needs the "
                                         f"explicit production confirmation")
        if not 1 <= page_limit <= PAGE_LIMIT:
            raise ValueError(f"page_limit must be within 1..{PAGE_LIMIT}")
        self._credentials = credentials
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.base_url = base_url
        self.page_limit, self.max_pages = page_limit, max_pages
        self.http = JsonHttp(base_url, timeout=timeout, retry=retry, per_second=per_second, auth=self._headers,
                             sleep=sleep)

    @classmethod
    def for_environment(cls, credentials: KalshiCredentials, env: str = Environment.DEMO, *,
                        confirm_production: bool = False, **options) -> KalshiTrader:
        return cls(credentials, environment_url(env, confirm_production), confirm_production=confirm_production,
                   **options)

    def _headers(self, method: str, path: str) -> dict[str, str]:
        return sign(self._credentials, self._clock_ms(), method, path)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> KalshiTrader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KalshiTrader({self.base_url})"

    # --- reads ---

    def _pages(self, path: str, key: str, params: dict, what: str) -> list:
        params = {k: v for k, v in params.items() if v is not None} | {"limit": self.page_limit}
        return all_pages(self.http, path, params, key, what=what, rejected=REJECTED, max_pages=self.max_pages)

    def orders(self, status: str | None = None, ticker: str | None = None) -> list[ExchangeOrder]:
        if status is not None and status not in ORDER_STATUSES:
            raise ValueError(f"status must be one of {ORDER_STATUSES}, got {status!r}")
        what = "orders" + (f" of {ticker}" if ticker else "") + (f" ({status})" if status else "")
        rows = self._pages("/portfolio/orders", "orders", {"status": status, "ticker": ticker}, what)
        return [parse_order(row, f"{what}[{i}]") for i, row in enumerate(rows)]

    def order(self, order_id: str) -> ExchangeOrder | None:
        """One order by its exchange id; None if the exchange has no such order."""
        what = f"order {order_id}"
        try:
            body = self.http.get(f"/portfolio/orders/{order_id}", what=what, rejected=REJECTED)
        except StatusError as exc:
            if exc.status == 404:
                return None
            raise
        return parse_order(body.get("order"), what)

    def order_by_client_id(self, cid: str, ticker: str | None = None) -> ExchangeOrder | None:
        """The order created with ``cid`` (amended or not, resting or done), or None. ``ticker`` narrows the search.

        Kalshi cannot filter orders by client id, so this pages through the (ticker's) orders.
        """
        base = base_client_order_id(cid)
        matches = [o for o in self.orders(ticker=ticker) if o.base_client_order_id == base]
        # An amendment that replaced the order leaves the old one behind: the latest amendment is the live one.
        return max(matches, key=lambda o: _amend_number(o.client_order_id), default=None)

    def fills(self, min_ts: int | None = None, ticker: str | None = None,
              order_id: str | None = None) -> list[ExchangeFill]:
        what = "fills" + (f" of {ticker}" if ticker else "") + (f" of order {order_id}" if order_id else "")
        rows = self._pages("/portfolio/fills", "fills", {"min_ts": min_ts, "ticker": ticker, "order_id": order_id},
                           what)
        return [parse_fill(row, f"{what}[{i}]") for i, row in enumerate(rows)]

    def positions(self, ticker: str | None = None) -> list[ExchangePosition]:
        what = "positions" + (f" of {ticker}" if ticker else "")
        rows = self._pages("/portfolio/positions", "market_positions", {"ticker": ticker}, what)
        return [parse_position(row, f"{what}[{i}]") for i, row in enumerate(rows)]

    def balance(self) -> ExchangeBalance:
        return parse_balance(self.http.get("/portfolio/balance", what="balance", rejected=REJECTED))

    # --- orders ---

    def ensure_order(self, intent: OrderIntent) -> ExchangeOrder:
        """The intent's order at the exchange: the existing one if any (after a restart, say), else a new one.

        Costs a listing of the market's orders before any create: meant for resuming, where create_order
        (which looks up only when an answer is missing) serves the normal path. An order found done is returned
        as it stands and nothing is sent: an immediate-or-cancel order the exchange executed or cancelled spent
        its intent.
        """
        existing = self.order_by_client_id(intent.client_order_id, intent.ticker)
        if existing is not None:
            return _same_order(intent, existing)
        return self.create_order(intent)

    def create_order(self, intent: OrderIntent) -> ExchangeOrder:
        """Place ``intent``. An answer that never arrives (timeout, dropped connection, 5xx) is resolved by
        looking the order up by its client_order_id: found, it is returned; only when the exchange shows
        none is the order sent again. A duplicate client_order_id returns the order already there."""
        what = f"create {intent.client_order_id} ({intent.describe()})"
        retry = self.http.retry
        for attempt in range(retry.attempts):
            try:
                body = self.http.request("POST", "/portfolio/orders", json_body=intent.request_body(), what=what,
                                         rejected=REJECTED, idempotent=False)
            except UnknownOutcomeError as exc:
                self.http.wait(retry.delay(attempt))  # let the exchange finish what it may be doing
                existing = self._resolve(intent, str(exc))
                if existing is not None:
                    log.warning("%s: no answer, but the order is at the exchange (%s)", what, existing.describe())
                    return existing
                log.warning("%s: no answer and no such order at the exchange; sending it again", what)
                continue
            except StatusError as exc:
                if exc.status == 409:  # the id is taken: an earlier attempt (or process) placed it
                    existing = self.order_by_client_id(intent.client_order_id, intent.ticker)
                    if existing is not None:
                        return _same_order(intent, existing)
                raise _rejected(exc, what) from None
            return parse_order(body.get("order"), what)
        raise FetchError(f"{what}: no answer after {retry.attempts} attempts, and the exchange showed no such order "
                         f"at the last look; ensure_order looks again before anything is sent")

    def _resolve(self, intent: OrderIntent, reason: str) -> ExchangeOrder | None:
        try:
            existing = self.order_by_client_id(intent.client_order_id, intent.ticker)
        except (FetchError, PayloadError) as exc:
            raise UnknownOutcomeError(f"{reason}; looking the order up failed too ({exc}): nothing was re-sent, "
                                      f"ensure_order resolves it once the exchange answers") from None
        return None if existing is None else _same_order(intent, existing)

    def amend_order(self, order_id: str, *, price_cents: int | None = None, count: int | None = None
                    ) -> ExchangeOrder:
        """Move a resting order's price and/or its size. ``count`` is Kalshi's: the contracts the order may fill
        in all (filled + remaining), not what remains; unchanged when None.

        A fill can land between reading the order and the amend: the answer then shows the new fill and
        the smaller remainder, or, if nothing is left to amend, an OrderRejected (reason ``not_resting``
        or the exchange's) carrying the order as it now stands.
        """
        what = f"amend order {order_id}"
        current = self.order(order_id)
        if current is None:
            raise OrderRejected("not_found", f"{what}: the exchange has no such order")
        if not current.is_resting:
            raise OrderRejected("not_resting", f"{what}: {current.describe()}; nothing to amend", current)
        price = current.price_cents if price_cents is None else price_cents
        total = current.fill_count + current.remaining_count if count is None else count
        if isinstance(price, bool) or not isinstance(price, int) or not 1 <= price <= 99:
            raise ValueError(f"price_cents must be a whole number of cents in 1..99, got {price!r}")
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ValueError(f"count must be a whole number of contracts >= 1, got {total!r}")
        if total <= current.fill_count:
            raise OrderRejected("count_not_above_filled", f"{what}: count {total} leaves nothing to rest: "
                                f"{current.fill_count} are filled already (cancel the order instead)", current)
        new_cid = amended_client_order_id(current.client_order_id)
        body = {"ticker": current.ticker, "side": current.side, "action": current.action,
                "client_order_id": current.client_order_id, "updated_client_order_id": new_cid,
                f"{current.side}_price": price, "count": total}
        retry = self.http.retry
        for attempt in range(retry.attempts):
            try:
                answer = self.http.request("POST", f"/portfolio/orders/{order_id}/amend", json_body=body, what=what,
                                           rejected=REJECTED, idempotent=False)
            except UnknownOutcomeError as exc:
                self.http.wait(retry.delay(attempt))
                try:
                    now = [o for o in self.orders(ticker=current.ticker) if o.client_order_id == new_cid]
                    still = self.order(order_id)
                except (FetchError, PayloadError) as lookup:
                    raise UnknownOutcomeError(f"{exc}; looking the order up failed too ({lookup})") from None
                if now:
                    return now[0]  # the amendment took effect (its new client id is at the exchange)
                if still is None or not still.is_resting:
                    raise OrderRejected("not_resting", f"{what}: no answer, and {_state(still, order_id)}",
                                        still) from None
                continue
            except StatusError as exc:
                rejection = _rejected(exc, what)
                now = self.order(order_id)
                if now is not None and not now.is_resting:
                    raise OrderRejected("not_resting", f"{what}: {now.describe()} before the amendment arrived",
                                        now) from None
                raise OrderRejected(rejection.reason_code, f"{rejection} ({_state(now, order_id)})", now) from None
            return parse_order(_object(answer, what).get("order"), what)
        raise FetchError(f"{what}: no answer after {retry.attempts} attempts and the amendment is not at the exchange")

    def cancel_order(self, order_id: str) -> ExchangeOrder:
        """Cancel a resting order; returns it as it now stands. An order already canceled or executed is not an
        error: cancelling is what was wanted, and its fill count says what was bought."""
        what = f"cancel order {order_id}"
        try:
            body = self.http.request("DELETE", f"/portfolio/orders/{order_id}", what=what, rejected=REJECTED)
        except StatusError as exc:
            now = self.order(order_id)
            if now is not None and not now.is_resting:
                return now
            raise _rejected(exc, what, now) from None
        return parse_order(_object(body, what).get("order"), what)


def _state(order: ExchangeOrder | None, order_id: str) -> str:
    return f"order {order_id} is not at the exchange" if order is None else order.describe()


def _rejected(exc: StatusError, what: str, order: ExchangeOrder | None = None) -> OrderRejected:
    code, text = rejection_reason(exc.payload, exc.status)
    # the exchange's words are quoted redacted and short: an error body may echo what was sent
    return OrderRejected(snippet(code), f"{what}: rejected ({snippet(code)}, HTTP {exc.status}): {snippet(text)}",
                         order)


def _same_order(intent: OrderIntent, order: ExchangeOrder) -> ExchangeOrder:
    """``order`` if it is the intent's (price and size may have been amended since); a client id reused for
    another market or side is refused: that order is not this intent's."""
    if (order.ticker, order.side, order.action) != (intent.ticker, intent.side, intent.action) or (
            order.base_client_order_id != intent.client_order_id):
        raise OrderRejected("client_order_id_conflict",
                            f"client_order_id {intent.client_order_id} belongs to {order.describe()}, "
                            f"not to {intent.describe()}", order)
    return order
