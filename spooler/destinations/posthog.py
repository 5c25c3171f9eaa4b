"""The ``posthog`` destination: PostHog's ``/batch/`` capture endpoint.

Body: ``{"api_key": KEY, "batch": [...], "historical_migration": false, "sent_at":
ISO-8601}``, as ``posthog-python`` sends it, with ``sent_at`` made afresh on every attempt
and ``uuid`` = the spooler event id unless the event carries one (PostHog de-duplicates
on it), and ``timestamp`` = its time of enqueue unless it has one
(``with_enqueue_time``).

A request holding an event enqueued longer ago than ``historical_after`` (default one
day: an outage backlog) says ``"historical_migration": true``, as PostHog asks for old
data; so does a request of events whose own options (``OPTIONS_KEY``) say
``{"historical_migration": true}``: those of a ``PostHog(spool, historical_migration=True)``
client, and of an SDK's request that said so to ``spooler serve``. That key is taken out
of the event sent, and such events go in requests of their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import checks
from ..records import ClaimedEvent, iso_utc
from . import event_text_with_id, isoformat_utc, own_options, with_enqueue_time
from ._http import HttpApiDestination, check_http_url
from ._registry import DestinationSpec, option, options_of

if TYPE_CHECKING:
    from ..config import DestinationConfig

__all__ = ["SPEC", "PostHogDestination", "PostHogOptions"]


@dataclass(frozen=True)
class PostHogOptions:
    """The ``posthog`` type's own keys."""

    historical_after: float = option(86400.0, checks.positive_seconds)


SPEC = DestinationSpec(
    name="posthog",
    title="PostHog",
    factory=lambda config, clock: PostHogDestination(config, clock=clock),
    default_url="https://us.i.posthog.com/batch/",
    options=PostHogOptions,
    needs_api_key=True,
    event_id_key="uuid",
    checks=(check_http_url,),
)


class PostHogDestination(HttpApiDestination):
    """Delivers to PostHog's ``/batch/``; see the module docstring for the rules."""

    def __init__(
        self, config: DestinationConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options: PostHogOptions = options_of(config, PostHogOptions)
        super().__init__(config, clock=clock)

    def auth_headers(self) -> dict[str, str]:
        """None: the project API key travels in the body."""
        return {}

    def request_batches(self, events: list[ClaimedEvent]) -> list[list[ClaimedEvent]]:
        """``events`` in one request, or two when only some are marked historical (a
        request's ``historical_migration`` is all of its events')."""
        marked = [_marked_historical(event) for event in events]
        if all(marked) or not any(marked):
            return [events]
        return [
            [event for event, mark in zip(events, marked, strict=True) if mark],
            [event for event, mark in zip(events, marked, strict=True) if not mark],
        ]

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """``{"api_key", "batch", "historical_migration", "sent_at"}``, joined as text."""
        now = self._clock()
        stripped = [own_options(event) for event in events]
        batch = ",".join(
            with_enqueue_time(event_text_with_id(event, "uuid"), "timestamp", event, iso_utc)
            for event, _ in stripped
        )
        old = min(event.created_at for event in events) < now - self.options.historical_after
        old = old or any(_says_historical(options) for _, options in stripped)
        return (
            '{"api_key":' + json.dumps(self.config.api_key) + ',"batch":[' + batch + "]"
            ',"historical_migration":'
            + json.dumps(old)
            + ',"sent_at":'
            + json.dumps(isoformat_utc(now))
            + "}"
        )


def _says_historical(options: Any) -> bool:
    """Whether an event's own options mark it historical."""
    return isinstance(options, dict) and options.get("historical_migration") is True


def _marked_historical(event: ClaimedEvent) -> bool:
    return _says_historical(own_options(event)[1])
