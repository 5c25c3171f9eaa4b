"""The ``datalyr`` destination: Datalyr's server-side ``/track``, one event per request.

Body: the event as stored, with ``eventId`` = its spooler event id unless it carries
one: Datalyr drops an event whose ``eventId`` it has seen, and the id never changes
through retries, dead-lettering and replay. The key goes in ``X-API-Key`` (set in
``config``, as the destination's default ``auth_header``), as the SDK sends it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..records import ClaimedEvent
from . import event_text_with_id
from .http import HttpDestination

__all__ = ["DatalyrDestination"]


class DatalyrDestination(HttpDestination):
    """Delivers to Datalyr's ``/track``; see the module docstring for the rules."""

    def request_headers(self, events: Sequence[ClaimedEvent]) -> dict[str, str]:
        """None: the event's id travels in the body, as ``eventId``."""
        return {}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """The one event of the request, with its ``eventId``."""
        (event,) = events
        return event_text_with_id(event, "eventId")
