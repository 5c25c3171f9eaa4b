"""What both backends share, SQL aside: the durabilities, how a held event and an attempt
log are bounded, the checks of the limits and of named ids, reading in pages, and the
refusal of a location that holds no spool.

Loaded on the enqueue path: it imports neither ``typing`` nor ``dataclasses``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence

from ..errors import ConfigError, SpoolFullError, UnknownEventError
from ..events import events_phrase

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ATTEMPT_LOG_ENTRIES",
    "ATTEMPT_LOG_ERROR_CHARS",
    "DEAD_PAGE",
    "DURABILITIES",
    "HELD",
    "REPLAY_CHUNK",
    "SERVICE_PREFIX",
    "check_durability",
    "check_found",
    "check_room",
    "no_spool",
    "read_in_pages",
]

DURABILITIES = ("full", "normal")
# A held event's due_at: later than any real time, so the claim (an index range on
# due_at) never reaches it, and no other index or column is needed.
HELD = 1e18
# The attempt log kept per event: the latest entries, each error cut short. Bounded so
# that a long outage grows a backlog by at most ~0.7 KB per event (docs/performance.md).
ATTEMPT_LOG_ENTRIES = 5
ATTEMPT_LOG_ERROR_CHARS = 100
REPLAY_CHUNK = 1000  # dead events moved back per transaction
DEAD_PAGE = 1000  # dead events read per transaction by a listing
SERVICE_PREFIX = "service:"  # meta keys of the reports services keep (record_service)


def no_spool(location: str, why: str) -> str:
    """The refusal, by a command that creates nothing (``create=False``), of a location
    that holds no spool yet; ``why`` says what is there instead."""
    return (
        f"no spool at {location} ({why}; a drain or an enqueue creates one;"
        " check --db / SPOOLER_DB)"
    )


def check_durability(durability: str) -> None:
    """Refuse a durability other than ``full`` and ``normal``."""
    if durability not in DURABILITIES:
        raise ConfigError(f"durability must be 'full' or 'normal', not {durability!r}")


def check_room(
    held: tuple[int, int],
    added: tuple[int, int],
    max_events: int | None,
    max_bytes: int | None,
) -> None:
    """Raise ``SpoolFullError`` if ``added`` (events, bytes) on top of what the spool
    ``held`` would pass a limit. Dead events count: they take the same disk until they
    are replayed or purged."""
    (events, size), (count, added_bytes) = held, added
    if max_events is not None and events + count > max_events:
        raise SpoolFullError(
            f"the spool holds {events_phrase(events)}, queued or dead, and {count} more "
            f"would pass max_events={max_events}; nothing was enqueued"
        )
    if max_bytes is not None and size + added_bytes > max_bytes:
        raise SpoolFullError(
            f"the spool's events, queued or dead, take {size} bytes, and "
            f"{added_bytes} more would pass max_bytes={max_bytes}; nothing was enqueued"
        )


def check_found(named: Sequence[str], found: Collection[str], table: str) -> None:
    """Refuse an operation naming event ids that are not all in ``table`` (``queue`` or
    ``dead``): ``UnknownEventError`` names the first few missing."""
    missing = [eid for eid in named if eid not in found]
    if missing:
        where = "the dead-letter table" if table == "dead" else "the queue"
        raise UnknownEventError(
            f"not in {where}: {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )


def read_in_pages(
    read_page: Callable[[int, int], list[tuple[Any, ...]]], limit: int | None
) -> Iterator[tuple[Any, ...]]:
    """The rows ``read_page(after, count)`` gives, page after page, up to ``limit`` in
    all: each page the next ``count`` (``DEAD_PAGE`` at most) rows by key, the first
    column, after ``after``. Memory holds one page, whatever the total."""
    after, left = 0, limit
    while left is None or left > 0:
        count = DEAD_PAGE if left is None else min(DEAD_PAGE, left)
        page = read_page(after, count)
        yield from page
        if len(page) < count:
            return
        after = page[-1][0]
        left = None if left is None else left - count
