"""What operators do to a PostgreSQL spool: counts, the dead-letter table, hold and
release, retry-now and expire."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any, cast

import psycopg

from ...records import (
    DEAD_AGE_BUCKETS,
    Attempt,
    Counts,
    DeadEvent,
    DeadGroup,
    DeadPage,
    DeadSelection,
    QueueSelection,
    RetriedNow,
    dead_event,
)
from ..shared import REPLAY_CHUNK, SERVICE_PREFIX, read_in_pages
from .base import PostgresBase
from .sql import (
    HELD,
    NOW,
    change_totals,
    dissolve,
    from_db,
    held_by,
    leased,
    move_to_dead,
    where,
    with_ctes,
)

__all__ = ["PostgresOperators"]

# The queued destinations, one seek of the claim index each (a GROUP BY would read every
# entry to find the distinct ones), and a count of those not served.
_QUEUED_ELSEWHERE = """
WITH RECURSIVE named(destination) AS (
    SELECT min(destination) FROM {s}.queue
    UNION ALL
    SELECT (SELECT min(q.destination) FROM {s}.queue AS q WHERE q.destination > named.destination)
    FROM named WHERE named.destination IS NOT NULL
)
SELECT destination, (SELECT count(*) FROM {s}.queue AS q WHERE q.destination = named.destination)
FROM named WHERE destination IS NOT NULL AND destination <> ALL(%(served)s)"""

# A dead event's columns, its times on the database's clock, then the offset of the two
# clocks (``_dead_event`` moves the times onto the caller's).
_DEAD_COLUMNS = (
    "id, event_id, destination, body, created_at, attempts, reason, status, error, dead_at,"
    f" attempt_log, {NOW} - %(h)s"
)


class PostgresOperators(PostgresBase):
    """What operators do to a PostgreSQL spool."""

    def counts(self, *, now: float) -> dict[str, Counts]:
        """Counts per destination (every destination with a queued or dead event)."""
        params = {"h": now}

        def read(conn: psycopg.Connection) -> dict[str, Counts]:
            by_destination: dict[str, Counts] = {}
            with self._db.snapshot(conn):
                for dest, *numbers, oldest in self._rows(
                    conn,
                    f"SELECT destination, count(*), count(*) FILTER (WHERE due_at <= {NOW}),"
                    f" count(*) FILTER (WHERE due_at < {HELD} AND attempts > 0),"
                    f" count(*) FILTER (WHERE due_at >= {HELD}), {from_db('min(queued_at)')}"
                    " FROM {s}.queue GROUP BY destination",
                    params,
                ):
                    queued, due, retrying, held = numbers
                    by_destination[dest] = Counts(queued, due, 0, retrying, 0, oldest, held=held)
                # Events in flight are still due by their own due_at: counted apart.
                for dest, in_flight, in_flight_due in self._rows(
                    conn,
                    f"SELECT l.destination, count(*), count(*) FILTER (WHERE q.due_at <= {NOW})"
                    f" FROM {{s}}.leases AS l JOIN {{s}}.queue AS q ON {held_by('q')}"
                    f" WHERE l.until > {NOW} GROUP BY 1",
                    params,
                ):
                    counts = by_destination[dest]
                    counts.leased, counts.due = in_flight, counts.due - in_flight_due
                for dest, dead in self._rows(
                    conn, "SELECT destination, count(*) FROM {s}.dead GROUP BY 1", params
                ):
                    by_destination.setdefault(dest, Counts()).dead = dead
                for dest, *state in self._rows(
                    conn,
                    f"SELECT destination, {from_db('last_success_at')},"
                    f" {from_db('last_error_at')}, last_error, failures,"
                    f" {from_db('paused_until')} FROM {{s}}.destination_state",
                    params,
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

        return self._db.run(read)

    def queued_elsewhere(self, served: Collection[str]) -> dict[str, int]:
        """Events queued per destination not in ``served`` (only those with some), without
        reading the events of ``served``."""
        found = self._read(_QUEUED_ELSEWHERE, {"served": list(served)})
        return {name: int(queued) for name, queued in sorted(found)}

    def last_key(self, *, dead: bool) -> int:
        """The largest key in the dead-letter table (``dead``) or the queue, 0 if empty.

        A key is drawn when its row is written: a row whose transaction commits just
        after this read can hold a smaller key than one committed before it."""
        table = "dead" if dead else "queue"
        [(key,)] = self._read(f"SELECT coalesce(max(id), 0) FROM {{s}}.{table}", {})
        return int(key)

    def dead_summary(self, *, now: float) -> list[DeadGroup]:
        """Dead events grouped by destination, reason and status, the largest group first."""
        ages = [f"dead_at > {NOW} - 3600"]
        ages += [
            f"dead_at <= {NOW} - {a} AND dead_at > {NOW} - {b}"
            for a, b in ((3600, 86400), (86400, 7 * 86400))
        ]
        ages.append(f"dead_at <= {NOW} - {7 * 86400}")
        filtered = ", ".join(f"count(*) FILTER (WHERE {age})" for age in ages)

        def read(conn: psycopg.Connection) -> list[DeadGroup]:
            with self._db.snapshot(conn):
                groups = self._rows(
                    conn,
                    f"SELECT destination, reason, status, count(*), {filtered} FROM {{s}}.dead"
                    " GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2",
                    {},
                )
                errors: dict[tuple[object, ...], str] = {}
                for dest, reason, status, error, _ in self._rows(
                    conn,
                    "SELECT destination, reason, status, error, count(*) FROM {s}.dead"
                    " GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC",
                    {},
                ):
                    errors.setdefault((dest, reason, status), error)
            return [
                DeadGroup(
                    dest,
                    reason,
                    status,
                    count,
                    dict(zip(DEAD_AGE_BUCKETS, by_age, strict=True)),
                    errors.get((dest, reason, status)),
                )
                for dest, reason, status, count, *by_age in groups
            ]

        return self._db.run(read)

    def dead_events(
        self, selection: DeadSelection, *, limit: int | None = None
    ) -> Iterator[DeadEvent]:
        """Dead events matching ``selection``, oldest first, read a page at a time as the
        iterator goes; named ids are checked at once."""
        if selection.ids:
            self._db.run(lambda conn: self._require_ids(conn, selection, "dead"))
        return self._dead_pages(selection, limit)

    def _dead_pages(self, selection: DeadSelection, limit: int | None) -> Iterator[DeadEvent]:
        def read_page(after: int, count: int) -> list[tuple[Any, ...]]:
            params: dict[str, Any] = {"h": self._clock(), "after": after, "count": count}
            condition = where(selection, params)
            return self._db.run(
                lambda conn: self._rows(
                    conn,
                    f"SELECT {_DEAD_COLUMNS} FROM {{s}}.dead WHERE {condition}"
                    " AND id > %(after)s ORDER BY id LIMIT %(count)s",
                    params,
                )
            )

        for _, *event, log, offset in read_in_pages(read_page, limit):
            yield _dead_event(event, log, offset)

    def dead_page(
        self,
        selection: DeadSelection,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> DeadPage:
        """Up to ``limit`` dead events matching ``selection``, newest first (by key: the
        row's id), before or after a key; and how many match in all."""
        params: dict[str, Any] = {"h": self._clock(), "limit": limit}
        condition = where(selection, params)
        if after is not None:
            page = f"{condition} AND id > %(after)s ORDER BY id LIMIT %(limit)s"
            params["after"] = after
        else:
            page = f"{condition} AND id < %(before)s ORDER BY id DESC LIMIT %(limit)s"
            params["before"] = 2**63 - 1 if before is None else before

        def read(conn: psycopg.Connection) -> DeadPage:
            with self._db.snapshot(conn):
                self._require_ids(conn, selection, "dead")
                rows = self._rows(
                    conn, f"SELECT {_DEAD_COLUMNS} FROM {{s}}.dead WHERE {page}", params
                )
                [(total,)] = self._rows(
                    conn, f"SELECT count(*) FROM {{s}}.dead WHERE {condition}", params
                )
            events = [(key, _dead_event(event, log, offset)) for key, *event, log, offset in rows]
            return DeadPage(events[::-1] if after is not None else events, total)

        return self._db.run(read)

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

        Each chunk of ``chunk`` rows is one transaction, so a crash halfway leaves each
        row in exactly one table. Named ids must all be dead letters, or nothing moves.
        """
        params: dict[str, Any] = {"h": now, "limit": limit}
        condition = where(selection, params)

        def select(conn: psycopg.Connection) -> list[int]:
            with self._db.snapshot(conn):
                self._require_ids(conn, selection, "dead")
                return [
                    rowid
                    for (rowid,) in self._rows(
                        conn,
                        f"SELECT id FROM {{s}}.dead WHERE {condition} ORDER BY id LIMIT %(limit)s",
                        params,
                    )
                ]

        rowids = self._db.run(select)
        if dry_run:
            return len(rowids)
        statement = with_ctes(
            {
                "moved": "DELETE FROM {s}.dead WHERE id = ANY(%(chunk)s::bigint[]) RETURNING id,"
                " event_id, destination, body, created_at, attempt_log",
                # An event also still queued (an enqueue run twice) keeps its queued copy.
                "added": "INSERT INTO {s}.queue (event_id, destination, body, created_at,"
                " queued_at, due_at, attempt_log) SELECT event_id, coalesce(%(to)s::text,"
                f" destination), body, created_at, {NOW}, {NOW}, attempt_log FROM moved"
                " ORDER BY id ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                "counted": change_totals(
                    "SELECT octet_length(body) AS n FROM moved"
                    " WHERE event_id NOT IN (SELECT event_id FROM added)",
                    "-",
                ),
            },
            "SELECT count(*) FROM added",
        )
        moved = 0
        for start in range(0, len(rowids), chunk):
            part = {"chunk": rowids[start : start + chunk], "to": to}
            moved += self._run_one(statement, part)
        return moved

    def purge(self, selection: DeadSelection, *, dry_run: bool = False) -> int:
        """Delete matching dead events for good."""
        params: dict[str, Any] = {"h": self._clock()}
        condition = where(selection, params)
        if dry_run:
            statement = f"SELECT count(*) FROM {{s}}.dead WHERE {condition}"
        else:
            statement = with_ctes(
                {
                    "gone": f"DELETE FROM {{s}}.dead WHERE {condition}"
                    " RETURNING octet_length(body) AS n",
                    "counted": change_totals("SELECT n FROM gone", "-"),
                },
                "SELECT count(*) FROM gone",
            )
        return self._run_one(statement, params, require=(selection, "dead"))

    def retry_now(self, selection: QueueSelection, *, now: float) -> RetriedNow:
        """Make waiting events due at once (their backoff is cleared); not those in flight
        or held. The selected destinations' pauses end (those of the named events, or
        every one), and running drains see :meth:`retry_now_count` change; returns how
        many events, and which destinations' running pauses ended."""
        params: dict[str, Any] = {"h": now}
        condition = where(selection, params)
        if selection.destination is not None:
            paused = "destination = %(sel_destination)s"
        elif selection.ids:
            paused = f"destination IN (SELECT destination FROM {{s}}.queue WHERE {condition})"
        else:
            paused = "TRUE"
        events, ended = self._update_selected(
            selection,
            params,
            f"due_at = {NOW}",
            f"due_at > {NOW} AND due_at < {HELD} AND NOT {leased('queue')}",
            also={
                "counter": "INSERT INTO {s}.meta AS m (key, value) VALUES ('retry_now_count', '1')"
                " ON CONFLICT (key) DO UPDATE SET value = (m.value::bigint + 1)::text",
                # RETURNING shows the new row: the old pause is read first, locked.
                "unpaused": "UPDATE {s}.destination_state AS d SET paused_until = NULL FROM"
                " (SELECT destination, paused_until AS was FROM {s}.destination_state"
                f" WHERE {paused} FOR UPDATE) AS old WHERE d.destination = old.destination"
                f" RETURNING d.destination, old.was > {NOW} AS ran",
            },
            also_selected="(SELECT coalesce(array_agg(destination ORDER BY destination),"
            " '{}') FROM unpaused WHERE ran)",
        )
        return RetriedNow(events, tuple(ended))

    def record_service(self, name: str, report: str) -> None:
        """Keep a running service's report (a JSON text) under ``name``, replacing its last."""
        self._run_one(
            "INSERT INTO {s}.meta (key, value) VALUES (%(key)s, %(report)s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING 1",
            {"key": SERVICE_PREFIX + name, "report": report},
        )

    def service_reports(self) -> dict[str, str]:
        """The reports services keep, by name."""
        rows = self._read(
            "SELECT key, value FROM {s}.meta WHERE starts_with(key, %(prefix)s) ORDER BY key",
            {"prefix": SERVICE_PREFIX},
        )
        return {key.removeprefix(SERVICE_PREFIX): value for key, value in rows}

    def hold(self, selection: QueueSelection, *, now: float) -> int:
        """Park queued events: never claimed, so never sent and never expired, until
        ``release_held``. Events being delivered at this moment are left alone."""
        return self._changed(
            selection,
            {"h": now},
            f"due_at = {HELD}",
            f"due_at < {HELD} AND NOT {leased('queue')}",
            first=dissolve(f"until <= {NOW}", NOW),
        )

    def release_held(self, selection: QueueSelection, *, now: float) -> int:
        """Make held events due at once."""
        return self._changed(selection, {"h": now}, f"due_at = {NOW}", f"due_at >= {HELD}")

    def expire(self, selection: QueueSelection, *, now: float, error: str) -> int:
        """Move queued events to the dead-letter table (reason ``manual``), except those a
        drain is delivering right now."""
        params: dict[str, Any] = {"h": now, "reason": "manual", "status": None, "error": error}
        condition = where(selection, params)
        statement = with_ctes(
            move_to_dead(f"{condition} AND NOT {leased('q')}"), "SELECT count(*) FROM moved"
        )
        return self._run_one(
            statement,
            params,
            require=(selection, "queue"),
            first=dissolve(f"until <= {NOW}", NOW),
        )

    def _update_selected(
        self,
        selection: QueueSelection,
        params: dict[str, Any],
        assignments: str,
        condition: str,
        *,
        also: dict[str, str] | None = None,
        also_selected: str | None = None,
        first: str | None = None,
    ) -> tuple[Any, ...]:
        """``UPDATE queue SET assignments`` on the selected events that meet ``condition``,
        with the ``WITH`` queries ``also``, in one transaction; named ids must be queued.
        Returns how many events changed, then ``also_selected`` if given."""
        selected = where(selection, params)
        statement = with_ctes(
            {
                **(also or {}),
                "updated": f"UPDATE {{s}}.queue SET {assignments}"
                f" WHERE {selected} AND {condition} RETURNING 1",
            },
            "SELECT (SELECT count(*) FROM updated)"
            + (f", {also_selected}" if also_selected else ""),
        )
        return self._run_row(statement, params, require=(selection, "queue"), first=first)

    def _changed(
        self,
        selection: QueueSelection,
        params: dict[str, Any],
        assignments: str,
        condition: str,
        *,
        first: str | None = None,
    ) -> int:
        """``_update_selected`` with no ``also``: how many events changed."""
        row = self._update_selected(selection, params, assignments, condition, first=first)
        return cast(int, row[0])  # a selected count: psycopg types row values as Any


def _dead_event(columns: list[Any], log: list[Any] | None, offset: float) -> DeadEvent:
    """A dead event from its columns (``event_id`` to ``dead_at``) and its attempt log,
    whose times are on the database's clock, ``offset`` ahead of the caller's.

    The times move by the offset in whole seconds: it is measured anew by every read, a
    fraction of a millisecond apart (the time a query takes to reach the server), and
    moved by it exactly, one dead letter's times would read differently in every view
    (a table, then the event alone: .673Z, then .672Z). Nothing is scheduled by them."""
    shift = round(offset)
    event_id, destination, body, created_at, attempts, reason, status, error, dead_at = columns
    return dead_event(
        [
            event_id,
            destination,
            body,
            created_at - shift,
            attempts,
            reason,
            status,
            error,
            dead_at - shift,
        ],
        tuple(Attempt(at - shift, code, text) for at, code, text in log or ()),
    )
