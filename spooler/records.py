"""The records spooler's operations take and return: claimed and dead events, counts,
selections of events, doctor's findings, and the status of a spool.

Below every other module but ``events``: the store, the drain and the commands all use
them, and they use none of those. They live apart from the store so that a producer's
``import spooler`` never loads ``dataclasses``, whose imports would weigh on the import
time ``benchmarks/import_time.py`` measures (docs/performance.md, target 7): the store
imports them where it builds one, which only drains and operator commands do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from .events import events_phrase

__all__ = [
    "DEAD_AGE_BUCKETS",
    "DEAD_REASONS",
    "Attempt",
    "Claim",
    "ClaimedEvent",
    "Counts",
    "DeadEvent",
    "DeadGroup",
    "DeadPage",
    "DeadSelection",
    "DrainLeases",
    "Failure",
    "Finding",
    "KeptPause",
    "LeasedEvents",
    "QueueSelection",
    "RetriedNow",
    "SpoolStatus",
    "dead_event",
    "failing_phrase",
    "iso_utc",
    "leases_by_drain",
    "one_line",
    "per_destination",
    "requests_phrase",
    "seconds_left",
    "utc_clock",
]

#: The reasons spooler dead-letters events for (a client may add its own).
DEAD_REASONS = ("rejected", "invalid", "too_large", "max_attempts", "max_age", "manual", "corrupt")

# Control characters a receiver's text may not bring into a log line or a terminal
# (it could forge lines of its own, or send terminal escapes): shown escaped.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(32), 127]}


def one_line(text: str, width: int | None = None) -> str:
    """``text`` for one line of a log or a table: runs of whitespace as one space, other
    control characters escaped, and cut to ``width`` characters if one is given."""
    text = " ".join(text.split()).translate(_CONTROL_ESCAPES)
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


def requests_phrase(count: int) -> str:
    """``"1 request"``, ``"3 requests"``: for the relay's counts of requests."""
    return f"{count} request" if count == 1 else f"{count} requests"


def utc_clock(timestamp: float) -> str:
    """``"09:41:07 UTC"``: a time within the coming minutes, for a log or status line."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%H:%M:%S UTC")


def iso_utc(timestamp: float) -> str:
    """Format a Unix time as ISO 8601 UTC with millisecond precision."""
    return (
        datetime.fromtimestamp(timestamp, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class ClaimedEvent(NamedTuple):
    """An event taken under lease by a drain; ``attempts`` counts this attempt (the
    attempts that ended before it, and this one).

    A named tuple, not a frozen dataclass: a drain builds one per event per claim, and a
    frozen dataclass's ``__init__`` costs several times as much, on the claim path that
    ``benchmarks/backlog.py`` measures. It holds no destination: a claim is of one, and
    each event's copy of its name cost the claim ~0.15 us an event.
    """

    rowid: int
    event_id: str
    body: str
    attempts: int
    created_at: float
    queued_at: float


class Claim(NamedTuple):
    """A batch a drain took under one lease: the lease's token (what settles it), and
    its events in enqueue order."""

    lease: int
    events: list[ClaimedEvent]


class RetriedNow(NamedTuple):
    """What ``retry_now`` did: events made due, and the destinations whose pause it ended."""

    events: int
    pauses_ended: tuple[str, ...]


class KeptPause(NamedTuple):
    """A destination's circuit breaker as a drain kept it in the spool."""

    failures: int  # requests failed in a row
    until: float | None  # no claims before this time (None: none pending)
    url_digest: str | None  # which URL they failed at (None: kept before spooler recorded it)


class LeasedEvents(NamedTuple):
    """Events of one destination that one drain holds under live leases."""

    owner: str  # the drain's name: host:pid:random
    destination: str
    events: int
    until: float  # when the last of these leases ends, unless its drain extends it


class DrainLeases(NamedTuple):
    """What one drain holds under live leases, over its destinations."""

    events: int
    until: float  # when its last lease ends, unless it extends it
    destinations: tuple[str, ...]


def leases_by_drain(leases: Iterable[LeasedEvents]) -> dict[str, DrainLeases]:
    """``leases`` added up per drain, by its name (in the order the drains first come)."""
    found: dict[str, DrainLeases] = {}
    for leased in leases:
        mine = found.get(leased.owner, DrainLeases(0, leased.until, ()))
        found[leased.owner] = DrainLeases(
            mine.events + leased.events,
            max(mine.until, leased.until),
            (*mine.destinations, leased.destination),
        )
    return found


@dataclass(frozen=True)
class Failure:
    """Why a delivery attempt of one event failed: HTTP status (or None) and short text."""

    status: int | None
    error: str


@dataclass(frozen=True)
class Attempt:
    """One failed delivery attempt in an event's attempt log."""

    at: float
    status: int | None
    error: str


@dataclass(frozen=True)
class DeadEvent:
    """One row of the dead-letter table."""

    event_id: str
    destination: str
    body: str
    created_at: float
    attempts: int
    reason: str
    status: int | None
    error: str | None
    dead_at: float
    attempt_log: tuple[Attempt, ...] = ()


def dead_event(columns: Sequence[Any], attempt_log: tuple[Attempt, ...]) -> DeadEvent:
    """A dead event from its table's columns in ``DeadEvent``'s order (``event_id`` to
    ``dead_at``), and its attempt log."""
    event_id, destination, body, created_at, attempts, reason, status, error, dead_at = columns
    return DeadEvent(
        event_id,
        destination,
        body,
        created_at,
        attempts,
        reason,
        status,
        error,
        dead_at,
        attempt_log,
    )


