"""``spooler drain``: parse the flags, then run the delivery worker as a service."""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any

import click

from spooler.config import build_drain_config, select_destinations
from spooler.destinations import destination_types
from spooler.drain import Mode
from spooler.events import DEFAULT_DESTINATION
from spooler.service import ServiceOptions, run_drain

from .options import FlagNamedOption, Options, common_options, parse_duration_option
from .service import service_options

__all__ = ["drain"]


class _HeaderLines(click.types.StringParamType):
    """``--header``'s values, read from ``SPOOLER_DRAIN_HEADER`` one per line: click
    splits the variable of a repeatable option at whitespace, and would cut
    ``X-Source: cron`` in two."""

    envvar_list_splitter = "\n"


def _headers(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str] | None:
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
    cls=FlagNamedOption,
    type=click.Choice(destination_types()),
    help="Destination type [default: from the URL].",
)
@click.option("--api-key", help="Sent as 'Authorization: Bearer KEY' (see --auth-header).")
@click.option("--auth-header", help="Header that carries the API key as-is.")
@click.option(
    "--header",
    "headers",
    cls=FlagNamedOption,
    type=_HeaderLines(),
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
    cls=FlagNamedOption,
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
@service_options("warning: retries, dead letters, errors")
@common_options
def drain(
    opts: Options,
    type_: str | None,
    headers: dict[str, str] | None,
    only: tuple[str, ...],
    once: bool,
    until_empty: bool,
    max_time: float | None,
    service: ServiceOptions,
    **flags: Any,
) -> None:
    """Deliver queued events: a daemon, or --once, or --until-empty.

    SIGTERM/SIGINT/SIGHUP stop claiming, finish in-flight requests and exit 0.
    """
    if once and until_empty:
        raise click.UsageError(
            "--once and --until-empty cannot be combined: --once makes one pass over what is "
            "due now, --until-empty also waits through backoff"
        )
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
    selected = select_destinations(config, only)
    to_stdout = any(dest.url == "-" for dest in selected.destinations.values())
    if service.progress_bar and to_stdout and sys.stdout.isatty():
        # The events go to this terminal: a bar redrawn there would break their lines.
        service = dataclasses.replace(service, progress_bar=False)
    run_drain(
        selected,
        # The drain's own commits (claims, acks, reschedules, dead-letter moves) skip the
        # fsync: losing the last of them to a power cut only puts events back where they
        # were, never loses one (docs/guarantees.md). Producers keep their durability.
        open_spool=functools.partial(opts.open_spool, durability="normal"),
        mode=Mode.ONCE if once else Mode.UNTIL_EMPTY if until_empty else Mode.DAEMON,
        max_time=max_time,
        options=service,
    )
