"""SQL pieces the spool file's operations share: selections, the totals' bookkeeping, the
attempt log, a destination's last outcome, the move to the dead-letter table, and the
events of leases (which ones they hold, and ending them).

Each runs in the caller's transaction, on the connection it is given.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from ..shared import ATTEMPT_LOG_ENTRIES, ATTEMPT_LOG_ERROR_CHARS, check_found

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from ...records import Failure, QueueSelection

__all__ = [
    "APPEND_ATTEMPT",
    "COUNT_TOTALS",
    "LEASED",
    "TOTALS_KEPT",
    "add_totals",
    "attempt_entry",
    "delete_counted",
    "dissolve",
    "held_rows",
    "move_to_dead",
    "record_outcome",
    "require_ids",
    "totals",
    "where",
]

# SQL for "the attempt log with the JSON entry ? appended, oldest entries dropped".
APPEND_ATTEMPT = (
    "json_insert(CASE WHEN json_array_length(coalesce(attempt_log, '[]')) >= "
    f"{ATTEMPT_LOG_ENTRIES} THEN json_remove(attempt_log, '$[0]')"
    " ELSE coalesce(attempt_log, '[]') END, '$[#]', json(?))"
)


# SQL for "the queue row is one a live lease holds" (``?``: now; see ``store/leases.py``).
LEASED = (
    "EXISTS (SELECT 1 FROM leases AS l WHERE l.until > ?"
    " AND queue.id BETWEEN l.first_id AND l.last_id"
    " AND (l.ids IS NULL OR queue.id IN (SELECT value FROM json_each(l.ids))))"
)


def attempt_entry(failure: Failure, at: float) -> str:
    """A failure as one compact JSON entry of an event's attempt log: ``[at, status,
    error]``, the error cut short."""
    return json.dumps([at, failure.status, failure.error[:ATTEMPT_LOG_ERROR_CHARS]])


def where(selection: QueueSelection) -> tuple[str, list[object]]:
    """The SQL condition of ``selection`` (on ``queue`` or ``dead``), and its parameters."""
    from ...records import DeadSelection

    clauses: list[str] = []
    params: list[object] = []
    if selection.ids:
        clauses.append("event_id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(selection.ids)))
    if selection.destination is not None:
        clauses.append("destination = ?")
        params.append(selection.destination)
    if selection.last_key is not None:
        clauses.append("id <= ?")
        params.append(selection.last_key)
    if isinstance(selection, DeadSelection):
        for value, clause in (
            (selection.dead_after, "dead_at > ?"),
            (selection.reason, "reason = ?"),
            (selection.status, "status = ?"),
            (selection.dead_before, "dead_at < ?"),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
    return " AND ".join(clauses) or "1", params


def require_ids(conn: sqlite3.Connection, selection: QueueSelection, table: str) -> None:
    """Refuse an operation naming ids that are not in ``table`` (``queue`` or ``dead``)."""
    if not selection.ids:
        return
    found = {
        row[0]
        for row in conn.execute(
            f"SELECT event_id FROM {table} WHERE event_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(selection.ids)),),
        )
    }
    check_found(selection.ids, found, table)


def move_to_dead(
    conn: sqlite3.Connection,
    condition: str,
    params: Sequence[object],
    *,
    reason: str,
    failure: Failure,
    now: float,
    attempted: bool = False,
) -> int:
    """Move the queued rows meeting ``condition`` to the dead-letter table, oldest first.

    ``attempted``: the failure ended a delivery attempt, so it is counted and joins the
    attempt log (an operator's expiry or a quarantine is not an attempt). The copy and
    the delete run
    in the caller's transaction, so every row is in exactly one of the two tables
    whatever happens; returns how many rows moved.
    """
    log = APPEND_ATTEMPT if attempted else "attempt_log"
    log_params = [attempt_entry(failure, now)] if attempted else []
    moved = conn.execute(
        "INSERT INTO dead (event_id, destination, body, created_at, attempts, reason, status,"
        " error, dead_at, attempt_log) SELECT event_id, destination, body, created_at,"
        f" attempts + {int(attempted)}, ?, ?, ?, ?, {log} FROM queue WHERE {condition}"
        " ORDER BY id",
        [reason, failure.status, failure.error, now, *log_params, *params],
    ).rowcount
    conn.execute(f"DELETE FROM queue WHERE {condition}", list(params))
    return moved


def record_outcome(
    conn: sqlite3.Connection, destination: str, now: float, success: bool, failure: Failure | None
) -> None:
    """Keep a destination's last success and last error (for ``spooler status``)."""
    if success:
        conn.execute(
            "INSERT INTO destination_state (destination, last_success_at) VALUES (?, ?)"
            " ON CONFLICT (destination) DO UPDATE SET last_success_at = excluded.last_success_at",
            (destination, now),
        )
    if failure is not None:
        conn.execute(
            "INSERT INTO destination_state (destination, last_error_at, last_status, last_error)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
            " last_error_at = excluded.last_error_at, last_status = excluded.last_status,"
            " last_error = excluded.last_error",
            (destination, now, failure.status, failure.error),
        )


# SQL for "writers keep the totals row": from the first limit checked on the spool
# (``SQLiteProducers.keep_totals``) on; never undone.
TOTALS_KEPT = "EXISTS (SELECT 1 FROM meta WHERE key = 'totals')"
# SQL for the events and their bodies' bytes, counted row by row: the columns of a SELECT
# from a table of bodies.
_COUNTED = "count(*) AS events, coalesce(sum(length(CAST(body AS BLOB))), 0) AS bytes"
# SQL for the spool's events, queued or dead, and their bodies' bytes, counted row by row.
COUNT_TOTALS = f"SELECT {_COUNTED} FROM (SELECT body FROM queue UNION ALL SELECT body FROM dead)"


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """The spool's events, queued or dead, and their bodies' bytes: the ``totals`` row
    while writers keep it, else counted row by row."""
    found = conn.execute(f"SELECT events, bytes FROM totals WHERE {TOTALS_KEPT}").fetchone()
    events, size = found or conn.execute(COUNT_TOTALS).fetchone()
    return events, size


def add_totals(conn: sqlite3.Connection, events: int, size: int) -> None:
    """Add events (or, negative, take them off) to the spool's totals, if writers keep
    them: until a limit is checked, a write leaves the ``totals`` row alone, one page
    less for its commit to write (docs/performance.md, target 1)."""
    conn.execute(
        f"UPDATE totals SET events = events + ?, bytes = bytes + ? WHERE {TOTALS_KEPT}",
        (events, size),
    )


def delete_counted(
    conn: sqlite3.Connection, table: str, condition: str, params: Sequence[object]
) -> int:
    """Delete the rows of ``table`` meeting ``condition``, take them off the totals (if
    writers keep them), and return how many went.

    The rows are counted off in SQL before the delete, and only while the totals are
    kept: a ``DELETE ... RETURNING`` would hand every row to Python (~0.4 ms of a
    500-event settle), and a spool whose totals nobody keeps needs no count at all.
    """
    conn.execute(
        f"UPDATE totals SET (events, bytes) = (SELECT totals.events - gone.events,"
        f" totals.bytes - gone.bytes FROM (SELECT {_COUNTED} FROM {table} WHERE {condition})"
        f" AS gone) WHERE {TOTALS_KEPT}",
        params,
    )
    count: int = conn.execute(f"DELETE FROM {table} WHERE {condition}", params).rowcount
    return count


def held_rows(first: int, last: int, ids: str | None) -> tuple[str, list[object]]:
    """The SQL condition on ``queue`` of the events a lease holds (``ids``: its JSON list,
    None when it holds every rowid from ``first`` to ``last``), and its parameters."""
    if ids is None:
        return "id BETWEEN ? AND ?", [first, last]
    return "id IN (SELECT value FROM json_each(?))", [ids]


def dissolve(
    conn: sqlite3.Connection, condition: str, params: Sequence[object], *, now: float
) -> int:
    """End the leases meeting ``condition`` (on ``leases``) unsettled: each event they
    still hold counts the attempt that ended, and is due by ``now``. Returns how many
    events they held."""
    ended = conn.execute(
        f"DELETE FROM leases WHERE {condition} RETURNING first_id, last_id, ids", params
    ).fetchall()
    events = 0
    for first, last, ids in ended:
        rows, row_params = held_rows(first, last, ids)
        events += conn.execute(
            f"UPDATE queue SET attempts = attempts + 1, due_at = min(due_at, ?) WHERE {rows}",
            [now, *row_params],
        ).rowcount
    return events
