"""A small JSON-over-HTTP layer shared by the clients: retries with backoff, a rate limit, clear errors."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from kwx.secrets import is_secret_param, snippet


class FetchError(RuntimeError):
    """The request could not be completed (after retries, or a non-retryable status)."""


class AuthError(FetchError):
    """The server rejected kwx's credentials (401/403): no retry can help until the key changes."""


class PagingError(FetchError):
    """The server's pagination does not end (a repeated cursor, or more pages than any real listing has)."""


class DeadlineError(FetchError):
    """The shared deadline (the live loop's tick) passed before the server answered."""


class StatusError(FetchError):
    """A 4xx answer other than 401/403/429: ``status`` and the parsed JSON ``payload`` (None if not JSON).

    The message quotes only a redacted snippet; callers read ``payload`` for the server's error code.
    """

    def __init__(self, message: str, status: int, payload: dict | None):
        super().__init__(message)
        self.status, self.payload = status, payload


class UnknownOutcomeError(FetchError):
    """A request that changes state may have been carried out, but no answer came back.

    Raised instead of retrying a non-idempotent request (``idempotent=False``): re-sending could do it
    twice, so the caller must first find out what the server did.
    """


class PayloadError(ValueError):
    """The server answered, but with something kwx must not store; the message names what and where."""


def unix_seconds(value, where: str) -> int:
    """A payload's Unix timestamp, or a PayloadError naming where it was."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{where}: {value!r} is not a Unix timestamp")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        base = min(self.backoff_seconds * 2**attempt, self.max_backoff_seconds)
        return base * (0.75 + 0.5 * random.random())  # jitter: many clients must not retry in lockstep


class Deadline:
    """A moment every request of one tick shares: each asks what is left instead of keeping its own timeout."""

    def __init__(self, seconds: float, monotonic: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._monotonic = monotonic
        self._at = monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._at - self._monotonic())


class RateLimiter:
    """At most ``per_second`` requests per second (by spacing them), on an injectable clock."""

    def __init__(self, per_second: float, sleep: Callable[[float], None], monotonic: Callable[[], float]):
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._sleep, self._monotonic = sleep, monotonic
        self._next = 0.0

    def wait(self) -> None:
        now = self._monotonic()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


# Failures where the request provably never reached the server: safe to re-send even when not idempotent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# Signs one attempt: (METHOD, URL path as sent, without the query) -> headers. Called per attempt, so a
# retry carries a fresh timestamp.
Auth = Callable[[str, str], dict[str, str]]


class JsonHttp:
    def __init__(self, base_url: str, *, timeout: float = 15.0, retry: RetryPolicy | None = None,
                 per_second: float = 10.0, headers: dict[str, str] | None = None, auth: Auth | None = None,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic):
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers or {})
        self._timeout = timeout
        self._auth = auth
        self._deadline: Deadline | None = None
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._limiter = RateLimiter(per_second, sleep, monotonic)
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def within(self, deadline: Deadline) -> Iterator[None]:
        """Every request inside the block, retries and their waits included, ends by ``deadline``."""
        previous, self._deadline = self._deadline, deadline
        try:
            yield
        finally:
            self._deadline = previous

    def _time_left(self, what: str) -> float:
        """The timeout of the next attempt; DeadlineError once the deadline has passed."""
        if self._deadline is None:
            return self._timeout
        left = self._deadline.remaining()
        if left <= 0:
            raise DeadlineError(f"{what}: did not answer within the tick deadline ({self._deadline.seconds:g} s)")
        return min(self._timeout, left)

    def _wait(self, seconds: float) -> None:
        self._sleep(seconds if self._deadline is None else min(seconds, self._deadline.remaining()))

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` (cut short by the deadline, if one is set): a caller's own backoff."""
        self._wait(seconds)

    def get(self, path: str, params: dict | None = None, *, what: str,
            rejected: str = "the server rejected the credentials") -> dict:
        """GET JSON; retries 429 (honouring Retry-After), 5xx, timeouts and connection errors.

        A 401/403 raises AuthError with ``rejected`` (e.g. "Visual Crossing rejected the API key").
        Error messages quote at most a redacted snippet of the body: it may echo the key sent.
        """
        return self.request("GET", path, params, what=what, rejected=rejected)

    def request(self, method: str, path: str, params: dict | None = None, *, json_body: dict | None = None,
                what: str, rejected: str = "the server rejected the credentials", idempotent: bool = True) -> dict:
        """One JSON request with ``get``'s retries; another 4xx raises StatusError (status and parsed body).

        ``idempotent=False`` (creating an order): a timeout, a dropped connection or a 5xx after the
        request may have reached the server raises UnknownOutcomeError at once instead of re-sending;
        429 and failures to connect are still retried, as the server provably did nothing.
        """
        sent_secrets = [str(v) for k, v in (params or {}).items() if is_secret_param(k)]
        last_error = ""
        for attempt in range(self._retry.attempts):
            timeout = self._time_left(what)
            self._limiter.wait()
            self.requests += 1
            request = self._client.build_request(method, path, params=params, json=json_body, timeout=timeout)
            if self._auth is not None:
                request.headers.update(self._auth(method, request.url.path))
            try:
                response = self._client.send(request)
            except httpx.TimeoutException as exc:
                if not idempotent and not isinstance(exc, _NOT_SENT):
                    raise UnknownOutcomeError(f"{what}: no answer ({type(exc).__name__}); "
                                              f"the server may have carried it out") from None
                self._time_left(what)  # a timeout the deadline cut short is the deadline's, not the server's
                last_error = "timed out"
                self._wait(self._retry.delay(attempt))
                continue
            except httpx.TransportError as exc:
                if not idempotent and not isinstance(exc, _NOT_SENT):
                    raise UnknownOutcomeError(f"{what}: connection lost before the answer "
                                              f"({type(exc).__name__}); the server may have carried it out") from None
                last_error = f"connection failed ({type(exc).__name__})"
                self._wait(self._retry.delay(attempt))
                continue
            if response.status_code >= 500 and not idempotent:
                raise UnknownOutcomeError(f"{what}: HTTP {response.status_code}; the server may have carried it out")
            if response.status_code == 429 or response.status_code >= 500:
                last_error = f"HTTP {response.status_code}"
                self._wait(self._retry.delay(attempt, _retry_after(response)))
                continue
            if response.status_code in (401, 403):
                raise AuthError(f"{what}: {rejected} (HTTP {response.status_code}): "
                                f"{snippet(response.text, sent_secrets)}")
            if response.status_code >= 400:
                raise StatusError(f"{what}: HTTP {response.status_code}: {snippet(response.text, sent_secrets)}",
                                  response.status_code, _json_object(response))
            try:
                body = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise PayloadError(f"{what}: response is not valid JSON ({exc})") from None
            if not isinstance(body, dict):
                raise PayloadError(f"{what}: expected a JSON object, got {type(body).__name__}")
            return body
        raise FetchError(f"{what}: gave up after {self._retry.attempts} attempts ({last_error})")


