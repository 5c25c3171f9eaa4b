"""``Amplitude``: the calls of Amplitude's SDKs, with every event durable.

From ``amplitude-analytics`` (Python): ``track(BaseEvent)``, ``identify``,
``group_identify``, ``revenue``, ``set_group``, ``flush``, ``shutdown``, taking that
package's own ``BaseEvent``, ``EventOptions``, ``Identify`` and ``Revenue`` objects when
it is installed (they are recognised by their methods: the package is never imported),
or plain dicts. From ``@amplitude/node``: ``log_event(event, extra)`` and
``add_event_middleware``.

Events are the HTTP V2 API's event objects. ``event_type`` is required, and a
``user_id`` or ``device_id`` (except in a ``$groupidentify``); short ids are sent and
left to the API, as both SDKs do (with ``min_id_length`` to lower its minimum).
``library`` names spooler; ``time`` defaults to now in milliseconds; the drain adds
``insert_id`` = the event id unless the event has one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError, InvalidEventError
from ..events import OPTIONS_KEY
from ..spool import Spool
from .base import LIBRARY_NAME, LIBRARY_VERSION, SpoolClient, as_object

__all__ = ["Amplitude", "Middleware"]

#: ``middleware(payload, next)``: ``payload`` is ``{"event": dict, "extra": object}``;
#: call ``next(payload)`` to go on; not calling it drops the event, as in the SDK.
Middleware = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]
# The fields of an Amplitude event that are JSON objects.
OBJECT_FIELDS = ("event_properties", "user_properties", "groups", "group_properties")
LIBRARY = f"{LIBRARY_NAME}/{LIBRARY_VERSION}"


class Amplitude(SpoolClient):
    """Durable drop-in for an Amplitude client instance.

    Usage::

        amplitude = Amplitude(spool)
        amplitude.track(BaseEvent("Song Played", user_id="user_1234"))  # amplitude-analytics
        amplitude.track({"event_type": "Song Played", "user_id": "user_1234"})
        amplitude.track(event_type="Song Played", user_id="user_1234")

    ``min_id_length`` is kept with each event and sent with it, in the request's
    ``options`` (events with other options go in other requests).
    """

    def __init__(
        self,
        spool: Spool,
        *,
        destination: str = "amplitude",
        min_id_length: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min_id_length is not None and (
            not isinstance(min_id_length, int) or isinstance(min_id_length, bool)
        ):
            raise ConfigError(f"min_id_length must be an integer, got {min_id_length!r}")
        if min_id_length is not None and min_id_length < 1:
            raise ConfigError(f"min_id_length must be at least 1, got {min_id_length}")
        super().__init__(spool, destination=destination, clock=clock)
        self.min_id_length = min_id_length
        self.opt_out = False
        self._middleware: list[Middleware] = []

    def add_event_middleware(self, middleware: Middleware) -> Amplitude:
        """Run ``middleware`` on every event at enqueue, after those added before it."""
        self._middleware.append(middleware)
        return self

    def track(self, event: Any = None, /, **fields: Any) -> str | None:
        """Log one event: an ``amplitude`` ``BaseEvent``, a dict of API fields, or those
        fields as keywords. Returns the event id (None if opted out or dropped)."""
        if event is not None and fields:
            raise TypeError("track() takes an event or its fields as keywords, not both")
        return self.log_event(fields if event is None else event)

    def log_event(self, event: Any, extra: Any = None) -> str | None:
        """Log an event through the middleware; returns the event id, or None when opted
        out or a middleware dropped it."""
        if self.opt_out:
            return None
        fields = _event_fields(event)
        fields["library"] = LIBRARY
        self._check(fields)
        fields.setdefault("time", int(self._clock() * 1000))
        enqueued: list[str] = []

        def run(index: int, payload: dict[str, Any]) -> None:
            if index == len(self._middleware):
                enqueued.append(self._enqueue_with_options(payload["event"]))
            else:
                self._middleware[index](payload, lambda p: run(index + 1, p))

        run(0, {"event": fields, "extra": extra})
        return enqueued[0] if enqueued else None

    def identify(
        self,
        identify_obj: Any,
        event_options: Any,
        event_properties: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Update user properties (sends ``$identify``): ``identify_obj`` is an
        ``amplitude`` ``Identify`` or its operations, e.g. ``{"$set": {"plan": "pro"}}``."""
        event = {"event_type": "$identify", "user_properties": _operations(identify_obj)}
        if event_properties is not None:
            event["event_properties"] = as_object(event_properties, "event_properties")
        return self.log_event({**event, **_options_fields(event_options)})

    def group_identify(
        self,
        group_type: str,
        group_name: Any,
        identify_obj: Any,
        event_options: Any = None,
        event_properties: Mapping[str, Any] | None = None,
        user_properties: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Update a group's properties (sends ``$groupidentify``)."""
        event: dict[str, Any] = {"event_type": "$groupidentify"}
        if event_properties is not None:
            event["event_properties"] = as_object(event_properties, "event_properties")
        if user_properties is not None:
            event["user_properties"] = as_object(user_properties, "user_properties")
        event["groups"] = {group_type: group_name}
        event["group_properties"] = _operations(identify_obj)
        return self.log_event({**event, **_options_fields(event_options)})

    def revenue(self, revenue_obj: Any, event_options: Any) -> str | None:
        """Record revenue (sends ``revenue_amount``): ``revenue_obj`` is an ``amplitude``
        ``Revenue``, or its event properties (``{"$price": 9.99, "$quantity": 1}``)."""
        if isinstance(revenue_obj, Mapping):
            properties = dict(revenue_obj)
        elif callable(getattr(revenue_obj, "get_event_properties", None)):
            if not revenue_obj.is_valid():
                raise InvalidEventError(
                    "a revenue needs a float price and a quantity that is a positive integer"
                )
            properties = revenue_obj.get_event_properties()
        else:
            raise InvalidEventError(
                f"revenue takes an amplitude Revenue or a dict, not {type(revenue_obj).__name__}"
            )
        event = {"event_type": "revenue_amount", "event_properties": properties}
        return self.log_event({**event, **_options_fields(event_options)})

    def set_group(self, group_type: str, group_name: Any, event_options: Any) -> str | None:
        """Put a user in a group, or groups (sends ``$identify`` with the group set)."""
        event = {
            "event_type": "$identify",
            "user_properties": {"$set": {group_type: group_name}},
            "groups": {group_type: group_name},
        }
        return self.log_event({**event, **_options_fields(event_options)})

    def _enqueue_with_options(self, event: dict[str, Any]) -> str:
        self._check(event)  # a middleware may have changed it
        if self.min_id_length is not None:
            own = as_object(event.get(OPTIONS_KEY), OPTIONS_KEY)
            event = {**event, OPTIONS_KEY: {"min_id_length": self.min_id_length, **own}}
        return self._enqueue(event)

    def _check(self, event: Mapping[str, Any]) -> None:
        if not isinstance(event.get("event_type"), str) or not event["event_type"]:
            raise InvalidEventError("an Amplitude event needs an event_type")
        for field in (*OBJECT_FIELDS, OPTIONS_KEY):
            as_object(event.get(field), field)  # raises for anything but a dict
        ids = {key: event[key] for key in ("user_id", "device_id") if event.get(key) is not None}
        for key, value in ids.items():
            if not isinstance(value, str):
                raise InvalidEventError(f"{key} must be a string, not {type(value).__name__}")
        if event["event_type"] != "$groupidentify" and not any(ids.values()):
            raise InvalidEventError("an Amplitude event needs a user_id or a device_id")


def _event_fields(
    event: Any, what: str = "an Amplitude event: a dict or a BaseEvent"
) -> dict[str, Any]:
    """An event as API fields: a dict as given, or an ``amplitude`` SDK event (anything
    with ``get_event_body()``) as that SDK would send it."""
    if isinstance(event, Mapping):
        return dict(event)
    if callable(getattr(event, "get_event_body", None)):
        return dict(event.get_event_body())
    raise InvalidEventError(f"expected {what}, not {type(event).__name__}")


def _options_fields(options: Any) -> dict[str, Any]:
    """The fields an ``EventOptions`` (or a dict of fields, or None) adds to an event."""
    if options is None:
        return {}
    return _event_fields(options, "event_options: a dict or an EventOptions")


def _operations(identify: Any) -> dict[str, Any]:
    """The user property operations of an ``amplitude`` ``Identify`` or a dict of them."""
    operations = (
        identify
        if isinstance(identify, Mapping)
        else getattr(identify, "user_properties", identify)
    )
    operations = as_object(operations, "identify_obj")
    if not operations:
        raise InvalidEventError("an identify needs at least one operation, e.g. $set")
    return operations
