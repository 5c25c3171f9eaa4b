"""Group commit: threads that enqueue while a commit is in progress share the next one.

A durable commit costs one fsync, whatever it holds. With one transaction per call,
eight threads enqueueing at once queue up behind each other's fsyncs; with group
commit, the callers that arrive while a commit runs are written together in the next
transaction, and each call still returns only once its own events are durable.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from itertools import pairwise

from .errors import SpoolFullError

__all__ = ["GroupCommit", "commit_together"]

Row = tuple[str, str, str]

# The longest a leader waits for the other active callers to join its group, however
# slow the last commit was (one stuck on a busy lock must not stall the next group).
_MAX_GATHER_SECONDS = 0.005


class _Request:
    """One caller's rows, and what became of them."""

    __slots__ = ("error", "lead", "main", "next", "released", "rows", "wakeup")

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows
        self.lead = False  # this caller commits the next group
        self.error: BaseException | None = RuntimeError(
            "interrupted before commit; the events were not spooled"
        )
        # A plain lock, held until a leader releases it: the cheapest way to park a
        # thread and wake exactly it.
        self.wakeup = threading.Lock()
        self.wakeup.acquire()
        # Set just before ``wakeup`` is released: the caller need not wait any more (its
        # rows' commit is over, or it leads), whether or not it was woken yet.
        self.released = False
        # The member of its group that this caller wakes once it is woken itself.
        self.next: _Request | None = None
        # The main thread, the only one a signal can interrupt while it waits.
        self.main = threading.current_thread() is threading.main_thread()


