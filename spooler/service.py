"""Running a worker as a service: what a long-lived spooler process needs around its
work. ``spooler drain`` parses its flags and calls ``run_drain``, ``spooler serve``
``run_serve``; both run their worker in a ``Service``:

- log lines on stderr, plain or JSON (one object a line, for journald and log shippers);
- SIGTERM and SIGINT stop the work cleanly (a second one hurries it), and so does
  SIGHUP (a closed terminal), unless the process was started to ignore it (``nohup``);
- the metrics server, started once the signals are handled;
- systemd's notify protocol (``sd_notify``): READY once the work runs, WATCHDOG while
  the work's own loop finds every part of it alive, STOPPING when it stops;
- for a drain that ends by itself, on a terminal, a progress bar.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Protocol

from .config import DrainConfig, ServeConfig
from .drain import Drain, DrainReport, Mode
from .errors import SpoolerError
from .events import events_phrase
from .records import Counts, iso_utc
from .sd_notify import Notifier
from .spool import Spool

__all__ = [
    "JsonLogFormatter",
    "Service",
    "ServiceOptions",
    "configure_logging",
    "run_drain",
    "run_serve",
    "stop_signals",
]


@dataclass(frozen=True)
class ServiceOptions:
    """How a worker runs as a service: its log, its metrics endpoint, its progress bar.

    Usage::

        ServiceOptions(log_format="json", metrics_port=9464)
    """

    log_format: str = "plain"  # or "json"
    log_level: str | None = None  # None: info, or warning under a progress bar
    debug: bool = False  # every log line (and, the caller's, tracebacks)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no metrics served
    progress_bar: bool = False  # on stderr, for a drain that ends by itself


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: time (ISO 8601 UTC), level, logger, message; also
    destination, for a line about one destination, and traceback (with ``--debug``)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        line = {
            "time": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if hasattr(record, "destination"):
            line["destination"] = record.destination
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(
    options: ServiceOptions, *, default_level: str = "info"
) -> logging.StreamHandler[Any]:
    """Log to stderr in ``options``' format, from its level (else ``default_level``) up;
    returns the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLogFormatter()
        if options.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    level = "debug" if options.debug else options.log_level or default_level
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines repeat ours
    return handler


class Metrics(Protocol):
    """A worker's metrics, served over HTTP (``DrainMetrics``)."""

    def serve(self, host: str, port: int) -> None:
        """Start serving."""
        ...

    def close(self) -> None:
        """Stop serving."""
        ...


class Service:
    """The signals, the metrics server and systemd's notify protocol around one worker.

    Usage::

        with Service(options, stop=worker.stop, metrics=metrics) as service:
            worker.run(heartbeat=service.heartbeat)

    ``heartbeat`` is for the worker's own loop to call, often (ten times a second), with
    how far its most overdue part is past its step (0: none): the first call says
    READY, and calls find it alive (WATCHDOG) while nothing is overdue. A loop that
    stops turning, or a part of the work that is stuck, stops the WATCHDOG: systemd
    restarts the service a ``WatchdogSec`` later.
    """

    def __init__(
        self,
        options: ServiceOptions,
        *,
        stop: Callable[[], None],
        metrics: Metrics | None = None,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = options
        self._stop = stop
        self._metrics = metrics
        self._notifier = Notifier(environ)
        self._clock = clock
        self._ready = False
        self._stopping = False
        self._next_watchdog = 0.0
        self._previous_handlers: dict[int, Any] = {}

    def __enter__(self) -> Service:
        for signum in stop_signals():
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        # Served once the signals are handled: a supervisor that sees /healthz and sends
        # SIGTERM at once must get a clean stop, not the default kill.
        if self._metrics is not None and self._options.metrics_port is not None:
            self._metrics.serve(self._options.metrics_host, self._options.metrics_port)
        return self

    def heartbeat(self, overdue: float) -> None:
        """The worker's loop turns, its most overdue part ``overdue`` seconds past its step."""
        if not self._ready:
            self._ready = True
            self._notifier.notify("READY=1")
        interval = self._notifier.watchdog_interval
        now = self._clock()
        if interval is not None and overdue <= 0 and now >= self._next_watchdog:
            self._notifier.notify("WATCHDOG=1")
            self._next_watchdog = now + interval / 2  # sd_watchdog_enabled(3): twice as often

    def stopping(self) -> None:
        """Tell systemd the service is stopping (once)."""
        if not self._stopping:
            self._stopping = True
            self._notifier.notify("STOPPING=1")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping()
        self._stop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping()
        if self._metrics is not None:
            self._metrics.close()
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)


def stop_signals() -> list[signal.Signals]:
    """The signals that stop a service (and ``spooler web``) cleanly: SIGTERM, SIGINT,
    and SIGHUP unless the process inherited it ignored (``nohup``, which asks to outlive
    the terminal)."""
    stops = [signal.SIGTERM, signal.SIGINT]
    # SIGHUP's default kills the process on the spot, leaving its batches leased until
    # the lease ends (and sent again): a drain started by hand dies so when its terminal
    # closes, or when an operator sends it to "reload" it.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stops.append(signal.SIGHUP)
    return stops


