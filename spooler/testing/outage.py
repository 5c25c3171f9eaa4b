"""A staged outage, in real time: what ``spooler demo --outage`` runs (and ``make
screenshot`` pictures), so that ``spooler web`` has an outage to show.

Two local receivers (``Receiver``) stand in for Amplitude and Segment. Producers
enqueue events for both at a steady rate, and the real drain (``Drain``, in a thread)
delivers them. After ``before`` seconds amplitude's receiver answers 503, slowly, as a
gateway whose upstream is gone, for ``outage`` seconds, then 200 again; all along,
segment's receiver answers 400 to a batch holding an order whose revenue is not a
number, which the drain bisects and dead-letters. Once amplitude's backlog has drained
(no event from before the recovery is left) and ``after`` seconds have passed since the
recovery, the producers stop and the drain delivers what is left.

Usage::

    outage = StagedOutage("demo.db", outage=120, say=print)
    report = outage.run()  # minutes; outage.stop() (from a signal handler) ends it early
    assert report.lost == 0
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DrainConfig, build_drain_config
from ..drain import Drain, DrainReport, Mode
from ..spool import Spool
from .receiver import Receiver

__all__ = [
    "BACKOFF_CAP",
    "FAILING",
    "RATES",
    "REJECTING",
    "DestinationOutcome",
    "OutageReport",
    "StagedOutage",
    "demo_event",
    "refuses",
]

FAILING = "amplitude"  # the destination whose receiver goes down
REJECTING = "segment"  # the destination whose receiver refuses the bad orders
RATES = {FAILING: 5.0, REJECTING: 2.0}  # events a second
PATHS = {FAILING: "/2/httpapi", REJECTING: "/v1/batch"}
ID_KEYS = {FAILING: "insert_id", REJECTING: "messageId"}  # where each carries its event id
ANSWER_DELAY = 2.0  # seconds the failing receiver takes to answer 503
BAD_ORDER_EVERY = 25  # one segment event in so many has a revenue segment's receiver refuses
# The retry schedule's longest wait: the default (300s) could keep the destination paused
# for minutes after its receiver is back, and the run is meant to show the recovery.
BACKOFF_CAP = 20.0
POLL = 0.5  # seconds between looks at the queue


def demo_event(destination: str, n: int) -> dict[str, Any]:
    """The ``n``-th event a producer enqueues for ``destination``."""
    if destination == FAILING:
        return {
            "event_type": "Song Played",
            "user_id": f"user_{n % 97}",
            "event_properties": {"n": n},
        }
    # The third order is the first bad one: even a run of seconds has a dead letter.
    revenue: float | str = "n/a" if n % BAD_ORDER_EVERY == 2 else 9.99
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user_{n % 89}",
        "properties": {"n": n, "revenue": revenue},
    }


def refuses(event: dict[str, Any]) -> bool:
    """Whether segment's receiver refuses the event (an order without a numeric revenue)."""
    return not isinstance(event.get("properties", {}).get("revenue"), (int, float))


