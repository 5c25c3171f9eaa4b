"""The public ``Spool``: enqueue events durably, and read the spool's status."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from types import TracebackType

from .errors import ConfigError
from .events import (
    DEFAULT_DESTINATION,
    DEFAULT_MAX_EVENT_BYTES,
    check_destination_name,
    encode_event,
    encode_event_array,
    encode_events,
    new_event_id,
    new_event_id_block,
    new_event_ids,
    split_event_ids,
)
from .files import DEFAULT_FILE_MODE
from .group_commit import GroupCommit
from .store import open_store

# Operator and dead-letter features are imported where used: a producer's
# `import spooler` stays free of dataclasses and typing (docs/performance.md, target 7).
# typing.TYPE_CHECKING without importing typing (its cost: benchmarks/import_time.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .dlq import DeadLetters
    from .records import QueueSelection, RetriedNow, SpoolStatus

__all__ = ["DEFAULT_DESTINATION", "Spool"]


class Spool:
    """A spool, opened for enqueueing events and for operator queries: a SQLite file, or
    a PostgreSQL database shared by many hosts (a ``postgresql://`` URL, see
    ``spooler.store.postgres``).

    Usage::

        with Spool("/var/spool/app/spool.db") as spool:
            event_id = spool.enqueue({"event": "signup", "userId": "u_123"})

    ``durability="full"`` (the default) makes every enqueue survive power loss;
    ``"normal"`` survives a crash of the process but may lose the last commits on
    power loss, and is several times faster. ``max_events`` / ``max_bytes`` bound the
    spool (queue plus dead letters): past them ``enqueue`` raises ``SpoolFullError``.
    ``create=False`` refuses, and leaves as it is, a location that holds no spool yet
    (a missing or empty file, a schema with no tables) (for read-mostly tools). A new
    spool file (with its -wal and -shm) and the folders made for it get ``file_mode``
    and its folder counterpart, whatever the umask: 0600 / 0700 by default; 0o640 lets
    a group read the files, 0o660 lets its members enqueue and drain (every process
    that opens a spool writes it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "full",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_events: int | None = None,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        create: bool = True,
        file_mode: int = DEFAULT_FILE_MODE,
    ) -> None:
        for name, value in (
            ("max_event_bytes", max_event_bytes),
            ("max_events", max_events),
            ("max_bytes", max_bytes),
        ):
            if value is not None and (type(value) is not int or value < 1):  # not a bool
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        self.max_event_bytes = max_event_bytes
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._clock = clock
        self.store = open_store(
            os.fspath(path), durability=durability, create=create, clock=clock, file_mode=file_mode
        )
        self.path = self.store.path  # a URL without its password
        self._group_commit = GroupCommit(self.commit_rows)

    def enqueue(self, event: dict[str, Any], *, destination: str = DEFAULT_DESTINATION) -> str:
        """Commit one event to the spool and return its event id."""
        body = encode_event(event, max_bytes=self.max_event_bytes)
        if destination != DEFAULT_DESTINATION:  # the default needs no check
            check_destination_name(destination)
        event_id = new_event_id()
        self._group_commit.submit(((event_id, destination, body),))
        return event_id

    def enqueue_many(
        self, events: Iterable[dict[str, Any]], *, destination: str = DEFAULT_DESTINATION
    ) -> list[str]:
        """Commit events in one transaction and return their ids; on error, commit none."""
        events = list(events)
        check_destination_name(destination)
        if not events:
            return []
        # Fast path: one encoder call for the whole list, split into rows by SQLite.
        encoded = encode_event_array(events)
        if encoded is not None:
            array, size = encoded
            id_block = new_event_id_block(len(events))
            if self.store.insert_array(
                array,
                size,
                id_block,
                destination,
                now=self._clock(),
                max_event_bytes=self.max_event_bytes,
                max_events=self.max_events,
                max_bytes=self.max_bytes,
            ):
                return split_event_ids(id_block)
        # An event is at fault: encode them one by one to say which (or, should the
        # fast path have refused a valid batch, to commit it anyway).
        return self._commit(encode_events(events, max_bytes=self.max_event_bytes), destination)

    def enqueue_json(
        self, texts: Iterable[str], *, destination: str = DEFAULT_DESTINATION
    ) -> list[str]:
        """Commit events given as JSON object texts (JSON Lines, say) in one transaction
        and return their ids; on error, commit none.

        Each text is checked as ``enqueue`` checks an event, and only its compact form is
        kept until the commit: a large input takes about its own size in memory, where
        ``enqueue_many`` of the parsed dicts would take many times as much. ``texts`` may
        be a generator; nothing is written while it runs.
        """
        check_destination_name(destination)
        bodies = encode_events(texts, max_bytes=self.max_event_bytes, texts=True)
        return self._commit(bodies, destination)

    def _commit(self, bodies: list[str], destination: str) -> list[str]:
        """Commit encoded events to ``destination``, a name its callers have checked."""
        ids = new_event_ids(len(bodies))
        if ids:
            self._group_commit.submit(
                [(i, destination, body) for i, body in zip(ids, bodies, strict=True)]
            )
        return ids

    def commit_rows(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Commit ``(event_id, destination, JSON text)`` rows in one transaction of their
        own, within the spool's limits: for callers that gather commits themselves
        (``spooler serve``), or check events before they open the spool (``spooler
        enqueue``). The texts must be ``encode_event``'s, the ids ``new_event_ids``'."""
        self.store.insert(
            rows, now=self._clock(), max_events=self.max_events, max_bytes=self.max_bytes
        )

    def retry_now(
        self,
        ids: Sequence[str] = (),
        *,
        destination: str | None = None,
        everything: bool = False,
        last_key: int | None = None,
    ) -> RetriedNow:
        """Clear the backoff of waiting events so the next drain pass sends them, and end
        the pauses of their destinations (running drains probe them at once). Returns
        how many events it made due, and the destinations whose pause it ended.
        ``last_key`` (from :meth:`last_queued_key`) leaves out the events queued after
        it was read, here and in ``hold`` and ``release``."""
        selection = _queue_selection(ids, destination, everything, last_key)
        return self.store.retry_now(selection, now=self._clock())

    def hold(
        self,
        ids: Sequence[str] = (),
        *,
        destination: str | None = None,
        everything: bool = False,
        last_key: int | None = None,
    ) -> int:
        """Park queued events: no drain sends them (and none expires them) until
        ``release``. Events being delivered at this moment are left alone."""
        selection = _queue_selection(ids, destination, everything, last_key)
        return self.store.hold(selection, now=self._clock())

    def release(
        self,
        ids: Sequence[str] = (),
        *,
        destination: str | None = None,
        everything: bool = False,
        last_key: int | None = None,
    ) -> int:
        """Make held events due at once."""
        selection = _queue_selection(ids, destination, everything, last_key)
        return self.store.release_held(selection, now=self._clock())

    def expire(
        self, ids: Sequence[str] = (), *, destination: str | None = None, everything: bool = False
    ) -> int:
        """Move queued events to the dead-letter table (reason ``manual``); events being
        delivered at this moment are left alone. Named ids must all be queued."""
        selection = _queue_selection(ids, destination, everything)
        return self.store.expire(selection, now=self._clock(), error="expired by an operator")

    def last_queued_key(self) -> int:
        """The largest key in the queue now: given to ``hold``, ``release`` or
        ``retry_now`` as their ``last_key``, it leaves out the events queued after this
        call."""
        return self.store.last_key(dead=False)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        """The spool's dead-letter table: inspect, replay and purge dead events."""
        from .dlq import DeadLetters

        return DeadLetters(self.store, clock=self._clock)

    def status(self) -> SpoolStatus:
        """Counts of queued, due, leased, retrying and dead events; the reports of the
        relays; the live leases, and when each ends."""
        from .records import Counts, SpoolStatus

        now = self._clock()
        per_destination = self.store.counts(now=now)
        total = Counts()
        for counts in per_destination.values():
            total.queued += counts.queued
            total.due += counts.due
            total.leased += counts.leased
            total.retrying += counts.retrying
            total.dead += counts.dead
            total.held += counts.held
            if counts.oldest_queued_at is not None:
                total.oldest_queued_at = min(
                    total.oldest_queued_at or counts.oldest_queued_at, counts.oldest_queued_at
                )
        services = {}
        for name, report in self.store.service_reports().items():
            try:
                services[name] = json.loads(report)
            except ValueError:
                continue  # written by a newer spooler, say: not this one's to show
        return SpoolStatus(total, per_destination, now, services, self.store.live_leases(now=now))

    def close(self) -> None:
        """Close the database connection."""
        self.store.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _queue_selection(
    ids: Sequence[str], destination: str | None, everything: bool, last_key: int | None = None
) -> QueueSelection:
    from .records import QueueSelection

    return QueueSelection(
        ids=tuple(ids), destination=destination, everything=everything, last_key=last_key
    )
