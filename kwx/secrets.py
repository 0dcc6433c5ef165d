"""Keeping secrets out of every log line and error message kwx prints.

One place knows what a secret looks like: API keys in URL query parameters, passwords in URLs
(database URLs included), the values of the environment variables that hold keys, and secrets read
from elsewhere (a private key file) that their reader registered with ``register_secret``. ``redact``
masks them in any text; ``configure_logging`` puts a filter doing the same on every handler kwx
logs through and keeps httpx from logging request URLs (with their ``key=``) at all.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

MASK = "***"
SECRET_ENV_VARS = ("VC_API_KEY", "KALSHI_API_KEY_ID", "KALSHI_PRIVATE_KEY", "AWS_SECRET_ACCESS_KEY",
                   "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD")
SECRET_QUERY_PARAMS = ("key", "api_key", "apikey", "api-key", "access_token", "token", "secret", "password",
                       "signature", "sig")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_QUERY_PARAMS) + r")=)[^&;#\s\"'<>]*",
    re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)
# Shorter values would mask ordinary words; real keys are far longer.
_MIN_SECRET_LENGTH = 4
# Lines of multi-line key material (a PEM body) are masked one by one: a repr or traceback shows the
# value with escaped newlines, where the whole value no longer matches.
_MIN_SECRET_LINE_LENGTH = 16
SNIPPET_CHARS = 120
_HTTP_LOGGERS = ("httpx", "httpcore")
# Secrets that live in no environment variable (a PEM read from a file), masked from registration on.
_registered: set[str] = set()


def register_secret(value: str) -> None:
    """Mask ``value`` (and, if it spans lines, each long line of it) in everything ``redact`` sees from now on."""
    value = value.strip()
    if len(value) >= _MIN_SECRET_LENGTH:
        _registered.add(value)


def is_secret_param(name: str) -> bool:
    return name.lower() in SECRET_QUERY_PARAMS


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """Values to mask: the secret environment variables (read now, so a key set later is covered), the
    registered secrets and ``extra``."""
    values = ([os.environ.get(name, "").strip() for name in SECRET_ENV_VARS] + sorted(_registered)
              + [v.strip() for v in extra])
    found = set()
    for value in values:
        if len(value) >= _MIN_SECRET_LENGTH:
            found.add(value)
            found.update(line.strip() for line in value.splitlines()
                         if len(line.strip()) >= _MIN_SECRET_LINE_LENGTH)
    return sorted(found, key=len, reverse=True)  # longest first, so a value containing another goes whole


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with secret query parameters, URL passwords and known secret values masked."""
    text = _QUERY_SECRET.sub(lambda m: m.group("name") + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    for value in secret_values(extra):
        text = text.replace(value, MASK)
    return text


def snippet(text: str, extra: Iterable[str] = ()) -> str:
    """A response body fit for an error message: one line, redacted, at most ``SNIPPET_CHARS`` characters."""
    line = " ".join(redact(text, extra).split())
    return line if len(line) <= SNIPPET_CHARS else line[:SNIPPET_CHARS - 1] + "…"


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg} {record.args!r}"  # args that do not fit the format: keep both, redacted
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(level: int = logging.WARNING) -> None:
    """kwx's logging: plain messages on stderr at ``level``, every root handler redacting, httpx quiet."""
    logging.basicConfig(level=level, format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    # httpx logs every request URL at INFO, query string (and Visual Crossing's key=) included.
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
