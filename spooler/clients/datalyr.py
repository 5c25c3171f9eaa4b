"""``Datalyr``: the calls of the ``@datalyr/api`` SDK (1.3) in Python, with every event
durable.

The payload is the SDK's, key for key::

    {"event", "userId" (only when given), "anonymousId",
     "properties": {..., "anonymous_id"}, "context": {"library", "version", "source"},
     "timestamp"}

``context`` names spooler as the library. The drain adds ``eventId`` = the spooler
event id, which stays the same through retries and replays, as the SDK's stays the same
through its retries. Differences from the SDK, on purpose: nothing is queued in memory,
so nothing is dropped when a buffer fills or the process exits; calls after ``close()``
still enqueue (the SDK silently ignores them); properties that are not a dict are
refused (the SDK spreads whatever it gets).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidEventError
from ..spool import Spool
from .base import LIBRARY_NAME, LIBRARY_VERSION, SpoolClient, as_object

__all__ = ["Datalyr"]

log = logging.getLogger("spooler.clients.datalyr")

CONTEXT = {"library": LIBRARY_NAME, "version": LIBRARY_VERSION, "source": "api"}


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
        """Link a user id to traits (sends ``$identify``); the id is required."""
        if not user_id:
            raise InvalidEventError("userId is required for identify")
        return self._send("$identify", user_id, traits, anonymous_id)

    def page(
        self,
        user_id: str | None,
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
        (sends ``$alias``); the new id is required."""
        if not new_user_id:
            raise InvalidEventError("newUserId is required for alias")
        anonymous_id = anonymous_id or self.get_anonymous_id()
        previous = previous_id or anonymous_id
        # Both spellings, as the SDK sends them: Datalyr's ingest reads the camelCase ones.
        props = {
            "new_user_id": new_user_id,
            "previous_id": previous,
            "userId": new_user_id,
            "previousId": previous,
        }
        return self._send("$alias", new_user_id, props, anonymous_id)

    def group(
        self,
        user_id: str | None,
        group_id: str,
        traits: Mapping[str, Any] | None = None,
        anonymous_id: str | None = None,
    ) -> str:
        """Associate a user with a group (sends ``$group``); the group id is required."""
        if not group_id:
            raise InvalidEventError("groupId is required for group")
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
        if not user_id and not anonymous_id and not self._warned_anonymous:
            self._warned_anonymous = True
            log.warning(
                "Datalyr: a call without userId or anonymousId gets a fresh anonymous "
                "id and cannot be stitched to other calls; pass anonymousId"
            )
        anonymous_id = anonymous_id or self.get_anonymous_id()
        payload: dict[str, Any] = {"event": event}
        if user_id:  # the SDK leaves out an empty id as well as a missing one
            payload["userId"] = user_id
        payload["anonymousId"] = anonymous_id
        payload["properties"] = as_object(properties, "properties")
        payload["properties"]["anonymous_id"] = anonymous_id
        payload["context"] = dict(CONTEXT)
        payload["timestamp"] = self._now_iso()
        return self._enqueue(payload)
