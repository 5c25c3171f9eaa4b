"""Delivering one claimed batch: its requests, and the bisection of those refused.

A batch goes out as the requests its destination needs (``request_batches``: events
whose per-event options differ may not share one). A request the receiver refuses for
the events it carries (a 4xx other than a refusal of the request itself, or a 413) is
split in halves, each sent again, until only events it refuses alone are left: those
die, their neighbours are delivered. One poison event costs ~log2(batch) requests, and
never takes its neighbours with it.

A request that a 5xx would dead-letter (its events out of attempts or age) is bisected
too, so that an event that crashes the receiver dies alone. Such halves are judged when
their round of requests ends: split further if one request of the round got through
(the receiver is up, so these halves hold bad events). If none did, either the receiver
is down or every half holds a bad event: events of the first half sent alone, one after
the other (``LONE_EVENT_TRIES``), tell which. If they fail too, the halves are settled
as they are (a bisection would only add requests to a receiver that is down).

Everything the spool records goes through the ``Settler``; this module only decides
which events go in the next request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from .settling import short

if TYPE_CHECKING:
    from .destination_log import DestinationLog
    from .destinations import Verdict
    from .records import Claim, ClaimedEvent
    from .settling import Settler

__all__ = ["LONE_EVENT_TRIES", "Bisection", "LeaseKeeper"]

# When no half of a dying batch got through: how many of its events to send alone, one
# after the other, to tell a receiver that is down from halves that each hold a bad
# event. Two settle any two bad events (only one of them can be first); a receiver
# that is down costs a dying batch that many requests more.
LONE_EVENT_TRIES = 2


class LeaseKeeper:
    """Pushes a batch's lease out before a request whenever what is left of it might
    not outlast the request: bisection can take many requests, and a lease that ran
    out mid-request would let a second drain deliver the same events at the same time.
    """

    def __init__(
        self,
        extend: Callable[[int, float], bool],
        lease: int,
        until: float,
        *,
        lease_seconds: float,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._extend = extend
        self._lease = lease
        self._until = until
        self._lease_seconds = lease_seconds
        self._timeout = timeout
        self._clock = clock

    def keep(self) -> bool:
        """Make sure the lease outlasts the next request; False if it has ended (another
        drain holds its events now)."""
        now = self._clock()
        if self._until - now > 2 * self._timeout + 1:
            return True
        self._until = now + self._lease_seconds
        return self._extend(self._lease, self._until)


class Bisection:
    """The requests of one claimed batch, sent one after the other until each event is
    settled (or the drain stops).

    ``send(events)`` makes one request and returns its verdict and how long it took;
    ``stopping()`` says the drain is stopping, which leaves a batch mid-bisection for
    its lease to be released. ``settled_part()`` is called whenever part of the batch
    is settled and the rest is still held (the drain's ``mid_batch`` crash point).
    """

    def __init__(
        self,
        claim: Claim,
        requests: list[list[ClaimedEvent]],
        *,
        send: Callable[[list[ClaimedEvent]], tuple[Verdict, float]],
        settler: Settler,
        lease: LeaseKeeper,
        stopping: Callable[[], bool],
        log: DestinationLog,
        settled_part: Callable[[], None] = lambda: None,
    ) -> None:
        self._claim = claim
        # A stack: the last request is sent first. Reversed, so the first events go first.
        self._pending = requests[::-1]
        self._send = send
        self._settler = settler
        self._lease = lease
        self._stopping = stopping
        self._log = log
        self._settled_part = settled_part
        # The requests of this round that a 5xx would dead-letter, held back until the
        # round ends, and whether a request of the round got through.
        self._failing: list[tuple[list[ClaimedEvent], Verdict, float]] = []
        self._got_through = False
        self._lone_tries = 0
        self._settles = 0  # settles of this batch so far

    def run(self) -> None:
        """Send and settle until no event of the batch is left."""
        size = len(self._claim.events)
        while self._pending or self._failing:
            if not self._pending:
                self._end_round()
                continue
            if self._stopping() and len(self._pending[-1]) < size:
                return  # mid-bisection: the rest is released when the drain exits
            if not self._lease.keep():
                self._log.warning(
                    "the lease of a batch ran out and another drain took its events;"
                    " leaving them to it"
                )
                return
            settles = self._settles
            self._judge(self._pending.pop())
            if self._settles > settles and (self._pending or self._failing):
                self._settled_part()

    def _judge(self, events: list[ClaimedEvent]) -> None:
        """Send ``events`` in one request, and settle, split or hold back what it carried."""
        lease = self._claim.lease
        verdict, elapsed = self._send(events)
        self._got_through = self._got_through or (verdict.sent and verdict.outcome != "retry")
        if verdict.outcome == "partial":
            bad = {i: why for i, why in verdict.bad.items() if 0 <= i < len(events)}
            if bad:
                rest = self._settler.settle_named(lease, events, verdict, bad)
                self._settles += 1
                self._pending += [rest] if rest else []
                return
            # Named no event of this batch after all: find the culprits by bisection.
            verdict = replace(verdict, outcome="reject")
        if verdict.outcome == "reject" and verdict.split and len(events) > 1:
            self._log.info(
                "%s for a batch of %d; splitting it to find the events at fault",
                short(verdict),
                len(events),
            )
            self._pending += _halves(events)
        elif len(events) > 1 and self._settler.dies_of_a_server_error(events, verdict):
            if len(events) < len(self._claim.events):
                self._failing.append((events, verdict, elapsed))
                return
            self._log.info(
                "%s would dead-letter a batch of %d; splitting it to find the events at fault",
                short(verdict),
                len(events),
            )
            self._pending += _halves(events)
        else:
            self._settler.settle(lease, events, verdict, elapsed)
            self._settles += 1

    def _end_round(self) -> None:
        """Every request of a round was sent: judge the halves a 5xx would dead-letter."""
        failing = self._failing
        if not self._got_through and self._lone_tries < LONE_EVENT_TRIES and failing[0][0]:
            self._log.info(
                "no part of a dying batch got through; sending one event alone to "
                "see whether the receiver is up",
            )
            events, verdict, elapsed = failing[0]
            failing[0] = (events[1:], verdict, elapsed)
            self._pending.append(events[:1])
            self._lone_tries += 1
            return
        for events, verdict, elapsed in failing:
            if not events:
                continue  # every one of them went out alone
            if self._got_through:
                self._pending += _halves(events) if len(events) > 1 else [events]
            else:
                self._settler.settle(self._claim.lease, events, verdict, elapsed)
        self._failing, self._got_through, self._lone_tries = [], False, 0


def _halves(events: list[ClaimedEvent]) -> list[list[ClaimedEvent]]:
    """A batch split in two, the first half last (the pending requests are a stack: it
    goes first)."""
    half = len(events) // 2
    return [events[half:], events[:half]]
