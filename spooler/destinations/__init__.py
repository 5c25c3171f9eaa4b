"""Destinations: build a request from a batch of stored events, and judge the answer.

Each destination type is one module of this package: a class that has
``send(events) -> Verdict`` and ``close()``, and the module's ``SPEC``
(``DestinationSpec``), which says what the type is (its name, default URL, limits,
defaults, its own config keys and how to make it). Adding a type is adding its module:
``config`` and the drain find it in the registry (``_registry``). The drain owns
everything else (leases, retries, bisection), so a new API is a small module, and httpx
is imported only when a drain actually starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..events import OPTIONS_KEY
from ..records import ClaimedEvent, Failure
from ._registry import (
    DEFAULT_TYPE,
    DestinationOptions,
    DestinationSpec,
    NoOptions,
    all_options,
    build_destination,
    destination_types,
    option,
    options_of,
    spec_for,
    type_for_url,
)

if TYPE_CHECKING:
    from ..config import DestinationConfig

__all__ = [
    "DEFAULT_TYPE",
    "MAX_ERROR_BYTES",
    "Destination",
    "DestinationOptions",
    "DestinationSpec",
    "NoOptions",
    "Verdict",
    "all_options",
    "build_destination",
    "destination_types",
    "event_text",
    "event_text_with_id",
    "isoformat_utc",
    "option",
    "options_of",
    "own_options",
    "spec_for",
    "type_for_url",
    "with_enqueue_time",
]

#: The most of an error text kept with an event (the contract's 2 KiB excerpt).
MAX_ERROR_BYTES = 2048


@dataclass(frozen=True)
class Verdict:
    """What the answer to one request means for every event that request carried.

    ``delivered``: done. ``retry``: try again later (not before ``retry_after`` seconds
    when the receiver said so). ``reject``: the receiver refused the request for good;
    the drain bisects a batch to find the events at fault, and dead-letters a single
    rejected event with ``reason``; with ``split`` False the refusal is of the request
    itself (bad credentials, say), not of some event in it, and the whole batch dies at
    once, without a storm of requests to bisect it. ``partial``: the receiver named the
    bad events (``bad`` maps their positions in the batch to why); the drain
    dead-letters exactly those with ``reason`` and sends the rest again. ``sent`` is
    False when the destination judged the events itself, without a request (an event
    over the API's size limit): that says nothing about whether the API answers.
    """

    outcome: Literal["delivered", "retry", "reject", "partial"]
    status: int | None = None
    error: str = ""
    retry_after: float | None = None
    reason: str = "rejected"
    bad: Mapping[int, str] = field(default_factory=dict)
    split: bool = True
    sent: bool = True

    @property
    def failure(self) -> Failure:
        """The status and error text to record with the events."""
        return Failure(self.status, self.error)


class Destination(Protocol):
    """The interface every destination type implements."""

    config: DestinationConfig

    def request_batches(self, events: list[ClaimedEvent]) -> list[list[ClaimedEvent]]:
        """A claimed batch split into the batches that may each go in one request (events
        whose per-event options differ may not share one); ``[events]`` when all may."""
        ...

    def send(self, events: Sequence[ClaimedEvent]) -> Verdict:
        """Deliver ``events`` in one request and judge the answer. Never raises for I/O."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def event_text(event: ClaimedEvent, id_field: str | None) -> str:
    """The stored JSON text, with the event id spliced in as ``id_field`` if asked.

    Splicing text keeps the drain from parsing and re-serialising every event.
    """
    if id_field is None:
        return event.body
    return _splice(event.body, id_field, event.event_id)


def event_text_with_id(event: ClaimedEvent, key: str) -> str:
    """The stored text with the event id as ``key``, unless the event already has ``key``.

    Parses only when the text mentions the key: the common case stays a text splice.
    """
    if f'"{key}"' in event.body and key in json.loads(event.body):
        return event.body
    return event_text(event, key)


def with_enqueue_time(
    text: str, key: str, event: ClaimedEvent, form: Callable[[float], str | int]
) -> str:
    """An event's text with ``key`` = its time of enqueue in the API's ``form`` (the
    event's ``created_at`` given to it), unless the text mentions ``key``: an API dates
    an event without a time at its arrival, which for a backlog is hours after it
    happened. A text that mentions the key only inside a value is left as it is: telling
    would mean parsing every event, and the events of the clients and the relay all
    carry their time. The time is formatted only for an event that lacks it (an ISO
    string costs ~1.7 us, a third of what the drain spends on an event)."""
    if f'"{key}"' in text:
        return text
    return _splice(text, key, form(event.created_at))


def _splice(text: str, key: str, value: object) -> str:
    """``text`` (a JSON object) with ``key`` = ``value`` put first."""
    head = "{" + json.dumps(key) + ":" + json.dumps(value)
    return head + ("}" if text == "{}" else "," + text[1:])


def own_options(event: ClaimedEvent) -> tuple[ClaimedEvent, Any]:
    """The event without its ``OPTIONS_KEY`` (the request options kept with it: see
    ``spooler.events``), and the value that key held (None: absent).

    Parses only when the text mentions the key: the common case stays a text splice.
    """
    if f'"{OPTIONS_KEY}"' not in event.body:
        return event, None
    fields = json.loads(event.body)
    if OPTIONS_KEY not in fields:
        return event, None  # the text only mentioned it inside a value
    options = fields.pop(OPTIONS_KEY)
    stripped = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return event._replace(body=stripped), options


def isoformat_utc(timestamp: float) -> str:
    """A Unix time as the Python SDKs write ``sent_at`` / ``sentAt``:
    ``datetime.isoformat()`` in UTC (``2026-01-02T03:04:05.678901+00:00``)."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()
