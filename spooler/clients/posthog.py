"""``PostHog``: the calls of ``posthog-python`` 7.x, with every event durable.

``capture``, ``set``, ``set_once``, ``alias`` and ``group_identify`` build the messages
the SDK builds: the same keys, the same ``$geoip_disable`` (on by default, as the SDK
has it on servers), ``$is_server``, and for ``capture`` the same ``$python_*`` and
``$os*`` properties and personless events (no ``distinct_id``: a fresh one, and
``$process_person_profile: false``). ``$lib`` / ``$lib_version`` name spooler. The drain
adds ``uuid`` = the spooler event id unless you pass one.

Not taken, on purpose: ``send_feature_flags`` and ``flags`` (flags are evaluated with
the project's key at capture time, which a spool client does not hold; pass the
``$feature/<flag>`` properties yourself) raise ``InvalidEventError``, as do calls the SDK
drops with a logged warning (an ``alias`` or ``group_identify`` without its ids, a
``set`` without a ``distinct_id``) and an invalid ``uuid`` or ``timestamp`` (the SDK
replaces those). A naive ``datetime`` is taken as UTC.

``historical_migration=True`` (the SDK's, for importing old data) is kept with each
event, under ``OPTIONS_KEY``: the drain says it of the requests that carry them.
"""

from __future__ import annotations

import platform
import re
import sys
import time
import uuid as uuid_module
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import partialmethod
from typing import Any, Literal

from ..errors import InvalidEventError
from ..events import OPTIONS_KEY
from ..spool import Spool
from .base import LIBRARY_NAME, LIBRARY_VERSION, SpoolClient, as_object

__all__ = ["PostHog", "system_context"]

_DATE_ONLY = re.compile(r"\d{4}-?\d{2}-?\d{2}")
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def system_context() -> dict[str, str]:
    """``$python_runtime``, ``$python_version`` and ``$os`` / ``$os_version`` (and on Linux
    ``$os_distro``), as ``posthog-python`` adds them to every ``capture``."""
    if sys.platform.startswith("win"):
        os_name, version, distro = "Windows", platform.win32_ver()[0], ""
    elif sys.platform == "darwin":
        os_name, version, distro = "Mac OS X", platform.mac_ver()[0], ""
    elif sys.platform.startswith("linux"):
        try:
            release = platform.freedesktop_os_release()
        except OSError:
            release = {}
        os_name, version, distro = "Linux", release.get("VERSION_ID", ""), release.get("NAME", "")
    elif sys.platform.startswith("freebsd"):
        os_name, version, distro = "FreeBSD", platform.release(), ""
    else:
        os_name, version, distro = sys.platform, platform.release(), ""
    context = {
        "$python_runtime": platform.python_implementation(),
        "$python_version": ".".join(map(str, sys.version_info[:3])),
        "$os": os_name,
        "$os_version": version,
    }
    return {**context, "$os_distro": distro} if distro else context


