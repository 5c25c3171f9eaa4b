"""What producers do to a spool file: insert events, within the limits, in one
transaction per call (threads enqueueing at once share one, see ``group_commit``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain

from ...events import EVENT_ID_CHARS, utf8_size
from ..shared import check_room
from .base import SQLiteBase
from .sql import COUNT_TOTALS, TOTALS_KEPT, add_totals, totals

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from ...records import Failure

__all__ = ["SQLiteProducers"]

_ROWS_PER_INSERT = 500  # 3 parameters a row: far below SQLite's limit of 32766


class _ArrayRefused(Exception):
    """``insert_array`` could not take every element: roll back, insert nothing."""


class SQLiteProducers(SQLiteBase):
    """What producers do to a spool file."""

    _totals_kept = False  # known to be kept (never unkept once they are)

    def insert(
        self,
        rows: Sequence[tuple[str, str, str]],
        *,
        now: float,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Insert ``(event_id, destination, body)`` rows in one transaction, within limits."""
        added_bytes = sum(utf8_size(body) for _, _, body in rows)
        if max_events is not None or max_bytes is not None:
            self.keep_totals()
        with self._write() as conn:
            _check_limits(conn, len(rows), added_bytes, max_events, max_bytes)
            # Many rows per statement, not executemany's one step per row: each step
            # lets go of the GIL, and with threads enqueueing at once every hand-over
            # costs the committing thread tens of microseconds (group commit).
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                conn.execute(_insert_sql(len(chunk)), [now, *chain.from_iterable(chunk)])
            add_totals(conn, len(rows), added_bytes)

    def insert_array(
        self,
        array: str,
        size: int,
        id_block: bytes,
        destination: str,
        *,
        now: float,
        max_event_bytes: int,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> bool:
        """Insert the events of a JSON array text in one transaction, within limits: the
        i-th element as the i-th event id of ``id_block`` (``new_event_id_block``);
        ``size`` is the elements' total bytes.

        SQLite splits the array (``json_each``), so a bulk insert costs no Python per
        event. Returns False, inserting nothing, if an element is over
        ``max_event_bytes``, the ids and elements do not pair up, or SQLite refuses the
        text.
        """
        count, odd = divmod(len(id_block), EVENT_ID_CHARS)
        if odd:
            raise ValueError("an id block holds whole event ids")
        if max_events is not None or max_bytes is not None:
            self.keep_totals()
        try:
            with self._write() as conn:
                _check_limits(conn, count, size, max_events, max_bytes)
                # Only a batch larger than the limit can hold an event over it.
                check_sizes = size > max_event_bytes
                if check_sizes:
                    (last_before,) = conn.execute(
                        "SELECT coalesce(max(id), 0) FROM queue"
                    ).fetchone()
                try:
                    # The ids are cut from the block by position (substr of a blob is
                    # O(1); of a text it is O(position)).
                    inserted = conn.execute(
                        "INSERT INTO queue (event_id, destination, body, created_at, queued_at,"
                        " due_at) SELECT CAST(substr(:ids, key * :width + 1, :width) AS TEXT),"
                        " :destination, value, :now, :now, :now FROM json_each(:array)",
                        {
                            "ids": id_block,
                            "width": EVENT_ID_CHARS,
                            "destination": destination,
                            "now": now,
                            "array": array,
                        },
                    ).rowcount
                except sqlite3.OperationalError as exc:
                    if "JSON" not in str(exc):
                        raise
                    raise _ArrayRefused from None
                if inserted != count or (
                    check_sizes and _any_over(conn, last_before, max_event_bytes)
                ):
                    raise _ArrayRefused
                add_totals(conn, inserted, size)
        except _ArrayRefused:
            return False
        return True

    def keep_totals(self) -> None:
        """Have every writer keep the ``totals`` row from now on, what the limits are
        checked against in O(1); the first time on this spool, count it row by row.

        Until then no write updates the row (``add_totals``): a commit writes one page
        less. The count and the switch are one write transaction, which holds every
        other writer off, so no event is missed by both. Its own transaction, not the
        insert's: an insert refused for the limits must not roll the switch back, or
        every refusal would count the whole spool again.
        """
        if self._totals_kept:
            return
        with self._write() as conn:
            conn.execute(
                f"UPDATE totals SET (events, bytes) = ({COUNT_TOTALS}) WHERE NOT {TOTALS_KEPT}"
            )
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('totals', 'kept')")
        self._totals_kept = True

    def insert_dead(
        self,
        event_id: str,
        destination: str,
        body: str,
        *,
        now: float,
        reason: str,
        failure: Failure,
    ) -> None:
        """Put an event straight into the dead-letter table (a client's own rejection)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO dead (event_id, destination, body, created_at, attempts, reason,"
                " status, error, dead_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (event_id, destination, body, now, reason, failure.status, failure.error, now),
            )
            add_totals(conn, 1, utf8_size(body))


def _check_limits(
    conn: sqlite3.Connection,
    count: int,
    added_bytes: int,
    max_events: int | None,
    max_bytes: int | None,
) -> None:
    """Raise ``SpoolFullError`` if ``count`` more events of ``added_bytes`` would pass a
    limit (the totals are kept: ``keep_totals``)."""
    if max_events is None and max_bytes is None:
        return  # no read of totals: the common case costs nothing
    check_room(totals(conn), (count, added_bytes), max_events, max_bytes)


def _any_over(conn: sqlite3.Connection, after_id: int, max_event_bytes: int) -> bool:
    """Whether a queued event after ``after_id`` is over ``max_event_bytes``.

    ``insert_array`` checks the rows it wrote rather than filtering in its ``SELECT``:
    there, SQLite would render each element's text twice (~10% of the insert).
    """
    return (
        conn.execute(
            "SELECT 1 FROM queue WHERE id > ? AND length(CAST(body AS BLOB)) > ? LIMIT 1",
            (after_id, max_event_bytes),
        ).fetchone()
        is not None
    )


@lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` queue rows: parameter 1 is the time, then three per row."""
    values = ", ".join(f"(?{i}, ?{i + 1}, ?{i + 2}, ?1, ?1, ?1)" for i in range(2, 3 * rows, 3))
    return (
        "INSERT INTO queue (event_id, destination, body, created_at, queued_at, due_at)"
        f" VALUES {values}"
    )
