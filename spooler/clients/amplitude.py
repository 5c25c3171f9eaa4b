"""``Amplitude``: the calls of Amplitude's SDKs (``track``, ``log_event``, middleware),
with every event durable.

Events are the HTTP V2 API's event objects. ``event_type`` is required, and at least
one of ``user_id`` / ``device_id`` of ``min_id_length`` characters (default 5): else
``InvalidEventError`` at the call, and nothing is enqueued. ``time`` defaults to now in
milliseconds; the drain adds ``insert_id`` = the event id unless the event has one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidEventError
from ..spool import Spool
from .base import SpoolClient, as_object

__all__ = ["Amplitude", "Middleware"]

#: ``middleware(payload, next)``: ``payload`` is ``{"event": dict, "extra": object}``;
#: call ``next(payload)`` to go on; not calling it drops the event, as in the SDK.
Middleware = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]
# The fields of an Amplitude event that are JSON objects.
OBJECT_FIELDS = ("event_properties", "user_properties", "groups", "group_properties")


class Amplitude(SpoolClient):
    """Durable drop-in for an Amplitude client instance.

    Usage::

        amplitude = Amplitude(spool)
        amplitude.track(event_type="Song Played", user_id="user_1234",
                        event_properties={"title": "Blue in Green"})
    """

    def __init__(
        self,
        spool: Spool,
        *,
        destination: str = "amplitude",
        min_id_length: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(spool, destination=destination, clock=clock)
        self.min_id_length = min_id_length
        self.opt_out = False
        self._middleware: list[Middleware] = []

    def add_middleware(self, middleware: Middleware) -> None:
        """Run ``middleware`` on every event at enqueue, after those added before it."""
        self._middleware.append(middleware)

    def track(
        self,
        event_type: str,
        user_id: str | None = None,
        device_id: str | None = None,
        event_properties: Mapping[str, Any] | None = None,
        user_properties: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> str | None:
        """Build an event from keywords and log it; returns the event id (None if dropped)."""
        event: dict[str, Any] = {"event_type": event_type}
        if user_id is not None:
            event["user_id"] = user_id
        if device_id is not None:
            event["device_id"] = device_id
        if event_properties is not None:
            event["event_properties"] = as_object(event_properties, "event_properties")
        if user_properties is not None:
            event["user_properties"] = as_object(user_properties, "user_properties")
        event.update(fields)
        return self.log_event(event)

    def log_event(self, event: Mapping[str, Any], extra: Any = None) -> str | None:
        """Log an event object through the middleware; returns the event id, or None when
        opted out or a middleware dropped it."""
        if self.opt_out:
            return None
        event = {**event}
        self._check(event)
        event.setdefault("time", int(self._clock() * 1000))
        enqueued: list[str] = []

        def run(index: int, payload: dict[str, Any]) -> None:
            if index == len(self._middleware):
                self._check(payload["event"])  # a middleware may have changed it
                enqueued.append(self._enqueue(payload["event"]))
            else:
                self._middleware[index](payload, lambda p: run(index + 1, p))

        run(0, {"event": event, "extra": extra})
        return enqueued[0] if enqueued else None

    def _check(self, event: Mapping[str, Any]) -> None:
        if not isinstance(event.get("event_type"), str) or not event["event_type"]:
            raise InvalidEventError("an Amplitude event needs an event_type")
        for field in OBJECT_FIELDS:
            as_object(event.get(field), field)  # raises for anything but a dict
        ids = [event.get(k) for k in ("user_id", "device_id") if event.get(k) is not None]
        if not any(isinstance(i, str) and len(i) >= self.min_id_length for i in ids):
            raise InvalidEventError(
                f"an Amplitude event needs a user_id or device_id of at least "
                f"{self.min_id_length} characters"
            )
