"""What drains do to a PostgreSQL spool: claim under lease, settle, keep the breakers.

A claim is one row in ``leases`` (``store/leases.py``). Claims of one destination take
turns (a lock held to the end of their transaction), so each sees every lease the ones
before it made; settles and claims of other destinations run beside them. Other
operations are one statement (its own transaction, one round trip): a data-modifying
``WITH`` query carries the totals' bookkeeping and the move to the dead-letter table
along with the change itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import psycopg

from ...records import Claim, ClaimedEvent, Failure, KeptPause, LeasedEvents
from ..leases import Gap, Held, Key, first_found, held
from .base import PostgresBase
from .sql import (
    HELD,
    NOW,
    SHARD,
    append_attempt,
    change_totals,
    dissolve,
    from_db,
    leased,
    move_to_dead,
    to_db,
    with_ctes,
)

__all__ = ["PostgresDrains"]

_SPANS = (
    "SELECT until, low_due, low_id, high_due, high_id FROM {s}.leases"
    " WHERE destination = %(destination)s"
)


class PostgresDrains(PostgresBase):
    """What drains do to a PostgreSQL spool."""

    def claim(
        self, destination: str, limit: int, owner: str, *, due_by: float, lease_until: float
    ) -> Claim | None:
        """Lease up to ``limit`` events of ``destination`` that are due at ``due_by``,
        earliest due first, as one lease of ``owner``'s; None if none is. The leases of
        the destination that ran out by ``due_by`` (on the database's clock) end first,
        their events counting the attempt."""
        params: dict[str, Any] = {
            "destination": destination,
            "limit": limit,
            "owner": owner,
            "due_by": due_by,
            "lease_until": lease_until,
            "h": self._clock(),
            "lock": f"spooler claim {self._db.target.quoted_schema} {destination}",
        }

        def claim(conn: psycopg.Connection) -> Claim | None:
            with self._db.writing(conn):
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0))", params)
                # Walk the index in due order, never sort every due event: a planner
                # that misjudges a fresh backlog (no statistics yet) would sort them all
                # at every claim.
                conn.execute("SET LOCAL enable_sort = off")
                self._rows(
                    conn,
                    dissolve(
                        f"destination = %(destination)s AND until <= {to_db('%(due_by)s')}",
                        to_db("%(due_by)s"),
                    ),
                    params,
                )
                spans = [span for _, span in _spans(self._rows(conn, _SPANS, params))]
                rows = first_found(spans, lambda gap: self._due_in(conn, gap, params))
                if not rows:
                    return None
                events = sorted(ClaimedEvent._make(row[:6]) for row in rows)
                holds = held([event.rowid for event in events])
                assert holds is not None
                lease = self._rows(
                    conn,
                    "INSERT INTO {s}.leases (owner, destination, until, first_id, last_id, ids,"
                    f" events, bytes, low_due, low_id, high_due, high_id) VALUES (%(owner)s,"
                    f" %(destination)s, {to_db('%(lease_until)s')}, %(first)s, %(last)s,"
                    " %(ids)s, %(events)s, %(bytes)s, %(low_due)s, %(low_id)s, %(high_due)s,"
                    " %(high_id)s) RETURNING id",
                    {
                        **params,
                        "first": holds.first,
                        "last": holds.last,
                        "ids": None if holds.ids is None else list(holds.ids),
                        "events": len(events),
                        "bytes": sum(row[7] for row in rows),
                        "low_due": rows[0][6],
                        "low_id": rows[0][0],
                        "high_due": rows[-1][6],
                        "high_id": rows[-1][0],
                    },
                )[0][0]
            return Claim(lease, events)

        return self._db.run(claim)

    def _due_in(
        self,
        conn: psycopg.Connection,
        gap: Gap,
        params: dict[str, Any],
        *,
        due: str = f"due_at <= {to_db('%(due_by)s')}",
    ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` events of ``destination`` meeting ``due`` whose keys lie in
        ``gap``, in claim order: the ``ClaimedEvent`` columns, then ``due_at`` (database
        time) and the body's bytes. (A row comparison on ``(due_at, id)`` is a range of
        the index.)"""
        bounds = []
        gap_params = dict(params)
        if gap.after is not None:
            bounds.append("(due_at, id) > (%(after_due)s, %(after_id)s)")
            gap_params.update(after_due=gap.after[0], after_id=gap.after[1])
        if gap.before is not None:
            bounds.append("(due_at, id) < (%(before_due)s, %(before_id)s)")
            gap_params.update(before_due=gap.before[0], before_id=gap.before[1])
        return self._rows(
            conn,
            "SELECT id, event_id, body, attempts + 1,"
            f" {from_db('created_at')}, {from_db('queued_at')}, due_at, octet_length(body)"
            f" FROM {{s}}.queue WHERE destination = %(destination)s AND {due}"
            + "".join(f" AND {bound}" for bound in bounds)
            + " ORDER BY due_at, id LIMIT %(limit)s",
            gap_params,
        )

    def extend_lease(self, lease: int, lease_until: float) -> bool:
        """Push the lease out to ``lease_until``; False if it has ended."""
        return bool(
            self._run_one(
                "WITH extended AS (UPDATE {s}.leases SET until ="
                f" {to_db('%(lease_until)s')} WHERE id = %(lease)s RETURNING 1)"
                " SELECT count(*) FROM extended",
                {"lease": lease, "lease_until": lease_until},
            )
        )

    def settle(
        self,
        lease: int,
        *,
        now: float,
        delivered: Sequence[int] = (),
        retry: Sequence[tuple[int, float, Failure]] = (),
        dead: Sequence[tuple[int, str, Failure]] = (),
        destination: str | None = None,
    ) -> int:
        """Record one delivery outcome in one transaction; returns the events changed.

        ``delivered`` events are deleted; ``retry`` events ``(rowid, due_at, failure)``
        wait until ``due_at``; ``dead`` events ``(rowid, reason, failure)`` move to the
        dead-letter table. Only events the lease still holds are touched: a drain whose
        lease ran out and was taken over changes nothing. With ``destination``, its last
        success or last error is recorded too.
        """
        params: dict[str, Any] = {"lease": lease, "h": now}

        def run(conn: psycopg.Connection) -> int:
            with self._db.writing(conn):
                if destination is not None:
                    failure = next((f for *_, f in [*retry, *dead]), None)
                    self._rows(
                        conn,
                        _record_outcome(params, destination, bool(delivered), failure)
                        + " RETURNING 1",
                        params,
                    )
                found = self._rows(
                    conn,
                    "SELECT first_id, last_id, ids, events, bytes FROM {s}.leases"
                    " WHERE id = %(lease)s FOR UPDATE",
                    params,
                )
                if not found:
                    return 0
                events: int  # psycopg types the values of its rows as Any
                [(first, last, ids, events, size)] = found
                holds = Held(first, last, None if ids is None else tuple(ids))
                gone = holds.only(delivered)
                if not retry and not dead and size is not None and len(gone) == events:
                    # The whole batch delivered: one delete of what the lease holds.
                    self._rows(
                        conn,
                        _DELIVERED,
                        {
                            **params,
                            "first": first,
                            "last": last,
                            "ids": ids,
                            "events": events,
                            "bytes": size,
                        },
                    )
                    return events
                return self._settle_rows(conn, params, holds, gone, retry, dead)

        return self._db.run(run)

    def _settle_rows(
        self,
        conn: psycopg.Connection,
        params: dict[str, Any],
        holds: Held,
        delivered: list[int],
        retry: Sequence[tuple[int, float, Failure]],
        dead: Sequence[tuple[int, str, Failure]],
    ) -> int:
        """Settle some of a lease's events in one statement, and keep what the lease
        holds after."""
        retry = [row for row in retry if row[0] in holds]
        dead = [row for row in dead if row[0] in holds]
        ctes: dict[str, str] = {}
        changed = ["0"]
        if retry:
            params.update(_columns(("r_ids", "r_due", "r_status", "r_error"), retry))
            ctes["retried"] = (
                "UPDATE {s}.queue AS q SET due_at = " + to_db("r.due") + ","
                " attempts = q.attempts + 1, last_status = r.status, last_error = r.error,"
                " attempt_log = " + append_attempt("q.attempt_log", "r.status", "r.error") + " FROM"
                " unnest(%(r_ids)s::bigint[], %(r_due)s::float8[], %(r_status)s::int[],"
                " %(r_error)s::text[]) AS r(id, due, status, error)"
                " WHERE q.id = r.id RETURNING 1"
            )
            changed.append("(SELECT count(*) FROM retried)")
        if dead:
            params.update(_columns(("d_ids", "d_reason", "d_status", "d_error"), dead))
            ctes.update(
                move_to_dead(
                    "q.id = r.id",
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
            params["delivered"] = delivered
            ctes["gone"] = (
                "DELETE FROM {s}.queue WHERE id = ANY(%(delivered)s::bigint[])"
                " RETURNING octet_length(body) AS n"
            )
            ctes["counted"] = change_totals("SELECT n FROM gone", "-")
            changed.append("(SELECT count(*) FROM gone)")
        rest = holds.without({*delivered, *(r[0] for r in retry), *(r[0] for r in dead)})
        if rest is None:
            ctes["lease_ended"] = "DELETE FROM {s}.leases WHERE id = %(lease)s"
        elif rest != holds:
            # What is left may no longer be every id of a range; its bytes are counted
            # when it is settled.
            params.update(
                rest_first=rest.first,
                rest_last=rest.last,
                rest_ids=None if rest.ids is None else list(rest.ids),
                rest_events=rest.size,
            )
            ctes["lease_kept"] = (
                "UPDATE {s}.leases SET first_id = %(rest_first)s, last_id = %(rest_last)s,"
                " ids = %(rest_ids)s, events = %(rest_events)s, bytes = NULL WHERE id = %(lease)s"
            )
        if not ctes:
            return 0
        count = self._rows(conn, with_ctes(ctes, "SELECT " + " + ".join(changed)), params)[0][0]
        return cast(int, count)  # a selected sum of counts: psycopg types it as Any

    def release_leases(self, owner: str, *, now: float) -> int:
        """End every lease ``owner`` holds, unsettled: their events count the attempt,
        and are due at once. Returns how many events they held."""
        return self._run_one(dissolve("owner = %(owner)s", NOW), {"owner": owner, "h": now})

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
                f" AND attempts > 0 AND NOT {leased('queue')} RETURNING 1",
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

    def live_leases(self, *, now: float) -> list[LeasedEvents]:
        """Events held by leases that have not run out by ``now``, by drain and destination."""
        rows = self._read(
            f"SELECT owner, destination, sum(events)::int, {from_db('max(until)')}"
            f" FROM {{s}}.leases WHERE until > {NOW}"
            " GROUP BY owner, destination ORDER BY owner, destination",
            {"h": now},
        )
        return [LeasedEvents(*row) for row in rows]

    def next_due_at(self, destination: str) -> float | None:
        """When a claim of ``destination`` can next find an event: when the earliest event
        no lease holds falls due, or the first lease runs out (None: nothing queued but
        held events, which wait for an operator)."""
        params: dict[str, Any] = {"destination": destination, "limit": 1, "h": self._clock()}

        def read(conn: psycopg.Connection) -> float | None:
            with self._db.snapshot(conn):
                leases = _spans(self._rows(conn, _SPANS, params))
                first = first_found(
                    [span for _, span in leases],
                    lambda gap: self._due_in(conn, gap, params, due=f"due_at < {HELD}"),
                )
                due = [until for until, _ in leases] + [row[6] for row in first]
                [(now,)] = self._rows(conn, f"SELECT {NOW}", params)
            return min(due) - now + params["h"] if due else None

        return self._db.run(read)

    def retry_now_count(self) -> int:
        """How many times an operator has run ``retry-now`` on this spool."""
        rows = self._read("SELECT value FROM {s}.meta WHERE key = 'retry_now_count'", {})
        return int(rows[0][0]) if rows else 0


_DELIVERED = with_ctes(
    {
        "gone": "DELETE FROM {s}.queue WHERE id BETWEEN %(first)s AND %(last)s"
        " AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))",
        "ended": "DELETE FROM {s}.leases WHERE id = %(lease)s",
        "counted": "UPDATE {s}.totals SET events = events - %(events)s,"
        f" bytes = bytes - %(bytes)s WHERE shard = {SHARD}",
    },
    "SELECT 1",
)


def _spans(rows: list[tuple[Any, ...]]) -> list[tuple[float, tuple[Key, Key]]]:
    """Leases' ends and spans, from rows of ``_SPANS`` (database time)."""
    return [
        (until, ((low_due, low_id), (high_due, high_id)))
        for until, low_due, low_id, high_due, high_id in rows
    ]


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
