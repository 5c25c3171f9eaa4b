"""The store seam: what the spool, the drain, the dead-letter commands and doctor ask of a
backend. ``sqlite.SQLiteStore`` (a SQLite file) and ``postgres.PostgresStore`` (a
PostgreSQL schema) both provide it, and ``tests/test_store_contract.py`` holds both to it.

Times cross the seam as Unix seconds on the caller's clock. The SQLite backend keeps
them as given. The PostgreSQL backend keeps the database's clock instead (one clock for
every host): it reads a time it is given as an offset from the caller's present (the
``now`` of the call, else its own clock's reading) and hands times back the same way,
so a lease of 60 s lasts 60 s of the server's time whatever the hosts' clocks say. (A
dead letter's times, which schedule nothing, move by the clocks' offset in whole
seconds: the same dead letter reads the same in every listing.)

Each method is one transaction unless its docstring says otherwise. A failure leaves as
``StoreError``; a method that names event ids which are not there raises
``UnknownEventError`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from .shared import REPLAY_CHUNK

if TYPE_CHECKING:
    from ..history import HistoryPoint
    from ..records import (
        Claim,
        Counts,
        DeadEvent,
        DeadGroup,
        DeadPage,
        DeadSelection,
        Failure,
        Finding,
        KeptPause,
        LeasedEvents,
        QueueSelection,
        RetriedNow,
    )

__all__ = ["SpoolStore"]


class SpoolStore(Protocol):
    """A spool's storage: the queue, the dead-letter table and per-destination state."""

    #: Where the spool is, for messages: a file path, or a URL without its password.
    path: str
    #: Whether opening the store created the spool (it was not there before).
    created: bool
    #: The schema version this code writes (and reads).
    SCHEMA_VERSION: int

    @property
    def location(self) -> str:
        """Where the spool is, for logs: a file's absolute path, or a URL without its
        password."""

    def is_own_file(self, path: str) -> bool:
        """Whether writing to the file ``path`` would write into the spool itself."""

    def close(self) -> None:
        """Close the connections; the store is not usable afterwards."""

    # -- producers --------------------------------------------------------------------

    def insert(
        self,
        rows: Sequence[tuple[str, str, str]],
        *,
        now: float,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Queue ``(event_id, destination, body)`` rows, all or none, within the limits
        (``SpoolFullError``)."""

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
        """Queue the elements of a JSON array text as events with the ids of ``id_block``;
        False, queueing nothing, if one is over ``max_event_bytes`` or they do not pair up."""

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
        """Put an event straight into the dead-letter table."""

    def keep_totals(self) -> None:
        """Have every writer keep the totals the limits are checked against, from now on
        (the first time on a spool, they are counted); ``insert`` with a limit does it."""

    # -- drains -----------------------------------------------------------------------

    def claim(
        self, destination: str, limit: int, owner: str, *, due_by: float, lease_until: float
    ) -> Claim | None:
        """Lease up to ``limit`` events of ``destination`` due by ``due_by``, earliest due
        first, as one lease of ``owner``'s until ``lease_until`` (None: none is due).

        The claim writes one lease, not a mark in each event (``store/leases.py``). The
        destination's leases that ran out by ``due_by`` end first, unsettled: each of
        their events counts the attempt that ended, and can be claimed again."""

    def extend_lease(self, lease: int, lease_until: float) -> bool:
        """Push a lease out to ``lease_until``; False if it has ended (then its drain has
        lost its events to another)."""

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
        """Delete, reschedule or dead-letter events the lease still holds (a retry or a
        death counts the attempt); returns how many changed (none once the lease has
        ended). The lease ends with its last event."""

    def release_leases(self, owner: str, *, now: float) -> int:
        """End every lease ``owner`` holds, unsettled: their events count the attempt and
        are due at once; returns how many events."""

    def shift_schedule(self, seconds: float, *, now: float) -> int:
        """Undo a backward jump of the caller's wall clock on the events and pauses
        scheduled by it; returns how many events moved."""

    def record_pause(
        self, destination: str, *, failures: int, until: float | None, url_digest: str
    ) -> None:
        """Keep a destination's circuit breaker for every drain of the spool."""

    def forget_failures(self, destination: str, *, url_digest: str, now: float) -> int:
        """End a destination's pause and failure count, and make its retries due now."""

    def pauses(self) -> dict[str, KeptPause]:
        """The kept circuit breakers of destinations whose last requests failed."""

    def live_leases(self, *, now: float) -> list[LeasedEvents]:
        """The events held by leases that have not run out by ``now``, by drain and
        destination (a drain at its start says what it will have to wait for)."""

    def next_due_at(self, destination: str) -> float | None:
        """When the earliest event of ``destination`` falls due (None: none but held ones)."""

    def retry_now_count(self) -> int:
        """How many times an operator has run ``retry-now`` on this spool."""

    # -- operators --------------------------------------------------------------------

    def counts(self, *, now: float) -> dict[str, Counts]:
        """Queue and dead-letter counts and destination state, per destination."""

    def queued_elsewhere(self, served: Collection[str]) -> dict[str, int]:
        """Events queued per destination not in ``served`` (only those with some): what
        ``counts`` says of them, without reading the events of ``served``."""

    def totals(self) -> tuple[int, int]:
        """Events held, queued or dead, and their bytes: what the limits are checked against."""

    def dead_summary(self, *, now: float) -> list[DeadGroup]:
        """Dead events grouped by destination, reason and status, the largest group first."""

    def last_key(self, *, dead: bool) -> int:
        """The largest key in the dead-letter table (``dead``) or the queue, 0 if empty:
        the ``last_key`` of a selection of the rows there now (see ``QueueSelection``)."""

    def dead_events(
        self, selection: DeadSelection, *, limit: int | None = None
    ) -> Iterator[DeadEvent]:
        """Dead events matching ``selection``, oldest first, read a page at a time (each
        its own transaction) as the iterator goes, so a listing of a million holds one
        page in memory. Named ids must all be dead letters: checked at once."""

    def dead_page(
        self,
        selection: DeadSelection,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> DeadPage:
        """Up to ``limit`` dead events matching ``selection``, newest first: the newest of
        all, those older than the key ``before``, or the oldest of those newer than the
        key ``after``; and how many match in all (one snapshot)."""

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
        """Move dead events back to the queue, ``chunk`` per transaction; how many."""

    def purge(self, selection: DeadSelection, *, dry_run: bool = False) -> int:
        """Delete dead events for good; how many."""

    def retry_now(self, selection: QueueSelection, *, now: float) -> RetriedNow:
        """Make waiting events due at once and end their destinations' pauses; how many
        events, and whose running pauses ended."""

    def hold(self, selection: QueueSelection, *, now: float) -> int:
        """Park queued events (not those being delivered) until ``release_held``."""

    def release_held(self, selection: QueueSelection, *, now: float) -> int:
        """Make held events due at once."""

    def expire(self, selection: QueueSelection, *, now: float, error: str) -> int:
        """Dead-letter queued events (reason ``manual``), not those being delivered."""

    def record_service(self, name: str, report: str) -> None:
        """Keep a running service's report (a JSON text) under ``name``, replacing its last."""

    def service_reports(self) -> dict[str, str]:
        """The reports services keep, by name."""

    # -- history ----------------------------------------------------------------------

    def record_history(self, points: Sequence[HistoryPoint], *, now: float, keep: float) -> None:
        """Add drains' minutes to the spool's history (counts add up, a backlog replaces the
        one kept), and forget the minutes that ended more than ``keep`` seconds ago."""

    def history(
        self, *, since: float, now: float, destination: str | None = None
    ) -> list[HistoryPoint]:
        """The history's minutes from the one ``since`` falls in on, oldest first."""

    # -- health -----------------------------------------------------------------------

    def reclaim_space(self) -> int:
        """Give unused space back to the file system where the backend must; how much."""

    def integrity_check(self) -> list[str]:
        """``["ok"]``, or the damage found."""

    def schema_version(self) -> int:
        """The schema version the spool records."""

    def stale_leases(self, *, now: float) -> int:
        """Events held by leases that ran out (their drains died or stalled)."""

    def quarantine_corrupt(self, *, now: float) -> int:
        """Dead-letter queued events whose body is not a JSON object (reason ``corrupt``)."""

    def storage_checks(self, *, min_free_bytes: int) -> list[Finding]:
        """``spooler doctor``'s checks of what holds the spool: a file's log, modes and
        disk (``min_free_bytes``), or a server's reach and dead rows."""
