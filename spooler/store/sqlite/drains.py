"""What drains do to a spool file: claim under lease, settle, keep the circuit breakers.

A claim is one row in ``leases``, not a mark in each event's row: which events it
holds, and where they lie in the claim order (``store/leases.py``). A holder that dies
leaves its lease to run out; the next claim of that destination ends it, and takes its
events again, with no sweeper process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter

from ..shared import HELD
from .base import SQLiteBase
from .sql import (
    APPEND_ATTEMPT,
    LEASED,
    add_totals,
    attempt_entry,
    delete_counted,
    dissolve,
    held_rows,
    move_to_dead,
    record_outcome,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    import sqlite3
    from typing import Any, TypeVar

    from ...records import Claim, ClaimedEvent, Failure, KeptPause, LeasedEvents
    from ..leases import Gap, Held, Key

    R = TypeVar("R", bound=tuple[Any, ...])

__all__ = ["SQLiteDrains"]

_tuple = tuple.__new__
_body = itemgetter(2)  # of a ClaimedEvent

# A ClaimedEvent's columns. Each column costs a claim ~0.1 us an event to bring into
# Python.
_CLAIMED = "id, event_id, body, attempts + 1, created_at, queued_at"


class SQLiteDrains(SQLiteBase):
    """What drains do to a spool file."""

    def claim(
        self, destination: str, limit: int, owner: str, *, due_by: float, lease_until: float
    ) -> Claim | None:
        """Lease up to ``limit`` events of ``destination`` that are due at ``due_by``,
        earliest due first, as one lease of ``owner``'s; None if none is. The leases of
        the destination that ran out by ``due_by`` end first, their events counting the
        attempt."""
        from ...records import Claim, ClaimedEvent
        from ..leases import first_found

        with self._write() as conn:
            dissolve(conn, "destination = ? AND until <= ?", (destination, due_by), now=due_by)
            spans = [span for _, span in _leases(conn, destination)]
            events = first_found(
                spans,
                lambda gap: _due_in(
                    conn, destination, gap, due_by=due_by, limit=limit, row=ClaimedEvent
                ),
            )
            if not events:
                return None
            # The span's ends, in claim order (the events are returned in enqueue order).
            low, high = events[0].rowid, events[-1].rowid
            due = dict(conn.execute("SELECT id, due_at FROM queue WHERE id IN (?, ?)", (low, high)))
            low_due, high_due = due[low], due[high]
            if low_due != high_due:
                events.sort()  # by rowid, the first field (all due at once: in that order)
            holds = _held(events)
            bodies = "".join(map(_body, events))
            size = len(bodies) if bodies.isascii() else len(bodies.encode("utf-8"))
            lease = conn.execute(
                "INSERT INTO leases (owner, destination, until, first_id, last_id, ids, events,"
                " bytes, low_due, low_id, high_due, high_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner,
                    destination,
                    lease_until,
                    holds.first,
                    holds.last,
                    None if holds.ids is None else json.dumps(holds.ids),
                    len(events),
                    size,
                    low_due,
                    low,
                    high_due,
                    high,
                ),
            ).lastrowid
        assert lease is not None  # None only before a connection's first INSERT
        return Claim(lease, events)

    def extend_lease(self, lease: int, lease_until: float) -> bool:
        """Push the lease out to ``lease_until``; False if it has ended."""
        with self._write() as conn:
            return bool(
                conn.execute(
                    "UPDATE leases SET until = ? WHERE id = ?", (lease_until, lease)
                ).rowcount
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
        dead-letter table. Only events the lease still holds are touched: if it ended
        (ran out and another drain took its events), that drain owns the outcome now.
        With ``destination``, its last success or last error is recorded too (for
        ``spooler status``).
        """
        from ..leases import Held

        with self._write() as conn:
            if destination is not None:
                failure = next((f for *_, f in [*retry, *dead]), None)
                record_outcome(conn, destination, now, bool(delivered), failure)
            found = conn.execute(
                "SELECT first_id, last_id, ids, events, bytes FROM leases WHERE id = ?", (lease,)
            ).fetchone()
            if found is None:
                return 0
            events: int  # sqlite3 types its rows as Any
            first, last, ids, events, size = found
            holds = Held(first, last, None if ids is None else tuple(json.loads(ids)))
            if not retry and not dead and size is not None and holds.is_all(delivered):
                # The whole batch delivered: one delete of what the lease holds.
                rows, params = held_rows(first, last, ids)
                conn.execute(f"DELETE FROM queue WHERE {rows}", params)
                add_totals(conn, -events, -size)
                conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
                return events
            return _settle_rows(conn, lease, holds, now, holds.only(delivered), retry, dead)

    def release_leases(self, owner: str, *, now: float) -> int:
        """End every lease ``owner`` holds, unsettled: their events count the attempt,
        and are due at once. Returns how many events they held."""
        with self._write() as conn:
            return dissolve(conn, "owner = ?", (owner,), now=now)

    def shift_schedule(self, seconds: float, *, now: float) -> int:
        """Move every event due after ``now`` earlier by ``seconds`` (never before ``now``),
        and every lease and pause that ends after it; returns how many events moved.

        After the wall clock jumps back, leases, retry times and pauses computed before
        the jump lie that much too far in the future; this gives them their intended
        wait back. Events a lease holds keep their place in the claim order, which
        the lease's span records: they are due by ``now`` when it ends.
        """
        with self._write() as conn:
            conn.execute(
                "UPDATE destination_state SET paused_until = max(?, paused_until - ?)"
                " WHERE paused_until > ?",
                (now, seconds, now),
            )
            conn.execute(
                "UPDATE leases SET until = max(?, until - ?) WHERE until > ?", (now, seconds, now)
            )
            return conn.execute(
                "UPDATE queue SET due_at = max(?, due_at - ?) WHERE due_at > ? AND due_at < ?"
                f" AND NOT {LEASED}",
                (now, seconds, now, HELD, now),
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
                f" AND due_at < ? AND attempts > 0 AND NOT {LEASED}",
                (now, destination, now, HELD, now),
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

    def live_leases(self, *, now: float) -> list[LeasedEvents]:
        """Events held by leases that have not run out by ``now``, by drain and destination."""
        from ...records import LeasedEvents

        with self._read() as conn:
            return [
                LeasedEvents(*row)
                for row in conn.execute(
                    "SELECT owner, destination, sum(events), max(until) FROM leases"
                    " WHERE until > ? GROUP BY owner, destination ORDER BY owner, destination",
                    (now,),
                )
            ]

    def next_due_at(self, destination: str) -> float | None:
        """When a claim of ``destination`` can next find an event: when the earliest event
        no lease holds falls due, or the first lease runs out (None: nothing queued but
        held events, which wait for an operator)."""
        from ..leases import first_found

        with self._read() as conn:
            leases = _leases(conn, destination)
            first = first_found(
                [span for _, span in leases],
                lambda gap: _due_in(
                    conn, destination, gap, due_by=HELD, limit=1, columns="id, due_at", row=tuple
                ),
            )
        due = [until for until, _ in leases]
        if first and first[0][1] < HELD:
            due.append(first[0][1])
        return min(due, default=None)

    def retry_now_count(self) -> int:
        """How many times an operator has run ``retry-now`` on this spool."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'retry_now_count'").fetchone()
            return int(row[0]) if row else 0


def _held(events: list[ClaimedEvent]) -> Held:
    """What a lease of ``events`` (in enqueue order) holds."""
    from ..leases import Held, held

    first, last = events[0].rowid, events[-1].rowid
    if last - first + 1 == len(events):
        return Held(first, last)  # every rowid between: no list needed
    found = held([event.rowid for event in events])
    assert found is not None
    return found


def _leases(conn: sqlite3.Connection, destination: str) -> list[tuple[float, tuple[Key, Key]]]:
    """The ends and spans of the leases of ``destination``."""
    return [
        (until, ((low_due, low_id), (high_due, high_id)))
        for until, low_due, low_id, high_due, high_id in conn.execute(
            "SELECT until, low_due, low_id, high_due, high_id FROM leases WHERE destination = ?",
            (destination,),
        )
    ]


def _due_in(
    conn: sqlite3.Connection,
    destination: str,
    gap: Gap,
    *,
    due_by: float,
    limit: int,
    columns: str = _CLAIMED,
    row: type[R],
) -> list[R]:
    """Up to ``limit`` events of ``destination`` due by ``due_by`` whose keys lie in
    ``gap``, in claim order: their ``columns``, each made a ``row`` (a tuple type).

    Each row is made a ``row`` straight from the cursor, by the tuple type's own
    constructor (a named tuple's costs ~0.07 us more an event in Python), and freed at
    once: no list of plain rows stays alive beside the events for the cyclic garbage
    collector to go through each time it runs in a claim (every 700 new objects). That
    was ~40% of its work in a claim, and it took ~10% of a drain at 2000 an event.

    SQLite's index on ``(destination, due_at)`` ends in the rowid, but it walks a range
    of ``(due_at, id)`` row values only by ``due_at``: from a bound inside a run of
    equal ``due_at`` (a batch enqueued at once) it would read the whole run. So a gap
    is read in up to three ranges the index walks exactly: the rest of its first
    ``due_at``, the ``due_at`` values between, the start of its last.
    """
    after, before = gap
    # (condition, parameters, the least due_at it can hold: None for "no bound")
    ranges: list[tuple[str, list[object], float | None]] = []
    if after is not None and before is not None and after[0] == before[0]:
        ranges.append(
            ("due_at = ? AND id > ? AND id < ?", [after[0], after[1], before[1]], after[0])
        )
    else:
        if after is not None:
            ranges.append(("due_at = ? AND id > ?", list(after), after[0]))
        # One upper bound, the tighter: given two, SQLite walks the index to either.
        params: list[object]
        if before is not None and before[0] <= due_by:
            between, params = "due_at < ?", [before[0]]
        else:
            between, params = "due_at <= ?", [due_by]
        if after is not None:
            between, params = between + " AND due_at > ?", [*params, after[0]]
        ranges.append((between, params, None))
        if before is not None:
            ranges.append(("due_at = ? AND id < ?", list(before), before[0]))
    found: list[R] = []
    for condition, params, least in ranges:
        if least is not None and least > due_by:
            break  # due later: so is every range after it
        cursor = conn.execute(
            f"SELECT {columns} FROM queue WHERE destination = ? AND {condition}"
            " ORDER BY due_at, id LIMIT ?",
            [destination, *params, limit - len(found)],
        )
        found += map(_tuple, repeat(row), cursor)
        if len(found) == limit:
            break
    return found


def _settle_rows(
    conn: sqlite3.Connection,
    lease: int,
    holds: Held,
    now: float,
    delivered: list[int],
    retry: Sequence[tuple[int, float, Failure]],
    dead: Sequence[tuple[int, str, Failure]],
) -> int:
    """Settle some of a lease's events, one statement each kind (each row for a retry),
    and keep what the lease holds after."""
    retry = [row for row in retry if row[0] in holds]
    dead = [row for row in dead if row[0] in holds]
    changed = 0
    if delivered:
        changed += delete_counted(
            conn, "queue", "id IN (SELECT value FROM json_each(?))", (json.dumps(delivered),)
        )
    for rowid, due_at, failure in retry:
        changed += conn.execute(
            "UPDATE queue SET due_at = ?, attempts = attempts + 1, last_status = ?,"
            f" last_error = ?, attempt_log = {APPEND_ATTEMPT} WHERE id = ?",
            (due_at, failure.status, failure.error, attempt_entry(failure, now), rowid),
        ).rowcount
    for rowid, reason, failure in dead:
        changed += move_to_dead(
            conn, "id = ?", [rowid], reason=reason, failure=failure, now=now, attempted=True
        )
    rest = holds.without({*delivered, *(r[0] for r in retry), *(r[0] for r in dead)})
    if rest is None:
        conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
    elif rest != holds:
        # What is left may no longer be every rowid of a range; its bytes are counted
        # when it is settled.
        conn.execute(
            "UPDATE leases SET first_id = ?, last_id = ?, ids = ?, events = ?, bytes = NULL"
            " WHERE id = ?",
            (
                rest.first,
                rest.last,
                None if rest.ids is None else json.dumps(rest.ids),
                rest.size,
                lease,
            ),
        )
    return changed
