"""The ingest APIs ``spooler serve`` speaks: each one's requests, events and answers.

Each API reads its own request shape into the events it stores, and answers in its own
shape: the success answer its SDKs take as success (so they do not send again), the
400 of a malformed body, the answer to a wrong key, its 413, and the 503 with
``Retry-After`` that makes its SDKs send again later. The events stored are what the
spooler client of that API enqueues, and what the destination of that type expects:

- Amplitude (``/2/httpapi``, ``/batch``): the event objects; a request's ``options``
  are kept with each of its events under ``OPTIONS_KEY``;
- Segment (``/v1/batch``, ``/v1/track``...): the messages, with the batch's
  ``context`` and ``integrations`` merged in, and ``type`` from the path of a single call;
- PostHog (``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/``; gzip bodies too): the events;
  a batch's ``historical_migration: true`` is kept with each of them under ``OPTIONS_KEY``;
- Datalyr (``/track``): the event.

The id each API de-duplicates on (``insert_id``, ``messageId``, ``uuid``, ``eventId``)
is kept as the SDK sent it; where it sent none, the drain gives the event its spooler
event id. An event without a time gets the time it was received, so a late delivery
is not dated at its delivery. Keys are taken out: none is stored.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

from .http import Request, Response

__all__ = [
    "API",
    "MAX_EVENTS_PER_REQUEST",
    "Datalyr",
    "Events",
    "Ingest",
    "PlainAPI",
    "Refused",
    "iso_now",
    "json_response",
    "parse_json",
    "unpack",
]

MB = 1024 * 1024
# The most events one request may carry, whatever its API. Within the body limits, a
# body of tiny events (``[{},{},...]``: 7 million in 20 MB) held the event loop, which
# reads and encodes each one, for most of a minute (past a systemd watchdog's 30 s),
# and took over 2 GB; the SDKs send batches of at most a few thousand.
MAX_EVENTS_PER_REQUEST = 10_000
# How long a client is asked to wait when the spool cannot take its events: a full spool
# empties as fast as the drain delivers, a failing one needs an operator.
RETRY_AFTER_SECONDS = 10


class Refused(Exception):
    """A request answered without storing anything: the answer is the API's own."""

    def __init__(self, response: Response, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.reason = reason


@dataclass
class Ingest:
    """What a request carries: the key it presented (never stored) and its events."""

    key: str | None
    events: list[dict[str, Any]]


def json_response(status: int, body: dict[str, Any], *headers: tuple[str, str]) -> Response:
    """A response with ``body`` as compact JSON."""
    return Response(status, json.dumps(body, separators=(",", ":")).encode(), headers)


# The same answer every time: built once.
_SUCCESS = json_response(200, {"success": True})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Made once: json.loads with an option builds a decoder per call (~1.5 us a request).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def unpack(request: Request, limit: int, *, gzip_query: bool = False) -> bytes:
    """The body, gunzipped first if it says so (and, with ``gzip_query``, when
    ``?compression=gzip...`` says so, as posthog-js does); ``ValueError`` if it cannot
    be, ``OverflowError`` if it unpacks to more than ``limit`` bytes."""
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding == "gzip" or (gzip_query and "compression=gzip" in request.query):
        # Unpacked a bounded amount at a time: a small bomb must not fill memory.
        unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = unpacker.decompress(request.body, limit + 1)
        except zlib.error as exc:
            raise ValueError(f"not valid gzip: {exc}") from None
        if len(body) > limit or unpacker.unconsumed_tail:
            raise OverflowError(f"unpacks to more than {limit} bytes")
        return body
    if encoding not in ("", "identity"):
        raise ValueError(f"Content-Encoding {encoding!r} is not taken")
    return request.body


def parse_json(data: bytes) -> Any:
    """``data`` parsed as JSON; ``ValueError`` if it is not (NaN and Infinity are not)."""
    try:
        # As json.loads decodes bytes: UTF-8, -16 or -32, told apart by their first bytes.
        return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None


def iso_now(now: float) -> str:
    """A Unix time as ISO 8601 UTC to the millisecond (``2026-01-02T03:04:05.678+00:00``)."""
    return datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")


class API:
    """One ingest API; the subclasses say how it reads and answers."""

    name = ""
    #: Request paths, each with its largest body in bytes.
    paths: ClassVar[dict[str, int]] = {}
    #: The largest event the API takes, stored as JSON (None: the spool's limit).
    max_event_bytes: int | None = None

    def read(self, request: Request, now: float) -> Ingest:
        """The key and the events of a request; ``Refused`` when it is malformed."""
        raise NotImplementedError

    def accepted(self, request: Request, ingest: Ingest, ids: list[str], now: float) -> Response:
        """The success answer, sent once the events are committed."""
        raise NotImplementedError

    def malformed(self, reason: str) -> Response:
        """The 400 of a body this API would not take."""
        raise NotImplementedError

    def unauthorized(self) -> Response:
        """The answer to a wrong or missing key."""
        raise NotImplementedError

    def too_large(self, reason: str) -> Response:
        """The answer to a body over the API's limit."""
        raise NotImplementedError

    def unavailable(self, reason: str) -> Response:
        """The answer that makes this API's SDKs send again later (the spool is full or
        failing)."""
        raise NotImplementedError

    def counted(self, events: list[Any]) -> None:
        """Raise ``Refused`` with this API's 413 when ``events`` are more than
        ``MAX_EVENTS_PER_REQUEST``."""
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise Refused(
                self.too_large(f"more than {MAX_EVENTS_PER_REQUEST} events"), "too many events"
            )

    def refuse(self, reason: str) -> Refused:
        """A ``Refused`` with this API's 400."""
        return Refused(self.malformed(reason), reason)

    def body(self, request: Request, *, gzip_query: bool = False) -> Any:
        """The request's JSON body, or ``Refused`` with this API's 400 or 413."""
        try:
            return parse_json(self.unpacked(request, gzip_query=gzip_query))
        except ValueError as exc:
            raise self.refuse(f"the body is not valid JSON ({exc})") from None

    def unpacked(self, request: Request, *, gzip_query: bool = False) -> bytes:
        """The request's body gunzipped if it is, or ``Refused`` with this API's 413."""
        try:
            return unpack(request, self.body_limit(request.path), gzip_query=gzip_query)
        except OverflowError as exc:
            raise Refused(self.too_large(str(exc)), "too large") from None
        except ValueError as exc:
            raise self.refuse(f"the body cannot be read ({exc})") from None

    def body_limit(self, path: str) -> int:
        """The largest body a request to ``path`` may have, in bytes (unpacked too)."""
        return self.paths[path]


class PlainAPI(API):
    """An API whose errors are ``{"error": "..."}``, its key in ``X-API-Key`` or
    ``Authorization: Bearer``."""

    def malformed(self, reason: str) -> Response:
        """A 400 ``{"error"}``."""
        return json_response(400, {"error": reason})

    def unauthorized(self) -> Response:
        """A 401 ``{"error"}``."""
        return json_response(401, {"error": "Invalid API key"})

    def too_large(self, reason: str) -> Response:
        """A 413 ``{"error"}``."""
        return json_response(413, {"error": f"payload too large: {reason}"})

    def unavailable(self, reason: str) -> Response:
        """A 503 ``{"error"}`` with ``Retry-After``."""
        return json_response(503, {"error": reason}, ("Retry-After", str(RETRY_AFTER_SECONDS)))

    @staticmethod
    def key(request: Request) -> str | None:
        """The key in ``X-API-Key``, else in ``Authorization: Bearer``."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else ""
        return request.headers.get("x-api-key") or bearer or None


class Datalyr(PlainAPI):
    """Datalyr's server-side ``/track``: one event a request (its SDK retries a 503 and
    reads no ``Retry-After``)."""

    name = "datalyr"
    paths: ClassVar[dict[str, int]] = {"/track": MB}

    def read(self, request: Request, now: float) -> Ingest:
        """The event object as the SDK sent it (its ``eventId`` kept)."""
        event = self.body(request)
        if not isinstance(event, dict):
            raise self.refuse("the body must be one event, a JSON object")
        if not isinstance(event.get("event"), str) or not event["event"]:
            raise self.refuse("event is required and must be a string")
        event.setdefault("timestamp", iso_now(now).replace("+00:00", "Z"))
        return Ingest(self.key(request), [event])

    def accepted(self, request: Request, ingest: Ingest, ids: list[str], now: float) -> Response:
        """``{"success": true}`` (the SDK only needs a 2xx)."""
        return _SUCCESS


class Events(PlainAPI):
    """spooler's own: ``POST /v1/events/{destination}`` with a JSON object, a JSON array
    of them, or JSON Lines (``Content-Type: application/x-ndjson``); answers the ids."""

    name = "events"
    prefix = "/v1/events/"
    limit = 20 * MB

    def read(self, request: Request, now: float) -> Ingest:
        """The events, stored as they are."""
        data = self.unpacked(request)
        content_type = request.headers.get("content-type", "")
        try:
            if "ndjson" in content_type or "jsonl" in content_type:
                where = "the body"
                events = []
                for number, line in enumerate(data.splitlines(), 1):
                    where = f"line {number}"
                    if line.strip():
                        events.append(parse_json(line))
                        self.counted(events)  # as they come: a line is an event
            else:
                where = "the body"
                body = parse_json(data)
                events = body if isinstance(body, list) else [body]
        except ValueError as exc:
            raise self.refuse(f"{where} is not valid JSON ({exc})") from None
        self.counted(events)
        bad = [i for i, event in enumerate(events) if not isinstance(event, dict)]
        if bad:
            raise self.refuse(f"event {bad[0]}: expected a JSON object")
        return Ingest(self.key(request), events)

    def body_limit(self, path: str) -> int:
        """The same for every destination."""
        return self.limit

    def accepted(self, request: Request, ingest: Ingest, ids: list[str], now: float) -> Response:
        """``{"ids": [...]}``: the event ids, in order."""
        return json_response(200, {"ids": ids})
