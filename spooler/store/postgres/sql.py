"""SQL pieces the PostgreSQL store's operations share: the database's clock, selections,
the totals' bookkeeping, the attempt log, the move to the dead-letter table, and the
events of leases.

Statements are templates: ``{s}`` is the spool's schema. Parameters are psycopg's named
``%(name)s``; ``%(h)s`` is always the caller's present (``now``, or the store's clock),
the anchor of every time the caller gives or gets (see ``store.interface``).
"""

from __future__ import annotations

from typing import Any

from ...records import DeadSelection, QueueSelection
from ..shared import ATTEMPT_LOG_ENTRIES, ATTEMPT_LOG_ERROR_CHARS, HELD
from .schema import SHARDS

__all__ = [
    "COUNT_TOTALS",
    "HELD",
    "NOW",
    "SHARD",
    "TOTALS_KEPT",
    "append_attempt",
    "change_totals",
    "dissolve",
    "from_db",
    "held_by",
    "leased",
    "move_to_dead",
    "to_db",
    "where",
    "with_ctes",
]

#: This server process's row of ``totals``.
SHARD = f"mod(pg_backend_pid(), {SHARDS})"
#: The database's present, in Unix seconds: the start of the transaction.
NOW = "extract(epoch FROM now())::float8"
#: Whether producers keep the totals: from the first limit checked on the spool on (see
#: ``PostgresProducers``); until then, what ``totals`` holds means nothing.
TOTALS_KEPT = "EXISTS (SELECT FROM {s}.meta WHERE key = 'totals')"
#: The spool's events and their bodies' bytes, counted row by row.
COUNT_TOTALS = (
    "SELECT (SELECT count(*) FROM {s}.queue) + (SELECT count(*) FROM {s}.dead),"
    " (SELECT coalesce(sum(octet_length(body)), 0) FROM {s}.queue)"
    " + (SELECT coalesce(sum(octet_length(body)), 0) FROM {s}.dead)"
)


def dissolve(condition: str, due: str) -> str:
    """A statement that ends the leases meeting ``condition`` (on ``leases``) unsettled:
    each event they still hold counts the attempt that ended, and is due by ``due``
    (database time). It selects how many events they held."""
    return (
        f"WITH ended AS (DELETE FROM {{s}}.leases WHERE {condition}"
        " RETURNING first_id, last_id, ids), counted AS (UPDATE {s}.queue AS q"
        f" SET attempts = q.attempts + 1, due_at = least(q.due_at, {due}) FROM ended"
        f" WHERE {held_by('q', 'ended')} RETURNING 1) SELECT count(*) FROM counted"
    )


def held_by(row: str, lease: str = "l") -> str:
    """SQL for "the queue row ``row`` is one the lease ``lease`` holds"."""
    return (
        f"{row}.id BETWEEN {lease}.first_id AND {lease}.last_id"
        f" AND ({lease}.ids IS NULL OR {row}.id = ANY({lease}.ids))"
    )


def leased(row: str) -> str:
    """SQL for "a live lease holds the queue row ``row``"."""
    return f"EXISTS (SELECT FROM {{s}}.leases AS l WHERE l.until > {NOW} AND {held_by(row)})"


def to_db(value: str) -> str:
    """The caller's time ``value`` (a parameter, a column) on the database's clock."""
    return f"({NOW} + ({value} - %(h)s))"


def from_db(column: str) -> str:
    """The database time ``column`` on the caller's clock."""
    return f"({column} - {NOW} + %(h)s)"


def with_ctes(ctes: dict[str, str], final: str) -> str:
    """One statement: the named ``WITH`` queries, then ``final``."""
    return "WITH " + ", ".join(f"{name} AS ({body})" for name, body in ctes.items()) + " " + final