def run_drain(
    config: DrainConfig,
    *,
    open_spool: Callable[[], Spool],
    mode: Mode,
    max_time: float | None,
    options: ServiceOptions,
) -> DrainReport:
    """Run a drain as a service, on the spool ``open_spool`` opens.

    Raises ``SpoolerError`` when the drain stopped on an error, or when ``max_time``
    ended an ``until_empty`` drain with events still queued.
    """
    progress_bar = options.progress_bar and mode is not Mode.DAEMON
    # Per-batch lines would break up the progress bar.
    handler = configure_logging(options, default_level="warning" if progress_bar else "info")
    with open_spool() as spool:
        if spool.store.created:
            # Created so that a drain may start before any producer has run; but a
            # mistyped path would otherwise drain an empty spool without a word.
            logging.getLogger("spooler.drain").warning(
                "no spool was at %s, so the drain created an empty one: check --db / "
                "SPOOLER_DB if your producers have been writing elsewhere",
                spool.store.location,
            )
        metrics = None
        if options.metrics_port is not None:
            from .metrics import DrainMetrics

            metrics = DrainMetrics(spool.store)
        worker = Drain(spool.store, config, metrics=metrics)
        with Service(options, stop=worker.stop, metrics=metrics) as service:
            if progress_bar:
                backlog = sum(
                    spool.status().destinations.get(name, Counts()).queued
                    for name in config.destinations
                )
                report = _run_with_progress(
                    worker, mode, max_time, backlog, service.heartbeat, handler
                )
            else:
                report = worker.run(mode, max_time=max_time, heartbeat=service.heartbeat)
    if report.error:
        raise SpoolerError(report.error)
    if mode is Mode.UNTIL_EMPTY and report.stopped_by == "max_time" and report.remaining:
        raise SpoolerError(
            f"--max-time reached with {events_phrase(report.remaining)} still queued"
        )
    return report


def run_serve(
    config: ServeConfig, *, open_spool: Callable[[], Spool], options: ServiceOptions
) -> None:
    """Run the relay as a service, on the spool ``open_spool`` opens, until a signal.

    Raises ``ConfigError`` without the serve extra or when it cannot listen, and
    ``SpoolerError`` when a stop found a commit stuck (its requests went unanswered).
    """
    from .serve import Relay  # httptools: the serve extra, which the error names

    configure_logging(options)
    log = logging.getLogger("spooler.serve")
    log.info("%s", _routes(config))
    unchecked = [
        api
        for api, name in config.destinations.items()
        if not (config.refuses(api) or config.token or config.keys.get(name))
    ]
    if unchecked:
        log.warning(
            "no key to check requests against for %s (no api_key for the destination, no"
            " token): any local process may post their events",
            ", ".join(unchecked),
        )
    with open_spool() as spool:
        metrics = None
        if options.metrics_port is not None:
            from .metrics import ServeMetrics

            metrics = ServeMetrics(spool.store)
        relay = Relay(spool, config, metrics=metrics)
        with Service(options, stop=relay.stop, metrics=metrics) as service:
            relay.run(heartbeat=service.heartbeat)


def _routes(config: ServeConfig) -> str:
    """Which API's events go to which destination, and which APIs the relay refuses."""
    routes = {api: f"{api} -> {name}" for api, name in config.destinations.items()}
    served = ", ".join(route for api, route in routes.items() if not config.refuses(api))
    refused = ", ".join(route for api, route in routes.items() if config.refuses(api))
    line = f"APIs to destinations: {served or 'none'}"
    if refused:
        line += f"; refused (404), their destination not configured: {refused}"
    return line


class _ProgressLine(Protocol):
    """A progress bar as ``_AboveProgressBar`` draws it again (click's)."""

    def format_progress_line(self) -> str:
        """The bar's line as it shows now."""
        ...


# Back to the start of the line, and clear it: the bar drawn there goes.
_CLEAR_LINE = "\r\x1b[K"


class _AboveProgressBar(logging.Formatter):
    """Log lines written on a terminal under a progress bar: each one takes the bar's
    line, and the bar is drawn again below it. Else a warning (a retry, a dead letter)
    would carry on from the end of the bar's line, and the bar end up among the lines.
    The handler's terminator is to be empty: the bar's line stays the current one, for
    the bar's next update to draw over."""

    def __init__(self, inner: logging.Formatter, bar: _ProgressLine) -> None:
        super().__init__()
        self._inner = inner
        self._bar = bar

    def format(self, record: logging.LogRecord) -> str:
        """The record on a line of its own, then the bar."""
        return f"{_CLEAR_LINE}{self._inner.format(record)}\n{self._bar.format_progress_line()}"


def _run_with_progress(
    worker: Drain,
    mode: Mode,
    max_time: float | None,
    backlog: int,
    heartbeat: Callable[[float], None],
    handler: logging.StreamHandler[Any],
) -> DrainReport:
    """Run the drain under a progress bar on stderr: delivered or dead of the backlog,
    rate, ETA, retries; the log lines of ``handler`` go above it."""
    import click  # the command line's; a drain run from a library never shows a bar

    done = 0

    def shown(report: DrainReport | None) -> str:
        return f"{report.retried} retries, {report.dead} dead" if report else ""

    with click.progressbar(
        length=backlog,
        label="draining",
        file=sys.stderr,
        show_pos=True,
        show_eta=True,
        item_show_func=shown,
    ) as bar:

        def advance(report: DrainReport) -> None:
            nonlocal done
            finished = report.delivered + report.dead
            bar.update(max(finished - done, 0), report)
            done = max(done, finished)

        plain, terminator = handler.formatter or logging.Formatter(), handler.terminator
        handler.setFormatter(_AboveProgressBar(plain, bar))
        handler.terminator = ""
        try:
            report = worker.run(mode, max_time=max_time, progress=advance, heartbeat=heartbeat)
            advance(report)  # the last tick may have come before the last batch settled
        finally:
            handler.setFormatter(plain)
            handler.terminator = terminator
        return report
