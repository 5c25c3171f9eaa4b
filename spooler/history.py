"""A small history of each destination, a row per minute, kept in the spool for the
dashboard's charts (``spooler web``): events enqueued, delivered, retried and
dead-lettered, requests and their latency, the backlog and the age of its oldest event.

The drain writes it (``HistoryRecorder``): its workers add each outcome and request to
counters in memory, where they already count them for the report, and the drain's
main loop writes the counters once a minute, and when it stops, in one transaction
with a snapshot of each destination's backlog. So a batch costs a lock and a few
additions, never a write of its own, and several drains of one spool add up.

Producers write nothing: what was enqueued in a minute is derived from the backlog at
its end, the backlog at the end of the minute before, and what left the queue in
between (``enqueued``): ``backlog[m] - backlog[m-1] + delivered[m] + dead[m]``. A
replayed dead letter counts as enqueued (it enters the queue again); an event an
operator expires counts as nothing having arrived in its place.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .best_effort import best_effort
from .errors import StoreError

if TYPE_CHECKING:
    from .records import Counts
    from .store.interface import SpoolStore

__all__ = [
    "DEFAULT_KEEP",
    "MINUTE",
    "Bucket",
    "HistoryPoint",
    "HistoryRecorder",
    "buckets",
    "minute_of",
]

log = logging.getLogger("spooler.drain")

MINUTE = 60
DEFAULT_KEEP = 7 * 86400.0  # seconds of history a spool keeps


def minute_of(timestamp: float) -> int:
    """The start of the minute ``timestamp`` falls in, in Unix seconds."""
    return int(timestamp // MINUTE) * MINUTE


class HistoryPoint(NamedTuple):
    """One destination's minute: what the drains counted in it, and the backlog at its end
    (``backlog`` and ``oldest_age`` are None where no drain looked at the queue then)."""

    minute: int
    destination: str
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    requests: int = 0
    latency_sum: float = 0.0  # seconds, over ``requests``
    latency_max: float = 0.0
    backlog: int | None = None
    oldest_age: float | None = None


@dataclass
class _Counters:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    requests: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0

    def add(self, other: _Counters) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        self.requests += other.requests
        self.latency_sum += other.latency_sum
        self.latency_max = max(self.latency_max, other.latency_max)


class HistoryRecorder:
    """A drain's minutes, counted in memory and written to the spool once a minute.

    Usage::

        recorder = HistoryRecorder(store)
        recorder.outcome("amplitude", delivered=500)   # from the workers, any thread
        recorder.request("amplitude", 0.042)
        if recorder.due():                             # from the drain's main loop
            recorder.flush()
        recorder.flush(closing=True)                   # when the drain stops

    ``keep`` seconds of history stay in the spool (0: the drain keeps none).
    """

    def __init__(
        self,
        store: SpoolStore,
        *,
        keep: float = DEFAULT_KEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._keep = keep
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[tuple[int, str], _Counters] = {}
        self._flushed_minute = minute_of(clock())

    def _at(self, destination: str) -> _Counters:
        # Called with the lock held.
        key = (minute_of(self._clock()), destination)
        counters = self._counters.get(key)
        if counters is None:
            counters = self._counters[key] = _Counters()
        return counters

    def outcome(
        self, destination: str, *, delivered: int = 0, retried: int = 0, dead: int = 0
    ) -> None:
        """Count the events of one settled batch in the current minute."""
        if not self._keep:
            return
        with self._lock:
            counters = self._at(destination)
            counters.delivered += delivered
            counters.retried += retried
            counters.dead += dead

    def request(self, destination: str, seconds: float) -> None:
        """Count one delivery request and how long it took."""
        if not self._keep:
            return
        with self._lock:
            counters = self._at(destination)
            counters.requests += 1
            counters.latency_sum += seconds
            counters.latency_max = max(counters.latency_max, seconds)

    def due(self) -> bool:
        """Whether a minute has ended since the last write."""
        return bool(self._keep) and minute_of(self._clock()) > self._flushed_minute

    def flush(self, *, closing: bool = False) -> None:
        """Write the minutes that have ended, with each destination's backlog now: the
        backlog at the end of the minute just ended; or (``closing``, the drain stopping)
        everything counted, this minute too, with its backlog.

        A spool that cannot take it now gets it at the next write: a failing spool stops
        the drain's workers anyway, and the counts are only numbers in memory. (One that
        could not be reached for its wait raises ``StoreUnreachableError``: the drain
        stops on it.)
        """
        if not self._keep:
            return
        now = self._clock()
        self._flushed_minute = minute_of(now)
        with self._lock:
            counters, self._counters = self._counters, {}
            if not closing:
                # The minute that has just begun waits for its end: written now, its first
                # counts would chart as a minute of almost nothing until the next write.
                for key in [key for key in counters if key[0] >= self._flushed_minute]:
                    self._counters[key] = counters.pop(key)
        snapshot_minute = self._flushed_minute if closing else self._flushed_minute - MINUTE
        with best_effort(log, "could not keep the minute's history in the spool"):
            try:
                counts = self._store.counts(now=now)
                points = _points(counters, snapshot_minute, counts, now)
                self._store.record_history(points, now=now, keep=self._keep)
            except StoreError:
                with self._lock:  # for the next write
                    for key, each in counters.items():
                        self._counters.setdefault(key, _Counters()).add(each)
                raise


def _points(
    counters: dict[tuple[int, str], _Counters],
    snapshot_minute: int,
    counts: Mapping[str, Counts],
    now: float,
) -> list[HistoryPoint]:
    """The counters as points, the backlog of every destination the spool knows of
    joined to the point of ``snapshot_minute``."""
    points = {
        key: HistoryPoint(
            key[0],
            key[1],
            each.delivered,
            each.retried,
            each.dead,
            each.requests,
            each.latency_sum,
            each.latency_max,
        )
        for key, each in counters.items()
    }
    for destination, each in counts.items():
        key = (snapshot_minute, destination)
        oldest = None if each.oldest_queued_at is None else max(now - each.oldest_queued_at, 0.0)
        point = points.get(key, HistoryPoint(snapshot_minute, destination))
        points[key] = point._replace(backlog=each.queued, oldest_age=oldest)
    return sorted(points.values())


# -- reading it back: the charts' buckets ------------------------------------------------


@dataclass
class Bucket:
    """One destination's counts over ``seconds`` from ``start``, for a chart: sums of the
    minutes of history in it, and the last backlog seen in it (None where none was)."""

    start: int
    seconds: int
    minutes: int = 0  # how many minutes of history fell in it (0: none, nothing is known)
    enqueued: int | None = None
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    requests: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    backlog: int | None = None
    oldest_age: float | None = None

    @property
    def delivery_rate(self) -> float:
        """Events delivered per second."""
        return self.delivered / self.seconds

    @property
    def latency(self) -> float | None:
        """The mean request time in seconds (None: no request)."""
        return self.latency_sum / self.requests if self.requests else None


def buckets(
    points: Iterable[HistoryPoint], *, start: int, end: int, step: int
) -> dict[str, list[Bucket]]:
    """Each destination's points summed into buckets of ``step`` seconds from ``start`` to
    ``end``, with what was enqueued in each (derived, see the module's docstring)."""
    count = max(math.ceil((end - start) / step), 1)
    by_destination: dict[str, list[HistoryPoint]] = {}
    for point in points:
        by_destination.setdefault(point.destination, []).append(point)
    result = {}
    for destination, own in sorted(by_destination.items()):
        own.sort()
        enqueued = _enqueued(own)
        series = [Bucket(start + i * step, step) for i in range(count)]
        for point, arrived in zip(own, enqueued, strict=True):
            index = (point.minute - start) // step
            if not 0 <= index < count:
                continue
            _add(series[index], point, arrived)
        result[destination] = series
    return result


def _enqueued(points: Sequence[HistoryPoint]) -> list[int | None]:
    """What entered the queue in each minute of ``points`` (sorted, one destination), where
    the backlog is known at its end and at the end of the minute before."""
    arrived: list[int | None] = []
    before: HistoryPoint | None = None
    for point in points:
        known = (
            before is not None
            and before.minute == point.minute - MINUTE
            and before.backlog is not None
            and point.backlog is not None
        )
        if known:
            assert before is not None and before.backlog is not None and point.backlog is not None
            change = point.backlog - before.backlog + point.delivered + point.dead
            arrived.append(max(change, 0))
        else:
            arrived.append(None)
        before = point
    return arrived


def _add(bucket: Bucket, point: HistoryPoint, enqueued: int | None) -> None:
    bucket.minutes += 1
    if enqueued is not None:
        bucket.enqueued = (bucket.enqueued or 0) + enqueued
    bucket.delivered += point.delivered
    bucket.retried += point.retried
    bucket.dead += point.dead
    bucket.requests += point.requests
    bucket.latency_sum += point.latency_sum
    bucket.latency_max = max(bucket.latency_max, point.latency_max)
    if point.backlog is not None:
        bucket.backlog = point.backlog  # points come in order: the last one stays
        bucket.oldest_age = point.oldest_age
