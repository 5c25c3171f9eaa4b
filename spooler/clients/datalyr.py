"""``Datalyr``: the calls of the ``@datalyr/api`` SDK, with every event durable.

The payload is the SDK's "Event Payload", key for key::

    {"event", "userId" (only when given), "anonymousId",
     "properties": {..., "anonymous_id"}, "context": {"library", "version", "source"},
     "timestamp"}

Differences from the SDK, on purpose: nothing is queued in memory, so nothing is
dropped when a buffer fills or the process exits; calls after ``close()`` still
enqueue (the SDK silently ignores them).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidEventError
from ..spool import Spool
from .base import SpoolClient, as_object

__all__ = ["Datalyr"]

log = logging.getLogger("spooler.clients.datalyr")

SDK_CONTEXT = {"library": "@datalyr/api", "version": "1.3.0", "source": "api"}


class Datalyr(SpoolClient):
    """Durable drop-in for ``new Datalyr(...)`` of ``@datalyr/api``.

    Usage::

        datalyr = Datalyr(spool)
        datalyr.track("user_123", "Purchase Completed", {"amount": 99.99})
        datalyr.track({"event": "Purchase Completed", "userId": "user_123",
                       "anonymousId": session_anonymous_id})
    """

    def __init__(
        self, spool: Spool, *, destination: str = "datalyr", clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(spool, destination=destination, clock=clock)
        self._warned_anonymous = False

    def get_anonymous_id(self) -> str:
        """A fresh ``anon_<uuid>`` on every call (never a shared per-process id)."""
        return f"anon_{uuid.uuid4()}"

    def track(self, *args: Any, **kwargs: Any) -> str:
        """``track({"event", "userId", "anonymousId", "properties"})`` or
        ``track(user_id, event, properties=None)``; returns the event id."""
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            options = args[0]
            return self._send(
                options.get("event"),
                options.get("userId"),
                options.get("properties"),
                options.get("anonymousId"),
            )
        names = ("user_id", "event", "properties", "anonymous_id")
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        unknown = set(given) - set(names)
        if unknown or len(args) > len(names):
            raise TypeError(f"track() got unexpected arguments: {sorted(unknown) or args}")
        return self._send(
            given.get("event"),
            given.get("user_id"),
            given.get("properties"),
            given.get("anonymous_id"),
        )

    def identify(
        self, user_id: str, traits: Mapping[str, Any] | None = None, anonymous_id: str | None = None
    ) -> str:
        """Link a user id to traits (sends ``$identify``)."""
        return self._send("$identify", user_id, traits, anonymous_id)

    def page(
        self,
        user_id: str,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        anonymous_id: str | None = None,
    ) -> str:
        """A page view (sends ``$pageview``; ``name`` goes into the properties)."""
        props = as_object(properties, "properties")
        if name is not None:
            props = {"name": name, **props}
        return self._send("$pageview", user_id, props, anonymous_id)

    def alias(
        self, new_user_id: str, previous_id: str | None = None, anonymous_id: str | None = None
    ) -> str:
        """Link a new user id to a previous one, by default the call's anonymous id
        (sends ``$alias``)."""
        anonymous_id = anonymous_id or self.get_anonymous_id()
        props = {"previousId": previous_id or anonymous_id}
        return self._send("$alias", new_user_id, props, anonymous_id)

    def group(
        self,
        user_id: str,
        group_id: str,
        traits: Mapping[str, Any] | None = None,
        anonymous_id: str | None = None,
    ) -> str:
        """Associate a user with a group (sends ``$group``)."""
        traits = {"groupId": group_id, **as_object(traits, "traits")}
        return self._send("$group", user_id, traits, anonymous_id)

    def _send(
        self,
        event: Any,
        user_id: str | None,
        properties: Mapping[str, Any] | None,
        anonymous_id: str | None,
    ) -> str:
        if not isinstance(event, str) or not event:
            raise InvalidEventError("a Datalyr event needs a non-empty event name")
        if user_id is None and anonymous_id is None and not self._warned_anonymous:
            self._warned_anonymous = True
            log.warning(
                "Datalyr: a call without userId or anonymousId gets a fresh anonymous "
                "id and cannot be stitched to other calls; pass anonymousId"
            )
        anonymous_id = anonymous_id or self.get_anonymous_id()
        payload: dict[str, Any] = {"event": event}
        if user_id is not None:
            payload["userId"] = user_id
        payload["anonymousId"] = anonymous_id
        payload["properties"] = as_object(properties, "properties")
        payload["properties"]["anonymous_id"] = anonymous_id
        payload["context"] = dict(SDK_CONTEXT)
        payload["timestamp"] = self._now_iso()
        return self._enqueue(payload)
