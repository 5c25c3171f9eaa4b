"""``spooler drain``: run the delivery worker from the command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

import click
from click.core import ParameterSource

from spooler import SpoolerError
from spooler.config import build_drain_config, select_destinations
from spooler.destinations._registry import destination_types
from spooler.drain import Drain, DrainReport, Mode
from spooler.events import DEFAULT_DESTINATION, events_phrase
from spooler.records import Counts, iso_utc

from .options import Options, common_options, parse_duration_option

__all__ = ["drain"]


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


def _headers(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict | None:
    headers = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {value!r}")
        headers[name.strip()] = text.strip()
    return headers or None


@click.command()
@click.option(
    "--url",
    help="Where destination 'default' (or the one -d names) goes: http(s)://..., file://PATH,"
    " or - (stdout) [default: the --type's endpoint].",
)
@click.option(
    "--type",
    "type_",
    type=click.Choice(destination_types()),
    help="Destination type [default: from the URL].",
)
@click.option("--api-key", help="Sent as 'Authorization: Bearer KEY' (see --auth-header).")
@click.option("--auth-header", help="Header that carries the API key as-is.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_headers,
    metavar="'NAME: VALUE'",
    help="Extra request header (repeatable).",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), help="Events per request [default 500]."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Requests in flight per destination [default 4].",
)
@click.option(
    "--timeout",
    callback=parse_duration_option,
    help="The most a request may take, from connecting to the end of the answer [default 10s].",
)
@click.option("--batch-key", help="Send {KEY: [...]} instead of a bare JSON array.")
@click.option("--id-field", help="Write the event id into each event under this key.")
@click.option(
    "--destination",
    "-d",
    "only",
    multiple=True,
    help="Drain only this destination (repeatable). With one -d, the destination flags"
    " (--url, --type, --api-key, ...) define that destination instead of 'default'.",
)
@click.option(
    "--once",
    is_flag=True,
    help="One pass over what is due now; a destination's pass ends at its first retryable failure.",
)
@click.option(
    "--until-empty",
    is_flag=True,
    help="Run until the queue is empty, waiting through backoff.",
)
@click.option("--max-time", callback=parse_duration_option, help="Stop after this long (any mode).")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    help="Attempts before dead-lettering [default 20].",
)
@click.option(
    "--max-age", callback=parse_duration_option, help="Age before dead-lettering [default 3d]."
)
@click.option(
    "--backoff-base", callback=parse_duration_option, help="First retry window [default 1s]."
)
@click.option(
    "--backoff-cap", callback=parse_duration_option, help="Largest retry window [default 300s]."
)
@click.option(
    "--lease", callback=parse_duration_option, help="Lease on claimed events [default 60s]."
)
@click.option(
    "--poll-interval", callback=parse_duration_option, help="Idle poll period [default 1s]."
)
@click.option(
    "--summary-interval", callback=parse_duration_option, help="Summary log period [default 60s]."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics and /healthz on this port (needs spooler[metrics]).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"]),
    default="plain",
    show_default=True,
    help="json: one JSON object per line (for journald / log shippers).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Leave out log lines below this level (warning: retries, dead letters, errors).",
)
@common_options
def drain(
    opts: Options,
    type_: str | None,
    headers: dict | None,
    only: tuple[str, ...],
    once: bool,
    until_empty: bool,
    max_time: float | None,
    metrics_port: int | None,
    metrics_host: str,
    log_format: str,
    log_level: str,
    **flags: Any,
) -> None:
    """Deliver queued events: a daemon, or --once, or --until-empty.

    SIGTERM/SIGINT stop claiming, finish in-flight requests and exit 0.
    """
    if once and until_empty:
        raise click.UsageError(
            "--once and --until-empty cannot be combined: --once makes one pass over what is "
            "due now, --until-empty also waits through backoff"
        )
    mode = "once" if once else "until_empty" if until_empty else None
    retry_keys = ("max_attempts", "max_age", "backoff_base", "backoff_cap")
    drain_keys = ("lease", "poll_interval", "summary_interval")
    destination_flags = {
        **{k: v for k, v in flags.items() if k not in retry_keys + drain_keys},
        "type": type_,
        "headers": headers,
    }
    if len(only) > 1 and any(v is not None for v in destination_flags.values()):
        raise click.UsageError(
            f"the destination flags (--url, --type, --api-key, ...) define one destination, "
            f"and -d names {len(only)}: give one -d with them, or a --config"
        )
    config = build_drain_config(
        opts.raw_config,
        destination_flags=destination_flags,
        retry_flags={k: flags[k] for k in retry_keys},
        drain_flags={k: flags[k] for k in drain_keys},
        flag_destination=only[0] if only else DEFAULT_DESTINATION,
    )
    config = select_destinations(config, only)
    ctx = click.get_current_context()
    debug = ctx.meta.get("spooler.debug")
    show_progress = bool(mode) and sys.stderr.isatty()
    if show_progress and ctx.get_parameter_source("log_level") is ParameterSource.DEFAULT:
        log_level = "warning"  # per-batch lines would break up the progress bar
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLogFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    logging.basicConfig(level="DEBUG" if debug else log_level.upper(), handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines repeat ours
    # The drain's own commits (claims, acks, reschedules, dead-letter moves) skip the
    # fsync: losing the last of them to a power cut only puts events back where they
    # were, never loses one (docs/guarantees.md). Producers keep their durability.
    path = opts.db_path()
    new_spool = not os.path.exists(path)
    with opts.open_spool(durability="normal") as spool:
        if new_spool:
            # Created so that a drain may start before any producer has run; but a
            # mistyped path would otherwise drain an empty spool without a word.
            logging.getLogger("spooler.drain").warning(
                "no spool was at %s, so the drain created an empty one: check --db / "
                "SPOOLER_DB if your producers have been writing elsewhere",
                os.path.abspath(path),
            )
        metrics = None
        if metrics_port is not None:
            from spooler.metrics import DrainMetrics

            metrics = DrainMetrics(spool.store)
        worker = Drain(spool.store, config, metrics=metrics)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: worker.stop())
        try:
            # Served once the signals are handled: a supervisor that sees /healthz and
            # sends SIGTERM at once must get a clean stop, not the default kill.
            if metrics:
                metrics.serve(metrics_host, metrics_port)
            if show_progress:
                backlog = sum(
                    spool.status().destinations.get(name, Counts()).queued
                    for name in config.destinations
                )
                report = _run_with_progress(worker, Mode(mode), max_time, backlog)
            else:
                report = worker.run(Mode(mode or "daemon"), max_time=max_time)
        finally:
            if metrics:
                metrics.close()
    if report.error:
        raise SpoolerError(report.error)
    if mode == "until_empty" and report.stopped_by == "max_time" and report.remaining:
        raise SpoolerError(
            f"--max-time reached with {events_phrase(report.remaining)} still queued"
        )


def _run_with_progress(
    worker: Drain, mode: Mode, max_time: float | None, backlog: int
) -> DrainReport:
    """Run the drain under a progress bar on the terminal: delivered or dead of the
    backlog, rate, ETA, retries."""
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

        report = worker.run(mode, max_time=max_time, progress=advance)
        advance(report)  # the last tick may have come before the last batch settled
        return report
