"""The ``spooler`` command: thin click wrappers that parse, call the library, and print.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Errors are
one line on stderr; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import click
from click.core import ParameterSource

from spooler import ConfigError, InvalidEventError, Spool, SpoolerError, __version__
from spooler.config import (
    DESTINATION_TYPES,
    build_drain_config,
    config_db_path,
    load_config_file,
    parse_duration,
    resolved_settings,
    spool_options,
)
from spooler.dlq import dead_event_to_dict, iso_utc
from spooler.events import events_phrase, parse_event
from spooler.store import Counts

from .render import dead_summary_table, dead_table, status_table

__all__ = ["cli"]

DEFAULT_DB = "./spooler.db"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: time (ISO 8601 UTC), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        return json.dumps(
            {
                "time": iso_utc(record.created),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


class SpoolerGroup(click.Group):
    """Turns ``SpoolerError`` into one line on stderr and the contract's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpoolerError as exc:
            if ctx.meta.get("spooler.debug"):
                raise
            click.echo(f"spooler: error: {exc}", err=True)
            ctx.exit(2 if isinstance(exc, ConfigError) else 1)


@dataclass
class Options:
    """The options every command takes."""

    db: str | None
    config: str | None

    @functools.cached_property
    def raw_config(self) -> dict[str, Any]:
        """The parsed config file ({} without one)."""
        return load_config_file(self.config) if self.config else {}

    def db_path(self) -> str:
        """--db / SPOOLER_DB, else the config file's ``db``, else ./spooler.db."""
        return self.db or str(config_db_path(self.raw_config) or DEFAULT_DB)

    def open_spool(self, *, create: bool = True) -> Spool:
        """Open the spool with the config file's [spool] settings.

        Operator commands pass ``create=False``: a mistyped --db must not look like
        an empty, healthy spool.
        """
        return Spool(self.db_path(), create=create, **spool_options(self.raw_config))


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta["spooler.debug"] = ctx.meta.get("spooler.debug") or value
    return value


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --db, --config and --debug to a command; it receives an ``Options`` first."""

    @click.option(
        "--db",
        envvar="SPOOLER_DB",
        metavar="PATH",
        help=f"Spool file [env SPOOLER_DB; default {DEFAULT_DB}].",
    )
    @click.option(
        "--config",
        envvar="SPOOLER_CONFIG",
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="TOML config file [env SPOOLER_CONFIG].",
    )
    @click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_set_debug,
        is_eager=True,
        help="Show tracebacks and debug logs.",
    )
    @functools.wraps(command)
    def wrapper(db: str | None, config: str | None, **kwargs: Any) -> Any:
        return command(Options(db, config), **kwargs)

    return wrapper


def _duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value, key=f"--{param.name}")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(
    cls=SpoolerGroup,
    context_settings={"auto_envvar_prefix": "SPOOLER", "help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="spooler")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    callback=_set_debug,
    is_eager=True,
    help="Show tracebacks and debug logs.",
)
def cli() -> None:
    """Durable event spooler: enqueue to a local SQLite spool, drain to HTTP APIs."""


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
    if events and events != ("-",):
        numbered = [(f"argument {n}", text) for n, text in enumerate(events, 1)]
    else:
        numbered = [(f"line {n}", line) for n, line in enumerate(sys.stdin, 1) if line.strip()]
    parsed = []
    for where, text in numbered:
        try:
            parsed.append(parse_event(text))
        except InvalidEventError as exc:
            raise InvalidEventError(f"{where}: {exc}; nothing was enqueued") from None
    configured = opts.raw_config.get("destinations")
    if configured and destination not in configured:
        raise ConfigError(
            f"unknown destination {destination!r}; {opts.config} defines "
            f"{', '.join(sorted(configured))}"
        )
    with opts.open_spool() as spool:
        try:
            ids = spool.enqueue_many(parsed, destination=destination)
        except InvalidEventError as exc:
            where = numbered[exc.index][0] if exc.index is not None else "input"
            detail = str(exc).removeprefix(f"event {exc.index}: ")
            raise InvalidEventError(f"{where}: {detail}; nothing was enqueued") from None
    for event_id in ids:
        click.echo(event_id)
    if not ids:
        click.echo("spooler: no events given; nothing enqueued", err=True)


# -- drain --------------------------------------------------------------------------------


def _headers(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict | None:
    headers = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {value!r}")
        headers[name.strip()] = text.strip()
    return headers or None


@cli.command()
@click.option("--url", help="Destination 'default': http(s)://..., file://PATH, or - (stdout).")
@click.option(
    "--type",
    "type_",
    type=click.Choice(DESTINATION_TYPES),
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
@click.option("--timeout", callback=_duration, help="Request timeout [default 10s].")
@click.option("--batch-key", help="Send {KEY: [...]} instead of a bare JSON array.")
@click.option("--id-field", help="Write the event id into each event under this key.")
@click.option(
    "--destination",
    "-d",
    "only",
    multiple=True,
    help="Drain only this configured destination (repeatable).",
)
@click.option("--once", "mode", flag_value="once", help="One pass over what is due now.")
@click.option(
    "--until-empty",
    "mode",
    flag_value="until_empty",
    help="Run until the queue is empty, waiting through backoff.",
)
@click.option("--max-time", callback=_duration, help="Stop after this long (any mode).")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    help="Attempts before dead-lettering [default 20].",
)
@click.option("--max-age", callback=_duration, help="Age before dead-lettering [default 3d].")
@click.option("--backoff-base", callback=_duration, help="First retry window [default 1s].")
@click.option("--backoff-cap", callback=_duration, help="Largest retry window [default 300s].")
@click.option("--lease", callback=_duration, help="Lease on claimed events [default 60s].")
@click.option("--poll-interval", callback=_duration, help="Idle poll period [default 1s].")
@click.option("--summary-interval", callback=_duration, help="Summary log period [default 60s].")
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
)
@common_options
def drain(
    opts: Options,
    type_: str | None,
    headers: dict | None,
    only: tuple[str, ...],
    mode: str | None,
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
    from spooler.drain import Drain, Mode

    retry_keys = ("max_attempts", "max_age", "backoff_base", "backoff_cap")
    drain_keys = ("lease", "poll_interval", "summary_interval")
    config = build_drain_config(
        opts.raw_config,
        destination_flags={
            **{k: v for k, v in flags.items() if k not in retry_keys + drain_keys},
            "type": type_,
            "headers": headers,
        },
        retry_flags={k: flags[k] for k in retry_keys},
        drain_flags={k: flags[k] for k in drain_keys},
    )
    if only:
        unknown = sorted(set(only) - set(config.destinations))
        if unknown:
            raise ConfigError(
                f"unknown destination {', '.join(unknown)}; configured: "
                f"{', '.join(sorted(config.destinations))}"
            )
        config = replace(config, destinations={n: config.destinations[n] for n in only})
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
    with opts.open_spool() as spool:
        metrics = None
        if metrics_port is not None:
            from spooler.metrics import DrainMetrics

            metrics = DrainMetrics(spool.store)
            metrics.serve(metrics_host, metrics_port)
        worker = Drain(spool.store, config, metrics=metrics)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: worker.stop())
        try:
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
        raise SpoolerError(f"--max-time reached with {report.remaining} events still queued")


def _run_with_progress(worker: Any, mode: Any, max_time: float | None, backlog: int) -> Any:
    """Run the drain under a progress bar on the terminal: delivered or dead of the
    backlog, rate, ETA, retries."""
    done = 0

    def shown(report: Any) -> str:
        return f"{report.retried} retries, {report.dead} dead" if report else ""

    with click.progressbar(
        length=backlog,
        label="draining",
        file=sys.stderr,
        show_pos=True,
        show_eta=True,
        item_show_func=shown,
    ) as bar:

        def advance(report: Any) -> None:
            nonlocal done
            finished = report.delivered + report.dead
            bar.update(max(finished - done, 0), report)
            done = max(done, finished)

        return worker.run(mode, max_time=max_time, progress=advance)


# -- status -------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
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


# -- dlq ----------------------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """Inspect, replay and purge dead-lettered events."""


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--destination", "-d")
@click.option("--reason", "-r", help="rejected, invalid, too_large, max_attempts, max_age...")
@click.option("--limit", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one dead event per line.")
@common_options
def inspect(
    opts: Options,
    ids: tuple[str, ...],
    destination: str | None,
    reason: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Show dead events and why they died."""
    with opts.open_spool(create=False) as spool:
        dead = spool.dead_letters.inspect(ids, destination=destination, reason=reason, limit=limit)
    if as_json:
        for event in dead:
            click.echo(json.dumps(dead_event_to_dict(event), ensure_ascii=False))
    elif dead:
        click.echo(dead_table(dead))
    else:
        click.echo("no dead events", err=True)


