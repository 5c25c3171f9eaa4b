"""``PostHog``: the common calls of ``posthog-python``, with every event durable.

``capture`` takes both signatures the SDK has had: ``capture(distinct_id, event,
properties)`` (before 6.0) and ``capture(event, distinct_id=..., properties=...)``.
The drain adds ``uuid`` = the event id unless you pass one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..errors import InvalidEventError
from ..spool import Spool
from .base import SpoolClient, as_object

__all__ = ["PostHog"]

LIBRARY = {"$lib": "posthog-python", "$lib_version": "6.0.0"}


class PostHog(SpoolClient):
    """Durable drop-in for ``posthog.Posthog``: ``capture``, ``identify``, ``alias``,
    ``group_identify``."""

    def __init__(
        self, spool: Spool, *, destination: str = "posthog", clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(spool, destination=destination, clock=clock)

    def capture(
        self,
        *args: Any,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        uuid: str | None = None,
        groups: Mapping[str, Any] | None = None,
        **ignored: Any,
    ) -> str:
        """Capture an event; returns the spooler event id."""
        if len(args) >= 2:  # the pre-6.0 order: (distinct_id, event, properties)
            distinct_id, event, *rest = args
            properties = rest[0] if rest else properties
        elif len(args) == 1:
            (event,) = args
        else:
            event = ignored.pop("event", None)
        if not isinstance(event, str) or not event:
            raise InvalidEventError("capture needs an event name")
        props = as_object(properties, "properties")
        if groups:
            props["$groups"] = as_object(groups, "groups")
        return self._send(event, distinct_id, props, timestamp, uuid)

    def identify(
        self,
        distinct_id: Any,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        uuid: str | None = None,
    ) -> str:
        """Set person properties (sends ``$identify`` with ``$set``)."""
        return self._send(
            "$identify", distinct_id, {"$set": as_object(properties, "properties")}, timestamp, uuid
        )

    def alias(
        self,
        previous_id: Any,
        distinct_id: Any,
        timestamp: datetime | None = None,
        uuid: str | None = None,
    ) -> str:
        """Link two ids (sends ``$create_alias``)."""
        return self._send(
            "$create_alias",
            distinct_id,
            {"distinct_id": distinct_id, "alias": previous_id},
            timestamp,
            uuid,
        )

    def group_identify(
        self,
        group_type: str,
        group_key: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        uuid: str | None = None,
    ) -> str:
        """Set group properties (sends ``$groupidentify``)."""
        props = {
            "$group_type": group_type,
            "$group_key": group_key,
            "$group_set": as_object(properties, "properties"),
        }
        return self._send("$groupidentify", f"${group_type}_{group_key}", props, timestamp, uuid)

    def _send(
        self,
        event: str,
        distinct_id: Any,
        properties: dict[str, Any],
        timestamp: datetime | None,
        uuid: str | None,
    ) -> str:
        if distinct_id is None:
            raise InvalidEventError("PostHog events need a distinct_id")
        message: dict[str, Any] = {
            "event": event,
            "distinct_id": str(distinct_id),
            "properties": {**properties, **LIBRARY},
            "timestamp": self._when(timestamp).isoformat(),
        }
        if uuid is not None:
            message["uuid"] = str(uuid)
        return self._enqueue(message)
