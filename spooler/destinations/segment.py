"""The ``segment`` destination: Segment's HTTP Tracking API batch endpoint.

Body: ``{"batch": [...], "sentAt": ISO-8601}``, with ``sentAt`` made afresh on every
attempt and ``messageId`` = the spooler event id unless the message carries one (Segment
de-duplicates on it). The write key is the HTTP Basic user name. Segment takes at most
500 KB per request and 32 KB per message: larger batches are split before sending, and
a larger message is dead-lettered ``too_large`` without being sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from ..records import ClaimedEvent, iso_utc
from . import event_text_with_id
from .http import HttpDestination

__all__ = ["SegmentDestination"]


class SegmentDestination(HttpDestination):
    """Delivers to ``/v1/batch``; see the module docstring for the rules."""

    max_request_bytes = 500 * 1024
    max_event_bytes = 32 * 1024

    def auth_headers(self) -> dict[str, str]:
        """HTTP Basic with the write key as the user and no password."""
        token = base64.b64encode(f"{self.config.api_key}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """``{"batch": [...], "sentAt": now}``, joined from the stored texts."""
        messages = ",".join(event_text_with_id(event, "messageId") for event in events)
        return '{"batch":[' + messages + '],"sentAt":' + json.dumps(iso_utc(self._clock())) + "}"
