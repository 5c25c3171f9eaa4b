"""A circuit breaker per destination: while its requests fail, stop sending, then probe.

Without it, a drain facing an API that is down claims and fails every queued batch in
turn: a request, a write transaction and a log line per batch and per backoff period,
and every queued event spends its attempts at that pace, so a backlog of any size dies
of ``max_attempts`` about half an hour into an outage. With it, a retryable failure
stops the destination's workers from claiming for a backoff period (the retry policy's
own schedule, counted in failures in a row, never shorter than a ``Retry-After``); then
one request probes the API while the other workers wait, and the first answer that is
not a retryable failure lets them all go again. The probe carries a single event: only
that event spends an attempt, and a batch that fails because of one of its events does
not keep the whole destination paused.

The drain keeps each breaker's state in the spool whenever it changes, so that a drain
started later (the next cron run, a restarted daemon) goes on where it stopped: with the
same pause, and the same count of failures to lengthen the next one. Drains running at
the same time follow each other through it (``follow``): one that finds the
destination failing pauses them all, and one whose probe gets through lets them all go.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

from .destination_log import DestinationLog
from .retry import RetryPolicy

__all__ = ["CircuitBreaker"]

# A pause kept by another drain is taken up when it ends this much later than this
# breaker's own: its own pause, read back from the spool, ends within milliseconds of it.
FOLLOW_TOLERANCE = 0.5


class CircuitBreaker:
    """Whether a destination's workers may send now, and for how long they must wait.

    Usage::

        breaker = CircuitBreaker("amplitude", policy, rng=random.Random())
        wait = breaker.admit()  # 0.0: claim and send; else seconds to wait, inf: a probe is out
        if not wait:
            try:
                epoch = breaker.epoch
                verdict = destination.send(events)
                if breaker.record(failed=verdict.outcome == "retry", epoch=epoch):
                    keep(breaker.failures, breaker.pause_left())  # e.g. in the spool
            finally:
                breaker.leave()
    """

    def __init__(
        self,
        name: str,
        policy: RetryPolicy,
        *,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        failures: int = 0,
        paused_for: float = 0.0,
    ) -> None:
        """``failures`` and ``paused_for``: the state an earlier drain left (requests
        failed in a row, seconds of its pause still to run); the first request after the
        pause is a probe."""
        self._log = DestinationLog(logging.getLogger("spooler.drain"), name)
        self._policy = policy
        self._rng = rng
        self._clock = clock
        self._lock = threading.Lock()
        self.failures = failures  # retryable failures in a row
        # Bumped each time the breaker opens: a request sent before that failed in the
        # same outage, and must not lengthen the wait a second time.
        self.epoch = 0
        self._open_until = clock() + paused_for if paused_for > 0 else 0.0  # no claims before
        self._prober: int | None = None  # the thread whose request is probing

    def admit(self) -> float:
        """0.0 if this thread may claim and send now; else how long to wait (inf: until
        the probe in flight is answered)."""
        with self._lock:
            if not self.failures:
                return 0.0
            wait = self._open_until - self._clock()
            if wait > 0:
                return wait
            me = threading.get_ident()
            if self._prober not in (None, me):
                return math.inf
            self._prober = me
            return 0.0

    def record(self, *, failed: bool, epoch: int, retry_after: float | None = None) -> bool:
        """Count one answer from the destination; ``epoch`` is :attr:`epoch` as it was when
        the request was sent. Returns whether the breaker opened or closed."""
        with self._lock:
            if not failed:
                if not self.failures:
                    return False
                self._log.info("the destination answers again; resuming")
                self.failures = 0
                return True
            if epoch != self.epoch:
                return False
            self.failures += 1
            self.epoch += 1
            wait = self._policy.delay(self.failures, retry_after=retry_after, rng=self._rng)
            self._open_until = self._clock() + wait
            self._log.info(
                "%s; pausing the destination for %.2fs, then one request will probe it",
                "a request failed"
                if self.failures == 1
                else f"{self.failures} requests failed in a row",
                wait,
            )
            return True

    def follow(self, failures: int, paused_for: float) -> str:
        """Take up the state another drain kept for the destination: ``failures`` in a
        row, and ``paused_for`` seconds of its pause still to run. Returns what changed:
        ``"paused"`` (its pause ends later than this breaker's: the destination fails
        for that drain too), ``"resumed"`` (no failures, while this breaker counts some:
        that drain got an answer), or ``""``."""
        with self._lock:
            if not failures:
                if not self.failures:
                    return ""
                self.failures = 0
                self._open_until = 0.0
                return "resumed"
            until = self._clock() + paused_for
            if paused_for <= 0 or (self.failures and until <= self._open_until + FOLLOW_TOLERANCE):
                return ""
            self.failures = max(self.failures, failures)
            # Requests sent before the pause began failed in the same outage.
            self.epoch += 1
            self._open_until = until
            return "paused"

    def pause_left(self) -> float:
        """Seconds until the pause ends (0.0: not paused)."""
        with self._lock:
            return max(self._open_until - self._clock(), 0.0) if self.failures else 0.0

    def probing(self) -> bool:
        """Whether this thread was admitted as the probe (and has not left yet)."""
        with self._lock:
            return self._prober == threading.get_ident()

    def probe_now(self) -> None:
        """End the pause now (an operator ran ``spooler retry-now``): the next thread to
        ask probes, and the first answer that is not a failure lets the others go."""
        with self._lock:
            self._open_until = 0.0

    def leave(self) -> None:
        """This thread's claim is settled: if it was the probe, another thread may probe."""
        with self._lock:
            if self._prober == threading.get_ident():
                self._prober = None
