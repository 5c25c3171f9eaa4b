"""What drains do to a spool file: claim under lease, settle, keep the circuit breakers.

A lease is ``due_at`` moved to the lease's end, with ``lease_owner`` set: a holder that
dies leaves the event due again when the lease runs out, with no sweeper process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..shared import HELD
from .base import SQLiteBase
from .sql import APPEND_ATTEMPT, attempt_entry, delete_counted, move_to_dead, record_outcome

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from ...records import ClaimedEvent, Failure, KeptPause

__all__ = ["SQLiteDrains"]


class SQLiteDrains(SQLiteBase):
    """What drains do to a spool file."""

    def claim(
        self, destination: str, limit: int, owner: str, *, due_by: float, lease_until: float
    ) -> list[ClaimedEvent]:
        """Lease up to ``limit`` events of ``destination`` that are due at ``due_by``,
        earliest due first; returned in enqueue order."""
        from ...records import ClaimedEvent

        with self._write() as conn:
            rows = conn.execute(
                "UPDATE queue SET due_at = ?, lease_owner = ?, attempts = attempts + 1"
                " WHERE id IN (SELECT id FROM queue WHERE destination = ? AND due_at <= ?"
                "              ORDER BY due_at LIMIT ?)"
                " RETURNING id, event_id, destination, body, attempts, created_at, queued_at",
                (lease_until, owner, destination, due_by, limit),
            ).fetchall()
        return sorted((ClaimedEvent(*row) for row in rows), key=lambda event: event.rowid)

    def extend_lease(self, owner: str, rowids: Sequence[int], lease_until: float) -> None:
        """Push the lease of events still held by ``owner`` out to ``lease_until``."""
        with self._write() as conn:
            conn.execute(
                "UPDATE queue SET due_at = ? WHERE lease_owner = ?"
                " AND id IN (SELECT value FROM json_each(?))",
                (lease_until, owner, json.dumps(list(rowids))),
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
        """Record one delivery outcome in one transaction; returns the rows changed.

        ``delivered`` rows are deleted; ``retry`` rows ``(rowid, due_at, failure)`` go
        back to the queue; ``dead`` rows ``(rowid, reason, failure)`` move to the
        dead-letter table. Only rows still leased by ``owner`` are touched: if the lease
        was lost to another drain, that drain owns the outcome now. With ``destination``,
        its last success or last error is recorded too (for ``spooler status``).
        """
        changed = 0
        with self._write() as conn:
            if destination is not None:
                failure = next((f for *_, f in [*retry, *dead]), None)
                record_outcome(conn, destination, now, bool(delivered), failure)
            if delivered:
                changed += delete_counted(
                    conn,
                    "queue",
                    "lease_owner = ? AND id IN (SELECT value FROM json_each(?))",
                    (owner, json.dumps(list(delivered))),
                )
            for rowid, due_at, failure in retry:
                changed += conn.execute(
                    "UPDATE queue SET due_at = ?, lease_owner = NULL, last_status = ?,"
                    f" last_error = ?, attempt_log = {APPEND_ATTEMPT}"
                    " WHERE id = ? AND lease_owner = ?",
                    (
                        due_at,
                        failure.status,
                        failure.error,
                        attempt_entry(failure, now),
                        rowid,
                        owner,
                    ),
                ).rowcount
            for rowid, reason, failure in dead:
                changed += move_to_dead(
                    conn,
                    "id = ? AND lease_owner = ?",
                    [rowid, owner],
                    reason=reason,
                    failure=failure,
                    now=now,
                    attempted=True,
                )
        return changed

    def release_leases(self, owner: str, *, now: float) -> int:
        """Give back every lease ``owner`` holds, making those events due at once."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE queue SET due_at = ?, lease_owner = NULL WHERE lease_owner = ?"
                " AND due_at > ?",
                (now, owner, now),
            ).rowcount

    def shift_schedule(self, seconds: float, *, now: float) -> int:
        """Move every event due after ``now`` earlier by ``seconds`` (never before ``now``),
        and every pause that ends after it; returns how many events moved.

        After the wall clock jumps back, leases, retry times and pauses computed before
        the jump lie that much too far in the future; this gives them their intended
        wait back.
        """
        with self._write() as conn:
            conn.execute(
                "UPDATE destination_state SET paused_until = max(?, paused_until - ?)"
                " WHERE paused_until > ?",
                (now, seconds, now),
            )
            return conn.execute(
                "UPDATE queue SET due_at = max(?, due_at - ?) WHERE due_at > ? AND due_at < ?",
                (now, seconds, now, HELD),
            ).rowcount

    def record_pause(
        self, destination: str, *, failures: int, until: float | None, url_digest: str
    ) -> None:
        """Keep a destination's circuit breaker: requests failed in a row, no claims
        before ``until`` (None: none pending), and a digest of the URL they failed at (a
        URL may hold a secret). Every drain of the spool takes it up."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO destination_state (destination, failures, paused_until, url_digest)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
                " failures = excluded.failures, paused_until = excluded.paused_until,"
                " url_digest = excluded.url_digest",
                (destination, failures, until, url_digest),
            )

    def forget_failures(self, destination: str, *, url_digest: str, now: float) -> int:
        """A destination now sent to another URL: end its pause, reset its count of
        failures, and make its events that wait to be retried due at once (not those in
        flight or held); returns how many were."""
        with self._write() as conn:
            conn.execute(
                "UPDATE destination_state SET failures = 0, paused_until = NULL,"
                " url_digest = ? WHERE destination = ?",
                (url_digest, destination),
            )
            return conn.execute(
                "UPDATE queue SET due_at = ? WHERE destination = ? AND due_at > ?"
                " AND due_at < ? AND lease_owner IS NULL AND attempts > 0",
                (now, destination, now, HELD),
            ).rowcount

    def pauses(self) -> dict[str, KeptPause]:
        """Destinations whose last requests failed, with their kept circuit breakers."""
        from ...records import KeptPause

        with self._read() as conn:
            return {
                name: KeptPause(*kept)
                for name, *kept in conn.execute(
                    "SELECT destination, failures, paused_until, url_digest"
                    " FROM destination_state WHERE failures > 0"
                )
            }

    def next_due_at(self, destination: str) -> float | None:
        """When the earliest event of ``destination`` falls due (None: nothing queued but
        held events, which wait for an operator)."""
        with self._read() as conn:
            return conn.execute(
                "SELECT min(due_at) FROM queue WHERE destination = ? AND due_at < ?",
                (destination, HELD),
            ).fetchone()[0]

    def retry_now_count(self) -> int:
        """How many times an operator has run ``retry-now`` on this spool."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'retry_now_count'").fetchone()
            return int(row[0]) if row else 0
