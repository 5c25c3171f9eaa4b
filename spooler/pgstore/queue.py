"""What producers and drains do to a PostgreSQL spool: insert, claim under lease, settle.

Each operation is one statement where it can be (its own transaction, one round trip):
a data-modifying ``WITH`` query carries the totals' bookkeeping and the move to the
dead-letter table along with the change itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from ..errors import SpoolFullError
from ..events import EVENT_ID_CHARS, split_event_ids
from ..records import ClaimedEvent, Failure, KeptPause
from .connection import Connections
from .sql import (
    HELD,
    NOW,
    append_attempt,
    change_totals,
    from_db,
    move_to_dead,
    to_db,
    with_ctes,
)

__all__ = ["QueueOperations"]

# The rows an insert adds: columns event_id, destination, body and position.
_ROWS = (
    "SELECT event_id, destination, body, position FROM unnest(%(ids)s::text[],"
    " %(destinations)s::text[], %(bodies)s::text[]) WITH ORDINALITY"
    " AS r(event_id, destination, body, position)"
)
# The same from one JSON array text: PostgreSQL splits it, keeping each element's text.
_ARRAY = (
    "SELECT (%(ids)s::text[])[position] AS event_id, %(destination)s::text AS destination,"
    " value::text AS body, position FROM json_array_elements(%(array)s::json)"
    " WITH ORDINALITY AS r(value, position)"
)
_NO_LIMITS = "SELECT 0::bigint AS events, 0::bigint AS bytes"
_LIMITS = (
    "SELECT coalesce(sum(events), 0) AS events, coalesce(sum(bytes), 0) AS bytes FROM {s}.totals"
)


class QueueOperations:
    """The producer and drain half of ``PostgresStore``."""

    _db: Connections
    _clock: Callable[[], float]
    _sql: Callable[[str], str]

    # -- producers ------------------------------------------------------------------

    def insert(
        self,
        rows: Sequence[tuple[str, str, str]],
        *,
        now: float,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Insert ``(event_id, destination, body)`` rows in one transaction, within limits."""
        ids, destinations, bodies = (list(column) for column in zip(*rows, strict=True))
        self._insert(
            _ROWS,
            {"ids": ids, "destinations": destinations, "bodies": bodies},
            len(rows),
            max_event_bytes=None,
            max_events=max_events,
            max_bytes=max_bytes,
        )

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
        count: int,
        *,
        max_event_bytes: int | None,
        max_events: int | None,
        max_bytes: int | None,
    ) -> bool:
        """Insert the rows of ``source`` if there are ``count``, none is over
        ``max_event_bytes`` and the limits allow: one statement, checks and all."""
        limited = max_events is not None or max_bytes is not None
        checks = ["sizes.events = %(count)s"]
        if max_event_bytes is not None:
            checks.append("sizes.largest <= %(max_event_bytes)s")
        if max_events is not None:
            checks.append("room.events + sizes.events <= %(max_events)s")
        if max_bytes is not None:
            checks.append("room.bytes + sizes.bytes <= %(max_bytes)s")
        params.update(
            count=count, max_event_bytes=max_event_bytes, max_events=max_events, max_bytes=max_bytes
        )
        statement = with_ctes(
            {
                "src": f"{source}",
                "sizes": "SELECT count(*) AS events, coalesce(sum(octet_length(body)), 0) AS"
                " bytes, coalesce(max(octet_length(body)), 0) AS largest FROM src",
                # Dead events count: they take the same room until replayed or purged.
                "room": _LIMITS if limited else _NO_LIMITS,
                "fits": f"SELECT {' AND '.join(checks)} AS ok FROM sizes, room",
                "added": "INSERT INTO {s}.queue (event_id, destination, body, created_at,"
                f" queued_at, due_at) SELECT event_id, destination, body, {NOW}, {NOW}, {NOW}"
                " FROM src WHERE (SELECT ok FROM fits) ORDER BY position"
                " ON CONFLICT (event_id) DO NOTHING RETURNING octet_length(body) AS n",
                "counted": change_totals("SELECT n FROM added"),
            },
            "SELECT fits.ok, sizes.events, sizes.bytes, room.events, room.bytes"
            " FROM fits, sizes, room",
        )

        def insert(conn: psycopg.Connection) -> tuple[Any, ...] | None:
            try:
                with self._db.writing(conn, one_statement=True):
                    return conn.execute(self._sql(statement), params).fetchone()
            except psycopg.errors.InvalidTextRepresentation:
                return None  # not a JSON array after all

        row = self._db.run(insert)
        if row is None:
            return False
        ok, events, size, held, held_bytes = row
        if ok:
            return True
        # Dead events count: they take the same disk until they are replayed or purged.
        if max_events is not None and held + events > max_events:
            raise SpoolFullError(
                f"the spool holds {held} events, queued or dead, and {events} more "
                f"would pass max_events={max_events}; nothing was enqueued"
            )
        if max_bytes is not None and held_bytes + size > max_bytes:
            raise SpoolFullError(
                f"the spool's events, queued or dead, take {held_bytes} bytes, and "
                f"{size} more would pass max_bytes={max_bytes}; nothing was enqueued"
            )
        return False  # ids and elements do not pair up, or one is too large

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
                "counted": change_totals("SELECT n FROM added"),
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
        self._write_one(statement, params)

    # -- drains ---------------------------------------------------------------------

    def claim(
        self, destination: str, limit: int, owner: str, *, due_by: float, lease_until: float
    ) -> list[ClaimedEvent]:
        """Lease up to ``limit`` events of ``destination`` that are due at ``due_by``.

        Rows another drain is claiming at this moment are skipped, not waited for
        (``SKIP LOCKED``); a lease is ``due_at`` moved to its end, on the database's clock.
        """
        statement = with_ctes(
            {
                # MATERIALIZED: the rows are picked and locked once, whatever the plan.
                "due": "SELECT id FROM {s}.queue WHERE destination = %(destination)s"
                f" AND due_at <= {to_db('%(due_by)s')} ORDER BY due_at, id LIMIT %(limit)s"
                " FOR UPDATE SKIP LOCKED",
            },
            f"UPDATE {{s}}.queue AS q SET due_at = {to_db('%(lease_until)s')},"
            " lease_owner = %(owner)s, attempts = q.attempts + 1 FROM due WHERE q.id = due.id"
            " RETURNING q.id, q.event_id, q.destination, q.body, q.attempts,"
            f" {from_db('q.created_at')}, {from_db('q.queued_at')}",
        ).replace("due AS (", "due AS MATERIALIZED (", 1)
        params = {
            "destination": destination,
            "limit": limit,
            "owner": owner,
            "due_by": due_by,
            "lease_until": lease_until,
            "h": self._clock(),
        }

        def claim(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
            with self._db.writing(conn, one_statement=True):
                return conn.execute(self._sql(statement), params).fetchall()

        rows = self._db.run(claim)
        return sorted((ClaimedEvent(*row) for row in rows), key=lambda event: event.rowid)

    def extend_lease(self, owner: str, rowids: Sequence[int], lease_until: float) -> None:
        """Push the lease of events still held by ``owner`` out to ``lease_until``."""
        self._write_one(
            f"WITH extended AS (UPDATE {{s}}.queue SET due_at = {to_db('%(lease_until)s')}"
            " WHERE lease_owner = %(owner)s AND id = ANY(%(ids)s::bigint[]) RETURNING 1)"
            " SELECT count(*) FROM extended",
            {"owner": owner, "ids": list(rowids), "lease_until": lease_until},
        )

    def settle(
        self,
        owner: str,
        *,
        now: float,
        delivered: Sequence[int] = (),
        retry: Sequence[tuple[int, float, Failure]] = (),
        dead: Sequence[tuple[int, str, Failure]] = (),
        destination: str | None = None,
    ) -> int:
        """Record one delivery outcome in one statement; returns the rows changed.

        ``delivered`` rows are deleted; ``retry`` rows ``(rowid, due_at, failure)`` go
        back to the queue; ``dead`` rows ``(rowid, reason, failure)`` move to the
        dead-letter table. Only rows still leased by ``owner`` are touched: a drain whose
        lease ran out and was taken over changes nothing. With ``destination``, its last
        success or last error is recorded too.
        """
        params: dict[str, Any] = {"owner": owner, "h": now}
        ctes: dict[str, str] = {}
        changed = ["0"]
        if destination is not None:
            failure = next((f for *_, f in [*retry, *dead]), None)
            ctes["state"] = _record_outcome(params, destination, bool(delivered), failure)
        if retry:
            params.update(_columns(("r_ids", "r_due", "r_status", "r_error"), retry))
            ctes["retried"] = (
                "UPDATE {s}.queue AS q SET due_at = " + to_db("r.due") + ","
                " lease_owner = NULL, last_status = r.status, last_error = r.error,"
                " attempt_log = " + append_attempt("q.attempt_log", "r.status", "r.error") + " FROM"
                " unnest(%(r_ids)s::bigint[], %(r_due)s::float8[], %(r_status)s::int[],"
                " %(r_error)s::text[]) AS r(id, due, status, error)"
                " WHERE q.id = r.id AND q.lease_owner = %(owner)s RETURNING 1"
            )
            changed.append("(SELECT count(*) FROM retried)")
        if dead:
            params.update(_columns(("d_ids", "d_reason", "d_status", "d_error"), dead))
            ctes.update(
                move_to_dead(
                    "q.id = r.id AND q.lease_owner = %(owner)s",
                    using="USING unnest(%(d_ids)s::bigint[], %(d_reason)s::text[],"
                    " %(d_status)s::int[], %(d_error)s::text[]) AS r(id, reason, status, error)",
                    reason="r.reason",
                    status="r.status",
                    error="r.error",
                    attempted=True,
                )
            )
            changed.append("(SELECT count(*) FROM moved)")
        if delivered:
            params["delivered"] = list(delivered)
            ctes["gone"] = (
                "DELETE FROM {s}.queue WHERE lease_owner = %(owner)s"
                " AND id = ANY(%(delivered)s::bigint[]) RETURNING octet_length(body) AS n"
            )
            ctes["counted"] = change_totals("SELECT n FROM gone", "-")
            changed.append("(SELECT count(*) FROM gone)")
        if not ctes:
            return 0
        statement = with_ctes(ctes, "SELECT " + " + ".join(changed))
        return self._write_one(statement, params)

    def release(self, owner: str, *, now: float) -> int:
        """Give back every lease ``owner`` holds, making those events due at once."""
        return self._write_one(
            f"WITH released AS (UPDATE {{s}}.queue SET due_at = {NOW}, lease_owner = NULL"
            f" WHERE lease_owner = %(owner)s AND due_at > {NOW} RETURNING 1)"
            " SELECT count(*) FROM released",
            {"owner": owner},
        )

    def shift_schedule(self, seconds: float, *, now: float) -> int:
        """Nothing to undo: the database's clock schedules every event, so a host's
        clock jumping back leaves no lease or retry time too far out."""
        return 0

    def record_pause(
        self, destination: str, *, failures: int, until: float | None, url_digest: str
    ) -> None:
        """Keep a destination's circuit breaker, for every drain of the spool."""
        self._write_one(
            "INSERT INTO {s}.destination_state (destination, failures, paused_until,"
            f" url_digest) VALUES (%(destination)s, %(failures)s, {to_db('%(until)s')},"
            " %(digest)s) ON CONFLICT (destination) DO UPDATE SET failures = excluded.failures,"
            " paused_until = excluded.paused_until, url_digest = excluded.url_digest RETURNING 1",
            {
                "destination": destination,
                "failures": failures,
                "until": until,
                "digest": url_digest,
            },
        )

    def forget_failures(self, destination: str, *, url_digest: str, now: float) -> int:
        """A destination now sent to another URL: end its pause, reset its count of
        failures, and make its events that wait to be retried due at once (not those in
        flight or held); returns how many were."""
        statement = with_ctes(
            {
                "state": "UPDATE {s}.destination_state SET failures = 0, paused_until = NULL,"
                " url_digest = %(digest)s WHERE destination = %(destination)s",
                "due": f"UPDATE {{s}}.queue SET due_at = {NOW} WHERE destination ="
                f" %(destination)s AND due_at > {NOW} AND due_at < {HELD}"
                " AND lease_owner IS NULL AND attempts > 0 RETURNING 1",
            },
            "SELECT count(*) FROM due",
        )
        return self._write_one(statement, {"destination": destination, "digest": url_digest})

    def pauses(self) -> dict[str, KeptPause]:
        """Destinations whose last requests failed, with their kept circuit breakers."""
        rows = self._read(
            f"SELECT destination, failures, {from_db('paused_until')}, url_digest"
            " FROM {s}.destination_state WHERE failures > 0",
            {},
        )
        return {name: KeptPause(*kept) for name, *kept in rows}

    def next_due_at(self, destination: str) -> float | None:
        """When the earliest event of ``destination`` falls due (None: nothing queued but
        held events, which wait for an operator)."""
        return self._read(
            f"SELECT {from_db('min(due_at)')} FROM {{s}}.queue"
            f" WHERE destination = %(destination)s AND due_at < {HELD}",
            {"destination": destination},
        )[0][0]

    def retry_now_count(self) -> int:
        """How many times an operator has run ``retry-now`` on this spool."""
        rows = self._read("SELECT value FROM {s}.meta WHERE key = 'retry_now_count'", {})
        return int(rows[0][0]) if rows else 0

    def reclaim_space(self) -> int:
        """Nothing to do: autovacuum gives a drained backlog's space back for reuse."""
        return 0

    # -- shared ---------------------------------------------------------------------

    def _write_one(self, statement: str, params: dict[str, Any]) -> int:
        """Run one writing statement as its own transaction; the count it selects."""
        params.setdefault("h", self._clock())

        def write(conn: psycopg.Connection) -> int:
            with self._db.writing(conn, one_statement=True):
                return conn.execute(self._sql(statement), params).fetchone()[0]

        return self._db.run(write)

    def _read(self, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        params.setdefault("h", self._clock())
        return self._db.run(lambda conn: conn.execute(self._sql(statement), params).fetchall())


def _columns(
    names: tuple[str, str, str, str], rows: Sequence[tuple[int, Any, Failure]]
) -> dict[str, list[Any]]:
    """Settle's rows as four arrays: rowid, due time or reason, status, error."""
    return {
        names[0]: [row[0] for row in rows],
        names[1]: [row[1] for row in rows],
        names[2]: [row[2].status for row in rows],
        names[3]: [row[2].error for row in rows],
    }


def _record_outcome(
    params: dict[str, Any], destination: str, success: bool, failure: Failure | None
) -> str:
    """A ``WITH`` query keeping a destination's last success and last error."""
    params.update(
        state_destination=destination,
        state_success=success,
        state_failed=failure is not None,
        state_status=failure.status if failure else None,
        state_error=failure.error if failure else None,
    )
    return (
        "INSERT INTO {s}.destination_state AS d (destination, last_success_at, last_error_at,"
        f" last_status, last_error) VALUES (%(state_destination)s, CASE WHEN %(state_success)s"
        f" THEN {NOW} END, CASE WHEN %(state_failed)s THEN {NOW} END, %(state_status)s::int,"
        " %(state_error)s) ON CONFLICT (destination) DO UPDATE SET"
        " last_success_at = coalesce(excluded.last_success_at, d.last_success_at),"
        " last_error_at = coalesce(excluded.last_error_at, d.last_error_at),"
        " last_status = CASE WHEN %(state_failed)s THEN excluded.last_status"
        " ELSE d.last_status END,"
        " last_error = CASE WHEN %(state_failed)s THEN excluded.last_error ELSE d.last_error END"
    )
