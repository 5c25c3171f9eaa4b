"""A drain's worker loop: each worker claims a due batch under a lease, delivers it
(``bisection``), and settles each outcome (``settling``), as ``pacing`` and its
destination's circuit breaker let it; and the signs of life a watchdog reads, and the
test-only crash points.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence

from ..bisection import Bisection, LeaseKeeper
from ..destinations import Destination, Verdict
from ..records import ClaimedEvent
from .base import Mode, RunEnded
from .pauses import DrainPauses

__all__ = ["CRASH_ENV", "CRASH_POINTS", "HANG_ENV", "DrainWorkers"]

# Test-only: the reliability tests name a point here and the drain SIGKILLs itself
# there, so "crash after the receiver answered, before the ack" is exact, not lucky;
# or the worker that reaches it hangs there for good (a stuck drain, for the watchdog).
CRASH_ENV = "SPOOLER_CRASH_AT"
HANG_ENV = "SPOOLER_HANG_AT"
# mid_batch: part of a batch settled (its first half delivered in a bisection, say),
# the rest still under the lease.
CRASH_POINTS = ("after_claim", "after_response", "mid_batch")


class DrainWorkers(DrainPauses):
    """The workers of a drain: one loop per worker thread."""

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
        except RunEnded:
            pass  # the run is over: nothing of this worker's is counted or said
        except Exception as exc:
            self._stop_on_error(exc, name)
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
            # Events the retry policy already gave up on die here, unsent: an attempt
            # cut off by a crash mid-request (an event that kills the drain) settles
            # nothing, so no failure's settle would ever stop them.
            rest = self._settlers[name].settle_expired(claim.lease, claim.events)
            if not rest:
                return True
            claim = claim._replace(events=rest)
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
            if sending is not None:  # debug: no operator acts on it, and it comes and goes
                self._logs[name].debug(
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
        if not verdict.sent:  # judged without a request: says nothing about the API
            if self._ended.is_set():
                raise RunEnded  # as a late answer below: reached after the run's last line
            return verdict, elapsed
        if verdict.status is not None:  # answered: how long it waited for the receiver
            self._pacers[destination.config.name].waited(
                elapsed - (time.thread_time() - cpu_at_send)
            )
        # Kept in the spool, so that every drain of it goes on from here. Counted and
        # written under one lock: the last write holds the latest state, even when
        # another worker's answer changed it meanwhile, and the pauses other drains
        # kept are never read between the two (_follow_pauses).
        with self._pauses_lock:
            # Asked under the lock: another worker may hold it for the spool's whole
            # wait (keeping a pause on a server that is away), and the run end meanwhile.
            if self._ended.is_set():
                raise RunEnded  # its events were given back, or wait for their lease
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

    def _crash_point(self, name: str) -> None:
        if self._crash_at == name:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._hang_at == name:
            threading.Event().wait()  # for good: the worker is stuck
