"""``Segment``: the calls of Segment's ``analytics-python``, with every message durable.

Messages are built as ``analytics-python`` 2.4 builds them (same keys, same order),
except that ``context.library`` names spooler, and ``messageId``: unless you pass
``message_id``, the drain sets it to the spooler event id, which never changes across
retries and replays. For the SDK's module-level style (``analytics.track(...)``), see
``spooler.clients.analytics``.
Events for the ``segment`` destination; Segment's limits are checked here too: a
message over 32 KB goes straight to the dead-letter table (``too_large``) instead of
failing later in the drain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partialmethod
from typing import Any

from ..errors import InvalidEventError
from ..spool import Spool
from .base import LIBRARY_NAME, LIBRARY_VERSION, SpoolClient, as_object

__all__ = ["Segment"]

LIBRARY = {"name": LIBRARY_NAME, "version": LIBRARY_VERSION}
MAX_MESSAGE_BYTES = 32 * 1024


class Segment(SpoolClient):
    """Durable drop-in for ``segment.analytics.Client``: ``track``, ``identify``,
    ``alias``, ``group``, ``page`` and ``screen`` with the SDK's signatures, and its
    ``flush``, ``join`` and ``shutdown`` (which have nothing to do)."""

    def __init__(
        self, spool: Spool, *, destination: str = "segment", clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(spool, destination=destination, clock=clock)

    def track(
        self,
        user_id: Any = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Record an action."""
        _require_id(user_id, anonymous_id)
        if not isinstance(event, str):
            raise InvalidEventError("track needs an event name (a string)")
        return self._send(
            {
                "integrations": as_object(integrations, "integrations"),
                "anonymousId": anonymous_id,
                "properties": as_object(properties, "properties"),
                "timestamp": timestamp,
                "context": context,
                "userId": user_id,
                "type": "track",
                "event": event,
            },
            message_id,
        )

    def identify(
        self,
        user_id: Any = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Tie a user to their traits."""
        _require_id(user_id, anonymous_id)
        return self._send(
            {
                "integrations": as_object(integrations, "integrations"),
                "anonymousId": anonymous_id,
                "timestamp": timestamp,
                "context": context,
                "type": "identify",
                "userId": user_id,
                "traits": as_object(traits, "traits"),
            },
            message_id,
        )

    def alias(
        self,
        previous_id: Any = None,
        user_id: Any = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Merge two user identities."""
        if previous_id is None or user_id is None:
            raise InvalidEventError("alias needs previous_id and user_id")
        return self._send(
            {
                "integrations": as_object(integrations, "integrations"),
                "previousId": previous_id,
                "timestamp": timestamp,
                "context": context,
                "userId": user_id,
                "type": "alias",
            },
            message_id,
            anonymous_last=True,
        )

    def group(
        self,
        user_id: Any = None,
        group_id: Any = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Associate a user with a group."""
        _require_id(user_id, anonymous_id)
        if group_id is None:
            raise InvalidEventError("group needs a group_id")
        return self._send(
            {
                "integrations": as_object(integrations, "integrations"),
                "anonymousId": anonymous_id,
                "timestamp": timestamp,
                "groupId": _id(group_id),
                "context": context,
                "userId": user_id,
                "traits": as_object(traits, "traits"),
                "type": "group",
            },
            message_id,
        )

    def view(
        self,
        kind: str,
        user_id: Any = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Record a ``page`` or ``screen`` view (``page()`` / ``screen()`` fix ``kind``)."""
        _require_id(user_id, anonymous_id)
        return self._send(
            {
                "integrations": as_object(integrations, "integrations"),
                "anonymousId": anonymous_id,
                "properties": as_object(properties, "properties"),
                "timestamp": timestamp,
                "category": category,
                "context": context,
                "userId": user_id,
                "type": kind,
                "name": name,
            },
            message_id,
        )

    page: partialmethod[str] = partialmethod(view, "page")
    screen: partialmethod[str] = partialmethod(view, "screen")

    def _send(
        self, message: dict[str, Any], message_id: str | None, *, anonymous_last: bool = False
    ) -> str:
        message["timestamp"] = self._when(message["timestamp"]).isoformat(timespec="milliseconds")
        message["context"] = {**as_object(message["context"], "context"), "library": dict(LIBRARY)}
        message["userId"] = _id(message["userId"])
        if message_id is not None:
            message["messageId"] = str(message_id)
        if anonymous_last or "anonymousId" in message:
            message["anonymousId"] = _id(message.get("anonymousId"))
        try:
            # Measured as the SDK measures it (ASCII-escaped), before the spool encodes it.
            size = len(json.dumps(message, separators=(",", ":")).encode())
        except (TypeError, ValueError, RecursionError) as exc:  # a Decimal, a cycle, ...
            raise InvalidEventError(f"event is not JSON-serialisable: {exc}") from None
        if size > MAX_MESSAGE_BYTES:
            return self.spool.dead_letters.add(
                message,
                destination=self.destination,
                reason="too_large",
                error=f"message is {size} bytes, over Segment's 32 KB limit",
            )
        return self._enqueue(message)


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def _require_id(user_id: Any, anonymous_id: Any) -> None:
    if user_id is None and anonymous_id is None:
        raise InvalidEventError("Segment needs a user_id or an anonymous_id")
