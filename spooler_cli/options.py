"""What every command shares: --db, --config and --debug, and common option parsing.

``spooler.config`` (with tomllib and dataclasses) is imported where a config file or a
duration is read: `spooler enqueue` without a config file, run in a shell loop, never
needs it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from spooler import ConfigError, Spool, SpoolerError

__all__ = [
    "DEFAULT_DB",
    "Options",
    "common_options",
    "debug_option",
    "destination_filter",
    "event_ids",
    "parse_duration_option",
    "reason_filter",
    "require_selection",
    "set_debug",
    "stdin_lines",
]

DEFAULT_DB = "./spooler.db"


class Options:
    """The options every command takes."""

    def __init__(self, db: str | None, config: str | None) -> None:
        self.db = db
        self.config = config

    @functools.cached_property
    def raw_config(self) -> dict[str, Any]:
        """The parsed config file ({} without one)."""
        if not self.config:
            return {}
        from spooler.config import load_config_file

        return load_config_file(self.config)

    def db_path(self) -> str:
        """--db / SPOOLER_DB, else the config file's ``db``, else ./spooler.db."""
        if self.db:
            return self.db
        from spooler.config import config_db_path

        return str(config_db_path(self.raw_config) or DEFAULT_DB)

    def open_spool(self, *, create: bool = True, durability: str | None = None) -> Spool:
        """Open the spool with the config file's [spool] settings.

        Operator commands pass ``create=False``: a mistyped --db must not look like
        an empty, healthy spool. ``durability`` overrides the configured one for this
        connection only (the drain's, see docs/guarantees.md).
        """
        options: dict[str, Any] = {}
        if self.raw_config:
            from spooler.config import spool_options

            options = spool_options(self.raw_config)
        if durability is not None:
            options["durability"] = durability
        return Spool(self.db_path(), create=create, **options)


def set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """Callback of --debug: remembered in the context, for the error handler."""
    ctx.meta["spooler.debug"] = ctx.meta.get("spooler.debug") or value
    return value


#: ``--debug``, on the group and on every command: tracebacks and debug logs.
debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    callback=set_debug,
    is_eager=True,
    help="Show tracebacks and debug logs.",
)

#: ``--destination`` of the commands that select queued or dead events.
destination_filter = click.option(
    "--destination", "-d", metavar="NAME", help="Only the events of this destination."
)


def _ids_or_stdin(
    _ctx: click.Context, _param: click.Parameter, ids: tuple[str, ...]
) -> tuple[str, ...]:
    """Callback of ``event_ids``: ``-`` alone means "read the ids from stdin, one per line"."""
    if ids != ("-",):
        return ids
    return tuple(line.strip() for _, line in stdin_lines())


#: The IDS argument of the commands that select events; ``-`` reads them from stdin
#: (``spooler dlq inspect --json | jq -r .id | spooler dlq purge -``).
event_ids = click.argument("ids", nargs=-1, callback=_ids_or_stdin)

#: ``--reason`` of the commands that select dead events.
reason_filter = click.option(
    "--reason",
    "-r",
    help="Only events dead for this reason: rejected, invalid, too_large, max_attempts,"
    " max_age, ...",
)


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
    @debug_option
    @functools.wraps(command)
    def wrapper(db: str | None, config: str | None, **kwargs: Any) -> Any:
        return command(Options(db, config), **kwargs)

    return wrapper


def parse_duration_option(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """Callback of duration options: ``90s``, ``15m``, ``12h``, ``3d`` or seconds."""
    if value is None:
        return None
    from spooler.config import parse_duration

    key = f"--{param.name}"
    try:
        return parse_duration(value, key=key)
    except ConfigError as exc:
        # click's message names the option already ("Invalid value for '--max-age'").
        raise click.BadParameter(str(exc).removeprefix(f"{key}: ")) from None


def stdin_lines() -> Iterator[tuple[int, str]]:
    """The lines of stdin that are not blank, numbered from 1, read as UTF-8 as they come.

    Read as bytes and decoded here, not by the locale's text stream: under a UTF-8
    locale that stream raises on the first invalid byte (a traceback), under others it
    lets it through. A line that is not UTF-8 is a ``SpoolerError`` naming it.
    """
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpoolerError(
                f"line {number}: not valid UTF-8 (byte {raw[exc.start]:#04x} at {exc.start})"
            ) from None
        if line.strip():
            yield number, line


def require_selection(
    ids: tuple[str, ...], everything: bool, *, what: str = "dead events", **filters: Any
) -> None:
    """Refuse a command that names no events, or mixes --all with ids or filters."""
    chosen = bool(ids) + everything + any(v is not None for v in filters.values())
    if not chosen:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in filters)
        raise click.UsageError(f"say which {what}: IDs, --all, or {names}")
    if everything and (ids or any(v is not None for v in filters.values())):
        raise click.UsageError("--all cannot be combined with IDs or filters")
