"""What every command shares: --db, --config and --debug, and common option parsing.

``--db`` and ``--config`` are taken on the ``spooler`` group too (``spooler --db x
status``): a command's own flag wins, then the group's, then the environment variable.

``spooler.config`` (with tomllib and dataclasses) is imported where a config file or a
duration is read: `spooler enqueue` without a config file, run in a shell loop, never
needs it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from spooler import ConfigError, InvalidEventError, Spool

__all__ = [
    "DEFAULT_DB",
    "FlagNamedOption",
    "Options",
    "UsageLine",
    "common_options",
    "debug_option",
    "destination_filter",
    "event_ids",
    "given_on_group",
    "group_options",
    "parse_duration_option",
    "reason_filter",
    "require_selection",
    "set_debug",
    "stdin_lines",
]

DEFAULT_DB = "./spooler.db"
#: A command, or a function on its way to become one, under click's decorators.
CommandT = TypeVar("CommandT", bound=Callable[..., Any])


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
        """--db / SPOOLER_DB, else the config file's ``db``, else ./spooler.db: a file
        path, or a ``postgresql://`` URL."""
        if self.db:
            return self.db
        from spooler.config import config_db_path

        return config_db_path(self.raw_config) or DEFAULT_DB

    @functools.cached_property
    def spool_settings(self) -> dict[str, Any]:
        """The config file's [spool] settings, as ``Spool``'s keyword arguments ({}
        without a file)."""
        if not self.raw_config:
            return {}
        from spooler.config import spool_options

        return spool_options(self.raw_config)

    def open_spool(self, *, create: bool = True, durability: str | None = None) -> Spool:
        """Open the spool with the config file's [spool] settings.

        Operator commands pass ``create=False``: a mistyped --db must not look like
        an empty, healthy spool. ``durability`` overrides the configured one for this
        connection only (the drain's, see docs/guarantees.md).
        """
        options = dict(self.spool_settings)
        if durability is not None:
            options["durability"] = durability
        return Spool(self.db_path(), create=create, **options)

    def warn_of_config_mistakes(self) -> None:
        """Warn (stderr) of the config file's mistakes that this command does not trip
        over itself, such as a destination's: they would otherwise pass unnoticed until
        a drain refuses the file.

        The spool's settings, which every command uses, are checked first and stop it
        with their ``ConfigError``: a mistake there is said once, as the error, not also
        as a warning before it (a command that reads a table of its own, such as
        ``[serve]``, reads it before calling this).
        """
        if not self.config:
            return
        from spooler.config import config_warnings

        # Parsed here once: a mistake stops the command with its error, and open_spool
        # takes the settings from here.
        self.spool_settings  # noqa: B018 (read for its check)
        for problem in config_warnings(self.raw_config):
            click.echo(f"spooler: warning: {self.config}: {problem}", err=True)


class FlagNamedOption(click.Option):
    """An option whose ``SPOOLER_<COMMAND>_<FLAG>`` variable is named after its long flag,
    as the README says, where its parameter is named otherwise in the code (``--json``
    is ``as_json``, which does not hide the json module): ``SPOOLER_STATUS_JSON``,
    where click would read ``SPOOLER_STATUS_AS_JSON``."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        """The flag's variable, for an option without an ``envvar`` of its own."""
        name = flag_variable(ctx, self) if self.allow_from_autoenv else None
        if self.envvar or name is None:
            return super().resolve_envvar_value(ctx)
        return os.environ.get(name) or None


def flag_variable(ctx: click.Context, option: click.Option) -> str | None:
    """The ``SPOOLER_<COMMAND>_<FLAG>`` variable that sets ``option``, named after its
    long flag; None for an option with no long flag or a command without the prefix."""
    flags = [opt for opt in option.opts if opt.startswith("--")]
    if not flags or ctx.auto_envvar_prefix is None:
        return None
    flag = max(flags, key=len).removeprefix("--").replace("-", "_").upper()
    return f"{ctx.auto_envvar_prefix}_{flag}"


def set_by_environment(ctx: click.Context) -> list[str]:
    """What each of the command's options that a variable set was set by: told with a
    config error, which may be theirs (a unit's environment file is easy to forget)."""
    lines = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
            name = param.envvar if isinstance(param.envvar, str) else flag_variable(ctx, param)
            lines.append(f"{max(param.opts, key=len)} is set by {name} in the environment")
    return lines


