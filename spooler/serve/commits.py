"""Group commit for an event loop: the events of concurrent requests share transactions.

Each request's events are one batch, committed all or none. One thread commits: while
it commits (and fsyncs), the batches of the requests that arrive wait, and the next
commit takes all of them, so a commit's cost is shared by every request that waited
for it; and after a commit of several, the next one waits a moment (at most as long as
that commit took) for the clients it answered, which are about to send again. A
request is answered only once the commit that holds its events has returned (after
the fsync, at ``durability = "full"``). A failed shared commit is retried one
batch at a time (``commit_together``), so a request learns only of its own error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import ConfigError
from ..events import new_event_ids
from ..group_commit import commit_together

__all__ = ["HANG_ENV", "Committer", "Done"]

log = logging.getLogger("spooler.serve")

Row = tuple[str, str, str]
# The longest the thread waits for the batches of a group, however slow the last commit.
MAX_GATHER_SECONDS = 0.005
# Test-only: set to "commit", the thread hangs for good at its next commit (a stuck
# relay, for the watchdog's test).
HANG_ENV = "SPOOLER_SERVE_HANG_AT"
# How often a closing committer looks whether its last commits got stuck.
_CLOSE_POLL_SECONDS = 0.1


# Called from the event loop once a batch is committed: with its events' new ids, or
# with the error that kept them out.
Done = Callable[[list[str] | Exception], None]


class _Batch:
    """One request's events: ``(destination, JSON text)`` pairs, and whom to tell."""

    __slots__ = ("done", "events")

    def __init__(self, events: Sequence[tuple[str, str]], done: Done):
        self.events = events
        self.done = done


class Committer:
    """Commits batches of events submitted from one event loop, on a thread of its own.

    Usage::

        committer = Committer(spool.commit_rows, on_commit=stats.commit)
        committer.submit([("amplitude", '{"event_type":"a"}')], done=print)
        committer.close()

    ``on_commit(seconds, batches)`` is called after each commit, from the thread. A
    commit that has not returned after ``step`` seconds is stuck (``overdue``).
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Row]], None],
        *,
        on_commit: Callable[[float, int], None] | None = None,
        step: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        hang_at = os.environ.get(HANG_ENV)
        if hang_at not in (None, "commit"):
            raise ConfigError(f"{HANG_ENV} must be commit")
        self._hang = hang_at == "commit"
        self._commit = commit
        self._on_commit = on_commit
        self._step = step
        self._clock = clock
        self._commit_began: float | None = None  # None: no commit in progress
        self._loop = asyncio.get_running_loop()
        self._pending: list[_Batch] = []
        self._arrived = threading.Condition()
        self._idle = True  # the thread waits for work: a submit must wake it
        self._closed = False
        self._gathering = False
        self._last_group = 1  # batches in the last commit
        self._last_commit_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="spooler-commit", daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[tuple[str, str]], done: Done) -> None:
        """Commit ``(destination, JSON text)`` events in one transaction (maybe shared);
        ``done`` is called from the loop with their new event ids once they are
        committed, or with the error.

        A callback, not a future: one loop callback settles a whole committed group,
        where a future per request would cost a loop turn each (docs/performance.md)."""
        with self._arrived:
            if self._closed:
                raise RuntimeError("the committer is closed")
            self._pending.append(_Batch(events, done))
            # A busy thread takes the batch when its commit returns; a gathering one is
            # woken only once its group is complete (a wake-up costs a GIL hand-over).
            if self._idle or (self._gathering and len(self._pending) >= self._last_group):
                self._arrived.notify()

    def _run(self) -> None:
        while True:
            with self._arrived:
                while not self._pending and not self._closed:
                    self._idle = True
                    self._arrived.wait()
                self._idle = False
                if self._last_group > 1 and not self._closed:
                    # The clients answered after the last commit are about to send again:
                    # wait for as many batches as it held, but never longer than a commit
                    # takes, or the groups would alternate between a few and the rest.
                    self._gathering = True
                    self._arrived.wait_for(
                        lambda: len(self._pending) >= self._last_group or self._closed,
                        timeout=min(self._last_commit_seconds, MAX_GATHER_SECONDS),
                    )
                    self._gathering = False
                group, self._pending = self._pending, []
                if not group and self._closed:
                    return
            self._last_group = len(group)
            self._commit_group(group)

    def _commit_group(self, group: list[_Batch]) -> None:
        # One call for the ids of the whole group: os.urandom is a system call.
        ids = iter(new_event_ids(sum(len(batch.events) for batch in group)))
        rows = [[(next(ids), dest, body) for dest, body in batch.events] for batch in group]
        began = time.perf_counter()
        self._commit_began = self._clock()
        try:
            if self._hang:
                threading.Event().wait()  # for good: the commit is stuck
            errors = commit_together(self._commit, rows)
        finally:
            self._commit_began = None
        self._last_commit_seconds = time.perf_counter() - began
        if self._on_commit is not None:
            self._on_commit(self._last_commit_seconds, len(group))
        outcomes: list[tuple[Done, list[str] | Exception]] = [
            (batch.done, [row[0] for row in batch_rows] if error is None else error)
            for batch, error, batch_rows in zip(group, errors, rows, strict=True)
        ]
        self._loop.call_soon_threadsafe(_settle, outcomes)

    def overdue(self) -> float:
        """How far past ``step`` the commit in progress is, in seconds (0: none is; inf:
        the thread is gone, and nothing submitted will be committed)."""
        began = self._commit_began
        if not self._thread.is_alive() and not self._closed:
            return math.inf
        return 0.0 if began is None else max(0.0, self._clock() - began - self._step)

    def close(self) -> bool:
        """Commit what was submitted, then stop the thread; False if a commit got stuck
        first (the thread is left behind, and its batches unanswered)."""
        with self._arrived:
            self._closed = True
            self._arrived.notify()
        while self._thread.is_alive():
            if self.overdue() > 0:
                return False
            self._thread.join(_CLOSE_POLL_SECONDS)
        return True


def _settle(outcomes: list[tuple[Done, list[str] | Exception]]) -> None:
    for done, outcome in outcomes:
        try:
            done(outcome)
        except Exception:  # a bug: the batches after it are still told
            log.exception("settling a committed batch failed")
