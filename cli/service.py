"""What the long-running commands (``drain``, ``serve``) share: their logging and metrics
options, and the set-up of their log."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from spooler.records import iso_utc

__all__ = ["JsonLogFormatter", "service_options", "setup_logging"]


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


def service_options(levels_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --metrics-port, --metrics-host, --log-format and --log-level to a command;
    ``levels_help`` says what --log-level leaves out or adds."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(
            [
                click.option(
                    "--metrics-port",
                    type=click.IntRange(1, 65535),
                    help="Serve Prometheus metrics and /healthz on this port (needs"
                    " spooler[metrics]).",
                ),
                click.option(
                    "--metrics-host",
                    default="127.0.0.1",
                    show_default=True,
                    help="Address for --metrics-port.",
                ),
                click.option(
                    "--log-format",
                    type=click.Choice(["plain", "json"]),
                    default="plain",
                    show_default=True,
                    help="json: one JSON object per line (for journald / log shippers).",
                ),
                click.option(
                    "--log-level",
                    type=click.Choice(["debug", "info", "warning", "error"]),
                    default="info",
                    show_default=True,
                    help=f"Leave out log lines below this level ({levels_help}).",
                ),
            ]
        ):
            command = option(command)
        return command

    return add


def setup_logging(log_format: str, log_level: str) -> None:
    """Log to stderr, plain or as JSON lines, at ``log_level`` (debug with ``--debug``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLogFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    debug = click.get_current_context().meta.get("spooler.debug")
    logging.basicConfig(level="DEBUG" if debug else log_level.upper(), handlers=[handler])
