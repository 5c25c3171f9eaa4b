"""Settling: what the answer to one request means for each event it carried, recorded in
the spool as one settle of the batch's lease.

- delivered: the events leave the queue;
- rejected for good: they move to the dead-letter table with the verdict's reason;
- to retry: they wait out one backoff for the whole request (so that they stay
  together for the next claim; full jitter still spreads a crowd of batches apart),
  except those out of attempts or too old, which die (``max_attempts``, ``max_age``);
  while the destination's circuit breaker is paused for longer, they wait for it (and
  the probe after it), and the log says so;
- some named as bad (``partial``): those die, and the rest go back to be sent again;
- before any request: events of a fresh claim whose attempts had already run out (cut
  off by drains that stopped or crashed mid-request, as an event that kills the drain
  does every time) or that are past ``max_age`` die unsent, with the same reasons.

Each settle is also counted (the drain's report and metrics) and logged once.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

from .events import events_phrase
from .records import ClaimedEvent, Failure, one_line

if TYPE_CHECKING:
    from .config import DestinationConfig
    from .destination_log import DestinationLog
    from .destinations import Verdict
    from .store.interface import SpoolStore

__all__ = ["Settler", "short"]

_rowid = attrgetter("rowid")  # in C: a whole batch's rowids are a list of 500 or more


class Settler:
    """Settles the events of one destination's requests in the spool.

    ``count(destination, delivered=n, retried=n, dead={reason: n})`` adds each settle's
    outcome to the drain's tally; ``paused_for()`` says how long the destination's
    circuit breaker is still paused (``CircuitBreaker.pause_left``).

    Usage::

        settler = Settler(
            store, config, log=log, count=count, clock=time.time, rng=rng,
            paused_for=breaker.pause_left,
        )
        settler.settle(claim.lease, events, verdict, elapsed)
    """

    def __init__(
        self,
        store: SpoolStore,
        config: DestinationConfig,
        *,
        log: DestinationLog,
        count: Callable[..., None],
        clock: Callable[[], float],
        rng: random.Random,
        paused_for: Callable[[], float],
    ) -> None:
        self._store = store
        self._config = config
        self._log = log
        self._count = count
        self._clock = clock
        self._rng = rng
        self._paused_for = paused_for

    def dies_of_a_server_error(self, events: Sequence[ClaimedEvent], verdict: Verdict) -> bool:
        """Whether this 5xx would dead-letter some of ``events``. (Timeouts, refused
        connections and 429s say nothing about the events.)"""
        if verdict.outcome != "retry" or not (verdict.status and 500 <= verdict.status < 600):
            return False
        policy, now = self._config.retry, self._clock()
        return any(
            policy.give_up_reason(attempts=e.attempts, queued_at=e.queued_at, now=now)
            for e in events
        )

    def settle_expired(self, lease: int, events: list[ClaimedEvent]) -> list[ClaimedEvent]:
        """Dead-letter, unsent, the claimed ``events`` the retry policy already gave up on
        (their attempts that ended are ``max_attempts`` or more, or they are past
        ``max_age``); return the rest, to send.

        Only a failure's settle applies the policy, and an attempt cut off (its drain
        crashed or stopped mid-request) ends with none: without this, an event that
        kills the drain would be sent again by every drain that starts, for good.
        """
        policy, now = self._config.retry, self._clock()
        # One pass, two comparisons an event (~20 us a batch of 500): almost always,
        # none is out. The same tests as ``give_up_reason``'s, on the attempts before
        # this one (``attempts`` counts it too).
        most, oldest = policy.max_attempts, policy.too_old(now)
        for event in events:
            if event.attempts > most or event.queued_at <= oldest:
                break
        else:
            return events
        dying: list[tuple[ClaimedEvent, str, Failure]] = []
        rest: list[ClaimedEvent] = []
        for event in events:
            ended = event.attempts - 1
            reason = policy.give_up_reason(attempts=ended, queued_at=event.queued_at, now=now)
            if reason == "max_attempts":
                why = (
                    f"out of attempts before this one: {ended} of {policy.max_attempts} ended"
                    " (a drain stopped or crashed during the last one, or max_attempts was"
                    " lowered)"
                )
            elif reason:
                why = (
                    f"too old to send: queued {now - event.queued_at:.0f}s ago, over max_age"
                    f" ({policy.max_age:.0f}s)"
                )
            else:
                rest.append(event)
                continue
            dying.append((event, reason, Failure(None, why)))
        name = self._config.name
        self._store.settle(
            lease,
            destination=name,
            now=now,
            dead=[(event.rowid, reason, failure) for event, reason, failure in dying],
        )
        reasons = Counter(reason for _, reason, _ in dying)
        self._count(name, dead=reasons)
        for reason in reasons:
            these = [(event, failure) for event, why, failure in dying if why == reason]
            self._log.warning(
                "dead-lettered %s (%s) without sending: %s",
                _dead_phrase([event for event, _ in these]),
                reason,
                these[0][1].error,
            )
        return rest

    def settle(
        self, lease: int, events: Sequence[ClaimedEvent], verdict: Verdict, elapsed: float
    ) -> None:
        """Record the verdict of the request that carried ``events``."""
        if verdict.outcome == "delivered":
            self._delivered(lease, events, verdict, elapsed)
        elif verdict.outcome == "reject":
            self._rejected(lease, events, verdict)
        else:
            self._to_retry(lease, events, verdict)

    def settle_named(
        self,
        lease: int,
        events: Sequence[ClaimedEvent],
        verdict: Verdict,
        bad: Mapping[int, str],
    ) -> list[ClaimedEvent]:
        """Dead-letter the events the receiver named (by position); return the rest, to
        send again."""
        dead = [
            (events[i].rowid, verdict.reason, Failure(verdict.status, why))
            for i, why in sorted(bad.items())
        ]
        self._store.settle(lease, destination=self._config.name, now=self._clock(), dead=dead)
        self._count(self._config.name, dead={verdict.reason: len(dead)})
        self._log.warning(
            "the receiver named %s of %d as %s; dead-lettered them, sending the rest again",
            events_phrase(len(dead)),
            len(events),
            verdict.reason,
        )
        return [event for i, event in enumerate(events) if i not in bad]

    def _delivered(
        self, lease: int, events: Sequence[ClaimedEvent], verdict: Verdict, elapsed: float
    ) -> None:
        name = self._config.name
        settled = self._store.settle(
            lease, destination=name, now=self._clock(), delivered=list(map(_rowid, events))
        )
        self._count(name, delivered=settled)
        self._log.info(
            "delivered %s (%s) in %.2fs",
            events_phrase(len(events)),
            f"HTTP {verdict.status}" if verdict.status else "ok",
            elapsed,
        )
        if settled < len(events):
            # The lease no longer held them: it ran out (a drain stalled past it) or the
            # spool lost the claim (a PostgreSQL server's crash): they stay queued, and
            # are sent again, here or by another drain; counted then.
            self._log.warning(
                "%s of these %d were no longer leased to this drain (its lease ran out,"
                " or the spool lost its claim): they stay queued and will be sent again,"
                " with the same ids",
                events_phrase(len(events) - settled),
                len(events),
            )

    def _rejected(self, lease: int, events: Sequence[ClaimedEvent], verdict: Verdict) -> None:
        name = self._config.name
        self._store.settle(
            lease,
            destination=name,
            now=self._clock(),
            dead=[(event.rowid, verdict.reason, verdict.failure) for event in events],
        )
        self._count(name, dead={verdict.reason: len(events)})
        self._log.warning(
            "dead-lettered %s (%s): %s", _dead_phrase(events), verdict.reason, short(verdict)
        )

    def _to_retry(self, lease: int, events: Sequence[ClaimedEvent], verdict: Verdict) -> None:
        name, policy, now = self._config.name, self._config.retry, self._clock()
        attempts = max(event.attempts for event in events)
        due_at = now + policy.delay(attempts, retry_after=verdict.retry_after, rng=self._rng)
        retry: list[tuple[int, float, Failure]] = []
        dead: list[tuple[int, str, Failure]] = []
        dying: list[ClaimedEvent] = []
        for event in events:
            reason = policy.give_up_reason(
                attempts=event.attempts, queued_at=event.queued_at, now=now
            )
            if reason:
                dead.append((event.rowid, reason, verdict.failure))
                dying.append(event)
            else:
                retry.append((event.rowid, due_at, verdict.failure))
        self._store.settle(lease, destination=name, now=now, retry=retry, dead=dead)
        self._count(name, retried=len(retry), dead=Counter(reason for _, reason, _ in dead))
        if retry:
            # A destination paused for longer than their backoff sends nothing before
            # its pause ends, and then only a probe until one gets an answer.
            paused = self._paused_for()
            when = (
                f"once the destination answers again, after its pause of {paused:.2f}s"
                if paused > due_at - now
                else f"in {due_at - now:.2f}s"
            )
            self._log.warning(
                "%s will be retried %s (attempt %d of %d): %s",
                events_phrase(len(retry)),
                when,
                attempts,
                policy.max_attempts,
                short(verdict),
            )
        if dead:
            self._log.warning(
                "dead-lettered %s (%s): %s", _dead_phrase(dying), dead[0][1], short(verdict)
            )


def _dead_phrase(events: Sequence[ClaimedEvent]) -> str:
    """``"event ID"`` for one event (for ``spooler dlq inspect ID``), else ``"3 events"``."""
    return f"event {events[0].event_id}" if len(events) == 1 else events_phrase(len(events))


def short(verdict: Verdict) -> str:
    """A verdict's error for a log line: one line, at most 200 characters."""
    text = verdict.error or (f"HTTP {verdict.status}" if verdict.status else verdict.outcome)
    return one_line(text, 200)
