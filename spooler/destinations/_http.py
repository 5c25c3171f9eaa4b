"""What every HTTP API destination shares: the URL's checks, the headers and the API key,
the secrets to mask, the size limits, and the judging of an answer.

A type subclasses ``HttpApiDestination`` and says how its request looks (``body``,
``auth_headers``, ``request_headers``); sending is ``_sender``'s, which imports httpx
when the destination is made, so that this module stays cheap to import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import __version__
from ..errors import ConfigError
from ..records import ClaimedEvent
from ..redact import Redactor, masked_url, url_secrets
from ..retry import parse_retry_after
from . import MAX_ERROR_BYTES, Verdict

if TYPE_CHECKING:
    import httpx

    from ..config import DestinationConfig

__all__ = ["HttpApiDestination", "check_http_url", "http_url_problem", "judge_response"]

RETRYABLE_STATUSES = frozenset({408, 429})
# Refusals of the request itself, whatever events it carries: bad credentials (401, 407)
# or a method the URL does not take (405). Bisecting such a batch would only send the
# receiver about two requests per event, each refused the same way.
REQUEST_REFUSED_STATUSES = frozenset({401, 405, 407})
# The start of an error answer that secrets are looked for in before it is cut to 2 KiB
# (masking shortens the text, so more than 2 KiB of it may be kept).
MAX_ERROR_SCAN_BYTES = 64 * 1024


def judge_response(response: httpx.Response, *, now: float, redact: Redactor) -> Verdict:
    """Classify an HTTP answer per the delivery rules (2xx, retryable, 413, other 4xx);
    the error text is the answer's start, with ``redact``'s secrets masked."""
    status = response.status_code
    if 200 <= status < 300:
        return Verdict("delivered", status)
    body = response.content[:MAX_ERROR_SCAN_BYTES].decode("utf-8", "replace")
    text = redact.excerpt(f"HTTP {status}: {body}", MAX_ERROR_BYTES)
    if status in RETRYABLE_STATUSES or status >= 500:
        wait = parse_retry_after(response.headers.get("retry-after"), now=now)
        return Verdict("retry", status, text, retry_after=wait)
    if status == 413:
        return Verdict("reject", status, text, reason="too_large")
    if 400 <= status < 500:
        return Verdict(
            "reject", status, text, reason="rejected", split=status not in REQUEST_REFUSED_STATUSES
        )
    # Redirects are not followed: httpx would turn a 301/302 POST into a GET. Keeping
    # the events queued (and saying why) is safer than guessing.
    where = response.headers.get("location", "?")
    return Verdict(
        "retry", status, f"HTTP {status} (redirect to {where} not followed; fix the URL)"
    )


def http_url_problem(url: str, kind: str) -> str | None:
    """Why ``url`` cannot be requested (None: it can). Caught here, a bad URL is a config
    error; caught by httpx, it stopped the drain after it had claimed a batch."""
    try:
        parts = urlsplit(url)
        port = parts.port  # a ValueError when it is not a number, or out of range
    except ValueError as exc:  # the URL is not shown: it may hold a secret
        return f"not a valid URL ({exc})"
    if not url.startswith(("http://", "https://")):
        # No article: "a" or "an" depends on how the type name sounds.
        return f"{kind} destinations need an http:// or https:// URL, got {masked_url(url)!r}"
    if not parts.hostname:
        return f"names no host: {masked_url(url)!r}"
    if any(char.isspace() or not char.isprintable() for char in url):
        return f"holds a space or a control character: {masked_url(url)!r}"
    if port == 0:
        return f"port 0 cannot be connected to: {masked_url(url)!r}"
    return None


def check_http_url(dest: DestinationConfig, where: str) -> None:
    """An HTTP API's URL check: one httpx can request, whose credentials (if any) are
    the only ones the request would carry."""
    problem = http_url_problem(dest.url, dest.type)
    if problem:
        raise ConfigError(f"{where}url: {problem}")
    # httpx sends a URL's user info as HTTP Basic auth, in place of any other
    # Authorization header: the key would silently not be sent.
    clashing = ["api_key"] if dest.api_key else []
    clashing += [f"headers.{h}" for h in dest.headers if h.lower() == "authorization"]
    if urlsplit(dest.url).username is not None and clashing:
        raise ConfigError(
            f"{where}url: holds credentials (user info before '@'), and {where}{clashing[0]}"
            " is set too: httpx would send the URL's as HTTP Basic auth instead; give one of"
            " the two"
        )


class HttpApiDestination:
    """The base of every HTTP API type: posts ``body(events)`` to the URL and judges the
    answer. A subclass says how its API wants the request (``body`` at least)."""

    #: Largest request body the receiver accepts; larger batches are split before sending.
    max_request_bytes: int | None = None
    #: Largest single event the receiver accepts; larger ones die ``too_large`` unsent.
    max_event_bytes: int | None = None

    def __init__(
        self, config: DestinationConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        # httpx: only once a drain makes its destinations
        import httpx

        from ._sender import HttpSender

        self.config = config
        self._clock = clock
        headers = {"Content-Type": self.content_type(), "User-Agent": f"spooler/{__version__}"}
        headers.update(config.headers)
        auth = self.auth_headers()
        headers.update(auth)
        # Every secret, in each form it is sent in: the token of an auth header ("Bearer
        # KEY", or Segment's "Basic BASE64"), and the URL's credentials as httpx sends them.
        self.redact = Redactor(
            [
                *self.secrets(),
                *(value.split()[-1] for value in auth.values() if value.split()),
                *url_secrets(config.url),
            ]
        )
        self._sender = HttpSender(headers, timeout=config.timeout, redact=self.redact)
        self._url = httpx.URL(config.url)  # parsed once, not at every request

    def content_type(self) -> str:
        """The ``Content-Type`` of every request."""
        return "application/json"

    def secrets(self) -> list[str | None]:
        """The configured secrets, to be masked wherever an answer or a log line shows them."""
        return [self.config.api_key, *self.config.headers.values()]

    def auth_headers(self) -> dict[str, str]:
        """The API key as ``Authorization: Bearer KEY``, or as-is in ``auth_header``."""
        if not self.config.api_key:
            return {}
        if self.config.auth_header.lower() == "authorization":
            return {"Authorization": f"Bearer {self.config.api_key}"}
        return {self.config.auth_header: self.config.api_key}

    def request_batches(self, events: list[ClaimedEvent]) -> list[list[ClaimedEvent]]:
        """``events`` as one request: an API that takes no options that differ per event."""
        return [events]

    def request_headers(self, events: Sequence[ClaimedEvent]) -> dict[str, str]:
        """Headers of this one request, besides the fixed ones (none by default)."""
        return {}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """The request body for ``events``, joined from their stored JSON texts."""
        raise NotImplementedError

    def encode(self, content: bytes, headers: dict[str, str]) -> bytes:
        """The bytes sent for a body (the ``http`` type compresses and signs them here)."""
        return content

    def judge(self, response: httpx.Response) -> Verdict:
        """What the receiver's answer means for the batch."""
        return judge_response(response, now=self._clock(), redact=self.redact)

    def send(self, events: Sequence[ClaimedEvent]) -> Verdict:
        """POST the batch and judge the answer; network failures are retryable."""
        if self.max_event_bytes is not None:
            sizes = [len(event.body.encode("utf-8")) for event in events]
            oversized = {
                i: f"event is {size} bytes, over the {self.max_event_bytes}-byte limit"
                for i, size in enumerate(sizes)
                if size > self.max_event_bytes
            }
            if oversized:
                return Verdict("partial", reason="too_large", bad=oversized, sent=False)
        content = self.body(events).encode("utf-8")
        if self.max_request_bytes is not None and len(content) > self.max_request_bytes:
            # Never sent: the drain splits the batch, and dead-letters a lone event.
            return Verdict(
                "reject",
                error=f"request of {len(content)} bytes is over the "
                f"{self.max_request_bytes}-byte limit",
                reason="too_large",
                sent=False,
            )
        headers = self.request_headers(events)
        content = self.encode(content, headers)
        return self._sender.post(self._url, content, headers, judge=self.judge)

    def close(self) -> None:
        """Close the connections, and stop masking this destination's secrets in the logs
        of httpx and httpcore."""
        self._sender.close()
