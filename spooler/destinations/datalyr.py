"""The ``datalyr`` destination: Datalyr's server-side ``/track``, one event per request.

Body: the event as stored, with ``eventId`` = its spooler event id unless it carries
one: Datalyr drops an event whose ``eventId`` it has seen, and the id never changes
through retries, dead-lettering and replay; and ``timestamp`` = its time of enqueue
unless it has one (``with_enqueue_time``). The key goes in ``X-API-Key`` (the type's
default ``auth_header``), as the SDK sends it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..records import ClaimedEvent, iso_utc
from . import event_text_with_id, with_enqueue_time
from ._http import HttpApiDestination, check_http_url
from ._registry import DestinationSpec

__all__ = ["SPEC", "DatalyrDestination"]

SPEC = DestinationSpec(
    name="datalyr",
    title="Datalyr",
    factory=lambda config, clock: DatalyrDestination(config, clock=clock),
    default_url="https://ingest.datalyr.com/track",
    max_batch_size=1,
    defaults={"batch_size": 1, "concurrency": 10, "auth_header": "X-API-Key"},
    needs_api_key=True,
    api_key_prefix="dk_",
    key_in_auth_header=True,
    event_id_key="eventId",
    checks=(check_http_url,),
)


class DatalyrDestination(HttpApiDestination):
    """Delivers to Datalyr's ``/track``; see the module docstring for the rules."""

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """The one event of the request, with its ``eventId``."""
        (event,) = events
        text = event_text_with_id(event, "eventId")
        return with_enqueue_time(text, "timestamp", event, iso_utc)
