"""Dead-letter operations: see why events died, send them back, or delete them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .events import check_destination_name, encode_event, new_event_ids
from .records import (
    DEAD_REASONS,
    DeadEvent,
    DeadGroup,
    DeadPage,
    DeadSelection,
    Failure,
    iso_utc,
)

if TYPE_CHECKING:
    from .store.interface import SpoolStore

__all__ = ["DeadLetters", "dead_event_to_dict"]


def dead_event_to_dict(dead: DeadEvent) -> dict[str, Any]:
    """The JSON form of a dead event, as ``spooler dlq inspect --json`` prints it.

    ``event`` is the payload; a body that is not JSON (damaged, or edited by hand, as
    ``spooler doctor`` quarantines with reason ``corrupt``) is given as its stored text.
    """
    try:
        event = json.loads(dead.body)
    except ValueError:
        event = dead.body
    return {
        "id": dead.event_id,
        "destination": dead.destination,
        "reason": dead.reason,
        "status": dead.status,
        "error": dead.error,
        "attempts": dead.attempts,
        "enqueued_at": iso_utc(dead.created_at),
        "dead_at": iso_utc(dead.dead_at),
        "event": event,
        "attempt_log": [
            {"at": iso_utc(a.at), "status": a.status, "error": a.error} for a in dead.attempt_log
        ],
    }


class DeadLetters:
    """The dead-letter table of one spool (``Spool.dead_letters``)."""

    def __init__(self, store: SpoolStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def add(self, event: dict[str, Any], *, destination: str, reason: str, error: str) -> str:
        """Dead-letter an event that must not be sent (a client's own check failed).

        It gets an event id like any other, and can be inspected and replayed.
        """
        if not isinstance(reason, str) or not reason:
            raise ConfigError(f"a dead letter needs a reason, not {reason!r}")
        [event_id] = new_event_ids(1)
        self._store.insert_dead(
            event_id,
            check_destination_name(destination),
            encode_event(event),
            now=self._clock(),
            reason=reason,
            failure=Failure(None, error),
        )
        return event_id

    def last_key(self) -> int:
        """The largest key in the table now: given to ``replay`` or ``purge`` as their
        ``last_key``, it leaves out the events that die after this call, so that they
        act on no more than a count taken now (a dry run with it) said."""
        return self._store.last_key(dead=True)

    def summary(self) -> list[DeadGroup]:
        """Dead events grouped by destination, reason and HTTP status, with ages and usual error."""
        return self._store.dead_summary(now=self._clock())

    def inspect(
        self,
        ids: Sequence[str] = (),
        *,
        destination: str | None = None,
        reason: str | None = None,
        status: int | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int | None = None,
    ) -> Iterator[DeadEvent]:
        """Dead events, oldest first, read from the spool a page at a time as the
        iterator goes (memory stays flat however many there are); no criteria means
        all of them. The criteria are those of ``replay``.

        Named ids must all be dead letters (``UnknownEventError`` otherwise, at once).
        """
        selection = self._selection(
            ids, True, destination, reason, older_than, newer_than, status=status, now=self._clock()
        )
        return self._store.dead_events(selection, limit=limit)

    def page(
        self,
        *,
        destination: str | None = None,
        reason: str | None = None,
        status: int | None = None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
    ) -> DeadPage:
        """A page of dead events, newest first: the newest, those older than the key
        ``before``, or the page newer than the key ``after`` (keys come with the events);
        and how many match in all. For a listing that pages back and forth (the
        dashboard), where ``inspect`` reads forward only. The criteria are those of
        ``replay``."""
        selection = self._selection(
            (), True, destination, reason, None, None, status=status, now=self._clock()
        )
        return self._store.dead_page(selection, limit=limit, before=before, after=after)

    def replay(
        self,
        ids: Sequence[str] = (),
        *,
        everything: bool = False,
        destination: str | None = None,
        reason: str | None = None,
        status: int | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int | None = None,
        to: str | None = None,
        last_key: int | None = None,
        dry_run: bool = False,
    ) -> int:
        """Move dead events back to the queue, oldest first; returns how many.

        ``status`` is the HTTP status of the answer the event died of (401: a wrong
        key, say); ``older_than`` / ``newer_than`` are seconds since the event died;
        ``to`` sends them to another destination; ``last_key`` (from :meth:`last_key`)
        leaves out the events that died after it was read. Named ids must all be dead
        letters, or nothing moves (``UnknownEventError``).
        """
        if to is not None:
            check_destination_name(to)
        now = self._clock()
        selection = self._selection(
            ids,
            everything,
            destination,
            reason,
            older_than,
            newer_than,
            status=status,
            now=now,
            last_key=last_key,
        )
        return self._store.replay(selection, now=now, dry_run=dry_run, to=to, limit=limit)

    def purge(
        self,
        ids: Sequence[str] = (),
        *,
        everything: bool = False,
        destination: str | None = None,
        reason: str | None = None,
        status: int | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        last_key: int | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete dead events for good; returns how many. The criteria (and
        ``last_key``) are those of ``replay``; named ids must all be dead letters, or
        nothing is deleted."""
        selection = self._selection(
            ids,
            everything,
            destination,
            reason,
            older_than,
            newer_than,
            status=status,
            now=self._clock(),
            last_key=last_key,
        )
        return self._store.purge(selection, dry_run=dry_run)

    def _selection(
        self,
        ids: Sequence[str],
        everything: bool,
        destination: str | None,
        reason: str | None,
        older_than: float | None,
        newer_than: float | None,
        *,
        status: int | None = None,
        now: float,
        last_key: int | None = None,
    ) -> DeadSelection:
        """The dead events the criteria of ``inspect``, ``replay`` and ``purge`` name;
        ages are seconds since the event died. An unknown reason is refused: a typo
        would otherwise select nothing, and look like an empty table."""
        if reason is not None and reason not in DEAD_REASONS:
            known = {*DEAD_REASONS, *(group.reason for group in self.summary())}
            if reason not in known:
                raise ConfigError(
                    f"unknown reason {reason!r}; the reasons are {', '.join(sorted(known))}"
                )
        return DeadSelection(
            ids=tuple(ids),
            destination=destination,
            reason=reason,
            status=status,
            dead_before=None if older_than is None else now - older_than,
            dead_after=None if newer_than is None else now - newer_than,
            everything=everything,
            last_key=last_key,
        )
