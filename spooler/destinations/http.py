"""The ``http`` destination: a generic JSON webhook or collector, batched or one by one."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import httpcore  # noqa: F401 - its loggers must exist before they are filtered
import httpx

from .. import __version__
from ..records import ClaimedEvent
from ..redact import RedactingFilter, Redactor, url_secrets
from ..retry import parse_retry_after
from . import MAX_ERROR_BYTES, Verdict, event_text
from .deadline import DeadlineClients

if TYPE_CHECKING:
    from ..config import DestinationConfig

__all__ = ["HttpDestination", "judge_response", "signature_headers"]

RETRYABLE_STATUSES = frozenset({408, 429})
# Refusals of the request itself, whatever events it carries: bad credentials (401, 407)
# or a method the URL does not take (405). Bisecting such a batch would only send the
# receiver ~2 requests per event, each refused the same way.
REQUEST_REFUSED_STATUSES = frozenset({401, 405, 407})
# The most of an answer's body read: enough for any error a receiver names events in.
MAX_RESPONSE_BYTES = 1024 * 1024
# The start of an error answer that secrets are looked for in before it is cut to 2 KiB
# (masking shortens the text, so more than 2 KiB of it may be kept).
MAX_ERROR_SCAN_BYTES = 64 * 1024


def judge_response(response: httpx.Response, *, now: float, redact: Redactor) -> Verdict:
    """Classify an HTTP answer per the delivery rules (2xx, retryable, 413, other 4xx);
    the error text is the answer's start, with ``redact``'s secrets masked."""
    status = response.status_code
    if 200 <= status < 300:
        return Verdict("delivered", status)
    # Masked before it is cut (to 2 KiB), so that no cut leaves half a secret.
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


def signature_headers(secret: str, body: bytes, *, now: float) -> dict[str, str]:
    """``X-Spooler-Timestamp`` and ``X-Spooler-Signature`` for a request body.

    The signature is ``sha256=`` + hex HMAC-SHA256 with the secret over
    ``b"<timestamp>." + body``, where ``body`` is the exact bytes sent (after gzip).
    A receiver recomputes it over the raw body it read, compares with
    ``hmac.compare_digest``, and refuses timestamps far from its own clock (replays).
    """
    timestamp = str(int(now))
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {"X-Spooler-Timestamp": timestamp, "X-Spooler-Signature": f"sha256={mac.hexdigest()}"}


class HttpDestination:
    """Posts batches as a JSON array, an object ``{batch_key: [...]}``, or one event per request.

    With ``batch_size = 1`` and no ``batch_key`` each request body is the event object
    itself (webhook style) and carries the event id in an ``Idempotency-Key`` header.
    """

    #: Largest request body the receiver accepts; larger batches are split before sending.
    max_request_bytes: int | None = None
    #: Largest single event the receiver accepts; larger ones die ``too_large`` unsent.
    max_event_bytes: int | None = None

    def __init__(
        self, config: DestinationConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._clock = clock
        content_type = (
            "application/x-ndjson" if config.body_format == "ndjson" else ("application/json")
        )
        headers = {"Content-Type": content_type, "User-Agent": f"spooler/{__version__}"}
        headers.update(config.headers)
        auth = self.auth_headers()
        headers.update(auth)
        # Every secret, in each form it is sent in: the token of an auth header ("Bearer
        # KEY", or Segment's "Basic BASE64"), and the URL's credentials as httpx sends them.
        self.redact = Redactor(
            [
                config.api_key,
                config.signing_secret,
                *config.headers.values(),
                *(value.split()[-1] for value in auth.values() if value.split()),
                *url_secrets(config.url),
            ]
        )
        # One client per worker thread, each with one connection: what a request is
        # cut off on when its deadline passes (deadline.py). They share one TLS context:
        # loading the CA certificates is most of what making a client costs (~20 ms).
        tls = httpx.create_ssl_context()
        self._clients = DeadlineClients(
            lambda: httpx.Client(
                headers=headers,
                verify=tls,
                timeout=httpx.Timeout(config.timeout),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                follow_redirects=False,
            )
        )
        # httpx logs each request's URL at INFO, and httpcore every header it receives
        # at DEBUG: its loggers exist once httpcore is imported (above, not left to httpx).
        self._log_filter = RedactingFilter(self.redact)
        self._http_loggers = [
            logging.getLogger(name)
            for name in list(logging.root.manager.loggerDict)
            if name == "httpx" or name.startswith("httpcore")
        ]
        for logger in self._http_loggers:
            logger.addFilter(self._log_filter)

    def auth_headers(self) -> dict[str, str]:
        """The API key as ``Authorization: Bearer KEY``, or as-is in ``auth_header``."""
        if not self.config.api_key:
            return {}
        if self.config.auth_header.lower() == "authorization":
            return {"Authorization": f"Bearer {self.config.api_key}"}
        return {self.config.auth_header: self.config.api_key}

    def request_batches(self, events: list[ClaimedEvent]) -> list[list[ClaimedEvent]]:
        """``events`` as one request: this API takes no options that differ per event."""
        return [events]

    def request_headers(self, events: Sequence[ClaimedEvent]) -> dict[str, str]:
        """Headers of this one request: a lone event's id as ``Idempotency-Key``."""
        return {"Idempotency-Key": events[0].event_id} if len(events) == 1 else {}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """The request body, built by joining the stored JSON texts."""
        texts = [event_text(event, self.config.id_field) for event in events]
        if self.config.body_format == "ndjson":
            return "".join(text + "\n" for text in texts)
        if self.config.batch_key is not None:
            return "{" + json.dumps(self.config.batch_key) + ":[" + ",".join(texts) + "]}"
        if self.config.batch_size == 1:
            return texts[0]
        return "[" + ",".join(texts) + "]"

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
        if self.config.gzip:
            content = gzip.compress(content)
            headers["Content-Encoding"] = "gzip"
        if self.config.signing_secret:
            headers.update(
                signature_headers(self.config.signing_secret, content, now=self._clock())
            )
        with self._clients.deadline(self.config.timeout) as lane:
            request = lane.client.build_request(
                "POST",
                self.config.url,
                content=content,
                headers=headers,
                extensions=lane.extensions,
            )
            try:
                response = self._read_bounded(lane.client, request)
            except httpx.HTTPError as exc:
                if lane.cut_off or isinstance(exc, httpx.TimeoutException):
                    return Verdict("retry", error=f"timed out after {self.config.timeout:g}s")
                error = f"{type(exc).__name__}: {exc}"
                return Verdict("retry", error=self.redact.excerpt(error, MAX_ERROR_BYTES))
        return self.judge(response)

    def _read_bounded(self, client: httpx.Client, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the answer with at most ``MAX_RESPONSE_BYTES`` of its body.

        A huge body would fill memory, and one trickling in without end is cut off with
        the rest of the request at its deadline. The status is what decides; the body
        only explains it, so a body that breaks off does not make an accepted batch
        look failed.
        """
        response = client.send(request, stream=True)
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= MAX_RESPONSE_BYTES:
                    break  # closing the response then drops the connection
        except httpx.HTTPError:
            pass  # the body broke off; the status came whole (a 2xx was accepted)
        finally:
            response.close()
        headers = response.headers.copy()
        headers.pop("content-encoding", None)  # the body read is decoded already
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request
        )

    def close(self) -> None:
        """Close the connection pool, and stop masking this destination's secrets in the
        logs of httpx and httpcore."""
        self._clients.close()
        for logger in self._http_loggers:
            logger.removeFilter(self._log_filter)
