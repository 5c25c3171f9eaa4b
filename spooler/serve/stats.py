"""What ``spooler serve`` counts, and the report it keeps in the spool for ``spooler status``.

Requests accepted (their events committed) and refused (by status), events accepted,
and the latency of the shared commits (the last ``LATENCY_WINDOW`` of them). The report
is written to the spool every ``REPORT_INTERVAL`` seconds while it changes, every
``IDLE_REPORT_INTERVAL`` seconds while it does not (so that an idle relay's report says
it still runs), and when the relay stops, so ``spooler status`` (another process, maybe
another host) shows it.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from ..events import events_phrase
from ..records import requests_phrase

__all__ = ["IDLE_REPORT_INTERVAL", "REPORT_INTERVAL", "ServeStats"]

LATENCY_WINDOW = 1000
REPORT_INTERVAL = 10.0
# An idle relay's report is written again after this long: one small write a minute,
# and ``spooler status`` can tell a relay that has nothing to say from one that is gone.
IDLE_REPORT_INTERVAL = 60.0


class Metrics(Protocol):
    """Where the counts go too, when ``--metrics-port`` is given (``ServeMetrics``)."""

    def answered(self, api: str, status: int) -> None: ...

    def committed(self, api: str, destination: str, events: int) -> None: ...

    def commit(self, seconds: float) -> None: ...


class ServeStats:
    """The relay's counters. ``commit`` is called from the committer's thread, the
    others from the event loop."""

    def __init__(
        self,
        listen: str,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.listen = listen
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self.started_at = clock()
        self.accepted: Counter[str] = Counter()  # requests, by API
        self.events: Counter[str] = Counter()  # events, by API
        self.refused: Counter[int] = Counter()  # requests, by status
        self.commits = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.version = 0  # bumped by every change
        self._reported: tuple[int, float] | None = None  # the last report's version, time

    def accept(self, api: str, destination: str, events: int) -> None:
        """A request whose events were committed."""
        self.accepted[api] += 1
        self.events[api] += events
        self.version += 1
        if self._metrics is not None:
            self._metrics.answered(api, 200)
            self._metrics.committed(api, destination, events)

    def refuse(self, api: str, status: int) -> None:
        """A request answered without storing anything."""
        self.refused[status] += 1
        self.version += 1
        if self._metrics is not None:
            self._metrics.answered(api, status)

    def commit(self, seconds: float, batches: int) -> None:
        """One shared commit, and how long it took."""
        with self._lock:
            self.commits += 1
            self._latencies.append(seconds)
        if self._metrics is not None:
            self._metrics.commit(seconds)

    def commit_ms(self) -> dict[str, float] | None:
        """Median, 99th percentile and most of the recent commits' latency, in ms."""
        with self._lock:
            recent = sorted(self._latencies)
        if not recent:
            return None
        return {
            "p50": round(statistics.median(recent) * 1000, 3),
            "p99": round(recent[min(len(recent) - 1, int(len(recent) * 0.99))] * 1000, 3),
            "max": round(recent[-1] * 1000, 3),
        }

    def due_report(self) -> str | None:
        """The report to keep in the spool now, or None: one is due when the counts
        changed since the last, or ``IDLE_REPORT_INTERVAL`` seconds after it."""
        now = self._clock()
        if self._reported is not None:
            version, at = self._reported
            if version == self.version and now - at < IDLE_REPORT_INTERVAL:
                return None
        self._reported = (self.version, now)
        return self.report()

    def report(self, *, stopped: bool = False) -> str:
        """The JSON report kept in the spool."""
        report: dict[str, Any] = {
            "service": "serve",
            "listen": self.listen,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": self._clock(),
            "stopped": stopped,
            "idle_report_s": IDLE_REPORT_INTERVAL,
            "requests_accepted": sum(self.accepted.values()),
            "requests_refused": sum(self.refused.values()),
            "events_accepted": sum(self.events.values()),
            "refused_by_status": {str(k): v for k, v in sorted(self.refused.items())},
            "accepted_by_api": {
                api: {"requests": self.accepted[api], "events": self.events[api]}
                for api in sorted(self.accepted)
            },
            "commits": self.commits,
            "commit_ms": self.commit_ms(),
        }
        return json.dumps(report)

    def summary(self) -> str:
        """One line for the log."""
        latency = self.commit_ms()
        shown = (
            f"commit p50 {latency['p50']:g} ms, p99 {latency['p99']:g} ms"
            if latency
            else "no commit yet"
        )
        return (
            f"{requests_phrase(sum(self.accepted.values()))} accepted "
            f"({events_phrase(sum(self.events.values()))}), "
            f"{sum(self.refused.values())} refused; {shown}"
        )
