"""The ``posthog`` destination: PostHog's ``/batch/`` capture endpoint.

Body: ``{"api_key": KEY, "batch": [...], "historical_migration": false, "sent_at":
ISO-8601}``, as ``posthog-python`` sends it, with ``sent_at`` made afresh on every attempt
and ``uuid`` = the spooler event id unless the event carries one (PostHog de-duplicates
on it). A request holding an event enqueued longer ago than ``historical_after`` (default
one day: an outage backlog) says ``"historical_migration": true``, as PostHog asks for
old data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..records import ClaimedEvent
from . import event_text_with_id, isoformat_utc
from .http import HttpDestination

__all__ = ["PostHogDestination"]


class PostHogDestination(HttpDestination):
    """Delivers to PostHog's ``/batch/``; see the module docstring for the rules."""

    def auth_headers(self) -> dict[str, str]:
        """None: the project API key travels in the body."""
        return {}

    def request_headers(self, events: Sequence[ClaimedEvent]) -> dict[str, str]:
        """None: each event's id travels in the body, as ``uuid``."""
        return {}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """``{"api_key", "batch", "historical_migration", "sent_at"}``, joined as text."""
        now = self._clock()
        batch = ",".join(event_text_with_id(event, "uuid") for event in events)
        old = min(event.created_at for event in events) < now - self.config.historical_after
        return (
            '{"api_key":' + json.dumps(self.config.api_key) + ',"batch":[' + batch + "]"
            ',"historical_migration":'
            + json.dumps(old)
            + ',"sent_at":'
            + json.dumps(isoformat_utc(now))
            + "}"
        )
