"""The ``spooler`` command: thin click wrappers that parse, call the library, and print.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Errors are
one line on stderr; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import click
from click.core import ParameterSource

from spooler import ConfigError, InvalidEventError, SpoolerError, __version__
from spooler.events import (
    DEFAULT_MAX_EVENT_BYTES,
    check_destination_name,
    encode_events,
    events_phrase,
    new_event_ids,
)

from .options import (
    FlagNamedOption,
    Options,
    UsageLine,
    common_options,
    debug_option,
    group_options,
    parse_duration_option,
    stdin_lines,
)

__all__ = ["cli"]

# A JSON line longer than this many times the event size limit cannot hold an event
# within it, however it was written: json.dumps's defaults (ASCII escapes, a space after
# each separator) take at most 3x an event's compact UTF-8 form. So `spooler enqueue`
# refuses such a line as soon as that much is read, never holding more of it.
LINE_BYTES_PER_EVENT_BYTE = 4

# Commands whose modules load only when they run (click's lazy subcommand pattern): a
# shell loop of `spooler enqueue` never imports the drain, the DLQ or the queue controls
# (what each call saves: docs/performance.md, "spooler enqueue from a shell").
LAZY_COMMANDS = {
    "drain": ".drain:drain",
    "dlq": ".dlq:dlq",
    "hold": ".queue:hold",
    "release": ".queue:release",
    "retry-now": ".queue:retry_now",
    "expire": ".queue:expire",
    "serve": ".serve:serve",
    "web": ".web:web",
}


class SpoolerGroup(click.Group):
    """Loads the ``LAZY_COMMANDS`` when asked for, and turns ``SpoolerError`` and click's
    usage errors into one line on stderr and the contract's exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The commands defined here and the lazy ones, by name."""
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A command by name, importing its module first if it is a lazy one."""
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name = LAZY_COMMANDS[cmd_name].split(":")
        command: click.Command = getattr(importlib.import_module(module, __package__), name)
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse the group's own options; a usage error there is one line too."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc, parent) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from None
        except SpoolerError as exc:
            if ctx.meta.get("spooler.debug"):
                raise
            if isinstance(exc, ConfigError):
                for problem in exc.problems:
                    click.echo(f"spooler: error: {problem}", err=True)
                ctx.exit(2)
            click.echo(f"spooler: error: {exc}", err=True)
            ctx.exit(1)


def _one_line(exc: click.UsageError, ctx: click.Context | None) -> click.UsageError:
    """A usage error as ``UsageLine`` shows it (with the context of the command at
    fault, else ``ctx``); click's bare-command help stays help."""
    if isinstance(exc, (UsageLine, click.exceptions.NoArgsIsHelpError)):
        return exc
    return UsageLine(exc.format_message(), exc.ctx or ctx)


@click.group(
    "spooler",
    cls=SpoolerGroup,
    context_settings={"auto_envvar_prefix": "SPOOLER", "help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="spooler")
@group_options
@debug_option
def cli() -> None:
    """Durable event spooler: enqueue to a local SQLite spool (or a PostgreSQL one shared
    by many hosts), drain to HTTP APIs."""


# -- enqueue ------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--destination",
    "-d",
    default="default",
    show_default=True,
    help="Destination the events are for.",
)
@click.argument("events", nargs=-1, metavar="[JSON ...]")
@common_options
def enqueue(opts: Options, destination: str, events: tuple[str, ...]) -> None:
    """Enqueue JSON objects (arguments, or JSON Lines on stdin). Prints their ids.

    All or nothing: one bad event enqueues none, and the error names it.
    """
    opts.warn_of_config_mistakes()
    check_destination_name(destination)
    configured = opts.raw_config.get("destinations")
    if configured and destination not in configured:
        source = click.get_current_context().get_parameter_source("destination")
        named = "" if source is not ParameterSource.DEFAULT else " (no -d given)"
        raise ConfigError(
            f"unknown destination {destination!r}{named}; {opts.config} defines "
            f"{', '.join(sorted(configured))}: name one with -d NAME"
        )
    max_event_bytes = opts.spool_settings.get("max_event_bytes", DEFAULT_MAX_EVENT_BYTES)
    current = 0  # the argument or line number of the event last read: on error, the bad one

    def texts(numbered: Iterable[tuple[int, str]]) -> Iterator[str]:
        nonlocal current
        try:
            for number, text in numbered:
                current = number
                yield text
        except InvalidEventError as exc:  # a line too long, or not UTF-8: it names itself
            raise InvalidEventError(f"{exc}; nothing was enqueued") from None

    numbered: Iterable[tuple[int, str]]
    if events and events != ("-",):
        label, numbered = "argument", enumerate(events, 1)
    else:
        line_limit = LINE_BYTES_PER_EVENT_BYTE * max_event_bytes
        label, numbered = "line", stdin_lines(max_bytes=line_limit)
    # Every event is read and checked before the spool is opened: input that enqueues
    # nothing (a bad event, no event) leaves no new spool file behind. Only each event's
    # compact text is kept meanwhile: a large file on stdin takes about its own size.
    try:
        bodies = encode_events(texts(numbered), max_bytes=max_event_bytes, texts=True)
    except InvalidEventError as exc:
        if exc.index is None:
            raise  # from stdin itself
        detail = str(exc).removeprefix(f"event {exc.index}: ")
        raise InvalidEventError(f"{label} {current}: {detail}; nothing was enqueued") from None
    if not bodies:
        click.echo("spooler: no events given; nothing enqueued", err=True)
        return
    ids = new_event_ids(len(bodies))
    with opts.open_spool() as spool:
        spool.commit_rows([(i, destination, body) for i, body in zip(ids, bodies, strict=True)])
    _print_ids(ids)


def _print_ids(ids: list[str]) -> None:
    """Print the ids of events just committed, one per line. Output that cannot be
    written (a full disk, a reader gone: `| head -0`) is an error that says the events
    are in the spool all the same: exit 1 alone would invite a script to enqueue them
    again. The ids still buffered are dropped, not tried again as Python exits."""
    try:
        click.echo("\n".join(ids))
        if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
            sys.stdout.flush()
    except OSError as exc:
        with contextlib.suppress(OSError):
            sys.stdout.close()  # closes the file even where its last flush fails
        raise SpoolerError(
            f"{events_phrase(len(ids))} enqueued, but {'its id' if len(ids) == 1 else 'their ids'}"
            f" could not be written to stdout: {exc.strerror or exc}"
        ) from None


# -- status -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--json", "as_json", cls=FlagNamedOption, is_flag=True, help="Print JSON instead of a table."
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Print again every SECONDS, until Ctrl-C.",
)
@common_options
def status(opts: Options, as_json: bool, watch: float | None) -> None:
    """Counts of queued, due, leased, retrying and dead events, per destination, with
    each destination's last success and last error."""
    from .render import status_table

    opts.warn_of_config_mistakes()
    with opts.open_spool(create=False) as spool:
        try:
            while True:
                current = spool.status()
                if watch and not as_json:
                    click.clear()
                click.echo(json.dumps(current.to_dict()) if as_json else status_table(current))
                if not watch:
                    return
                time.sleep(watch)
        except KeyboardInterrupt:
            return  # Ctrl-C is how --watch ends


