"""A drain's circuit breakers as the spool keeps them: taken up where an earlier run
left them, followed as other drains of the spool change them, ended by ``spooler
retry-now``; and the digest of a destination's URL a kept pause belongs to.
"""

from __future__ import annotations

import hashlib
import logging
import random
from typing import TYPE_CHECKING

from ..best_effort import best_effort
from ..breaker import CircuitBreaker
from ..events import events_phrase
from ..redact import masked_url
from .base import DrainBase, Mode

if TYPE_CHECKING:
    from ..records import KeptPause
    from ..retry import RetryPolicy

__all__ = ["DrainPauses", "resumed_breaker", "url_digest"]

log = logging.getLogger("spooler.drain")


class DrainPauses(DrainBase):
    """What a drain does with the pauses the spool keeps."""

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
        with self._pauses_lock, best_effort(log, "could not read the pauses other drains kept"):
            kept, now = self._store.pauses(), self._clock()
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


def url_digest(url: str) -> str:
    """What the spool keeps of a destination's URL, to tell whether it changed: a digest
    of the URL as the logs show it (no password, no query values), because a URL may
    hold a secret. A webhook's secret path goes into the digest, never into the file."""
    return hashlib.sha256(masked_url(url).encode()).hexdigest()[:16]


def resumed_breaker(
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