class UsageLine(click.UsageError):
    """A usage error shown as every error is: one line on stderr, exit 2."""

    def show(self, file: Any = None) -> None:
        """``spooler: error: MESSAGE; see 'spooler CMD --help'``."""
        hint = f"; see '{self.ctx.command_path} --help'" if self.ctx else ""
        message = self.format_message().rstrip(".")  # some of click's end in one
        click.echo(f"spooler: error: {message}{hint}", file=file, err=file is None)


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
    ctx: click.Context, _param: click.Parameter, ids: tuple[str, ...]
) -> tuple[str, ...]:
    """Callback of ``event_ids``: ``-`` alone means "read the ids from stdin, one per line".

    No id on stdin (a pipeline whose filter matched nothing) is nothing to do, and
    exits 0: not "every event", not a usage error.
    """
    if ids != ("-",):
        return ids
    read = tuple(line.strip() for _, line in stdin_lines())
    if not read:
        click.echo(f"no ids on stdin: nothing to {str(ctx.info_name).replace('-', ' ')}", err=True)
        ctx.exit(0)
    return read


#: The IDS argument of the commands that select events; ``-`` reads them from stdin
#: (``spooler dlq inspect --json | jq -r .id | spooler dlq purge -``), as each command's
#: help says.
event_ids = click.argument("ids", nargs=-1, callback=_ids_or_stdin)

#: ``--reason`` of the commands that select dead events.
reason_filter = click.option(
    "--reason",
    "-r",
    help="Only events dead for this reason: rejected, invalid, too_large, max_attempts,"
    " max_age, manual, corrupt, or one a client gave.",
)


def _db_option(**kwargs: Any) -> Callable[[CommandT], CommandT]:
    return click.option(
        "--db",
        envvar="SPOOLER_DB",
        metavar="PATH",
        help=f"Spool file, or postgresql:// URL [env SPOOLER_DB; default {DEFAULT_DB}].",
        **kwargs,
    )


def _config_option(**kwargs: Any) -> Callable[[CommandT], CommandT]:
    return click.option(
        "--config",
        envvar="SPOOLER_CONFIG",
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="TOML config file [env SPOOLER_CONFIG].",
        **kwargs,
    )


def _remember_group_option(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Callback of the group's --db and --config: kept for the command when typed."""
    if ctx.get_parameter_source(str(param.name)) is ParameterSource.COMMANDLINE:
        ctx.meta[f"spooler.{param.name}"] = value


def group_options(group: Callable[..., Any]) -> Callable[..., Any]:
    """Add --db and --config to the ``spooler`` group, for every command."""
    remembered = {"expose_value": False, "callback": _remember_group_option}
    return _db_option(**remembered)(_config_option(**remembered)(group))


def given_on_group(name: str, value: Any) -> Any:
    """A command's --db or --config: its own when typed, else the group's when typed,
    else ``value`` (from the environment, or None)."""
    ctx = click.get_current_context()
    if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
        return value
    return ctx.meta.get(f"spooler.{name}", value)


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --db, --config and --debug to a command; it receives an ``Options`` first."""

    @_db_option()
    @_config_option()
    @debug_option
    @functools.wraps(command)
    def wrapper(db: str | None, config: str | None, **kwargs: Any) -> Any:
        try:
            return command(
                Options(given_on_group("db", db), given_on_group("config", config)), **kwargs
            )
        except ConfigError as exc:
            settings = set_by_environment(click.get_current_context())
            if not settings:
                raise
            *first, last = exc.problems
            raise ConfigError(*first, f"{last} ({'; '.join(settings)})") from exc

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


def stdin_lines(max_bytes: int | None = None) -> Iterator[tuple[int, str]]:
    """The lines of stdin that are not blank, numbered from 1, read as UTF-8 as they come.

    Read as bytes and decoded here, not by the locale's text stream: under a UTF-8
    locale that stream raises on the first invalid byte (a traceback), under others it
    lets it through. A line that is not UTF-8 is an ``InvalidEventError`` naming it; so
    is a line longer than ``max_bytes``, as soon as that much of it is read (a line is
    never read whole first: memory stays bounded by ``max_bytes``). A closed stdin
    (``<&-``) is a usage error.
    """
    if sys.stdin is None:  # started with stdin closed (`<&-`): Python has none to read
        raise click.UsageError(
            "stdin is closed, so there is nothing to read: give the input as arguments,"
            " or on stdin (</dev/null for none)"
        )
    stream = sys.stdin.buffer
    size = -1 if max_bytes is None else max_bytes + 1  # room for the line break
    for number, raw in enumerate(iter(lambda: stream.readline(size), b""), 1):
        if max_bytes is not None and len(raw) > max_bytes and not raw.endswith(b"\n"):
            raise InvalidEventError(f"line {number}: longer than {max_bytes} bytes")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEventError(
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