@dlq.command()
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one group per line.")
@common_options
def summary(opts: Options, as_json: bool) -> None:
    """Dead events by destination, reason and status: counts, ages, the usual error."""
    with opts.open_spool(create=False) as spool:
        groups = spool.dead_letters.summary()
    if as_json:
        for group in groups:
            click.echo(json.dumps(asdict(group), ensure_ascii=False))
    elif groups:
        click.echo(dead_summary_table(groups))
    else:
        click.echo("no dead events", err=True)


def _require_selection(
    ids: tuple[str, ...], everything: bool, *, what: str = "dead events", **filters: Any
) -> None:
    chosen = bool(ids) + everything + any(v is not None for v in filters.values())
    if not chosen:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in filters)
        raise click.UsageError(f"say which {what}: IDs, --all, or {names}")
    if everything and (ids or any(v is not None for v in filters.values())):
        raise click.UsageError("--all cannot be combined with IDs or filters")


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every dead event.")
@click.option("--destination", "-d")
@click.option("--reason", "-r")
@click.option("--older-than", callback=_duration, help="Dead for longer than this (e.g. 1h).")
@click.option("--newer-than", callback=_duration, help="Dead for less than this (e.g. 1h).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, oldest first.")
@click.option("--to", "to", metavar="DEST", help="Send them to this destination instead.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (--all).")
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
@common_options
def replay(
    opts: Options,
    ids: tuple[str, ...],
    everything: bool,
    destination: str | None,
    reason: str | None,
    older_than: float | None,
    newer_than: float | None,
    limit: int | None,
    to: str | None,
    yes: bool,
    dry_run: bool,
) -> None:
    """Move dead events back to the queue: same event ids, attempts reset, oldest first.
    IDs may be given as - to read them from stdin, one per line."""
    if ids == ("-",):
        ids = tuple(line.strip() for line in sys.stdin if line.strip())
    filters = {
        "destination": destination,
        "reason": reason,
        "older_than": older_than,
        "newer_than": newer_than,
    }
    _require_selection(ids, everything, **filters)
    with opts.open_spool(create=False) as spool:
        if everything and not (yes or dry_run) and sys.stdin.isatty():
            click.confirm("Replay every dead event?", abort=True)
        count = spool.dead_letters.replay(
            ids, everything=everything, limit=limit, to=to, dry_run=dry_run, **filters
        )
    click.echo(f"{'would replay' if dry_run else 'replayed'} {events_phrase(count)}")


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every dead event.")
@click.option("--older-than", callback=_duration, help="Dead for longer than this (e.g. 7d).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@common_options
def purge(
    opts: Options,
    ids: tuple[str, ...],
    everything: bool,
    older_than: float | None,
    yes: bool,
    dry_run: bool,
) -> None:
    """Delete dead events for good (asks first on a terminal, unless --yes)."""
    _require_selection(ids, everything, older_than=older_than)
    with opts.open_spool(create=False) as spool:
        dead_letters = spool.dead_letters
        count = dead_letters.purge(ids, everything=everything, older_than=older_than, dry_run=True)
        if dry_run:
            click.echo(f"would purge {events_phrase(count)}")
            return
        if count and not yes and sys.stdin.isatty():
            click.confirm(f"Delete {count} dead events for good?", abort=True)
        count = dead_letters.purge(ids, everything=everything, older_than=older_than)
    click.echo(f"purged {events_phrase(count)}")


# -- queue controls -----------------------------------------------------------------------


@cli.command("retry-now")
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every waiting event.")
@click.option("--destination", "-d")
@common_options
def retry_now(
    opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None
) -> None:
    """Clear the backoff of waiting events, so the next drain pass sends them."""
    _require_selection(ids, everything, what="queued events", destination=destination)
    with opts.open_spool(create=False) as spool:
        count = spool.retry_now(ids, destination=destination, everything=everything)
    click.echo(f"{events_phrase(count)} due now")


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every queued event.")
@click.option("--destination", "-d")
@common_options
def hold(opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None) -> None:
    """Park queued events: no drain sends them, and none expires them, until release.
    Events being delivered at this moment are left alone."""
    _require_selection(ids, everything, what="queued events", destination=destination)
    with opts.open_spool(create=False) as spool:
        count = spool.hold(ids, destination=destination, everything=everything)
    click.echo(f"held {events_phrase(count)}")


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every held event.")
@click.option("--destination", "-d")
@common_options
def release(opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None) -> None:
    """Let held events go: they are due at once."""
    _require_selection(ids, everything, what="held events", destination=destination)
    with opts.open_spool(create=False) as spool:
        count = spool.release(ids, destination=destination, everything=everything)
    click.echo(f"released {events_phrase(count)}")


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every queued event.")
@click.option("--destination", "-d")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
def expire(
    opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None, yes: bool
) -> None:
    """Move queued events to the dead-letter table (reason manual); replayable later.
    Events being delivered at this moment are left alone."""
    _require_selection(ids, everything, what="queued events", destination=destination)
    if not ids and not yes and sys.stdin.isatty():
        which = f"of {destination}" if destination else "in the queue"
        click.confirm(f"Move every event {which} to the dead-letter table?", abort=True)
    with opts.open_spool(create=False) as spool:
        count = spool.expire(ids, destination=destination, everything=everything)
    click.echo(f"expired {events_phrase(count)}")


# -- doctor -------------------------------------------------------------------------------


@cli.command()
@common_options
def doctor(opts: Options) -> None:
    """Check the spool: integrity, schema, WAL size, stale leases, corrupt events (moved
    to the dead-letter table), free disk. Exit 1 when something needs action."""
    from spooler.doctor import diagnose

    with opts.open_spool(create=False) as spool:
        findings = diagnose(spool, now=time.time())
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
    resolves to, with secrets masked. Exit 2 and the key at fault when it is wrong."""
    path = file or opts.config
    if not path:
        raise click.UsageError("say which file: spooler config check FILE")
    settings = resolved_settings(load_config_file(path))
    click.echo(json.dumps(settings, indent=2))
    click.echo(f"{path}: ok", err=True)


# -- demo ---------------------------------------------------------------------------------


@cli.command()
@click.option("--db", metavar="PATH", help="Spool file [default: a fresh temporary one].")
def demo(db: str | None) -> None:
    """A one-minute tour: enqueue, retries, a dead letter, replay, status."""
    from .demo import run_demo

    run_demo(db)
