"""What operators do to a spool file: counts, the dead-letter table, hold and release,
retry-now and expire."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence

from ..shared import HELD, REPLAY_CHUNK, SERVICE_PREFIX, read_in_pages
from .base import SQLiteBase
from .sql import LEASED, delete_counted, dissolve, move_to_dead, require_ids, totals, where

# The record types come from ...records where a method builds one: a producer, which
# loads this module too, never needs them, and they would load dataclasses.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import Any

    from ...records import (
        Counts,
        DeadEvent,
        DeadGroup,
        DeadPage,
        DeadSelection,
        QueueSelection,
        RetriedNow,
    )

__all__ = ["SQLiteOperators"]

# The queued destinations, one seek of the claim index each (SQLite would otherwise read
# every entry to find the distinct ones), and a count of those not served.
_QUEUED_ELSEWHERE = """
WITH RECURSIVE named(destination) AS (
    SELECT min(destination) FROM queue
    UNION ALL
    SELECT (SELECT min(destination) FROM queue WHERE destination > named.destination)
    FROM named WHERE named.destination IS NOT NULL
)
SELECT destination, (SELECT count(*) FROM queue WHERE queue.destination = named.destination)
FROM named WHERE destination IS NOT NULL
AND destination NOT IN (SELECT value FROM json_each(?))"""


class SQLiteOperators(SQLiteBase):
    """What operators do to a spool file."""

    def counts(self, *, now: float) -> dict[str, Counts]:
        """Counts per destination (every destination with a queued or dead event)."""
        from ...records import Counts

        by_destination: dict[str, Counts] = {}
        with self._read() as conn:
            for dest, queued, due, retrying, held, oldest in conn.execute(
                "SELECT destination, count(*), total(due_at <= :now),"
                " total(due_at < :held AND attempts > 0), total(due_at >= :held),"
                " min(queued_at) FROM queue GROUP BY destination",
                {"now": now, "held": HELD},
            ):
                by_destination[dest] = Counts(
                    queued, int(due), 0, int(retrying), 0, oldest, held=int(held)
                )
            # Events in flight are still due by their own due_at: counted apart.
            for dest, leased, leased_due in conn.execute(
                "SELECT l.destination, count(*), total(queue.due_at <= :now) FROM leases AS l"
                " JOIN queue ON queue.id BETWEEN l.first_id AND l.last_id"
                " AND (l.ids IS NULL OR queue.id IN (SELECT value FROM json_each(l.ids)))"
                " WHERE l.until > :now GROUP BY 1",
                {"now": now},
            ):
                counts = by_destination[dest]
                counts.leased, counts.due = leased, counts.due - int(leased_due)
            for dest, dead in conn.execute("SELECT destination, count(*) FROM dead GROUP BY 1"):
                by_destination.setdefault(dest, Counts()).dead = dead
            for dest, *state in conn.execute(
                "SELECT destination, last_success_at, last_error_at, last_error, failures,"
                " paused_until FROM destination_state"
            ):
                counts = by_destination.setdefault(dest, Counts())
                (
                    counts.last_success_at,
                    counts.last_error_at,
                    counts.last_error,
                    counts.failed_in_a_row,
                    counts.paused_until,
                ) = state
        return by_destination

    def queued_elsewhere(self, served: Collection[str]) -> dict[str, int]:
        """Events queued per destination not in ``served`` (only those with some), without
        reading the events of ``served``: a drain asks at its start, when a backlog of
        its own would take ``counts`` tens of milliseconds to count."""
        with self._read() as conn:
            found = conn.execute(_QUEUED_ELSEWHERE, (json.dumps(list(served)),)).fetchall()
        return dict(sorted(found))

    def totals(self) -> tuple[int, int]:
        """How many events the spool holds, queued or dead, and their bodies' bytes: what
        ``max_events`` and ``max_bytes`` are checked against."""
        with self._read() as conn:
            return totals(conn)

    def last_key(self, *, dead: bool) -> int:
        """The largest key in the dead-letter table (``dead``) or the queue, 0 if empty.

        A new row's key is one more than the largest there: once the rows with the
        largest keys are deleted, a new row can take a key at most this (then a
        selection bounded by it can take in a row written later)."""
        with self._read() as conn:
            table = "dead" if dead else "queue"
            (key,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
        return int(key)

    def dead_summary(self, *, now: float) -> list[DeadGroup]:
        """Dead events grouped by destination, reason and status, the largest group first."""
        from ...records import DEAD_AGE_BUCKETS, DeadGroup

        cutoffs = {"hour": now - 3600, "day": now - 86400, "week": now - 7 * 86400}
        with self._read() as conn:
            groups = conn.execute(
                "SELECT destination, reason, status, count(*),"
                " total(dead_at > :hour),"
                " total(dead_at <= :hour AND dead_at > :day),"
                " total(dead_at <= :day AND dead_at > :week),"
                " total(dead_at <= :week)"
                " FROM dead GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2",
                cutoffs,
            ).fetchall()
            errors: dict[tuple[object, ...], str] = {}
            for dest, reason, status, error, _ in conn.execute(
                "SELECT destination, reason, status, error, count(*) FROM dead"
                " GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC"
            ):
                errors.setdefault((dest, reason, status), error)
        return [
            DeadGroup(
                dest,
                reason,
                status,
                count,
                dict(zip(DEAD_AGE_BUCKETS, map(int, ages), strict=True)),
                errors.get((dest, reason, status)),
            )
            for dest, reason, status, count, *ages in groups
        ]

    def dead_events(
        self, selection: DeadSelection, *, limit: int | None = None
    ) -> Iterator[DeadEvent]:
        """Dead events matching ``selection``, oldest first, read ``DEAD_PAGE`` at a time:
        listing a million holds one page in memory, and no transaction while the
        caller prints. Named ids must all be dead letters (``UnknownEventError``, at
        once)."""
        if selection.ids:
            with self._read() as conn:
                require_ids(conn, selection, "dead")
        return self._dead_pages(selection, limit)

    def _dead_pages(self, selection: DeadSelection, limit: int | None) -> Iterator[DeadEvent]:
        condition, params = where(selection)

        def read_page(after: int, count: int) -> list[tuple[Any, ...]]:
            # Each page its own read, by rowid (the primary key): no OFFSET to skip over.
            with self._read() as conn:
                return conn.execute(
                    "SELECT id, event_id, destination, body, created_at, attempts, reason,"
                    f" status, error, dead_at, attempt_log FROM dead WHERE {condition}"
                    " AND id > ? ORDER BY id LIMIT ?",
                    [*params, after, count],
                ).fetchall()

        for _, *event, log in read_in_pages(read_page, limit):
            yield _dead_event(event, log)

    def dead_page(
        self,
        selection: DeadSelection,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> DeadPage:
        """Up to ``limit`` dead events matching ``selection``, newest first (by key: the
        rowid), before or after a key; and how many match in all."""
        from ...records import DeadPage

        condition, params = where(selection)
        if after is not None:
            page = f"{condition} AND id > ? ORDER BY id LIMIT ?"
            params_page = [*params, after, limit]
        else:
            page = f"{condition} AND id < ? ORDER BY id DESC LIMIT ?"
            params_page = [*params, 2**63 - 1 if before is None else before, limit]
        with self._read() as conn:
            require_ids(conn, selection, "dead")
            rows = conn.execute(
                "SELECT id, event_id, destination, body, created_at, attempts, reason, status,"
                f" error, dead_at, attempt_log FROM dead WHERE {page}",
                params_page,
            ).fetchall()
            (total,) = conn.execute(
                f"SELECT count(*) FROM dead WHERE {condition}", params
            ).fetchone()
        events = [(key, _dead_event(event, log)) for key, *event, log in rows]
        return DeadPage(events[::-1] if after is not None else events, total)

    def replay(
        self,
        selection: DeadSelection,
        *,
        now: float,
        dry_run: bool = False,
        to: str | None = None,
        limit: int | None = None,
        chunk: int = REPLAY_CHUNK,
    ) -> int:
        """Move matching dead events back to the queue (attempts reset, same event id),
        oldest first, optionally to another destination (``to``).

        Each chunk of ``chunk`` rows is one transaction: a replay of 100k rows never
        holds the write lock for long, and a crash halfway leaves each row in exactly
        one table. Named ids must all be dead letters, or nothing moves.
        """
        condition, params = where(selection)
        with self._read() as conn:
            require_ids(conn, selection, "dead")
            rowids = [
                rowid
                for (rowid,) in conn.execute(
                    f"SELECT id FROM dead WHERE {condition} ORDER BY id LIMIT ?",
                    [*params, -1 if limit is None else limit],
                )
            ]
        if dry_run:
            return len(rowids)
        moved = 0
        for start in range(0, len(rowids), chunk):
            ids = json.dumps(rowids[start : start + chunk])
            with self._write() as conn:
                moved += conn.execute(
                    "INSERT INTO queue (event_id, destination, body, created_at, queued_at,"
                    " due_at, attempt_log) SELECT event_id, coalesce(?, destination), body,"
                    " created_at, ?, ?, attempt_log FROM dead"
                    " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                    (to, now, now, ids),
                ).rowcount
                conn.execute(
                    "DELETE FROM dead WHERE id IN (SELECT value FROM json_each(?))", (ids,)
                )
        return moved

    def purge(self, selection: DeadSelection, *, dry_run: bool = False) -> int:
        """Delete matching dead events for good."""
        condition, params = where(selection)
        with self._write() as conn:
            require_ids(conn, selection, "dead")
            if dry_run:
                count: int = conn.execute(  # sqlite3 types its rows as Any
                    f"SELECT count(*) FROM dead WHERE {condition}", params
                ).fetchone()[0]
                return count
            return delete_counted(conn, "dead", condition, params)

    def retry_now(self, selection: QueueSelection, *, now: float) -> RetriedNow:
        """Make waiting events due at once (their backoff is cleared); not those in flight
        or held. The selected destinations' pauses end (those of the named events, or
        every one): running drains see :meth:`retry_now_count` change and probe them,
        drains started later find no pause."""
        from ...records import RetriedNow

        condition, params = where(selection)
        paused_params: list[object]
        if selection.destination is not None:
            paused, paused_params = "destination = ?", [selection.destination]
        elif selection.ids:
            paused = f"destination IN (SELECT destination FROM queue WHERE {condition})"
            paused_params = params
        else:
            paused, paused_params = "1", []
        ended: list[str] = []
        events = self._update_selected(
            selection,
            "due_at = ?",
            f"due_at > ? AND due_at < ? AND NOT {LEASED}",
            [now],
            [now, HELD, now],
            also=(
                (
                    "INSERT INTO meta (key, value) VALUES ('retry_now_count', '1')"
                    " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                    [],
                ),
                (
                    # First the pauses still running, to say which ended; then the rest.
                    "UPDATE destination_state SET paused_until = NULL"
                    f" WHERE {paused} AND paused_until > ? RETURNING destination",
                    [*paused_params, now],
                ),
                (f"UPDATE destination_state SET paused_until = NULL WHERE {paused}", paused_params),
            ),
            returned=ended,
        )
        return RetriedNow(events, tuple(sorted(ended)))

    def record_service(self, name: str, report: str) -> None:
        """Keep the report (a JSON text) of a running service such as ``spooler serve``
        under ``name``, for ``spooler status``; it replaces that name's last one."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (SERVICE_PREFIX + name, report),
            )

    def service_reports(self) -> dict[str, str]:
        """The reports services keep, by name."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(SERVICE_PREFIX), SERVICE_PREFIX),
            ).fetchall()
        return {key.removeprefix(SERVICE_PREFIX): value for key, value in rows}

    def hold(self, selection: QueueSelection, *, now: float) -> int:
        """Park queued events: never claimed, so never sent and never expired, until
        ``release_held``. Events being delivered at this moment are left alone."""
        return self._update_selected(
            selection, "due_at = ?", f"due_at < ? AND NOT {LEASED}", [HELD], [HELD, now], now=now
        )

    def release_held(self, selection: QueueSelection, *, now: float) -> int:
        """Make held events due at once."""
        return self._update_selected(selection, "due_at = ?", "due_at >= ?", [now], [HELD])

    def expire(self, selection: QueueSelection, *, now: float, error: str) -> int:
        """Move queued events to the dead-letter table (reason ``manual``), except those a
        drain is delivering right now."""
        from ...records import Failure

        condition, params = where(selection)
        idle = f"{condition} AND NOT {LEASED}"
        with self._write() as conn:
            require_ids(conn, selection, "queue")
            dissolve(conn, "until <= ?", [now], now=now)
            return move_to_dead(
                conn, idle, [*params, now], reason="manual", failure=Failure(None, error), now=now
            )

    def _update_selected(
        self,
        selection: QueueSelection,
        assignments: str,
        condition: str,
        values: Sequence[object],
        condition_values: Sequence[object],
        *,
        also: Sequence[tuple[str, Sequence[object]]] = (),
        returned: list[Any] | None = None,
        now: float | None = None,
    ) -> int:
        """``UPDATE queue SET assignments`` on the selected events that meet ``condition``,
        and the statements ``also`` (with their parameters), in one transaction; named
        ids must all be queued. The first column of the rows ``also`` return goes into
        ``returned``. With ``now``, the leases that ran out by then end first, so that
        their events are free to change (and their drains can no longer settle them)."""
        selected, params = where(selection)
        with self._write() as conn:
            require_ids(conn, selection, "queue")
            if now is not None:
                dissolve(conn, "until <= ?", [now], now=now)
            for statement, statement_params in also:
                rows = conn.execute(statement, statement_params).fetchall()
                if returned is not None:
                    returned.extend(row[0] for row in rows)
            return conn.execute(
                f"UPDATE queue SET {assignments} WHERE {selected} AND {condition}",
                [*values, *params, *condition_values],
            ).rowcount


def _dead_event(columns: list[Any], log: str | None) -> DeadEvent:
    """A dead event from its columns (``event_id`` to ``dead_at``) and its attempt log."""
    from ...records import Attempt, dead_event

    return dead_event(columns, tuple(Attempt(*entry) for entry in json.loads(log or "[]")))
