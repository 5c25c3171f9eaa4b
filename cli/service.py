"""The command line's side of running as a service (``spooler.service``): the logging and
metrics options that the long-running commands (``drain``, ``serve``) share."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

__all__ = ["service_options"]


def service_options(levels_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --metrics-port, --metrics-host, --log-format and --log-level to a command,
    which receives them as one ``service`` (a ``spooler.service.ServiceOptions``, which
    also says whether stderr is a terminal); ``levels_help`` says what --log-level
    leaves out or adds."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--metrics-port",
            type=click.IntRange(1, 65535),
            help="Serve Prometheus metrics and /healthz on this port (needs spooler[metrics]).",
        )
        @click.option(
            "--metrics-host",
            default="127.0.0.1",
            show_default=True,
            help="Address for --metrics-port.",
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
            help=f"Leave out log lines below this level ({levels_help}).",
        )
        @functools.wraps(command)
        def wrapper(
            *args: Any,
            metrics_port: int | None,
            metrics_host: str,
            log_format: str,
            log_level: str,
            **kwargs: Any,
        ) -> Any:
            from spooler.service import ServiceOptions

            ctx = click.get_current_context()
            level_given = ctx.get_parameter_source("log_level") is not ParameterSource.DEFAULT
            service = ServiceOptions(
                log_format=log_format,
                log_level=log_level if level_given else None,
                debug=bool(ctx.meta.get("spooler.debug")),
                metrics_host=metrics_host,
                metrics_port=metrics_port,
                progress_bar=sys.stderr.isatty(),
            )
            return command(*args, service=service, **kwargs)

        return wrapper

    return add
