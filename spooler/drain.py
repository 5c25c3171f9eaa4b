"""The drain worker: claim due events under a lease, deliver them, settle each outcome.

Each destination gets ``concurrency`` worker threads; each one loops claim → send →
settle, so one batch is being claimed or settled while others are in flight. How many
of them send at once is ``pacing``'s: as many as the receiver's latency pays for. A
batch's requests, and the bisection of those refused, are ``bisection``'s; what each
answer means for the events, ``settling``'s. Every settle is one transaction, and only
touches events the batch's lease still holds.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .bisection import Bisection, LeaseKeeper
from .breaker import CircuitBreaker
from .config import DrainConfig
from .destination_log import DestinationLog
from .destinations import Destination, Verdict, build_destination, spec_for
from .errors import ConfigError, StoreError
from .events import events_phrase
from .history import HistoryRecorder
from .pacing import Pacer
from .records import ClaimedEvent, KeptPause, per_destination, queued_elsewhere
from .redact import masked_url
from .settling import Settler

if TYPE_CHECKING:
    from .metrics import DrainMetrics
    from .retry import RetryPolicy
    from .store.interface import SpoolStore

__all__ = ["CRASH_ENV", "HANG_ENV", "Drain", "DrainReport", "Mode"]

log = logging.getLogger("spooler.drain")

# Test-only: the reliability tests name a point here and the drain SIGKILLs itself
# there, so "crash after the receiver answered, before the ack" is exact, not lucky;
# or the worker that reaches it hangs there for good (a stuck drain, for the watchdog).
CRASH_ENV = "SPOOLER_CRASH_AT"
HANG_ENV = "SPOOLER_HANG_AT"
# mid_batch: part of a batch settled (its first half delivered in a bisection, say),
# the rest still under the lease.
CRASH_POINTS = ("after_claim", "after_response", "mid_batch")
RECLAIM_INTERVAL = 60.0  # seconds between checks for free pages to give back to the disk
# Seconds between reads of the pauses other drains of the spool kept: how soon a drain
# stops sending to a destination another drain found failing.
FOLLOW_INTERVAL = 1.0
CLOCK_JUMP_TOLERANCE = 2.0  # seconds of wall-clock drift against monotonic before we act


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


class Drain:
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
        self._settlers = {
            name: Settler(
                store,
                each.config,
                log=self._logs[name],
                count=self._count,
                clock=clock,
                rng=self._rng,
            )
            for name, each in self._destinations.items()
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
            name: _resumed_breaker(
                name,
                each.config.retry,
                self._rng,
                None if name in self._failed_elsewhere else pauses.get(name),
                now,
            )
            for name, each in self._destinations.items()
        }
        # Held while a breaker's state and the pause the spool keeps of it change together.
        self._pauses_lock = threading.Lock()
        if metrics:
            for name, breaker in self._breakers.items():
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
        # Guards the report, the count of running workers, and the retry-now count.
        self._report_lock = threading.Lock()
        self._report = DrainReport()
        self._running = 0
        self._retry_now_seen = 0  # how many `spooler retry-now` runs the workers have seen
        # Each running worker's last sign of life (time.monotonic()), and how long one
        # step of its loop may take: one request, or one wait for work.
        self._signs_of_life: dict[str, tuple[float, float]] = {}
        self._all_done = threading.Event()

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
        while not self._all_done.wait(timeout=0.1):
            now_mono = time.monotonic()
            clock_offset = self._follow_clock(clock_offset, now_mono)
            if now_mono >= deadline:
                self.stop("max_time")
            if self._stop.is_set():
                if give_up_at == math.inf:
                    give_up_at = now_mono + grace
                    log.info(
                        "stopping (%s): no new claims; waiting up to %.0fs for requests in "
                        "flight (a further SIGTERM or SIGINT abandons them)",
                        self._report.stopped_by,
                        grace,
                    )
                if self._abandon_in_flight.is_set() or now_mono >= give_up_at:
                    log.warning("in-flight requests did not finish in time; releasing their events")
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
        return self._finish(mode, time.monotonic() - started_mono)

    def overdue(self) -> float:
        """How far past its step the most overdue worker is, in seconds (0: none is).

        A worker shows a sign of life at every turn of its loop and around each request,
        so a step lasts one request (at most the destination's timeout) or one wait for
        work (at most the poll interval), plus the spool's answers: a worker quiet for
        longer is stuck, or waiting on a spool that does not answer.
        """
        now = time.monotonic()
        with self._report_lock:
            signs = list(self._signs_of_life.values())
        return max([0.0, *(now - seen - step for seen, step in signs)])

    def _alive(self, destination: Destination) -> None:
        """Note a sign of life of the calling worker, one of ``destination``'s."""
        step = max(destination.config.timeout, self._config.poll_interval)
        with self._report_lock:
            self._signs_of_life[threading.current_thread().name] = (time.monotonic(), step)

    def _take_up_pauses(self, mode: Mode, started: float) -> None:
        """Say which destinations an earlier run left paused, and what happens next; forget
        the failures met at another URL (their events are due by ``started``, for --once)."""
        for name, failures in self._failed_elsewhere.items():
            due = self._store.forget_failures(name, url_digest=self._url_digests[name], now=started)
            self._logs[name].info(
                "%s at another URL, not this one: sending at once%s",
                _last_failed(failures),
                f"; {events_phrase(due)} waiting to be retried made due" if due else "",
            )
        for name, breaker in self._breakers.items():
            if not breaker.failures:
                continue
            wait = breaker.pause_left()
            if not wait:
                then = "one request will probe it first"
            elif mode is Mode.ONCE:
                then = f"it stays paused for {wait:.2f}s, so this pass sends it nothing"
            else:
                then = f"it stays paused for {wait:.2f}s, then one request will probe it"
            if wait:
                then += f" (`spooler retry-now -d {name}` ends the pause)"
            self._logs[name].info("%s; %s", _last_failed(breaker.failures), then)

    def _follow_pauses(self) -> None:
        """Take up what other drains of the spool kept of their breakers: a destination
        one of them found failing pauses here too, and one whose probe got through
        sends here again. (Failures at another URL say nothing about ours; a pause
        ``retry-now`` ended is ``_retry_now_requested``'s.)"""
        with self._pauses_lock:
            try:
                kept, now = self._store.pauses(), self._clock()
            except StoreError as exc:  # the workers meet it too, and stop the drain
                log.warning("could not read the pauses other drains kept: %s", exc)
                return
            for name, breaker in self._breakers.items():
                pause = kept.get(name)
                if pause and (
                    pause.until is None or pause.url_digest not in (None, self._url_digests[name])
                ):
                    continue
                policy = self._destinations[name].config.retry
                change = breaker.follow(
                    pause.failures if pause else 0, _pause_left(pause, policy, now)
                )
                if change == "paused":
                    self._logs[name].info(
                        "%s, in another drain; pausing it here too for %.2fs, then one"
                        " request will probe it",
                        _last_failed(breaker.failures),
                        breaker.pause_left(),
                    )
                elif change == "resumed":
                    self._logs[name].info("another drain got an answer from it; resuming")
                    self._wakeups[name].set()
                if change and self._metrics:
                    self._metrics.failed_in_a_row(name, breaker.failures)

    def _retry_now_requested(self) -> bool:
        """Whether an operator ran ``spooler retry-now`` since the drain last looked; if so,
        the paused destinations whose pause it ended are probed at once."""
        count = self._store.retry_now_count()
        with self._report_lock:
            if count == self._retry_now_seen:
                return False
            self._retry_now_seen = count
        kept = self._store.pauses()
        for name, breaker in self._breakers.items():
            if breaker.failures and (name not in kept or kept[name].until is None):
                self._logs[name].info("spooler retry-now was run: probing it at once")
                breaker.probe_now()
        return True

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
                "the wall clock went back %.0fs; moved %s earlier by as much",
                -jump,
                events_phrase(moved),
            )
        elif jump > CLOCK_JUMP_TOLERANCE:
            # Forward: scheduled events simply fall due sooner. Nothing to repair.
            log.warning("the wall clock jumped forward %.0fs", jump)
        else:
            return offset
        return current

    def _finish(self, mode: Mode, elapsed: float) -> DrainReport:
        released = self._store.release_leases(self.owner, now=self._clock())
        if released:
            log.info("released %s leased for another drain to deliver", events_phrase(released))
        report = self._report
        report.stopped_by = report.stopped_by or ("once" if mode is Mode.ONCE else "empty")
        counts = self._store.counts(now=self._clock())
        report.remaining = sum(counts[name].queued for name in self._destinations if name in counts)
        self._history.flush(closing=True)
        self._reclaim_space()
        # The last line says why the drain ended: a signal, --max-time, an error...
        self._log_summary(elapsed, heading=f"drain {self.owner} stopped ({report.stopped_by})")
        self._log_unserved(still=True)
        return report

    def _log_unserved(self, *, still: bool = False) -> None:
        """Say which events wait for destinations this drain does not serve: "empty" or
        a quiet daemon must not let them pass for delivered."""
        others = queued_elsewhere(self._store.counts(now=self._clock()), self._destinations)
        if others:
            log.warning(
                "%s%s for destinations this drain does not serve: %s (drain them with "
                "-d NAME, or a --config that defines them)",
                events_phrase(sum(others.values())),
                " still wait" if still else " wait",
                per_destination(others),
            )

    def _reclaim_space(self) -> None:
        """Let a drained backlog give its pages back; failing to is not worth stopping for."""
        try:
            pages = self._store.reclaim_space()
        except StoreError as exc:
            log.warning("could not give free space back to the disk: %s", exc)
            return
        if pages:
            log.info("gave %d free pages back to the disk", pages)

    # -- the worker loop ----------------------------------------------------------------

    def _work(self, destination: Destination, mode: Mode, started: float, worker: int) -> None:
        name = destination.config.name
        breaker = self._breakers[name]
        wakeup = self._wakeups[name]
        pacer = self._pacers[name]
        try:
            while not self._stop.is_set():
                self._alive(destination)
                if not pacer.admits(worker):
                    pacer.park(worker, timeout=self._config.poll_interval)
                    continue
                # --once is one pass: a destination that fails in it ends it (what is
                # left is due again at the next run) rather than trying every batch
                # against it. (The epoch counts the failures that opened the breaker.)
                if mode is Mode.ONCE and breaker.epoch:
                    return
                paused = breaker.admit()
                if paused and self._retry_now_requested():
                    continue
                if not paused and self._claim_and_deliver(destination, mode, started):
                    wakeup.set()
                    continue
                if mode is Mode.ONCE:
                    return
                next_due = self._store.next_due_at(name)
                if next_due is None and mode is Mode.UNTIL_EMPTY:
                    return
                wait = self._config.poll_interval
                if paused:
                    wait = min(wait, paused)
                elif next_due is not None:
                    wait = min(wait, max(next_due - self._clock(), 0.005))
                wakeup.wait(wait)
                wakeup.clear()
        except Exception as exc:
            # A store error (disk gone, file corrupted) stops the whole drain: looping
            # on it would only fill the logs. The events stay queued.
            self._logs[name].error(
                "drain stopped: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG)
            )
            with self._report_lock:
                self._report.error = self._report.error or f"{name}: {exc}"
            self.stop("error")
        finally:
            # A worker ends only when its destination is done (or the drain stops):
            # the parked ones end too, each as it finds out.
            pacer.close()
            with self._report_lock:
                self._signs_of_life.pop(threading.current_thread().name, None)
                self._running -= 1
                last = self._running == 0
            if last:
                # The last worker out closes: a worker abandoned on a hung request
                # still holds a connection until that request ends.
                for each_name, each in self._destinations.items():
                    try:
                        each.close()
                    except Exception as exc:  # whatever close() does, the drain must end
                        self._logs[each_name].warning("could not close: %s", exc)
                self._all_done.set()

    def _claim_and_deliver(self, destination: Destination, mode: Mode, started: float) -> bool:
        """Claim a due batch and deliver it; False if nothing was due."""
        name = destination.config.name
        breaker = self._breakers[name]
        cpu_at_start = time.thread_time()
        try:
            now = self._clock()
            # A probe of a paused destination carries one event: it only has to show
            # whether the destination answers again, and while it does not, one event
            # spends an attempt instead of a batch.
            claim = self._store.claim(
                destination.config.name,
                1 if breaker.probing() else destination.config.batch_size,
                self.owner,
                due_by=started if mode is Mode.ONCE else now,
                lease_until=now + self._config.lease,
            )
            if claim is None:
                return False
            self._crash_point("after_claim")
            lease = LeaseKeeper(
                self._store.extend_lease,
                claim.lease,
                now + self._config.lease,
                lease_seconds=self._config.lease,
                timeout=destination.config.timeout,
                clock=self._clock,
            )
            Bisection(
                claim,
                destination.request_batches(claim.events),
                send=lambda events: self._send(destination, events),
                settler=self._settlers[destination.config.name],
                lease=lease,
                stopping=self._stop.is_set,
                log=self._logs[name],
                settled_part=lambda: self._crash_point("mid_batch"),
            ).run()
            sending = self._pacers[name].cycled(time.thread_time() - cpu_at_start)
            if sending is not None:
                self._logs[name].info(
                    "%d of %d workers now send at once",
                    sending,
                    destination.config.concurrency,
                )
            return True
        finally:
            breaker.leave()

    def _send(
        self, destination: Destination, events: Sequence[ClaimedEvent]
    ) -> tuple[Verdict, float]:
        """One send: its verdict (told to the breaker and the metrics when a request went
        out) and its time."""
        breaker = self._breakers[destination.config.name]
        self._alive(destination)
        sent_at, cpu_at_send = time.monotonic(), time.thread_time()
        epoch = breaker.epoch
        verdict = destination.send(events)
        self._crash_point("after_response")
        elapsed = time.monotonic() - sent_at
        self._alive(destination)
        if not verdict.sent:
            return verdict, elapsed  # judged without a request: says nothing about the API
        if verdict.status is not None:  # answered: how long it waited for the receiver
            self._pacers[destination.config.name].waited(
                elapsed - (time.thread_time() - cpu_at_send)
            )
        # Kept in the spool, so that every drain of it goes on from here. Counted and
        # written under one lock: the last write holds the latest state, even when
        # another worker's answer changed it meanwhile, and the pauses other drains
        # kept are never read between the two (_follow_pauses).
        with self._pauses_lock:
            if breaker.record(
                failed=verdict.outcome == "retry", epoch=epoch, retry_after=verdict.retry_after
            ):
                self._store.record_pause(
                    destination.config.name,
                    failures=breaker.failures,
                    until=self._clock() + breaker.pause_left() if breaker.failures else None,
                    url_digest=self._url_digests[destination.config.name],
                )
        with self._report_lock:
            self._report.requests += 1
        self._history.request(destination.config.name, elapsed)
        if self._metrics:
            self._metrics.request(destination.config.name, elapsed)
            self._metrics.failed_in_a_row(destination.config.name, breaker.failures)
        return verdict, elapsed

    # -- bookkeeping ----------------------------------------------------------------------

    def _count(
        self,
        destination: str,
        *,
        delivered: int = 0,
        retried: int = 0,
        dead: Mapping[str, int] | None = None,
    ) -> None:
        """Add an outcome to the report, the history, and the metrics when they are served."""
        dead = dead or {}
        with self._report_lock:
            self._report.delivered += delivered
            self._report.retried += retried
            self._report.dead += sum(dead.values())
        self._history.outcome(
            destination, delivered=delivered, retried=retried, dead=sum(dead.values())
        )
        if self._metrics:
            if delivered:
                self._metrics.delivered(destination, delivered)
            if retried:
                self._metrics.retried(destination, retried)
            for reason, count in dead.items():
                self._metrics.dead(destination, reason, count)

    def _log_summary(self, elapsed: float, *, heading: str = "summary") -> None:
        counts = self._store.counts(now=self._clock())
        backlog = sum(counts[name].queued for name in self._destinations if name in counts)
        report = self._report
        rate = report.delivered / elapsed if elapsed > 0 else 0.0
        log.info(
            "%s: delivered=%d retried=%d dead=%d backlog=%d rate=%.1f/s",
            heading,
            report.delivered,
            report.retried,
            report.dead,
            backlog,
            rate,
        )

    def _crash_point(self, name: str) -> None:
        if self._crash_at == name:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._hang_at == name:
            threading.Event().wait()  # for good: the worker is stuck


