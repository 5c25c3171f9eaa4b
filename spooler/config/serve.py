"""The relay's config (``spooler serve``): the file's ``[serve]`` table with the command
line's flags over it, and what it takes from the file's ``[destinations]``: the keys a
request may present, and the destinations each API's events go to.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checks import Checker, boolean, integer, nonempty_string, positive_seconds
from ..destinations import options_of
from ..destinations.amplitude import AmplitudeOptions
from ..errors import ConfigError
from ..events import check_destination_name
from .drain import build_drain_config
from .file import section_with_flags, unknown_key

__all__ = ["SERVE_APIS", "ServeConfig", "build_serve_config", "is_loopback"]

#: The ingest APIs ``spooler serve`` speaks; each one's events go to a destination of
#: the type of the same name.
SERVE_APIS = ("amplitude", "segment", "posthog", "datalyr")


@dataclass(frozen=True)
class ServeConfig:
    """What ``spooler serve`` listens on, whose events go where, and which keys it takes.

    ``destinations`` maps each API to the destination its events are for; ``keys`` maps
    destinations to their configured API key, which a request may present (as may
    ``token``); ``configured`` names the destinations the config file defines (None:
    it defines none, and the relay takes events for any name). Where the file defines
    destinations, the relay refuses (404) a request for one it does not define: on the
    generic endpoint, and on an API whose destination it is (``refuses``).
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
    # A commit waits up to the SQLite spool's busy timeout (60s) for the write lock, then
    # fails (503); one that has not returned well after that is stuck.
    commit_timeout: float = 90.0

    def refuses(self, api: str) -> bool:
        """Whether the relay refuses ``api``'s requests: the config file defines
        destinations, but not the one ``api``'s events go to (no drain with the file
        would ever deliver them)."""
        return self.configured is not None and self.destinations[api] not in self.configured


def _api_destinations(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of API names to destination names")
    for api, name in value.items():
        if api not in SERVE_APIS:
            raise unknown_key(api, set(SERVE_APIS), f"{key}.")
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
    "commit_timeout": positive_seconds,
}


def build_serve_config(
    raw: Mapping[str, Any],
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeConfig:
    """The file's ``[serve]`` table with ``flags`` over it (None values: not given), and
    the keys of the destinations the APIs' events go to, from its ``[destinations]``.

    Where the file defines destinations, one an API is routed to (``serve.destinations``)
    must be among them, and of that API's type. Listening on an address other than
    loopback needs a ``token`` (or ``allow_unauthenticated``): else any host that reaches
    the port could fill the spool.
    """
    env = os.environ if env is None else env
    values = section_with_flags(raw, "serve", _SERVE_KEYS, flags, env)
    routed = values.get("destinations", {})
    values["destinations"] = {**{api: api for api in SERVE_APIS}, **routed}
    if raw.get("destinations"):
        drain = build_drain_config(raw, env=env)
        for api, name in values["destinations"].items():
            dest = drain.destinations.get(name)
            if dest is None and api in routed:
                # Routed there on purpose, yet no drain with this file would deliver them.
                raise ConfigError(
                    f"serve.destinations.{api}: no destination {name!r} is defined: define"
                    f" [destinations.{name}] with type = '{api}', or route {api} to one"
                    " that is"
                )
            if dest is not None and dest.type != api:
                raise ConfigError(
                    f"serve.destinations.{api}: destination {name!r} is of type {dest.type},"
                    f" not {api}"
                )
        values["keys"] = {n: d.api_key for n, d in drain.destinations.items() if d.api_key}
        values["configured"] = frozenset(drain.destinations)
        # Of type amplitude (checked above), so its options are AmplitudeOptions.
        amplitude = drain.destinations.get(values["destinations"]["amplitude"])
        values["min_id_length"] = (
            options_of(amplitude, AmplitudeOptions).min_id_length if amplitude else None
        )
    config = ServeConfig(**values)
    if not (config.token or config.allow_unauthenticated or is_loopback(config.host)):
        raise ConfigError(
            f"serve.host: listening on {config.host} lets other hosts post events: set a"
            " token (serve.token, SPOOLER_SERVE_TOKEN) that requests must present, or"
            " --allow-unauthenticated"
        )
    return config


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, ``127.0.0.1``, ``::1``):
    else other hosts may reach what listens there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any address
