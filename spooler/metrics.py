"""Prometheus metrics for a running drain or relay: ``spooler drain --metrics-port PORT``,
``spooler serve --metrics-port PORT``.

Needs the optional ``prometheus-client`` (``pip install 'spooler[metrics]'``); nothing
else imports this module. Counters and histograms are fed by the drain or the relay;
queue gauges are read from the spool at scrape time, so they are right even for events
other processes enqueued or delivered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from .errors import ConfigError
from .records import DEAD_REASONS

if TYPE_CHECKING:
    from .store.interface import SpoolStore

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # pragma: no cover - exercised only without the extra
    CollectorRegistry = None  # type: ignore[assignment,misc]

__all__ = ["DrainMetrics", "ServeMetrics"]


class _SpoolCollector:
    """Queue gauges, read from the spool when Prometheus scrapes."""

    def __init__(self, store: SpoolStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[Any]:
        now = self._clock()
        counts = self._store.counts(now=now)
        gauges = {
            "queued": GaugeMetricFamily(
                "spooler_queued", "Events in the queue", labels=["destination"]
            ),
            "dead": GaugeMetricFamily(
                "spooler_dead", "Events in the dead-letter table", labels=["destination"]
            ),
            "oldest": GaugeMetricFamily(
                "spooler_oldest_event_age_seconds",
                "Age of the oldest queued event",
                labels=["destination"],
            ),
        }
        for name, c in sorted(counts.items()):
            gauges["queued"].add_metric([name], c.queued)
            gauges["dead"].add_metric([name], c.dead)
            if c.oldest_queued_at is not None:
                gauges["oldest"].add_metric([name], now - c.oldest_queued_at)
        yield from gauges.values()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news


class _Endpoint:
    """A registry with the spool's queue gauges, and the HTTP server that exposes it."""

    def __init__(self, store: SpoolStore, clock: Callable[[], float]) -> None:
        if CollectorRegistry is None:
            raise ConfigError(
                "--metrics-port needs prometheus-client: pip install 'spooler[metrics]'"
            )
        self.registry = CollectorRegistry()
        self.registry.register(_SpoolCollector(store, clock))
        self._server: Any = None

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` (Prometheus text format) and ``/healthz`` in a thread."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO") == "/healthz":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            return metrics_app(environ, start_response)

        try:
            self._server = make_server(host, port, app, handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: cannot listen on {host}: {exc}") from None
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class DrainMetrics(_Endpoint):
    """The drain's counters, histogram and gauges, and the HTTP server that exposes them.

    Usage::

        metrics = DrainMetrics(store)
        metrics.serve("127.0.0.1", 9464)
        Drain(store, config, metrics=metrics).run()
        metrics.close()
    """

    def __init__(self, store: SpoolStore, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(store, clock)
        self._delivered = Counter(
            "spooler_delivered_total", "Events delivered", ["destination"], registry=self.registry
        )
        self._retries = Counter(
            "spooler_retries_total",
            "Events rescheduled after a failure",
            ["destination"],
            registry=self.registry,
        )
        self._dead = Counter(
            "spooler_dead_total",
            "Events moved to the dead-letter table",
            ["destination", "reason"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "spooler_request_seconds",
            "Time per delivery request",
            ["destination"],
            registry=self.registry,
        )
        self._failing = Gauge(
            "spooler_failed_requests_in_a_row",
            "Retryable failures in a row; above 0 the destination is paused, then probed",
            ["destination"],
            registry=self.registry,
        )

    def serves(self, destination: str) -> None:
        """Show the destination's counters at 0 from the start: a counter that appears only
        at its first event is never seen to rise, and ``increase()`` misses that event."""
        self._delivered.labels(destination)
        self._retries.labels(destination)
        for reason in DEAD_REASONS:
            self._dead.labels(destination, reason)

    def delivered(self, destination: str, count: int) -> None:
        """Count delivered events."""
        self._delivered.labels(destination).inc(count)

    def retried(self, destination: str, count: int) -> None:
        """Count events rescheduled for another attempt."""
        self._retries.labels(destination).inc(count)

    def dead(self, destination: str, reason: str, count: int) -> None:
        """Count dead-lettered events, by reason."""
        self._dead.labels(destination, reason).inc(count)

    def request(self, destination: str, seconds: float) -> None:
        """Record how long one delivery request took."""
        self._latency.labels(destination).observe(seconds)

    def failed_in_a_row(self, destination: str, count: int) -> None:
        """Record how many requests in a row have failed (0: the destination answers)."""
        self._failing.labels(destination).set(count)


class ServeMetrics(_Endpoint):
    """``spooler serve``'s counters and commit latency, with the spool's queue gauges.

    Usage::

        metrics = ServeMetrics(store)
        metrics.serve("127.0.0.1", 9465)
    """

    def __init__(self, store: SpoolStore, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(store, clock)
        self._requests = Counter(
            "spooler_serve_requests_total",
            "Ingest requests answered, by API and status (2xx: its events were committed)",
            ["api", "status"],
            registry=self.registry,
        )
        self._events = Counter(
            "spooler_serve_events_total",
            "Events committed from ingest requests",
            ["api", "destination"],
            registry=self.registry,
        )
        self._commit = Histogram(
            "spooler_serve_commit_seconds",
            "Time per shared commit of ingest requests (with its fsync at durability=full)",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, float("inf")),
        )

    def answered(self, api: str, status: int) -> None:
        """Count one answered request."""
        self._requests.labels(api, str(status)).inc()

    def committed(self, api: str, destination: str, events: int) -> None:
        """Count the events of one accepted request."""
        self._events.labels(api, destination).inc(events)

    def commit(self, seconds: float) -> None:
        """Record how long one shared commit took."""
        self._commit.observe(seconds)