# -- doctor -------------------------------------------------------------------------------


@cli.command()
@common_options
def doctor(opts: Options) -> None:
    """Check the spool: integrity, schema, WAL size, file modes, free disk (on
    PostgreSQL: the server's reach, dead rows), stale leases, corrupt events (moved to
    the dead-letter table), destinations whose last requests failed, events for
    destinations the config does not define, use of the configured limits. Exit 1 when
    something needs action."""
    from spooler.doctor import diagnose

    opts.warn_of_config_mistakes()
    destinations = opts.raw_config.get("destinations")
    with opts.open_spool(create=False) as spool:
        findings = diagnose(spool, now=time.time(), configured=destinations)
    for finding in findings:
        click.echo(f"{finding.level:<8} {finding.check:<10} {finding.detail}")
    if any(finding.level == "problem" for finding in findings):
        raise click.exceptions.Exit(1)


# -- config -------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Check configuration files."""


@config.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@common_options
def check(opts: Options, file: str | None) -> None:
    """Validate a config file (FILE, --config or SPOOLER_CONFIG) and print what it
    resolves to, with secrets masked. Exit 2 and every mistake, each naming its key,
    when it is wrong."""
    from spooler.config import read_config_file, resolved_settings

    path = file or opts.config
    if not path:
        raise click.UsageError(
            "no config file to check: give one as FILE, --config FILE or SPOOLER_CONFIG"
        )
    settings = resolved_settings(read_config_file(path))
    click.echo(json.dumps(settings, indent=2))
    click.echo(f"{path}: ok", err=True)


# -- demo ---------------------------------------------------------------------------------


@cli.command()
@click.option("--db", metavar="PATH", help="A new spool file [default: a fresh temporary one].")
@click.option(
    "--outage",
    callback=parse_duration_option,
    metavar="DURATION",
    help="Instead, an outage in real time, to watch in spooler web: a receiver answers 503"
    " this long (e.g. 2m). The spool is kept.",
)
@click.option(
    "--before",
    callback=parse_duration_option,
    metavar="DURATION",
    help="With --outage: steady traffic before it [default 1m].",
)
@click.option(
    "--after",
    callback=parse_duration_option,
    metavar="DURATION",
    help="With --outage: keep the traffic up at least this long after the recovery"
    " [default: until the backlog has drained].",
)
def demo(db: str | None, outage: float | None, before: float | None, after: float | None) -> None:
    """A one-minute tour: enqueue, retries, a dead letter, replay, status. With --outage,
    a receiver's outage and its recovery in real time, to watch in spooler web."""
    from .demo import run_demo, run_outage_demo
    from .options import given_on_group

    db = given_on_group("db", db)
    if outage is None:
        if before is not None or after is not None:
            raise click.UsageError("--before and --after go with --outage")
        run_demo(db)
        return
    if not outage:
        raise click.BadParameter("an outage lasts more than 0s", param_hint="'--outage'")
    run_outage_demo(db, outage, before=60.0 if before is None else before, after=after or 0.0)
