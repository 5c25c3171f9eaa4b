"""What drains do to a PostgreSQL spool: claim under lease, settle, keep the breakers.

Each operation is one statement (its own transaction, one round trip): a
data-modifying ``WITH`` query carries the totals' bookkeeping and the move to the
dead-letter table along with the change itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ...records import ClaimedEvent, Failure, KeptPause
from .base import PostgresBase
from .sql import (
    CLAIMABLE_AT,
    HELD,
    NOW,
    append_attempt,
    change_totals,
    from_db,
    move_to_dead,
    to_db,
    with_ctes,
)

__all__ = ["PostgresDrains"]


class PostgresDrains(PostgresBase):
    """What drains do to a PostgreSQL spool."""

    def claim(
        self, destination: str, limit: int, owner: str, *, due_by: float, lease_until: float
    ) -> list[ClaimedEvent]:
        """Lease up to ``limit`` events of ``destination`` that are due at ``due_by``.

        Rows another drain is claiming at this moment are skipped, not waited for
        (``SKIP LOCKED``). A lease is its owner and its end (on the database's clock): a
        holder that dies leaves the event to be claimed again once the lease runs out.
        """
        due_by_then = to_db("%(due_by)s")
        # MATERIALIZED: the rows are picked and locked once, whatever the plan.
        statement = (
            "WITH due AS MATERIALIZED (SELECT id FROM {s}.queue"
            f" WHERE destination = %(destination)s AND due_at <= {due_by_then}"
            f" AND (lease_until IS NULL OR lease_until <= {due_by_then})"
            " ORDER BY due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            f" UPDATE {{s}}.queue AS q SET lease_until = {to_db('%(lease_until)s')},"
            " lease_owner = %(owner)s, attempts = q.attempts + 1 FROM due WHERE q.id = due.id"
            " RETURNING q.id, q.event_id, q.destination, q.body, q.attempts,"
            f" {from_db('q.created_at')}, {from_db('q.queued_at')}"
        )
        params = {
            "destination": destination,
            "limit": limit,
            "owner": owner,
            "due_by": due_by,
            "lease_until": lease_until,
            "h": self._clock(),
        }

        def claim(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
            with self._db.writing(conn):
                # Walk the index in due order, never sort every due event: a planner
                # that misjudges a fresh backlog (no statistics yet) would sort them all
                # at every claim.
                conn.execute("SET LOCAL enable_sort = off")
                return conn.execute(self._sql(statement), params).fetchall()

        rows = self._db.run(claim)
        return sorted((ClaimedEvent(*row) for row in rows), key=lambda event: event.rowid)

    def extend_lease(self, owner: str, rowids: Sequence[int], lease_until: float) -> None:
        """Push the lease of events still held by ``owner`` out to ``lease_until``."""
        self._run_one(
            f"WITH extended AS (UPDATE {{s}}.queue SET lease_until = {to_db('%(lease_until)s')}"
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
                " lease_owner = NULL, lease_until = NULL, last_status = r.status,"
                " last_error = r.error,"
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
        return self._run_one(statement, params)

    def release_leases(self, owner: str, *, now: float) -> int:
        """Give back every lease ``owner`` holds, making those events due at once."""
        return self._run_one(
            "WITH released AS (UPDATE {s}.queue SET lease_owner = NULL, lease_until = NULL"
            f" WHERE lease_owner = %(owner)s AND lease_until > {NOW} RETURNING 1)"
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
        self._run_one(
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
        return self._run_one(statement, {"destination": destination, "digest": url_digest})

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
            f"SELECT {from_db(f'min({CLAIMABLE_AT})')} FROM {{s}}.queue"
            f" WHERE destination = %(destination)s AND due_at < {HELD}",
            {"destination": destination},
        )[0][0]

    def retry_now_count(self) -> int:
        """How many times an operator has run ``retry-now`` on this spool."""
        rows = self._read("SELECT value FROM {s}.meta WHERE key = 'retry_now_count'", {})
        return int(rows[0][0]) if rows else 0


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