class PostHog(SpoolClient):
    """Durable drop-in for ``posthog.Posthog``.

    Usage::

        posthog = PostHog(spool)
        posthog.capture("user_signed_up", distinct_id="user_123",
                        properties={"plan": "pro"})
        posthog.set(distinct_id="user_123", properties={"email": "jane@example.com"})
    """

    def __init__(
        self,
        spool: Spool,
        *,
        destination: str = "posthog",
        disable_geoip: bool = True,
        historical_migration: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(spool, destination=destination, clock=clock)
        self.disable_geoip = disable_geoip
        self.historical_migration = historical_migration
        self._system = system_context()

    def capture(
        self,
        event: str,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        groups: Mapping[str, Any] | None = None,
        send_feature_flags: Any = False,
        flags: Any = None,
        disable_geoip: bool | None = None,
    ) -> str:
        """Capture an event; without ``distinct_id``, a personless one. Returns the
        spooler event id (the ``uuid`` PostHog gets, unless you pass your own)."""
        if send_feature_flags or flags is not None:
            raise InvalidEventError(
                "capture cannot attach feature flags: they are evaluated with the project's "
                "key when the event is captured, and a spool client holds no key; pass the "
                "'$feature/<flag>' properties yourself"
            )
        if not isinstance(event, str) or not event:
            raise InvalidEventError("capture needs an event name")
        props = {**as_object(properties, "properties"), **self._system}
        person = _id(distinct_id)
        if person is None:
            person = str(uuid_module.uuid4())
            props.setdefault("$process_person_profile", False)
        if groups:
            props["$groups"] = as_object(groups, "groups")
        message = {"properties": props, "distinct_id": person, "event": event}
        return self._send(message, timestamp, uuid, disable_geoip)

    def update_person(
        self,
        kind: Literal["$set", "$set_once"],
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Set person properties (``$set``), or those not set before (``$set_once``);
        ``set`` and ``set_once`` are this. None, and nothing sent, without properties."""
        person = _id(distinct_id)
        if person is None:
            raise InvalidEventError(f"{kind[1:]} needs a distinct_id")
        props = as_object(properties, "properties")
        if not props:
            return None
        message = {"distinct_id": person, kind: props, "event": kind}
        return self._send(message, timestamp, uuid, disable_geoip)

    set = partialmethod(update_person, "$set")
    set_once = partialmethod(update_person, "$set_once")

    def alias(
        self,
        previous_id: Any,
        distinct_id: Any,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str:
        """Make ``distinct_id`` an alias of ``previous_id`` (sends ``$create_alias``)."""
        previous, alias = _id(previous_id), _id(distinct_id)
        if previous is None or alias is None:
            raise InvalidEventError("alias needs a previous_id and a distinct_id")
        message = {
            "properties": {"distinct_id": previous, "alias": alias},
            "event": "$create_alias",
            "distinct_id": previous,
        }
        return self._send(message, timestamp, uuid, disable_geoip)

    def group_identify(
        self,
        group_type: str,
        group_key: Any,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
        distinct_id: Any = None,
    ) -> str:
        """Set group properties (sends ``$groupidentify``)."""
        if _id(group_type) is None or _id(group_key) is None:
            raise InvalidEventError("group_identify needs a group_type and a group_key")
        message = {
            "event": "$groupidentify",
            "properties": {
                "$group_type": group_type,
                "$group_key": group_key,
                "$group_set": as_object(properties, "properties"),
            },
            # Always a person, as in the SDK: a fresh id when none is given.
            "distinct_id": _id(distinct_id) or str(uuid_module.uuid4()),
        }
        return self._send(message, timestamp, uuid, disable_geoip)

    def _send(
        self,
        message: dict[str, Any],
        timestamp: datetime | str | None,
        uuid: Any,
        disable_geoip: bool | None,
    ) -> str:
        properties = message.setdefault("properties", {})
        properties["$lib"] = LIBRARY_NAME
        properties["$lib_version"] = LIBRARY_VERSION
        if self.disable_geoip if disable_geoip is None else disable_geoip:
            properties["$geoip_disable"] = True
        properties["$is_server"] = True
        message["timestamp"] = self._utc(timestamp).isoformat()
        if uuid is not None:
            message["uuid"] = _event_uuid(uuid)
        if self.historical_migration:
            # The SDK says it of each request; the drain does, of this event's.
            message[OPTIONS_KEY] = {"historical_migration": True}
        return self._enqueue(message)

    def _utc(self, timestamp: datetime | str | None) -> datetime:
        if isinstance(timestamp, str):
            try:
                if _DATE_ONLY.fullmatch(timestamp):
                    raise ValueError
                # "Z" and "+0530" as the SDK reads them (Python 3.10 takes neither).
                text = _COMPACT_OFFSET.sub(r"\1:\2", timestamp.replace("Z", "+00:00"))
                timestamp = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidEventError(
                    f"timestamp {timestamp!r} is not an ISO 8601 date and time"
                ) from None
        return self._when(timestamp).astimezone(timezone.utc)


def _id(value: Any) -> str | None:
    """An id as the SDK sends it: a string, None when missing or empty."""
    text = None if value is None else str(value)
    return text or None


def _event_uuid(value: Any) -> str:
    """A caller's event uuid, as given, once it is known to be a UUID."""
    text = str(value)
    try:
        uuid_module.UUID(text)
    except ValueError:
        raise InvalidEventError(f"uuid must be a UUID, got {value!r}") from None
    return text
