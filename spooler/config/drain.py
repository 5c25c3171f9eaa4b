"""The drain's config: each destination's settings (``DestinationConfig``) and the
drain's own (``DrainConfig``), from the file's ``[destinations.NAME]``, ``[retry]`` and
``[drain]`` tables with the command line's flags over them.

A destination's type is asked of the registry (``spooler.destinations``): its default
URL, its limits, its own keys and its checks. This module knows no type by name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..checks import (
    Checker,
    choice,
    integer,
    nonempty_string,
    parse_duration,
    positive_seconds,
    secret,
)
from ..destinations import (
    DEFAULT_TYPE,
    DestinationOptions,
    DestinationSpec,
    NoOptions,
    all_options,
    destination_types,
    spec_for,
    type_for_url,
)
from ..errors import ConfigError
from ..events import DEFAULT_DESTINATION, check_destination_name, events_phrase
from ..history import DEFAULT_KEEP
from ..retry import RetryPolicy
from .file import Problems, check_table, interpolate

__all__ = [
    "DRAIN_KEYS",
    "RETRY_KEYS",
    "DestinationConfig",
    "DrainConfig",
    "build_drain_config",
    "select_destinations",
]


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
    options: DestinationOptions = field(default_factory=NoOptions)

    def __post_init__(self) -> None:
        # Options not given (NoOptions) are the type's defaults.
        if type(self.options) is NoOptions:
            object.__setattr__(self, "options", spec_for(self.type).options())


@dataclass(frozen=True)
class DrainConfig:
    """Everything a drain needs: its destinations and the worker's own timings."""

    destinations: Mapping[str, DestinationConfig]
    lease: float = 60.0
    poll_interval: float = 1.0
    summary_interval: float = 60.0
    history: float = DEFAULT_KEEP  # seconds of per-minute history kept (0: none)


# -- the keys of each table, and how each value is checked ---------------------------------


def _destination_type(value: Any, key: str) -> str:
    return choice(*destination_types())(value, key)


def _headers(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of header names to values")
    return {name: secret(text, f"{key}.{name}") for name, text in value.items()}


RETRY_KEYS: dict[str, Checker] = {
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
    **RETRY_KEYS,
}
DRAIN_KEYS: dict[str, Checker] = {
    "lease": positive_seconds,
    "poll_interval": positive_seconds,
    "summary_interval": positive_seconds,
    "history": lambda value, key: parse_duration(value, key=key),  # 0: keep none
}
# Strings where ${VAR} is replaced from the environment, so secrets stay out of the file
# (and each type's own keys that are secrets).
_INTERPOLATED = {"url", "api_key", "auth_header", "headers"}


def _check_type_rules(
    dest: DestinationConfig, spec: DestinationSpec, where: str, foreign: Mapping[str, Any]
) -> None:
    """What the type asks of the keys every type has, and no key of another type."""
    if spec.needs_api_key and not dest.api_key:
        raise ConfigError(f"{where}api_key: the {dest.type} destination needs its API key")
    if spec.api_key_prefix and not (dest.api_key or "").startswith(spec.api_key_prefix):
        raise ConfigError(
            f"{where}api_key: {spec.title or spec.name} API keys start with '{spec.api_key_prefix}'"
        )
    limit = spec.max_batch_size
    if limit is not None and dest.batch_size > limit:
        raise ConfigError(
            f"{where}batch_size: {dest.type} accepts at most {events_phrase(limit)} "
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
    problems = Problems()
    base_retry = check_table(raw.get("retry", {}), RETRY_KEYS, "retry.", problems)
    drain = check_table(raw.get("drain", {}), DRAIN_KEYS, "drain.", problems)
    drain.update(check_table(given(drain_flags), DRAIN_KEYS, "option ", problems))
    retry_overrides = check_table(given(retry_flags), RETRY_KEYS, "option ", problems)

    tables = raw.get("destinations", {})
    if not isinstance(tables, Mapping):
        problems.found.append("destinations: expected a table of [destinations.NAME] tables")
        problems.raise_any()
    flags = given(destination_flags)
    names = list(tables)
    if flags and flag_destination not in tables:
        if "url" not in flags and _default_url(flags.get("type")) is None:
            problems.found.append(_flags_without_destination(flags, flag_destination, names))
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


def _flags_without_destination(
    flags: Mapping[str, Any], flag_destination: str, defined: Sequence[str]
) -> str:
    """The error for destination flags that describe a destination with no url: which
    flags, and, where the config defines others, the way to apply them to one (an
    operator who set one flag in a unit's environment file sees only this line)."""
    given = ", ".join(
        "--header" if key == "headers" else f"--{key}".replace("_", "-") for key in flags
    )
    needs = "destination flags need --url, or a --type with a known endpoint"
    if not defined:
        return f"{needs} (given: {given})"
    return (
        f"{needs}: {given} {'is' if len(flags) == 1 else 'are'} for destination"
        f" {flag_destination!r}, which the config does not define (it has"
        f" {', '.join(defined)}); give -d NAME to apply {'it' if len(flags) == 1 else 'them'}"
        f" to one of those, or [destinations.{flag_destination}] in the config"
    )


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
    problems = Problems()
    values: dict[str, Any] = {}
    with problems.noted():
        values = check_table(table, keys, where)
    # Only the file is interpolated: a flag's value is taken as typed.
    for key in interpolated & values.keys():
        with problems.noted():
            values[key] = interpolate(values[key], where + key, env)
    with problems.noted():
        values.update(check_table(flags, keys, where))
    problems.raise_any()

    if "url" not in values and _default_url(values.get("type")) is not None:
        values["url"] = _default_url(values["type"])
    if "url" not in values:
        raise ConfigError(f"{where}url: missing (where should events go?)")
    own_retry = {k: values.pop(k) for k in RETRY_KEYS if k in values}
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
