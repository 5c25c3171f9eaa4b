"""The ``segment`` destination: Segment's HTTP Tracking API batch endpoint.

Body: ``{"batch": [...], "sentAt": ISO-8601, "writeKey": KEY}``, as
``analytics-python`` sends it, with ``sentAt`` made afresh on every attempt and
``messageId`` = the spooler event id unless the message carries one (Segment
de-duplicates on it), and ``timestamp`` = its time of enqueue unless it has one
(``with_enqueue_time``). The write key is also the HTTP Basic user name. A request that
repeats an earlier attempt says how many came before in ``X-Retry-Count``, as the SDK
does. Segment takes at most 500 KB per request and 32 KB per message: larger batches are
split before sending, and a larger message is dead-lettered ``too_large`` without being
sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from ..records import ClaimedEvent, iso_utc
from . import event_text_with_id, isoformat_utc, with_enqueue_time
from ._http import HttpApiDestination, check_http_url
from ._registry import DestinationSpec

__all__ = ["SPEC", "SegmentDestination"]

SPEC = DestinationSpec(
    name="segment",
    title="Segment",
    factory=lambda config, clock: SegmentDestination(config, clock=clock),
    default_url="https://api.segment.io/v1/batch",
    needs_api_key=True,
    event_id_key="messageId",
    checks=(check_http_url,),
)


class SegmentDestination(HttpApiDestination):
    """Delivers to ``/v1/batch``; see the module docstring for the rules."""

    max_request_bytes = 500 * 1024
    max_event_bytes = 32 * 1024

    def auth_headers(self) -> dict[str, str]:
        """HTTP Basic with the write key as the user and no password."""
        token = base64.b64encode(f"{self.config.api_key}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request_headers(self, events: Sequence[ClaimedEvent]) -> dict[str, str]:
        """``X-Retry-Count`` when the batch was tried before: the attempts of its most
        tried message, less this one. (Each id travels in the body, as ``messageId``.)"""
        retries = max(event.attempts for event in events) - 1
        return {"X-Retry-Count": str(retries)} if retries > 0 else {}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """``{"batch": [...], "sentAt": now, "writeKey": KEY}``, joined from the stored texts."""
        messages = ",".join(
            with_enqueue_time(event_text_with_id(event, "messageId"), "timestamp", event, iso_utc)
            for event in events
        )
        return (
            '{"batch":['
            + messages
            + '],"sentAt":'
            + json.dumps(isoformat_utc(self._clock()))
            + ',"writeKey":'
            + json.dumps(self.config.api_key)
            + "}"
        )
