"""Secrets out of everything spooler shows: URLs, receivers' answers, log lines.

API keys, signing secrets, header values and URL credentials must never reach the
spool (error texts, attempt logs), the logs or the output, in any encoding. A
``Redactor`` holds one destination's secrets, in every form they are sent in (a URL's
password as written and decoded, and as the HTTP Basic credentials httpx makes of
it), and masks them in any text; ``RedactingFilter`` puts the log records of httpx and
httpcore through one.

How a secret is found in a text: one of ``LONG_SECRET`` characters or more wherever it
occurs; a shorter one wherever it stands alone, with no letter or digit right before
or after it. Masking every "ab" of a text would garble it, and the gaps would spell
out the secret anyway; a receiver that echoes a key echoes it as a token of its own
(``"key": "ab"``, ``Bearer ab``, ``key=ab``), and there it is masked.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "RedactingFilter",
    "Redactor",
    "mask",
    "masked_postgres_url",
    "masked_url",
    "url_secrets",
]

MASK = "***"
LONG_SECRET = 6
# The values of these headers are credentials whoever sent them (a receiver's session
# cookie, an echoed Authorization): masked in httpcore's debug lines, which print
# headers as (b'Name', b'value') pairs.
_CREDENTIAL_HEADER = re.compile(
    r"""(\(b(['"])(?:set-cookie|cookie|authorization|proxy-authorization)\2,\s*b)(['"]).*?\3\)""",
    re.IGNORECASE,
)
# libpq's query parameters that hold a secret.
_POSTGRES_SECRET_PARAMETERS = ("password", "sslpassword")


class Redactor:
    """Masks a set of secrets in any text: ``Redactor(["sk_live_..."])(text)``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first
        self.secrets = tuple(found)
        patterns = [
            re.escape(s) if len(s) >= LONG_SECRET else rf"(?<![^\W_]){re.escape(s)}(?![^\W_])"
            for s in found
        ]
        self._pattern = re.compile("|".join(patterns)) if patterns else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret masked as ``***``."""
        return self._pattern.sub(MASK, text) if self._pattern else text

    def excerpt(self, text: str, limit: int) -> str:
        """``text`` with every secret masked, then cut to at most ``limit`` UTF-8 bytes:
        masked first, so that no cut leaves half a secret."""
        data = self(text).encode("utf-8")
        if len(data) <= limit:
            return data.decode("utf-8")
        return data[: limit - 3].decode("utf-8", errors="ignore") + "..."


class RedactingFilter(logging.Filter):
    """Masks secrets in the log records of the loggers it is added to, and the values of
    credential headers (cookies, Authorization) that httpcore prints at debug level.
    Never drops a record."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its masked form, if that differs."""
        message = record.getMessage()
        masked = _CREDENTIAL_HEADER.sub(rf"\1\3{MASK}\3)", self._redact(message))
        if masked != message:
            record.msg, record.args = masked, None
        return True


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that may be secrets, in each form they travel in: its user
    info (the password; the user name when there is no password, as in
    ``https://KEY@host``), as written, decoded, and as the HTTP Basic credentials made
    of it; and the query's values (some ingest APIs take their key as ``?key=...``)."""
    parts = urlsplit(url)
    found = []
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        found += [parts.password, password] if parts.password else [parts.username, user]
        found.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    for pair in parts.query.split("&"):
        raw = pair.partition("=")[2]
        found += [raw, unquote_plus(raw)]
    return [secret for secret in found if secret]


def masked_url(url: str) -> str:
    """The URL for display, with ``url_secrets`` masked: ``https://user:***@host/?key=***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.username is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{parts.username}:{MASK}@{host}" if parts.password else f"{MASK}@{host}"
    query = "&".join(
        f"{key}={MASK}" if value else pair
        for pair in parts.query.split("&")
        for key, _, value in [pair.partition("=")]
        if pair
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def masked_postgres_url(url: str) -> str:
    """A ``postgresql://`` URL for display, without its password: the user info keeps
    only the user, and the values of libpq's secret parameters are ``***``. The rest of
    the query stays (host, dbname, sslmode say which database it is, and hold no secret),
    where ``masked_url`` would mask every value."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", "@", 1)
    query = [
        (key, MASK if key in _POSTGRES_SECRET_PARAMETERS else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/*")))


def mask(secret: str) -> str:
    """A secret for display: its first three characters (a key's prefix) and ``***``."""
    return secret[:3] + MASK if len(secret) > 8 else MASK
