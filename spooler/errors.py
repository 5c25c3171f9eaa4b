"""The exception tree of spooler.

Every error the library raises on purpose is a ``SpoolerError``::

    SpoolerError
    ├── ConfigError          a setting is missing, mistyped or out of range
    ├── StoreError           the spool file is unusable: corrupt, foreign,
    │   │                    newer schema, unwritable path, disk full
    │   ├── NotDurableError  committed, but the flush to disk failed
    │   └── StoreUnreachableError
    │                        the database server did not answer for the URL's
    │                        ``wait`` seconds (PostgreSQL)
    ├── InvalidEventError    not a dict, not JSON-serialisable, NaN/Infinity,
    │                        larger than the configured limit
    ├── SpoolFullError       a configured max_events / max_bytes is reached
    └── UnknownEventError    an operation named an event id that is not there
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidEventError",
    "NotDurableError",
    "SpoolFullError",
    "SpoolerError",
    "StoreError",
    "StoreUnreachableError",
    "UnknownEventError",
]


class SpoolerError(Exception):
    """Base class of every error spooler raises on purpose."""


class ConfigError(SpoolerError):
    """A configuration value is missing, mistyped or out of range.

    ``problems`` holds every problem found, each naming its key (a config check reports
    them all at once); the message joins them with ``; ``.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class StoreError(SpoolerError):
    """The spool database cannot be used as asked (corrupt, foreign, newer, unwritable)."""


class NotDurableError(StoreError):
    """A change was committed, but flushing it to disk failed: it is in the spool (and may
    be delivered) unless the machine loses power before the disk recovers."""


class StoreUnreachableError(StoreError):
    """The database server could not be reached for the URL's ``wait`` seconds (stopped,
    restarting for longer, a host name that does not resolve): the spool itself is
    intact, and the same call may succeed once the server answers again."""


class InvalidEventError(SpoolerError):
    """An event cannot be spooled: not a JSON object, or too large.

    ``index`` is the position of the bad event in an ``enqueue_many`` call, else None.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class SpoolFullError(SpoolerError):
    """The spool reached a configured limit; the event was not enqueued."""


class UnknownEventError(SpoolerError):
    """An operation named event ids that are not where it looked; nothing was changed."""