def where(selection: QueueSelection, params: dict[str, Any]) -> str:
    """The SQL condition of ``selection``, its values added to ``params``."""
    clauses = []
    if selection.ids:
        clauses.append("event_id = ANY(%(sel_ids)s::text[])")
        params["sel_ids"] = list(selection.ids)
    if selection.destination is not None:
        clauses.append("destination = %(sel_destination)s")
        params["sel_destination"] = selection.destination
    if selection.last_key is not None:
        clauses.append("id <= %(sel_last_key)s")
        params["sel_last_key"] = selection.last_key
    if isinstance(selection, DeadSelection):
        for value, clause, name in (
            (selection.dead_after, f"dead_at > {to_db('%(sel_after)s')}", "sel_after"),
            (selection.reason, "reason = %(sel_reason)s", "sel_reason"),
            (selection.status, "status = %(sel_status)s", "sel_status"),
            (selection.dead_before, f"dead_at < {to_db('%(sel_before)s')}", "sel_before"),
        ):
            if value is not None:
                clauses.append(clause)
                params[name] = value
    return " AND ".join(clauses) or "TRUE"


def change_totals(source: str, sign: str = "+", *, if_kept: bool = False) -> str:
    """A ``WITH`` query adding (``+``) or taking off (``-``) the rows of ``source`` (a
    query of body sizes, column ``n``) to this backend's row of ``totals``; ``if_kept``:
    only while producers keep the totals (``TOTALS_KEPT``)."""
    return (
        f"UPDATE {{s}}.totals AS t SET events = t.events {sign} c.events,"
        f" bytes = t.bytes {sign} c.bytes"
        " FROM (SELECT count(*) AS events, coalesce(sum(n), 0) AS bytes"
        f" FROM ({source}) AS changed) AS c"
        f" WHERE shard = {SHARD} AND c.events > 0" + (f" AND {TOTALS_KEPT}" if if_kept else "")
    )


def append_attempt(log: str, status: str, error: str) -> str:
    """The attempt log ``log`` with an entry ``[now, status, error]`` appended, the oldest
    dropped past ``ATTEMPT_LOG_ENTRIES``."""
    base = f"coalesce({log}, '[]'::jsonb)"
    return (
        f"(CASE WHEN jsonb_array_length({base}) >= {ATTEMPT_LOG_ENTRIES} THEN {base} - 0"
        f" ELSE {base} END) || jsonb_build_array(jsonb_build_array({NOW}, {status},"
        f" left({error}, {ATTEMPT_LOG_ERROR_CHARS})))"
    )


def move_to_dead(
    condition: str,
    *,
    using: str = "",
    reason: str = "%(reason)s",
    status: str = "%(status)s::int",
    error: str = "%(error)s",
    attempted: bool = False,
) -> dict[str, str]:
    """``WITH`` queries that move the queued rows ``q`` meeting ``condition`` (joined to
    ``using``) to the dead-letter table, oldest first, in one statement: ``moved`` is
    what left the queue, and the totals lose any copy the table already held.

    ``attempted``: the failure ended a delivery attempt, so it is counted and joins the
    attempt log.
    """
    log = append_attempt("attempt_log", "status", "error") if attempted else "attempt_log"
    return {
        "moved": (
            f"DELETE FROM {{s}}.queue AS q {using} WHERE {condition} RETURNING q.id,"
            " q.event_id, q.destination, q.body, q.created_at, q.attempts, q.attempt_log,"
            f" {reason} AS reason, {status} AS status, {error} AS error"
        ),
        "kept": (
            "INSERT INTO {s}.dead (event_id, destination, body, created_at, attempts, reason,"
            f" status, error, dead_at, attempt_log) SELECT event_id, destination, body,"
            f" created_at, attempts + {int(attempted)}, reason, status, error, {NOW}, {log}"
            " FROM moved ORDER BY id"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        ),
        "dead_copies": change_totals(
            "SELECT octet_length(body) AS n FROM moved"
            " WHERE event_id NOT IN (SELECT event_id FROM kept)",
            "-",
        ),
    }
