"""A drain run: ``Drain`` sets up a destination's workers, breakers, pacers and settlers,
starts the workers, and watches them until its mode says they are done, ``max_time``
passes or it is stopped; meanwhile it logs summaries, gives free pages back, follows
the pauses other drains keep, writes the history and notices the wall clock jumping.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ..config import DrainConfig
from ..destination_log import DestinationLog
from ..destinations import Destination, build_destination, spec_for
from ..errors import ConfigError, StoreUnreachableError
from ..events import events_phrase
from ..history import HistoryRecorder
from ..pacing import Pacer
from ..redact import masked_url
from ..settling import Settler
from .base import DrainReport, Mode
from .pauses import resumed_breaker, url_digest
from .report import DrainReporting
from .worker import CRASH_ENV, CRASH_POINTS, HANG_ENV, DrainWorkers

if TYPE_CHECKING:
    from ..metrics import DrainMetrics
    from ..store.interface import SpoolStore

__all__ = ["Drain"]

log = logging.getLogger("spooler.drain")

RECLAIM_INTERVAL = 60.0  # seconds between checks for free pages to give back to the disk
# Seconds between reads of the pauses other drains of the spool kept: how soon a drain
# stops sending to a destination another drain found failing.
FOLLOW_INTERVAL = 1.0
CLOCK_JUMP_TOLERANCE = 2.0  # seconds of wall-clock drift against monotonic before we act


class Drain(DrainWorkers, DrainReporting):
    """Delivers the queued events of the configured destinations.

    Usage::

        drain = Drain(store, build_drain_config({}, destination_flags={"url": url}))
        report = drain.run(Mode.UNTIL_EMPTY, max_time=60)

    ``stop()`` (safe from a signal handler) makes the workers stop claiming; in-flight
    requests finish, and leases still held after ``shutdown_grace`` are released.
    """

    def __init__(
        self,
        store: SpoolStore,
        config: DrainConfig,
        *,
        destinations: Mapping[str, Destination] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metrics: DrainMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        for dest in config.destinations.values():
            # Each type says what it cannot do with this spool (a file type: write into it).
            spec_for(dest.type).check_against_spool(dest, store)
        self._destinations = (
            dict(destinations)
            if destinations is not None
            else {
                name: build_destination(dest, clock=clock)
                for name, dest in config.destinations.items()
            }
        )
        self._logs = {name: DestinationLog(log, name) for name in self._destinations}
        self._history = HistoryRecorder(store, keep=config.history, clock=clock)
        self._pacers = {
            name: Pacer(each.config.concurrency) for name, each in self._destinations.items()
        }
        # One per destination, shared by its workers: an outage pauses them all. Each
        # takes up the state an earlier run left (a cron job's --once, a restarted
        # daemon): the rest of its pause, then a probe before batches go out.
        pauses, now = store.pauses(), clock()
        self._url_digests = {
            name: url_digest(each.config.url) for name, each in self._destinations.items()
        }
        # Failures met at another URL (an operator fixed a wrong one) say nothing about
        # this one: that destination starts afresh.
        self._failed_elsewhere = {
            name: pause.failures
            for name, pause in pauses.items()
            if name in self._url_digests and pause.url_digest not in (None, self._url_digests[name])
        }
        self._breakers = {
            name: resumed_breaker(
                name,
                each.config.retry,
                self._rng,
                None if name in self._failed_elsewhere else pauses.get(name),
                now,
            )
            for name, each in self._destinations.items()
        }
        self._settlers = {
            name: Settler(
                store,
                each.config,
                log=self._logs[name],
                count=self._count,
                clock=clock,
                rng=self._rng,
                paused_for=self._breakers[name].pause_left,
            )
            for name, each in self._destinations.items()
        }
        # Held while a breaker's state and the pause the spool keeps of it change together.
        self._pauses_lock = threading.Lock()
        if metrics:
            for name, breaker in self._breakers.items():
                metrics.serves(name)
                metrics.failed_in_a_row(name, breaker.failures)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._crash_at = os.environ.get(CRASH_ENV)
        self._hang_at = os.environ.get(HANG_ENV)
        for variable, point in ((CRASH_ENV, self._crash_at), (HANG_ENV, self._hang_at)):
            if point not in (None, *CRASH_POINTS):
                raise ConfigError(f"{variable} must be one of {', '.join(CRASH_POINTS)}")
        self._stop = threading.Event()
        # Set when a worker of the destination finishes a batch (or the drain stops): a
        # worker waiting for its siblings' in-flight events need not sleep out the poll
        # interval. One per destination, so that a busy one does not keep waking the
        # workers of an idle one, each to claim nothing.
        self._wakeups = {name: threading.Event() for name in self._destinations}
        self._abandon_in_flight = threading.Event()  # set by a second stop()
        # Set when the spool could not be reached for its wait: the drain ends at once.
        self._store_lost = threading.Event()
        # Set when the run ends: workers still out then (RunEnded) stay silent.
        self._ended = threading.Event()
        # Guards the report, the count of running workers, and the retry-now count.
        self._report_lock = threading.Lock()
        self._report = DrainReport()
        # When the last summary came (seconds into the run), and what was delivered by then.
        self._summarised = (0.0, 0)
        self._running = 0
        self._retry_now_seen = 0  # how many `spooler retry-now` runs the workers have seen
        # Each running worker's last sign of life (time.monotonic()), and how long one
        # step of its loop may take: one request, or one wait for work.
        self._signs_of_life: dict[str, tuple[float, float]] = {}
        self._all_done = threading.Event()

    def run(
        self,
        mode: Mode = Mode.DAEMON,
        *,
        max_time: float | None = None,
        shutdown_grace: float | None = None,
        progress: Callable[[DrainReport], None] | None = None,
        heartbeat: Callable[[float], None] | None = None,
    ) -> DrainReport:
        """Run the workers until ``mode`` says they are done, ``max_time`` passes or ``stop()``.

        ``progress`` is called about ten times a second with a copy of the report so far.
        ``heartbeat`` is called by the loop that watches the workers, once they have
        started and then about ten times a second, with ``overdue()``: a loop that stops
        turning, or a worker stuck past its step, shows there.
        """
        started = self._clock()
        started_mono = time.monotonic()
        deadline = math.inf if max_time is None else started_mono + max_time
        grace = (
            shutdown_grace
            if shutdown_grace is not None
            else max((d.timeout for d in self._config.destinations.values()), default=10.0) + 1.0
        )
        workers = [
            threading.Thread(
                target=self._work,
                args=(dest, mode, started, n),
                daemon=True,
                name=f"drain-{name}-{n}",
            )
            for name, dest in self._destinations.items()
            for n in range(dest.config.concurrency)
        ]
        self._running = len(workers)
        self._retry_now_seen = self._store.retry_now_count()
        log.info(
            "drain %s started (%s) on %s for %s",
            self.owner,
            mode.value,
            self._store.location,
            ", ".join(
                f"{name} ({masked_url(d.config.url)})" for name, d in self._destinations.items()
            ),
        )
        self._log_unserved()
        self._log_held_by_others(started)
        self._take_up_pauses(mode, started)
        for worker in workers:
            worker.start()
        if heartbeat:
            heartbeat(self.overdue())
        next_summary = started_mono + self._config.summary_interval
        next_reclaim = started_mono + RECLAIM_INTERVAL
        next_follow = started_mono + FOLLOW_INTERVAL
        give_up_at = math.inf
        clock_offset = self._clock() - started_mono
        try:
            while not self._all_done.wait(timeout=0.1):
                now_mono = time.monotonic()
                clock_offset = self._follow_clock(clock_offset, now_mono)
                if now_mono >= deadline:
                    self.stop("max_time")
                if self._store_lost.is_set():
                    break
                if self._stop.is_set():
                    if give_up_at == math.inf:
                        give_up_at = now_mono + grace
                        log.info(
                            "stopping (%s): no new claims; waiting up to %.0fs for requests"
                            " in flight (a further SIGTERM, SIGINT or SIGHUP abandons them)",
                            self._report.stopped_by,
                            grace,
                        )
                    if self._abandon_in_flight.is_set() or now_mono >= give_up_at:
                        log.warning(
                            "in-flight requests did not finish in time; releasing their events"
                        )
                        break
                if now_mono >= next_summary:
                    self._log_summary(now_mono - started_mono)
                    next_summary += self._config.summary_interval
                if now_mono >= next_reclaim:
                    self._reclaim_space()
                    next_reclaim = now_mono + RECLAIM_INTERVAL
                if now_mono >= next_follow:
                    self._follow_pauses()
                    next_follow = now_mono + FOLLOW_INTERVAL
                if self._history.due():
                    self._history.flush()
                if progress:
                    with self._report_lock:
                        snapshot = replace(self._report)
                    progress(snapshot)
                if heartbeat:
                    heartbeat(self.overdue())
        except StoreUnreachableError as exc:
            self._stop_on_error(exc)
        return self._finish(mode, time.monotonic() - started_mono)

    def _follow_clock(self, offset: float, now_mono: float) -> float:
        """Notice wall-clock jumps against the monotonic clock; repair a backward one.

        Returns the current offset between the two clocks.
        """
        now = self._clock()
        current = now - now_mono
        jump = current - offset
        if jump < -CLOCK_JUMP_TOLERANCE:
            moved = self._store.shift_schedule(-jump, now=now)
            log.warning(
                "the wall clock went back %.0fs; %s",
                -jump,
                # "moved 0 events" read as a failed repair on a PostgreSQL spool, whose
                # server's clock schedules every event (a chaos soak's logs).
                f"moved {events_phrase(moved)} earlier by as much"
                if moved
                else "no event waited by it, none moved",
            )
        elif jump > CLOCK_JUMP_TOLERANCE:
            # Forward: scheduled events simply fall due sooner. Nothing to repair.
            log.warning("the wall clock jumped forward %.0fs", jump)
        else:
            return offset
        return current
