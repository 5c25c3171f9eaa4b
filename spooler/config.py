"""Configuration: a TOML file, ``${ENV}`` interpolation and command-line flags, merged.

Flags win over the file, the file wins over the defaults. Every bad value raises a
``ConfigError`` that names the key, e.g. ``destinations.amp.batch_size``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from string import Template
from typing import Any

from .checks import (
    Checker,
    boolean,
    choice,
    integer,
    nonempty_string,
    parse_duration,
    positive_seconds,
    secret,
)
from .destinations import (
    DEFAULT_TYPE,
    DestinationSpec,
    all_options,
    destination_types,
    spec_for,
    type_for_url,
)
from .errors import ConfigError
from .events import DEFAULT_DESTINATION, check_destination_name
from .files import check_file_mode
from .history import DEFAULT_KEEP
from .redact import mask, masked_url
from .retry import RetryPolicy
from .store import is_url, shown_location

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "SERVE_APIS",
    "DestinationConfig",
    "DrainConfig",
    "ServeConfig",
    "WebConfig",
    "build_drain_config",
    "build_serve_config",
    "build_web_config",
    "config_db_path",
    "config_warnings",
    "load_config_file",
    "parse_duration",
    "read_config_file",
    "resolved_settings",
    "select_destinations",
    "spool_options",
]

#: The ingest APIs ``spooler serve`` speaks; each one's events go to a destination of
#: the type of the same name.
SERVE_APIS = ("amplitude", "segment", "posthog", "datalyr")


@dataclass(frozen=True)
class DestinationConfig:
    """Where and how one destination's events are delivered: the keys every type has,
    and ``options``, the keys of its type alone (``HttpOptions``, ``AmplitudeOptions``,
    ...: see the type's module in ``spooler.destinations``).

    Usage::

        DestinationConfig(name="default", url="https://collector.example/v1/batch",
                          batch_size=100, api_key="sk_live_...")
    """

    name: str
    url: str
    type: str = DEFAULT_TYPE
    batch_size: int = 500
    concurrency: int = 4
    timeout: float = 10.0
    api_key: str | None = field(default=None, repr=False)
    auth_header: str = "Authorization"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    batch_key: str | None = None
    id_field: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    options: Any = None  # None: the type's defaults

    def __post_init__(self) -> None:
        if self.options is None:
            object.__setattr__(self, "options", spec_for(self.type).options())


@dataclass(frozen=True)
class DrainConfig:
    """Everything a drain needs: its destinations and the worker's own timings."""

    destinations: Mapping[str, DestinationConfig]
    lease: float = 60.0
    poll_interval: float = 1.0
    summary_interval: float = 60.0
    history: float = DEFAULT_KEEP  # seconds of per-minute history kept (0: none)


@dataclass(frozen=True)
class ServeConfig:
    """What ``spooler serve`` listens on, whose events go where, and which keys it takes.

    ``destinations`` maps each API to the destination its events are for; ``keys`` maps
    destinations to their configured API key, which a request may present (as may
    ``token``); ``configured`` names the destinations the config file defines (None:
    it defines none, and the generic endpoint takes any name).
    """

    host: str = "127.0.0.1"
    port: int = 8420
    token: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False
    destinations: Mapping[str, str] = field(default_factory=lambda: {a: a for a in SERVE_APIS})
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    min_id_length: int | None = None
    configured: frozenset[str] | None = None
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_connections: int = 1024


@dataclass(frozen=True)
class WebConfig:
    """What ``spooler web`` listens on, and the token a browser logs in with (needed to
    listen beyond loopback)."""

    host: str = "127.0.0.1"
    port: int = 8421
    token: str | None = field(default=None, repr=False)


# -- the keys of each table, and how each value is checked ---------------------------------


def _destination_type(value: Any, key: str) -> str:
    return choice(*destination_types())(value, key)


def _headers(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of header names to values")
    return {name: secret(text, f"{key}.{name}") for name, text in value.items()}


_RETRY_KEYS: dict[str, Checker] = {
    "max_attempts": integer(1),
    "max_age": positive_seconds,
    "backoff_base": positive_seconds,
    "backoff_cap": positive_seconds,
}
# The keys every destination type has; each type's own are in its options.
_DESTINATION_KEYS: dict[str, Checker] = {
    "type": _destination_type,
    "url": nonempty_string,
    "batch_size": integer(1, 10_000),
    "concurrency": integer(1, 64),
    "timeout": positive_seconds,
    "api_key": secret,
    "auth_header": nonempty_string,
    "headers": _headers,
    "batch_key": nonempty_string,
    "id_field": nonempty_string,
    **_RETRY_KEYS,
}
_DRAIN_KEYS: dict[str, Checker] = {
    "lease": positive_seconds,
    "poll_interval": positive_seconds,
    "summary_interval": positive_seconds,
    "history": lambda value, key: parse_duration(value, key=key),  # 0: keep none
}
_SPOOL_KEYS: dict[str, Checker] = {
    "durability": choice("full", "normal"),
    "max_events": integer(1),
    "max_bytes": integer(1),
    "max_event_bytes": integer(1),
    "file_mode": check_file_mode,
}


def _api_destinations(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of API names to destination names")
    for api, name in value.items():
        if api not in SERVE_APIS:
            raise _unknown_key(api, set(SERVE_APIS), f"{key}.")
        try:
            check_destination_name(name)
        except ConfigError as exc:
            raise ConfigError(f"{key}.{api}: {exc}") from None
    return dict(value)


_SERVE_KEYS: dict[str, Checker] = {
    "host": nonempty_string,
    "port": integer(0, 65535),
    "token": nonempty_string,
    "allow_unauthenticated": boolean,
    "destinations": _api_destinations,
    "header_timeout": positive_seconds,
    "body_timeout": positive_seconds,
    "idle_timeout": positive_seconds,
    "max_connections": integer(1),
}
_WEB_KEYS: dict[str, Checker] = {
    "host": nonempty_string,
    "port": integer(0, 65535),
    "token": secret,
}
_TOP_KEYS = {"db", "spool", "drain", "retry", "destinations", "serve", "web"}
# Strings where ${VAR} is replaced from the environment, so secrets stay out of the file
# (and each type's own keys that are secrets, serve.token, and the top level's db when
# the file is read).
_INTERPOLATED = {"url", "api_key", "auth_header", "headers"}
_UNSET_VARIABLE = re.compile(r": environment variable \w+ is not set$")


class _Problems:
    """The problems a check has found so far, so that one run reports them all: an
    operator mending a config at 3 a.m. should not have to run it once per mistake."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @contextmanager
    def noted(self) -> Iterator[None]:
        """Note the ``ConfigError`` the block raises, instead of letting it through."""
        try:
            yield
        except ConfigError as exc:
            self.found.extend(exc.problems)

    def raise_any(self) -> None:
        """Raise one ``ConfigError`` with every problem noted, if there is one."""
        if self.found:
            raise ConfigError(*self.found)


def _unknown_key(key: str, known: set[str] | Mapping[str, Any], where: str) -> ConfigError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"{where}{key}: unknown key{suggestion}")


def _check_table(
    table: Any, spec: Mapping[str, Checker], where: str, problems: _Problems | None = None
) -> dict[str, Any]:
    """The table's values, checked. Its problems are raised, or noted in ``problems``
    (then the values that are right are returned, so that the checks that use them go
    on and report their own problems in the same run)."""
    noted = problems if problems is not None else _Problems()
    checked = {}
    with noted.noted():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where.rstrip('.')}: expected a table")
        for key, value in table.items():
            with noted.noted():
                if key not in spec:
                    raise _unknown_key(key, spec, where)
                checked[key] = spec[key](value, f"{where}{key}")
    if problems is None:
        noted.raise_any()
    return checked


def _interpolate(value: Any, key: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, Mapping):
        return {name: _interpolate(text, f"{key}.{name}", env) for name, text in value.items()}
    try:
        return Template(value).substitute(env)
    except KeyError as exc:  # config_warnings knows this wording (_UNSET_VARIABLE)
        raise ConfigError(f"{key}: environment variable {exc.args[0]} is not set") from None
    except ValueError as exc:
        raise ConfigError(f"{key}: bad ${{VAR}} reference ({exc})") from None


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a TOML config file; the top level is checked, sections later."""
    raw = read_config_file(path)
    problems = _Problems()
    _check_top_level(raw, problems)
    problems.raise_any()
    return raw


def read_config_file(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Read and parse a TOML config file, unchecked but for ``db``, which is resolved:
    ``${VAR}`` replaced from ``env`` (default: the environment; a database password
    kept out of the file), then a relative path made relative to the file.
    ``resolved_settings`` checks all of it."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets this one through
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 at byte {exc.start}") from None
    if isinstance(raw.get("db"), str):
        raw["db"] = _interpolate(raw["db"], "db", os.environ if env is None else env)
        if not is_url(raw["db"]):
            # Relative to the file, not to wherever the command runs: a shell script and
            # a service (whose working directory is /) reading one config share one spool.
            db = os.path.expanduser(raw["db"])
            raw["db"] = os.path.join(os.path.dirname(os.path.abspath(path)), db)
    return raw


def _check_top_level(raw: Mapping[str, Any], problems: _Problems) -> None:
    for key in raw:
        with problems.noted():
            if key not in _TOP_KEYS:
                raise _unknown_key(key, _TOP_KEYS, "")
    if "db" in raw:
        with problems.noted():
            nonempty_string(raw["db"], "db")


def spool_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``Spool`` from the config file's ``[spool]`` table."""
    return _check_table(raw.get("spool", {}), _SPOOL_KEYS, "spool.")


def _check_type_rules(
    dest: DestinationConfig, spec: DestinationSpec, where: str, foreign: Mapping[str, Any]
) -> None:
    """What the type asks of the keys every type has, and no key of another type."""
    if spec.needs_api_key and not dest.api_key:
        raise ConfigError(f"{where}api_key: the {dest.type} destination needs its API key")
    if spec.api_key_prefix and not (dest.api_key or "").startswith(spec.api_key_prefix):
        raise ConfigError(
            f"{where}api_key: a {spec.title or spec.name} API key starts with"
            f" '{spec.api_key_prefix}'"
        )
    limit = spec.max_batch_size
    if limit is not None and dest.batch_size > limit:
        raise ConfigError(
            f"{where}batch_size: {dest.type} accepts at most {limit} events "
            f"per request, got {dest.batch_size}"
        )
    for key in foreign:
        owners = ", ".join(all_options()[key][1])
        raise ConfigError(f"{where}{key}: only for {owners} destinations")


# An HTTP header name is a "token" (RFC 9110); values must not hold control characters,
# or the request cannot be sent at all (and httpx's error would quote the value).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_headers(dest: DestinationConfig, spec: DestinationSpec, where: str) -> None:
    names = {**{name: f"headers.{name}" for name in dest.headers}, dest.auth_header: "auth_header"}
    for name, key in names.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{where}{key}: {name!r} is not a valid HTTP header name")
    values = {f"headers.{name}": value for name, value in dest.headers.items()}
    if dest.api_key is not None:
        values["api_key"] = dest.api_key
    for key, value in values.items():
        if _CONTROL_CHARACTER.search(value):  # the value may be a secret: never shown
            raise ConfigError(
                f"{where}{key}: holds a line break or another control character "
                "(a trailing newline read from a file?)"
            )
    if dest.api_key and spec.key_in_auth_header:
        # The key's header would silently replace the one given in headers.
        clash = [h for h in dest.headers if h.lower() == dest.auth_header.lower()]
        if clash:
            raise ConfigError(
                f"{where}headers: {clash[0]} is also where api_key goes; set one of the two"
            )


def build_drain_config(
    raw: Mapping[str, Any],
    *,
    destination_flags: Mapping[str, Any] | None = None,
    retry_flags: Mapping[str, Any] | None = None,
    drain_flags: Mapping[str, Any] | None = None,
    flag_destination: str = DEFAULT_DESTINATION,
    env: Mapping[str, str] | None = None,
) -> DrainConfig:
    """Merge a parsed config file with flags into a checked ``DrainConfig``.

    ``destination_flags`` (url, type, api_key, batch_size, ...) describe destination
    ``flag_destination`` (``default`` unless named; a type with a well-known endpoint
    needs no url); ``retry_flags`` apply to every destination. ``None`` values mean "not
    given" and leave the file's value in place. The ``ConfigError`` lists every problem
    found: those of the shared tables (``[retry]``, ``[drain]``, flags), then those of
    every destination, checked with what is right in the shared tables.
    """
    env = os.environ if env is None else env

    def given(flags: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (flags or {}).items() if v is not None}

    # The destinations are checked with what is right in the shared tables, so that a
    # typo in [retry] does not hide their own mistakes.
    problems = _Problems()
    base_retry = _check_table(raw.get("retry", {}), _RETRY_KEYS, "retry.", problems)
    drain = _check_table(raw.get("drain", {}), _DRAIN_KEYS, "drain.", problems)
    drain.update(_check_table(given(drain_flags), _DRAIN_KEYS, "option ", problems))
    retry_overrides = _check_table(given(retry_flags), _RETRY_KEYS, "option ", problems)

    tables = raw.get("destinations", {})
    if not isinstance(tables, Mapping):
        problems.found.append("destinations: expected a table of [destinations.NAME] tables")
        problems.raise_any()
    flags = given(destination_flags)
    names = list(tables)
    if flags and flag_destination not in tables:
        if "url" not in flags and _default_url(flags.get("type")) is None:
            problems.found.append(
                f"destination flags need --url, or a --type with a known endpoint (or "
                f"[destinations.{flag_destination}] in the config)"
            )
            problems.raise_any()
        names.append(flag_destination)
    if not names:
        problems.found.append(
            "no destination to drain: give --url (or --type with a known endpoint), or "
            "--config with [destinations.NAME]"
        )
        problems.raise_any()

    destinations = {}
    for name in names:
        with problems.noted():
            destinations[name] = _destination_config(
                name,
                tables.get(name, {}),
                flags if name == flag_destination else {},
                file_retry=base_retry,
                flag_retry=retry_overrides,
                lease=drain.get("lease", DrainConfig.lease),
                env=env,
            )
    problems.raise_any()
    return DrainConfig(destinations=destinations, **drain)


def select_destinations(config: DrainConfig, names: Sequence[str]) -> DrainConfig:
    """``config`` with only the destinations ``names`` (all of them when there is none);
    a name it does not define is a ``ConfigError`` that lists those it does."""
    if not names:
        return config
    unknown = sorted(set(names) - set(config.destinations))
    if unknown:
        raise ConfigError(
            f"unknown destination {', '.join(unknown)}; configured: "
            f"{', '.join(sorted(config.destinations))} (one -d with --type or --url "
            "defines the destination it names)"
        )
    return replace(config, destinations={name: config.destinations[name] for name in names})


def _destination_config(
    name: str,
    table: Any,
    flags: Mapping[str, Any],
    *,
    file_retry: Mapping[str, Any],
    flag_retry: Mapping[str, Any],
    lease: float,
    env: Mapping[str, str],
) -> DestinationConfig:
    """Destination ``name`` from its table, then ``flags`` over it. Its retry settings
    override the file's ``[retry]``, and retry flags override both."""
    where = f"destinations.{name}."
    try:
        check_destination_name(name)
    except ConfigError as exc:
        raise ConfigError(f"destinations.{name}: {exc}") from None
    # A key of any type is checked here (so that a typo is told from another type's
    # key); whether it is this type's, once the type is known.
    every_option = all_options()
    keys = {**_DESTINATION_KEYS, **{key: how.check for key, (how, _) in every_option.items()}}
    interpolated = _INTERPOLATED | {key for key, (how, _) in every_option.items() if how.secret}
    problems = _Problems()
    values: dict[str, Any] = {}
    with problems.noted():
        values = _check_table(table, keys, where)
    # Only the file is interpolated: a flag's value is taken as typed.
    for key in interpolated & values.keys():
        with problems.noted():
            values[key] = _interpolate(values[key], where + key, env)
    with problems.noted():
        values.update(_check_table(flags, keys, where))
    problems.raise_any()

    if "url" not in values and _default_url(values.get("type")) is not None:
        values["url"] = _default_url(values["type"])
    if "url" not in values:
        raise ConfigError(f"{where}url: missing (where should events go?)")
    own_retry = {k: values.pop(k) for k in _RETRY_KEYS if k in values}
    policy = RetryPolicy(**{**file_retry, **own_retry, **flag_retry})
    if policy.backoff_cap < policy.backoff_base:
        raise ConfigError(f"{where}backoff_cap: must not be below backoff_base")
    spec = spec_for(values.setdefault("type", type_for_url(values["url"])))
    given_options = {key: values.pop(key) for key in every_option.keys() & values.keys()}
    own = spec.option_fields()
    foreign = {key: value for key, value in given_options.items() if key not in own}
    options = spec.options(**{k: v for k, v in given_options.items() if k in own})
    dest = DestinationConfig(
        name=name, retry=policy, options=options, **{**spec.defaults, **values}
    )
    for check in spec.checks:
        with problems.noted():
            check(dest, where)
    with problems.noted():
        _check_headers(dest, spec, where)
    with problems.noted():
        _check_type_rules(dest, spec, where, foreign)
    with problems.noted():
        if dest.timeout >= lease:
            raise ConfigError(
                f"{where}timeout: {dest.timeout:g}s must be shorter than the lease "
                f"({lease:g}s), or another drain could take over in-flight events"
            )
    problems.raise_any()
    if spec.max_concurrency is not None and dest.concurrency > spec.max_concurrency:
        dest = replace(dest, concurrency=spec.max_concurrency)
    return dest


def _default_url(kind: Any) -> str | None:
    """The well-known endpoint of destination type ``kind``, if it is one and has one."""
    return spec_for(kind).default_url if kind in destination_types() else None


def build_serve_config(
    raw: Mapping[str, Any],
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeConfig:
    """The file's ``[serve]`` table with ``flags`` over it (None values: not given), and
    the keys of the destinations the APIs' events go to, from its ``[destinations]``.

    A destination an API's events go to must be of that API's type, where the file
    defines it. Listening on an address other than loopback needs a ``token`` (or
    ``allow_unauthenticated``): else any host that reaches the port could fill the spool.
    """
    env = os.environ if env is None else env
    values = _check_table(raw.get("serve", {}), _SERVE_KEYS, "serve.")
    if "token" in values:
        values["token"] = _interpolate(values["token"], "serve.token", env)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    values.update(_check_table(given, _SERVE_KEYS, "option "))
    values["destinations"] = {
        **{api: api for api in SERVE_APIS},
        **values.get("destinations", {}),
    }
    if raw.get("destinations"):
        drain = build_drain_config(raw, env=env)
        for api, name in values["destinations"].items():
            dest = drain.destinations.get(name)
            if dest is not None and dest.type != api:
                raise ConfigError(
                    f"serve.destinations.{api}: destination {name!r} is of type {dest.type},"
                    f" not {api}"
                )
        values["keys"] = {n: d.api_key for n, d in drain.destinations.items() if d.api_key}
        values["configured"] = frozenset(drain.destinations)
        # Of type amplitude (checked above), so its options are AmplitudeOptions.
        amplitude = drain.destinations.get(values["destinations"]["amplitude"])
        values["min_id_length"] = amplitude.options.min_id_length if amplitude else None
    config = ServeConfig(**values)
    if not (config.token or config.allow_unauthenticated or _is_loopback(config.host)):
        raise ConfigError(
            f"serve.host: listening on {config.host} lets other hosts post events: set a"
            " token (serve.token, SPOOLER_SERVE_TOKEN) that requests must present, or"
            " --allow-unauthenticated"
        )
    return config


def build_web_config(
    raw: Mapping[str, Any],
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> WebConfig:
    """The file's ``[web]`` table with ``flags`` over it (None values: not given). Listening
    on an address other than loopback needs a ``token``: the pages show the events'
    payloads, and their actions replay and purge."""
    env = os.environ if env is None else env
    values = _check_table(raw.get("web", {}), _WEB_KEYS, "web.")
    if "token" in values:
        values["token"] = _interpolate(values["token"], "web.token", env)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    values.update(_check_table(given, _WEB_KEYS, "option "))
    config = WebConfig(**values)
    if not config.token and not _is_loopback(config.host):
        raise ConfigError(
            f"web.host: listening on {config.host} shows the spool's events to other hosts:"
            " set a token (web.token, SPOOLER_WEB_TOKEN) to log in with"
        )
    return config


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any address


def config_db_path(raw: Mapping[str, Any]) -> str | None:
    """The ``db`` key of a config file, if any (a str: a ``Path`` would turn a URL's
    ``//`` into ``/``, and a URL into a path)."""
    return raw.get("db")


def resolved_settings(
    raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Everything a config file resolves to, defaults filled in, secrets masked.

    Raises ``ConfigError`` for what ``spooler drain`` or ``spooler enqueue`` would refuse,
    listing every mistake of every section at once.
    """
    settings: dict[str, Any] = {"db": None}
    problems = _Problems()
    _check_top_level(raw, problems)
    if isinstance(raw.get("db"), str):
        with problems.noted():
            settings["db"] = shown_location(raw["db"])
    settings["spool"] = _check_table(raw.get("spool", {}), _SPOOL_KEYS, "spool.", problems)
    if "file_mode" in settings["spool"]:  # as it is written: 0640, not 416
        settings["spool"]["file_mode"] = f"{settings['spool']['file_mode']:04o}"
    if "serve" in raw:
        with problems.noted():
            serve = asdict(build_serve_config(raw, env=env))
            for key in ("keys", "configured"):
                del serve[key]  # the destinations' own, shown with them
            if serve["token"] is not None:
                serve["token"] = mask(serve["token"])
            settings["serve"] = serve
    if "web" in raw:
        with problems.noted():
            web = asdict(build_web_config(raw, env=env))
            if web["token"] is not None:
                web["token"] = mask(web["token"])
            settings["web"] = web
    if not raw.get("destinations"):
        # A producer-only file: nothing to drain, but the shared tables are still its own.
        _check_table(raw.get("retry", {}), _RETRY_KEYS, "retry.", problems)
        _check_table(raw.get("drain", {}), _DRAIN_KEYS, "drain.", problems)
        problems.raise_any()
        settings["destinations"] = {}
        return settings
    with problems.noted():
        config = build_drain_config(raw, env=env)
    problems.raise_any()
    settings["drain"] = {
        "lease": config.lease,
        "poll_interval": config.poll_interval,
        "summary_interval": config.summary_interval,
        "history": config.history,
    }
    settings["destinations"] = {}
    for name, dest in config.destinations.items():
        settings["destinations"][name] = _shown(dest)
    return settings


def _shown(dest: DestinationConfig) -> dict[str, Any]:
    """A destination's settings as ``spooler config check`` shows them: its type's own
    keys beside the others, secrets masked."""
    shown = asdict(dest)
    del shown["name"], shown["options"]
    if dest.api_key is not None:
        shown["api_key"] = mask(dest.api_key)
    shown["headers"] = {header: mask(value) for header, value in dest.headers.items()}
    shown["url"] = masked_url(dest.url)
    for key, how in spec_for(dest.type).option_fields().items():
        value = getattr(dest.options, key)
        if how.secret and value is not None:
            value = mask(value)
        elif how.shown is not None:
            value = how.shown(value)
        shown[key] = value
    return shown


def config_warnings(
    raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The mistakes a command that does not drain warns of: every problem
    ``resolved_settings`` finds, but for variables this environment leaves unset (a
    producer's environment need not hold the drain's secrets)."""
    try:
        resolved_settings(raw, env=env)
    except ConfigError as exc:
        return tuple(problem for problem in exc.problems if not _UNSET_VARIABLE.search(problem))
    return ()