def _json_object(response: httpx.Response) -> dict | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def all_pages(http: JsonHttp, path: str, params: dict, key: str, *, what: str, rejected: str,
              max_pages: int) -> list:
    """Every row of a cursor-paged listing (Kalshi's ``cursor`` convention): the ``key`` list of each page,
    following ``cursor`` until it is empty. A cursor the server already gave, or more than ``max_pages`` pages,
    raises PagingError naming ``what``: following it would loop for ever."""
    rows: list = []
    cursor = None
    seen: set[str] = set()
    for pages in range(1, max_pages + 1):
        body = http.get(path, {**params, **({"cursor": cursor} if cursor else {})}, what=what, rejected=rejected)
        batch = body.get(key)
        if not isinstance(batch, list):
            raise PayloadError(f"{what}: '{key}' is missing or not a list")
        rows.extend(batch)
        cursor = body.get("cursor")
        if not cursor:
            return rows
        if not isinstance(cursor, str):
            raise PayloadError(f"{what}: cursor {cursor!r} is not a string")
        if cursor in seen:
            raise PagingError(f"{what}: the server repeated cursor {cursor[:40]!r} after {pages} pages")
        seen.add(cursor)
    raise PagingError(f"{what}: still more pages after {max_pages} ({len(rows):,} rows); refusing to page further")
