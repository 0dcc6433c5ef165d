"""A small JSON-over-HTTP layer shared by the clients: retries with backoff, a rate limit, clear errors."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx


class FetchError(RuntimeError):
    """The request could not be completed (after retries, or a non-retryable status)."""


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


class JsonHttp:
    def __init__(self, base_url: str, *, timeout: float = 15.0, retry: RetryPolicy | None = None,
                 per_second: float = 10.0, headers: dict[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic):
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers or {})
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._limiter = RateLimiter(per_second, sleep, monotonic)
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, params: dict | None = None, *, what: str) -> dict:
        """GET JSON; retries 429 (honouring Retry-After), 5xx, timeouts and connection errors."""
        last_error = ""
        for attempt in range(self._retry.attempts):
            self._limiter.wait()
            self.requests += 1
            try:
                response = self._client.get(path, params=params)
            except httpx.TimeoutException:
                last_error = "timed out"
                self._sleep(self._retry.delay(attempt))
                continue
            except httpx.TransportError as exc:
                last_error = f"connection failed ({type(exc).__name__})"
                self._sleep(self._retry.delay(attempt))
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last_error = f"HTTP {response.status_code}"
                self._sleep(self._retry.delay(attempt, _retry_after(response)))
                continue
            if response.status_code >= 400:
                raise FetchError(f"{what}: HTTP {response.status_code}: {response.text[:200]}")
            try:
                body = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise PayloadError(f"{what}: response is not valid JSON ({exc})") from None
            if not isinstance(body, dict):
                raise PayloadError(f"{what}: expected a JSON object, got {type(body).__name__}")
            return body
        raise FetchError(f"{what}: gave up after {self._retry.attempts} attempts ({last_error})")
