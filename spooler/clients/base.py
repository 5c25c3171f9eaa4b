"""What every durable client shares: the spool, the destination name, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..errors import InvalidEventError
from ..records import iso_utc
from ..spool import Spool

__all__ = ["LIBRARY_NAME", "LIBRARY_VERSION", "SpoolClient", "as_object"]

# What the library-identifying fields of every event say: spooler built it, not an SDK.
LIBRARY_NAME = "spooler"
LIBRARY_VERSION = __version__


def as_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` (properties, traits, context...) as a new dict, None as an empty one;
    anything but a mapping is refused before it reaches the spool."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEventError(f"{what} must be a dict, not {type(value).__name__}")
    return dict(value)


class SpoolClient:
    """Enqueues payloads for one destination of a spool.

    The SDKs' lifecycle calls (``flush``, ``join``, ``shutdown``, ``close``) have nothing
    to do: every call has committed its event before it returned, and the spool belongs
    to the caller.
    """

    def __init__(
        self, spool: Spool, *, destination: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.spool = spool
        self.destination = destination
        self._clock = clock

    def _enqueue(self, payload: dict[str, Any]) -> str:
        return self.spool.enqueue(payload, destination=self.destination)

    def _now_iso(self) -> str:
        return iso_utc(self._clock())

    def _when(self, timestamp: datetime | None) -> datetime:
        """The caller's timestamp, or now, as an aware UTC time (naive means UTC)."""
        if timestamp is not None and not isinstance(timestamp, datetime):
            raise InvalidEventError(f"timestamp must be a datetime, not {type(timestamp).__name__}")
        when = timestamp or datetime.fromtimestamp(self._clock(), timezone.utc)
        return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)

    def flush(self) -> None:
        """Nothing to do: every call has already committed its event to the spool."""

    def join(self) -> None:
        """Nothing to wait for: no thread sends events in the background."""

    def shutdown(self) -> None:
        """Nothing to do: events are durable, and the spool belongs to the caller."""

    def close(self) -> None:
        """Nothing to do: events are durable, and the spool belongs to the caller."""