class GroupCommit:
    """Runs ``commit(rows)`` for callers of ``submit``, sharing transactions between threads.

    There is no background thread: the first caller to arrive leads, committing every
    request pending at that moment in one ``commit``; callers that arrive meanwhile
    wait, and the first of them leads the next group. Once a group is committed, its
    callers are woken in turn, each by the one before it. A lone caller (nobody leading,
    the last group of one) commits its rows directly, as a group of itself. A failed
    shared commit is handled as ``commit_together`` says: an error reaches exactly the
    callers it concerns.
    """

    def __init__(self, commit: Callable[[Sequence[Row]], None]) -> None:
        self._commit = commit
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._gathering = False
        self._last_commit_seconds = 0.0
        self._pending: list[_Request] = []
        self._leader_busy = False
        self._last_group = 1  # callers in the last group: >1 means other threads are active
        self._pid = os.getpid()

    def submit(self, rows: Sequence[Row]) -> None:
        """Commit ``rows`` in one transaction (maybe shared); return once they are durable."""
        if self._pid != os.getpid():
            # After fork() the parent's waiting threads do not exist here.
            self._reset()
        with self._lock:
            # Nobody leads, and the last group was of one: a lone thread, which would
            # lead a group of itself without gathering anyway. It commits its rows
            # directly, without a request to park on (docs/performance.md, target 1).
            alone = not self._leader_busy and self._last_group <= 1
            if alone:
                self._leader_busy = True
        if alone:
            self._commit_alone(rows)
            return
        request = _Request(rows)
        with self._lock:
            self._pending.append(request)
            # Wake a gathering leader only once its group is complete: every wake-up
            # costs a GIL hand-over, and a leader woken early only goes back to sleep.
            if self._gathering and len(self._pending) >= self._last_group:
                self._arrived.notify()
            took_over = self._leader_busy
            if not took_over:
                self._leader_busy = request.lead = True
        if took_over:
            try:
                request.wakeup.acquire()  # released when our rows are committed, or we lead
            except BaseException:  # a signal (KeyboardInterrupt) while waiting
                self._abandon(request)
                raise
            if request.next is not None:
                request.next.wakeup.release()  # wake the next of our group, in turn
        if request.lead:
            try:
                if took_over or self._last_group > 1:
                    self._gather()
            finally:
                self._lead(request)  # even when interrupted: the others wait for a leader
        if request.error is not None:
            raise request.error

    def _commit_alone(self, rows: Sequence[Row]) -> None:
        """Lead a group of one: commit ``rows`` (its errors are the caller's own), then
        hand leadership to whoever arrived meanwhile, as ``_lead`` does."""
        started = time.perf_counter()
        try:
            self._commit(rows)
        finally:
            self._last_commit_seconds = time.perf_counter() - started
            successor = self._next_leader()
            if successor is not None:
                successor.released = True
                successor.wakeup.release()

    def _abandon(self, request: _Request) -> None:
        """Settle what an interrupted waiter owes, so that nobody else hangs: rows still
        pending are withdrawn (not spooled); rows already in a commit are waited for, and
        the next of the group woken; a waiter just made leader leads once before it goes."""
        with self._lock:
            if request in self._pending and not request.lead:
                self._pending.remove(request)
                return
        # Not what ``acquire`` returned: the interruption may have come right after it
        # acquired, and waiting again would then be for ever.
        if not request.released:
            request.wakeup.acquire()
        if request.next is not None:
            request.next.wakeup.release()
        if request.lead:
            self._lead(request)

    def _gather(self) -> None:
        # Other callers are active: the ones the last leader just released are about to
        # submit again. Wait for as many as the last group held, but never longer than
        # a commit takes, or the groups would alternate between one caller and all the
        # others. A lone thread never waits here.
        with self._lock:
            self._gathering = True
            self._arrived.wait_for(
                lambda: len(self._pending) >= self._last_group,
                timeout=min(self._last_commit_seconds, _MAX_GATHER_SECONDS),
            )
            self._gathering = False

    def _lead(self, own: _Request) -> None:
        with self._lock:
            group, self._pending = self._pending, []
        self._last_group = len(group)
        started = time.perf_counter()
        try:
            self._commit_group(group)
        finally:
            self._last_commit_seconds = time.perf_counter() - started
            successor = self._next_leader()
            self._wake(group, own)
            if successor is not None:
                successor.released = True
                successor.wakeup.release()

    @staticmethod
    def _wake(group: list[_Request], own: _Request) -> None:
        """Wake the callers of a committed ``group`` (but ``own``, the leader's), as a
        chain: the leader wakes the first, and each woken caller the next. Woken all at
        once, they only queue for the GIL, and the leader pays every wake-up (~7 us a
        thread here) before it goes on; in turn, 8 threads ran 1.16-1.20x as fast
        (docs/performance.md, target 4). The main thread is woken directly: a signal can
        interrupt it while it waits, and must not cut the chain."""
        chain = [request for request in group if request is not own and not request.main]
        # Every link is in place before any caller is marked released: an interrupted
        # one that finds itself released wakes its next without waiting (``_abandon``).
        for request, after in pairwise(chain):
            request.next = after
        for request in group:
            request.released = True
            if request.main and request is not own:
                request.wakeup.release()
        if chain:
            chain[0].wakeup.release()

    def _next_leader(self) -> _Request | None:
        """The caller that leads next, the first to arrive during the last commit, made
        leader (its caller wakes it); None, nobody leading, if none arrived."""
        with self._lock:
            successor = self._pending[0] if self._pending else None
            if successor is None:
                self._leader_busy = False
            else:
                successor.lead = True
        return successor

    def _commit_group(self, group: list[_Request]) -> None:
        errors = commit_together(self._commit, [request.rows for request in group])
        for request, error in zip(group, errors, strict=True):
            request.error = error


def commit_together(
    commit: Callable[[Sequence[Row]], None], batches: Sequence[Sequence[Row]]
) -> list[Exception | None]:
    """Commit every batch of rows in one ``commit``; each batch's error (None: committed).

    If the shared commit fails for a spool limit (``SpoolFullError``), each batch is
    committed on its own, so the error reaches exactly the batches it concerns and the
    others still commit. Any other error is every batch's: the spool itself failed (a
    full disk, a server that cannot be reached for its ``wait``), and trying each batch
    again would only keep every caller waiting that long once more per batch. A commit
    that went through but could not be flushed to disk (``NotDurableError``) is never
    tried again: committing the rows a second time would store every event twice.
    """
    try:
        commit([row for rows in batches for row in rows])
    except SpoolFullError as exc:
        if len(batches) == 1:
            return [exc]
        # Whose rows caused it is unknown: give each batch its own transaction.
        errors: list[Exception | None] = []
        for rows in batches:
            try:
                commit(rows)
            except Exception as own:
                errors.append(own)
            else:
                errors.append(None)
        return errors
    except Exception as exc:
        return [exc] * len(batches)
    return [None] * len(batches)
