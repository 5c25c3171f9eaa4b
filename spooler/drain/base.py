"""What a drain is made of: how long it runs (``Mode``), what it reports (``DrainReport``),
the state its parts share (``DrainBase``), and how it is told to stop.

``Drain`` (``run``) sets the state up; the parts that use it, each a class of its own
module, are its bases: ``report``, ``pauses`` and ``worker``.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StoreUnreachableError

if TYPE_CHECKING:
    from ..breaker import CircuitBreaker
    from ..config import DrainConfig
    from ..destination_log import DestinationLog
    from ..destinations import Destination
    from ..history import HistoryRecorder
    from ..metrics import DrainMetrics
    from ..pacing import Pacer
    from ..settling import Settler
    from ..store.interface import SpoolStore

__all__ = ["DrainBase", "DrainReport", "Mode", "RunEnded"]

log = logging.getLogger("spooler.drain")


class RunEnded(Exception):
    """Raised in a worker still out when its drain's run ended (a request abandoned at the
    stop, a wait on a spool that cannot be reached): the run's report and last lines
    are out, so nothing the worker does from here on is counted or said."""


class Mode(enum.Enum):
    """How long a drain runs."""

    DAEMON = "daemon"  # until stopped
    ONCE = "once"  # one pass over what is due when it starts
    UNTIL_EMPTY = "until_empty"  # until no event is queued, waiting through backoff


@dataclass
class DrainReport:
    """What a drain run did, and why it stopped."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    requests: int = 0
    stopped_by: str = ""
    remaining: int = 0
    error: str | None = None


class DrainBase:
    """The state a drain's parts share, set by ``Drain.__init__`` (see there for each)."""

    owner: str
    _store: SpoolStore
    _metrics: DrainMetrics | None
    _config: DrainConfig
    _clock: Callable[[], float]
    _rng: random.Random
    _destinations: dict[str, Destination]
    _logs: dict[str, DestinationLog]
    _history: HistoryRecorder
    _pacers: dict[str, Pacer]
    _settlers: dict[str, Settler]
    _url_digests: dict[str, str]
    _failed_elsewhere: dict[str, int]
    _breakers: dict[str, CircuitBreaker]
    _pauses_lock: threading.Lock
    _crash_at: str | None
    _hang_at: str | None
    _stop: threading.Event
    _wakeups: dict[str, threading.Event]
    _abandon_in_flight: threading.Event
    _store_lost: threading.Event
    _ended: threading.Event
    _report_lock: threading.Lock
    _report: DrainReport
    _summarised: tuple[float, int]
    _running: int
    _retry_now_seen: int
    _signs_of_life: dict[str, tuple[float, float]]
    _all_done: threading.Event

    def stop(self, reason: str = "signal") -> None:
        """Stop claiming; a second call also abandons in-flight requests at once."""
        if self._stop.is_set():
            self._abandon_in_flight.set()
            return
        with self._report_lock:
            self._report.stopped_by = self._report.stopped_by or reason
        self._stop.set()
        for progress in self._wakeups.values():
            progress.set()
        for pacer in self._pacers.values():
            pacer.close()

    def _stop_on_error(self, exc: Exception, destination: str | None = None) -> None:
        """Stop the drain on an error it cannot go on from (a store error: a disk gone, a
        file corrupted, a server unreachable for its ``wait``), met by one of its
        workers (``destination``'s) or by the loop that watches them. Said once, by the
        first to meet it: the others meet the same spool, and one line per worker would
        only fill the logs. The events stay queued.

        A spool that could not be reached stops the drain at once: the requests in
        flight could not be settled, and every further call would wait ``wait`` again;
        the leases the drain holds run out by themselves.
        """
        if self._ended.is_set():
            return  # a worker that was still out: the run's last lines are said
        unreachable = isinstance(exc, StoreUnreachableError)
        if unreachable:
            message = (
                f"{exc}. Nothing is lost: the events stay queued, and those this drain"
                f" had claimed are due again once its leases run out (within"
                f" {self._config.lease:g}s); start the drain again once the server"
                " answers (or raise the URL's wait to ride out longer outages)"
            )
        else:
            message = f"{destination}: {exc}" if destination else str(exc)
        with self._report_lock:
            first = self._report.error is None
            if first:
                self._report.error = message
        if unreachable:
            self._store_lost.set()
        trace = exc if log.isEnabledFor(logging.DEBUG) else None
        if not first:
            log.debug("also met while stopping: %s", message, exc_info=trace)
        elif unreachable or destination is None:
            log.error("drain stopped: %s", message, exc_info=trace)
        else:
            self._logs[destination].error("drain stopped: %s", exc, exc_info=trace)
        self.stop("error")
