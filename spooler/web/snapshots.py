"""What the pages show of the whole spool, read at most every few seconds.

Counting a spool's queue reads every row: about half a second for a million queued
events in a SQLite file. A page should not wait that long, nor should every page a
browser refreshes cost another count. So the counts and the dead-letter summary are
read in the background while the pages are looked at, at most once every
``max(MIN_AGE, COST_SHARE x the last read's time)``: a page shows the latest reading
and its age at once, and the dashboard spends at most a tenth of a core on them.
An action (replay, hold...) makes the next page wait for a fresh reading, and so does
a reading older than ``max(MAX_SHOWN_AGE, 2 x COST_SHARE x its cost)``: no page was
looked at for a while (the dashboard was just opened during an outage), and numbers
that old would pass for the present.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["COST_SHARE", "MAX_SHOWN_AGE", "MIN_AGE", "Reading", "Snapshot"]

T = TypeVar("T")

MIN_AGE = 2.0  # seconds a reading is shown before another is taken
COST_SHARE = 10  # a reading is taken at most every this many times as long as it took
# A reading older than this (or than twice its renewal period, for a slow one) is not
# shown but waited for: a page open refreshes every 5 s, so only the first page after
# nobody looked for a while waits.
MAX_SHOWN_AGE = 30.0


@dataclass(frozen=True)
class Reading(Generic[T]):
    """A value read from the spool, and when (by ``clock``, ``time.monotonic`` by default)."""

    value: T
    taken_at: float
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def age(self) -> float:
        """Seconds since it was read."""
        return self.clock() - self.taken_at


class Snapshot(Generic[T]):
    """The latest reading of ``read``, renewed in a thread of its own once it is old.

    Usage::

        status = Snapshot(spool.status)
        status.get().value   # waits only for the first reading, after ``stale()``, or
                             # when the last one is too old to be shown
    """

    def __init__(
        self, read: Callable[[], T], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._reading: Reading[T] | None = None
        self._error: BaseException | None = None
        self._cost = 0.0
        self._renewing = False
        self._generation = 0  # bumped by stale(): readings started before it do not count

    def get(self) -> Reading[T]:
        """The latest reading; the first (or the first after ``stale()``, or one too old
        to be shown) is waited for, and a failure to take it raised."""
        with self._lock:
            while self._reading is None or self._too_old(self._reading):
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                self._renew_locked()
                self._ready.wait()
            reading = self._reading
            if reading.age() > max(MIN_AGE, COST_SHARE * self._cost):
                self._renew_locked()
            return reading

    def _too_old(self, reading: Reading[T]) -> bool:
        return reading.age() > max(MAX_SHOWN_AGE, 2 * COST_SHARE * self._cost)

    def start(self) -> None:
        """Take a reading now, in the background, if none is being taken."""
        with self._lock:
            self._renew_locked()

    def stale(self) -> None:
        """Forget the reading: the spool changed, and the next ``get`` waits for a new one."""
        with self._lock:
            self._reading = None
            self._generation += 1
            self._renewing = False

    def _renew_locked(self) -> None:
        if self._renewing:
            return
        self._renewing = True
        threading.Thread(target=self._renew, args=(self._generation,), daemon=True).start()

    def _renew(self, generation: int) -> None:
        started = self._clock()
        try:
            value = self._read()
        except BaseException as exc:
            with self._lock:
                if generation == self._generation:
                    self._renewing = False
                    self._error = exc
                    self._ready.notify_all()
            return
        with self._lock:
            if generation != self._generation:
                return  # read before an action changed the spool
            self._cost = self._clock() - started
            self._reading = Reading(value, started, self._clock)
            self._error = None  # an earlier failure is no longer the news
            self._renewing = False
            self._ready.notify_all()