def _unavailable(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """The failing receiver's answer: 503, slowly."""
    time.sleep(ANSWER_DELAY)
    return 503, {}, b'{"error":"upstream unavailable"}'


@dataclass
class DestinationOutcome:
    """One destination's run: events enqueued, delivered (distinct events its receiver
    accepted) and dead-lettered, and the receiver's refusals by status."""

    enqueued: int = 0
    delivered: int = 0
    dead: int = 0
    refused: Counter[int] = field(default_factory=Counter)


@dataclass
class OutageReport:
    """What a staged outage did."""

    destinations: dict[str, DestinationOutcome]
    peak_backlog: int  # the most events FAILING had queued at one look
    drained_in: float | None  # seconds from the recovery until FAILING's backlog had drained
    interrupted: bool  # stop() ended it before the end
    queued: int  # events still queued at the end
    # Events enqueued that are neither delivered nor dead; None while some are queued
    # (stopped early: the queue's events cannot be told from lost ones by count).
    lost: int | None
    drain: DrainReport


class _Producer:
    """A thread enqueueing ``RATES[destination]`` events a second, one at a time; the ids."""

    def __init__(self, location: Path | str, destination: str) -> None:
        self.ids: list[str] = []
        self._location = location
        self._destination = destination
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=f"produce-{destination}")

    def _produce(self) -> None:
        rate = RATES[self._destination]
        with Spool(self._location) as spool:
            start, n = time.monotonic(), 0
            while not self._stop.wait(max(start + n / rate - time.monotonic(), 0.0)):
                event = demo_event(self._destination, n)
                self.ids.append(spool.enqueue(event, destination=self._destination))
                n += 1

    @contextmanager
    def running(self) -> Iterator[_Producer]:
        """Produce while in the block (stopped at its end, or by ``stop()``)."""
        self._thread.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop enqueueing, once the event being enqueued is committed."""
        self._stop.set()
        self._thread.join()


class StagedOutage:
    """The staged outage on the spool at ``location`` (see the module's docstring)."""

    def __init__(
        self,
        location: Path | str,
        *,
        outage: float,
        before: float = 60.0,
        after: float = 0.0,
        say: Callable[[str], None] = lambda text: None,
    ) -> None:
        self._location = location
        self._outage = outage
        self._before = before
        self._after = after
        self._say = say
        self._stopped = threading.Event()
        self._drain: Drain | None = None
        self._drainer: threading.Thread | None = None
        self._peak = 0
        self._drained_in: float | None = None

    def stop(self) -> None:
        """End the run early (safe from a signal handler): the producers and the drain
        stop, the drain once its requests in flight are answered; a second call
        abandons those."""
        if self._stopped.is_set() and self._drain is not None:
            self._drain.stop("interrupted")
        self._stopped.set()

    def drain_config(self, receivers: dict[str, Receiver]) -> DrainConfig:
        """The drain's destinations: each of ``RATES`` at its receiver."""
        tables = {
            name: {
                "type": name,
                "api_key": f"demo-{name}-key",
                "url": receivers[name].url + PATHS[name],
                "backoff_cap": BACKOFF_CAP,
            }
            for name in RATES
        }
        return build_drain_config({"destinations": tables})

    def run(self) -> OutageReport:
        """Stage the outage, from the first event to the last one delivered (or ``stop()``)."""
        with ExitStack() as stack:
            receivers = {name: stack.enter_context(Receiver()) for name in RATES}
            receivers[REJECTING].reject = refuses
            watched = stack.enter_context(Spool(self._location))
            # A connection of its own, as a drain in its own process would have.
            drained_spool = stack.enter_context(Spool(self._location))
            drain = Drain(drained_spool.store, self.drain_config(receivers))
            reports: list[DrainReport] = []
            drainer = threading.Thread(
                target=lambda: reports.append(drain.run(Mode.DAEMON)), name="demo-drain"
            )
            self._drain, self._drainer = drain, drainer
            drainer.start()
            stack.callback(drainer.join)
            stack.callback(drain.stop, "finished")
            producers = {
                name: stack.enter_context(_Producer(self._location, name).running())
                for name in RATES
            }
            self._say(
                f"producers enqueue {RATES[FAILING]:g} events a second for {FAILING} and "
                f"{RATES[REJECTING]:g} for {REJECTING}; the drain delivers them to local "
                f"receivers ({REJECTING}'s refuses one order in {BAD_ORDER_EVERY} with 400); "
                f"{FAILING}'s goes down in {_seconds(self._before)}"
            )
            self._stage(watched, receivers[FAILING])
            for producer in producers.values():
                producer.stop()
            if not self._stopped.is_set():
                self._say("producers stopped; the drain delivers what is left")
                self._watch(watched, lambda: not self._queued(watched))
            drain.stop("interrupted" if self._stopped.is_set() else "finished")
            drainer.join()
            # (no report: the drain raised, and its thread said so on stderr)
            report = reports[0] if reports else DrainReport(error="the drain crashed")
            return self._report(watched, receivers, producers, report)

    def _stage(self, watched: Spool, failing: Receiver) -> None:
        """The outage's timeline, up to the end of the traffic (or ``stop()``)."""
        if not self._watch(watched, deadline=time.monotonic() + self._before):
            return
        failing.respond = _unavailable
        self._say(
            f"{FAILING}'s receiver answers 503 (after {ANSWER_DELAY:g}s) from now on, "
            f"for {_seconds(self._outage)}"
        )
        if not self._watch(watched, deadline=time.monotonic() + self._outage):
            return
        failing.respond = None
        recovered, recovered_mono = time.time(), time.monotonic()
        self._say(f"{FAILING}'s receiver answers 200 again; the drain retries its backlog")

        def drained() -> bool:
            counts = watched.status().destinations.get(FAILING)
            return (
                counts is None
                or counts.oldest_queued_at is None
                or counts.oldest_queued_at >= recovered
            )

        if not self._watch(watched, drained):
            return
        self._drained_in = time.monotonic() - recovered_mono
        self._say(
            f"{FAILING}'s backlog has drained, {_seconds(self._drained_in)} after the "
            f"recovery (it peaked at {self._peak} events)"
        )
        self._watch(watched, deadline=recovered_mono + self._after)

    def _watch(
        self,
        watched: Spool,
        until: Callable[[], bool] = lambda: False,
        deadline: float = float("inf"),
    ) -> bool:
        """Look at the queue (noting FAILING's peak backlog) until ``until()`` holds or
        ``deadline`` (``time.monotonic()``) has passed; False if ``stop()`` came first, or
        the drain stopped (on an error)."""
        while not self._stopped.is_set() and self._drainer and self._drainer.is_alive():
            counts = watched.status().destinations.get(FAILING)
            self._peak = max(self._peak, counts.queued if counts else 0)
            if until() or time.monotonic() >= deadline:
                return True
            self._stopped.wait(max(min(POLL, deadline - time.monotonic()), 0.0))
        return False

    def _queued(self, watched: Spool) -> int:
        """Events queued for the destinations of the run."""
        counts = watched.status().destinations
        return sum(counts[name].queued for name in RATES if name in counts)

    def _report(
        self,
        watched: Spool,
        receivers: dict[str, Receiver],
        producers: dict[str, _Producer],
        drain: DrainReport,
    ) -> OutageReport:
        outcomes, lost = {}, 0
        for name, receiver in receivers.items():
            enqueued = set(producers[name].ids)
            delivered = {event.get(ID_KEYS[name]) for event in receiver.delivered} & enqueued
            dead = {each.event_id for each in watched.dead_letters.inspect(destination=name)}
            refused = Counter(r.status for r in receiver.requests if r.status >= 300)
            outcomes[name] = DestinationOutcome(len(enqueued), len(delivered), len(dead), refused)
            lost += len(enqueued - delivered - dead)
        queued = self._queued(watched)
        return OutageReport(
            destinations=outcomes,
            peak_backlog=self._peak,
            drained_in=self._drained_in,
            interrupted=self._stopped.is_set(),
            queued=queued,
            lost=None if queued else lost,
            drain=drain,
        )


def _seconds(seconds: float) -> str:
    """A duration as the command line writes it: ``2m``, ``45s``, ``1m30s``."""
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{rest}s"
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"
