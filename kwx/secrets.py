"""Keeping secrets out of every log line and error message kwx prints.

One place knows what a secret looks like: API keys in URL query parameters, passwords in URLs
(database URLs included), the values of the environment variables that hold keys, and secrets read
from elsewhere (a private key file) that their reader registered with ``register_secret``. ``mask_url``
masks a URL kwx prints, ``redact`` every URL and secret in any text; ``configure_logging`` puts a
filter doing the same on every handler kwx logs through and keeps httpx from logging request URLs
(with their ``key=``) at all.

A database URL is read with SQLAlchemy's own grammar (``make_url``), the one that decides what kwx
connects with: its password runs from the user's ``:`` to the ``@`` before the host and may hold any
character, ``/`` included. Web URLs (http, https) follow RFC 3986, where ``/`` ends the authority, so
``http://host:8080/x@y`` holds no password.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
SECRET_ENV_VARS = ("VC_API_KEY", "KALSHI_API_KEY_ID", "KALSHI_PRIVATE_KEY", "AWS_SECRET_ACCESS_KEY",
                   "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD")
SECRET_QUERY_PARAMS = ("key", "api_key", "apikey", "api-key", "access_token", "token", "secret", "password",
                       "signature", "sig")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_QUERY_PARAMS) + r")=)[^&;#\s\"'<>]*",
    re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)
# A URL in free text ends at a blank: a password holding one is masked whole only by mask_url.
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_WEB_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# SQLAlchemy's grammar for the user and password (sqlalchemy.engine.url._parse_url).
_DATABASE_CREDENTIALS = re.compile(r"(?P<head>[\w+]+://[^:/]*:)[^@]*@")
# What SQLAlchemy cannot parse is masked from the user's ':' to the last '@'.
_UNPARSED_CREDENTIALS = re.compile(r"(?P<head>[\w+.-]+://[^:/@]*:).*@", re.DOTALL)
_DATABASE_QUERY_SECRET = "(?P<name>[?&](?:" + "|".join(re.escape(p) for p in SECRET_QUERY_PARAMS) + r")=){value}"
# In a whole URL a query value runs to the next '&', as SQLAlchemy reads it; in text it also ends at a quote or
# bracket, so a URL quoted in a JSON log line keeps its closing quote.
_QUERY_VALUE_IN_URL = re.compile(_DATABASE_QUERY_SECRET.format(value="[^&]*"), re.IGNORECASE)
_QUERY_VALUE_IN_TEXT = re.compile(_DATABASE_QUERY_SECRET.format(value="[^&\"'<>]*"), re.IGNORECASE)
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


def _mask_database_url(url: str, query_value: re.Pattern[str]) -> str:
    """``url`` with the password and secret query values SQLAlchemy reads in it masked, everything else kept as
    written; a web URL is left to the RFC 3986 patterns."""
    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() in _WEB_SCHEMES:
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # e.g. a port that is not a number
        return _UNPARSED_CREDENTIALS.sub(lambda m: m.group("head") + MASK + "@", url)
    masked = url
    if parsed.password is not None:
        head, _, end = _credentials(url)
        masked = head + MASK + "@" + url[end:]
    if any(is_secret_param(name) for name in parsed.query):
        masked = query_value.sub(lambda m: m.group("name") + MASK, masked)
    return masked


def _credentials(url: str) -> tuple[str, str, int]:
    """For a database URL SQLAlchemy reads a password in: the text before the password, the part of the password
    SQLAlchemy missed, and where the credentials end. A raw '@' in a password (SQLAlchemy cuts at the first) is
    taken to run to the last '@' before the query."""
    credentials = _DATABASE_CREDENTIALS.match(url)
    missed = url[credentials.end():].split("?", 1)[0].rpartition("@")[0]
    return credentials.group("head"), missed, credentials.end() + len(missed) + (1 if missed else 0)


def _mask_patterns(text: str, extra: Iterable[str]) -> str:
    text = _QUERY_SECRET.sub(lambda m: m.group("name") + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    for value in secret_values(extra):
        text = text.replace(value, MASK)
    return text


def mask_url(url: str) -> str:
    """``url`` as kwx prints it: its password (whatever characters it holds) and secret query values masked."""
    return _mask_patterns(_mask_database_url(url, _QUERY_VALUE_IN_URL), ())


def url_secrets(url: str) -> list[str]:
    """The password and secret query values of database URL ``url``, as SQLAlchemy reads them: for ``redact``'s
    ``extra``, so a driver's message quoting one is masked too."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return []
    values = []
    if parsed.password is not None:
        missed = _credentials(url)[1]  # a driver quotes it as part of the host or database it was given
        values += [str(parsed.password), missed, missed.lstrip("/")]
    for name, value in parsed.query.items():
        if is_secret_param(name):
            values += [value] if isinstance(value, str) else list(value)
    return values


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every URL's password and secret query parameters, and known secret values, masked."""
    text = _URL_IN_TEXT.sub(lambda m: _mask_database_url(m.group(), _QUERY_VALUE_IN_TEXT), text)
    return _mask_patterns(text, extra)


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