@dataclass
class Counts:
    """Queue and dead-letter counts, overall or for one destination."""

    queued: int = 0
    due: int = 0
    leased: int = 0
    retrying: int = 0
    dead: int = 0
    oldest_queued_at: float | None = None
    last_success_at: float | None = None
    last_error_at: float | None = None
    last_error: str | None = None
    held: int = 0
    failed_in_a_row: int = 0  # requests: while more than 0, a drain probes before it sends
    paused_until: float | None = None  # no drain sends before this (the circuit breaker)


@dataclass(frozen=True)
class DeadGroup:
    """Dead events of one destination, reason and status: how many, how old, the usual error."""

    destination: str
    reason: str
    status: int | None
    count: int
    by_age: dict[str, int]
    top_error: str | None


def failing_phrase(name: str, counts: Counts, *, now: float) -> str:
    """``"collector: its last 7 requests failed (HTTP 503: ...), paused for 212s more,
    1520 events queued"``: a destination whose last requests failed, for doctor's
    ``delivery`` line and the drain's summaries (``"..., but nothing is queued for
    it"`` once its events died or were purged: nothing waits to be probed)."""
    failed = counts.failed_in_a_row
    requests = "request" if failed == 1 else requests_phrase(failed)
    # A pause can be kept without an error (recorded apart): then no "()".
    error = f" ({one_line(counts.last_error, 60)})" if counts.last_error else ""
    if not counts.queued:
        return f"{name}: its last {requests} failed{error}, but nothing is queued for it"
    left = (counts.paused_until or now) - now
    state = f"paused for {seconds_left(left)} more" if left > 0 else "to be probed"
    return (
        f"{name}: its last {requests} failed{error}, {state}, {events_phrase(counts.queued)} queued"
    )


def seconds_left(seconds: float) -> str:
    """``"3s"`` for a lease or a pause still running: rounded up, as one with 0.4 s left
    has not ended, and "0s" would say it had."""
    return f"{math.ceil(seconds)}s"


def per_destination(events: Mapping[str, int]) -> str:
    """``"datalyr (2 events), segment (1 event)"``: counts of events by destination."""
    return ", ".join(f"{name} ({events_phrase(count)})" for name, count in events.items())


#: The age buckets of ``dead_summary``, by time since the event died.
DEAD_AGE_BUCKETS = ("<1h", "1h-1d", "1d-7d", ">7d")


@dataclass(frozen=True, kw_only=True)
class QueueSelection:
    """Which queued events an operation applies to; the given criteria are combined with
    AND. None given selects nothing, unless ``everything`` says so (``ValueError``).

    ``last_key`` is a bound, not a criterion: only the rows whose key is at most this,
    those there when the table's ``last_key`` was read (a row written later gets a
    larger key). What an operator confirmed by its count stays what the action acts
    on, when more events that match arrive before it runs."""

    ids: tuple[str, ...] = ()
    destination: str | None = None
    everything: bool = False
    last_key: int | None = None

    def __post_init__(self) -> None:
        if not self.everything and not self._criteria():
            raise ValueError(f"an empty {type(self).__name__} must say everything=True")

    def _criteria(self) -> bool:
        return bool(self.ids) or self.destination is not None


@dataclass(frozen=True, kw_only=True)
class DeadSelection(QueueSelection):
    """Which dead events an operation applies to: also by reason, by the HTTP status of
    the answer that killed them, and by time of death."""

    reason: str | None = None
    status: int | None = None
    dead_before: float | None = None
    dead_after: float | None = None

    def _criteria(self) -> bool:
        return super()._criteria() or any(
            value is not None
            for value in (self.reason, self.status, self.dead_before, self.dead_after)
        )


@dataclass(frozen=True)
class Finding:
    """One of ``spooler doctor``'s checks: ``ok``, ``warning`` (needs a look) or
    ``problem`` (needs action), the check's name, and what it found."""

    level: str
    check: str
    detail: str


@dataclass(frozen=True)
class SpoolStatus:
    """Counts overall and per destination at one instant, the reports that running
    services (``spooler serve``) keep in the spool, by name, and the live leases, by
    drain and destination (when each ends)."""

    total: Counts
    destinations: dict[str, Counts]
    now: float
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    leases: list[LeasedEvents] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``spooler status --json`` document."""

        def render(counts: Counts) -> dict[str, Any]:
            data = asdict(counts)
            oldest = data.pop("oldest_queued_at")
            data["oldest_queued_age_s"] = None if oldest is None else round(self.now - oldest, 3)
            if (data["paused_until"] or 0) <= self.now:
                data["paused_until"] = None  # over: the next request is the probe
            for key in ("last_success_at", "last_error_at", "paused_until"):
                data[key] = None if data[key] is None else iso_utc(data[key])
            return data

        overall = render(self.total)
        for key in (
            "last_success_at",
            "last_error_at",
            "last_error",
            "failed_in_a_row",
            "paused_until",
        ):
            del overall[key]  # facts about one destination, not the spool: null would mislead
        return {
            **overall,
            "destinations": {name: render(c) for name, c in sorted(self.destinations.items())},
            "services": self.services,
            "leases": [
                {
                    "drain": leased.owner,
                    "destination": leased.destination,
                    "events": leased.events,
                    "until": iso_utc(leased.until),
                }
                for leased in self.leases
            ],
        }


class DeadPage(NamedTuple):
    """One page of the dead-letter table, newest first: each event with its key (for the
    next page's ``before`` or ``after``), and how many events the selection holds."""

    events: list[tuple[int, DeadEvent]]
    total: int