def url_digest(url: str) -> str:
    """What the spool keeps of a destination's URL, to tell whether it changed: a digest
    of the URL as the logs show it (no password, no query values), because a URL may
    hold a secret. A webhook's secret path goes into the digest, never into the file."""
    return hashlib.sha256(masked_url(url).encode()).hexdigest()[:16]


def _resumed_breaker(
    name: str,
    policy: RetryPolicy,
    rng: random.Random,
    pause: KeptPause | None,
    now: float,
) -> CircuitBreaker:
    """A destination's breaker, in the state ``SpoolStore.pauses`` kept for it (if any)."""
    return CircuitBreaker(
        name,
        policy,
        rng=rng,
        failures=pause.failures if pause else 0,
        paused_for=_pause_left(pause, policy, now),
    )


def _pause_left(pause: KeptPause | None, policy: RetryPolicy, now: float) -> float:
    """Seconds of a kept pause still to run at ``now``: never longer than the policy's
    longest wait, which a wall clock set back since the pause was kept would stretch."""
    until = pause.until if pause else None
    return min(max((until or now) - now, 0.0), policy.longest_delay)


def _last_failed(failures: int) -> str:
    """``"its last request failed"``, ``"its last 3 requests failed"``."""
    return "its last request failed" if failures == 1 else f"its last {failures} requests failed"
