"""What producers do to a PostgreSQL spool: insert events, within the limits.

An insert is one statement, checks and all (its own transaction, one round trip): a
data-modifying ``WITH`` query checks the sizes and the limits, inserts, and adds the
events to the totals. One event without limits, what most enqueues are, goes straight
through libpq (``Connections.execute_direct``), as a plain ``INSERT`` while producers
keep no totals (docs/performance.md, target 8, says what each part of it costs).

The totals cost every insert a row update, for the limits alone; so producers keep
them only from the first limit checked on the spool (a ``totals`` row in ``meta``).
That first check counts what the spool holds, once, with its writers held back.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import psycopg

from ...events import EVENT_ID_CHARS, split_event_ids
from ...records import Failure
from ..shared import check_room
from .base import PostgresBase
from .sql import COUNT_TOTALS, NOW, SHARD, TOTALS_KEPT, change_totals, with_ctes

__all__ = ["PostgresProducers"]

# Where the rows of an insert come from: columns event_id, destination, body, position.
# One row as plain parameters: arrays cost a producer ~35 us more to send, per call.
_ONE_ROW = (
    "SELECT %(id)s::text AS event_id, %(destination)s::text AS destination,"
    " %(body)s::text AS body, 1 AS position"
)
_ROWS = (
    "SELECT event_id, destination, body, position FROM unnest(%(ids)s::text[],"
    " %(destinations)s::text[], %(bodies)s::text[]) WITH ORDINALITY"
    " AS r(event_id, destination, body, position)"
)
# The database's present as NOW, the same float8 (both round the exact seconds to the
# nearest), without NOW's numeric arithmetic: ~1 us of the server's CPU per insert.
_NOW = "date_part('epoch', now())"
# One event, no limits, while producers keep no totals: every enqueue of a spool where
# none was ever set. Inserts nothing once they keep them (the insert then goes again as
# _ONE_EVENT). No ON CONFLICT: its speculative insertion costs the server ~2 us per
# event, and a unique violation says the same, that an earlier try of this insert
# committed. The server's CPU per event: ~16-17 us, _ONE_EVENT's ~22-25 us (target 8
# in docs/performance.md).
_ONE_EVENT_UNCOUNTED = (
    b"spooler_enqueue_uncounted",
    "INSERT INTO {s}.queue (event_id, destination, body, created_at, queued_at, due_at)"
    f" SELECT $1, $2, $3, {_NOW}, {_NOW}, {_NOW} WHERE NOT {TOTALS_KEPT}",
)
# One event, no limits, added to the totals if producers keep them.
_ONE_EVENT = (
    b"spooler_enqueue_one",
    "WITH added AS (INSERT INTO {s}.queue (event_id, destination, body, created_at,"
    f" queued_at, due_at) VALUES ($1, $2, $3::text, {_NOW}, {_NOW}, {_NOW})"
    " ON CONFLICT (event_id) DO NOTHING RETURNING 1)"
    " UPDATE {s}.totals SET events = events + 1, bytes = bytes + octet_length($3::text)"
    f" WHERE shard = {SHARD} AND EXISTS (SELECT FROM added) AND {TOTALS_KEPT}",
)
# From one JSON array text: PostgreSQL splits it, keeping each element's text.
_ARRAY = (
    "SELECT (%(ids)s::text[])[position] AS event_id, %(destination)s::text AS destination,"
    " value::text AS body, position FROM json_array_elements(%(array)s::json)"
    " WITH ORDINALITY AS r(value, position)"
)


def _add(condition: str = "TRUE") -> str:
    """The ``WITH`` query queueing the rows of ``src`` if ``condition`` holds."""
    return (
        "INSERT INTO {s}.queue (event_id, destination, body, created_at, queued_at, due_at)"
        f" SELECT event_id, destination, body, {NOW}, {NOW}, {NOW} FROM src WHERE {condition}"
        " ORDER BY position ON CONFLICT (event_id) DO NOTHING RETURNING octet_length(body) AS n"
    )


_COUNTED = change_totals("SELECT n FROM added", if_kept=True)


@lru_cache(maxsize=32)
def _insert_statement(source: str, checks: tuple[str, ...]) -> str:
    """One statement that inserts the rows of ``source`` if they pass ``checks`` (SQL on
    ``sizes``, the rows', and ``room``, the spool's events and bytes), adds them to the
    totals, and selects whether they passed, then the rows' and the spool's sizes."""
    if not checks:
        return with_ctes(
            {
                "src": source,
                "added": _add(),
                "counted": _COUNTED,
            },
            "SELECT TRUE",
        )
    return with_ctes(
        {
            "src": source,
            "sizes": "SELECT count(*) AS events, coalesce(sum(octet_length(body)), 0) AS"
            " bytes, coalesce(max(octet_length(body)), 0) AS largest FROM src",
            "room": "SELECT coalesce(sum(events), 0) AS events, coalesce(sum(bytes), 0)"
            " AS bytes FROM {s}.totals"
            if any("room." in check for check in checks)
            else "SELECT 0::bigint AS events, 0::bigint AS bytes",
            "fits": f"SELECT {' AND '.join(checks)} AS ok FROM sizes, room",
            "added": _add("(SELECT ok FROM fits)"),
            "counted": _COUNTED,
        },
        "SELECT fits.ok, sizes.events, sizes.bytes, room.events, room.bytes FROM fits, sizes, room",
    )


class PostgresProducers(PostgresBase):
    """What producers do to a PostgreSQL spool."""

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
        if len(rows) == 1 and max_events is None and max_bytes is None and self._db.synchronous:
            self._db.run(lambda conn: self._insert_one(conn, list(rows[0])))
            return
        if len(rows) == 1:
            [(event_id, destination, body)] = rows
            source = _ONE_ROW
            params: dict[str, Any] = {"id": event_id, "destination": destination, "body": body}
        else:
            ids, destinations, bodies = (list(column) for column in zip(*rows, strict=True))
            source = _ROWS
            params = {"ids": ids, "destinations": destinations, "bodies": bodies}
        self._insert(
            source,
            params,
            None,
            max_event_bytes=None,
            max_events=max_events,
            max_bytes=max_bytes,
        )

    def _insert_one(self, conn: psycopg.Connection, row: list[str]) -> None:
        """Insert one event, without limits, in one statement (its own transaction)."""
        if not self._totals_kept:
            try:
                if self._execute(conn, _ONE_EVENT_UNCOUNTED, row):
                    return
            except psycopg.errors.UniqueViolation:
                return  # sent again after its connection broke at commit: it is stored
            self._totals_kept = True  # a producer with a limit started meanwhile
        self._execute(conn, _ONE_EVENT, row)

    def _execute(self, conn: psycopg.Connection, named: tuple[bytes, str], row: list[str]) -> int:
        name, template = named
        return self._db.execute_direct(conn, name, self._sql(template).encode(), row)

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
        i-th element as the i-th event id of ``id_block``. Returns False, inserting
        nothing, if an element is over ``max_event_bytes``, the ids and elements do not
        pair up, or PostgreSQL refuses the text."""
        if len(id_block) % EVENT_ID_CHARS:
            raise ValueError("an id block holds whole event ids")
        ids = split_event_ids(id_block)
        params = {"ids": ids, "destination": destination, "array": array}
        return self._insert(
            _ARRAY,
            params,
            len(ids),
            max_event_bytes=max_event_bytes,
            max_events=max_events,
            max_bytes=max_bytes,
        )

    def _insert(
        self,
        source: str,
        params: dict[str, Any],
        count: int | None,
        *,
        max_event_bytes: int | None,
        max_events: int | None,
        max_bytes: int | None,
    ) -> bool:
        """Insert the rows of ``source`` if there are ``count`` (None: no need to check),
        none is over ``max_event_bytes`` and the limits allow: one statement, checks and
        all. Returns False if a check other than the limits failed."""
        if max_events is not None or max_bytes is not None:
            self.keep_totals()
        checks = []
        if count is not None:
            checks.append("sizes.events = %(count)s")
        if max_event_bytes is not None:
            checks.append("sizes.largest <= %(max_event_bytes)s")
        if max_events is not None:
            checks.append("room.events + sizes.events <= %(max_events)s")
        if max_bytes is not None:
            checks.append("room.bytes + sizes.bytes <= %(max_bytes)s")
        params.update(
            count=count, max_event_bytes=max_event_bytes, max_events=max_events, max_bytes=max_bytes
        )
        statement = _insert_statement(source, tuple(checks))

        def insert(conn: psycopg.Connection) -> tuple[Any, ...] | None:
            try:
                with self._db.writing(conn, one_statement=True):
                    return conn.execute(self._sql(statement), params).fetchone()
            except psycopg.errors.InvalidTextRepresentation:
                return None  # not a JSON array after all

        row = self._db.run(insert)
        if row is None:
            return False
        if row[0]:
            return True
        _, events, size, held, held_bytes = row
        check_room((held, held_bytes), (events, size), max_events, max_bytes)
        return False  # ids and elements do not pair up, or one is too large

    def totals(self) -> tuple[int, int]:
        """How many events the spool holds, queued or dead, and their bodies' bytes: what
        ``max_events`` and ``max_bytes`` are checked against. (Counted row by row while
        no limit has been checked yet, and producers keep no totals.)"""
        [(events, size)] = self._read(
            f"SELECT * FROM (SELECT coalesce(sum(events), 0)::bigint, coalesce(sum(bytes),"
            f" 0)::bigint FROM {{s}}.totals) AS kept WHERE {TOTALS_KEPT}"
            f" UNION ALL SELECT * FROM ({COUNT_TOTALS}) AS counted WHERE NOT {TOTALS_KEPT}",
            {},
        )
        return int(events), int(size)

    def keep_totals(self) -> None:
        """Have every producer keep the totals from now on; the first time on this spool,
        count them, with its writers held back meanwhile so that none is missed."""
        if self._totals_kept:
            return

        def start(conn: psycopg.Connection) -> None:
            with conn.transaction():
                # One process counts; any other waits for it, then finds it done.
                self._rows(conn, "SELECT pg_advisory_xact_lock(hashtext('spooler {s} totals'))", {})
                if self._rows(conn, "SELECT 1 FROM {s}.meta WHERE key = 'totals'", {}):
                    return
                # Waits for the transactions writing either table, and holds off new
                # ones until the count and the mark are committed: an insert that starts
                # meanwhile runs afterwards, and then keeps the totals.
                conn.execute(self._sql("LOCK TABLE {s}.queue, {s}.dead IN SHARE MODE"))
                conn.execute(self._sql("UPDATE {s}.totals SET events = 0, bytes = 0"))
                conn.execute(
                    self._sql(
                        "UPDATE {s}.totals SET (events, bytes) = (" + COUNT_TOTALS + ")"
                        " WHERE shard = 0"
                    )
                )
                conn.execute(
                    self._sql("INSERT INTO {s}.meta (key, value) VALUES ('totals', 'kept')")
                )

        self._db.run(start)
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
        statement = with_ctes(
            {
                "added": "INSERT INTO {s}.dead (event_id, destination, body, created_at,"
                " attempts, reason, status, error, dead_at) VALUES (%(event_id)s,"
                f" %(destination)s, %(body)s, {NOW}, 0, %(reason)s, %(status)s::int,"
                f" %(error)s, {NOW}) ON CONFLICT (event_id) DO NOTHING"
                " RETURNING octet_length(body) AS n",
                "counted": _COUNTED,
            },
            "SELECT count(*) FROM added",
        )
        params = {
            "event_id": event_id,
            "destination": destination,
            "body": body,
            "reason": reason,
            "status": failure.status,
            "error": failure.error,
        }
        self._run_one(statement, params)
