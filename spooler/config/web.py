"""The dashboard's config (``spooler web``): the file's ``[web]`` table with the command
line's flags over it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checks import Checker, integer, nonempty_string, secret
from ..errors import ConfigError
from .file import section_with_flags
from .serve import is_loopback

__all__ = ["WebConfig", "build_web_config"]


@dataclass(frozen=True)
class WebConfig:
    """What ``spooler web`` listens on, and the token a browser logs in with (needed to
    listen beyond loopback)."""

    host: str = "127.0.0.1"
    port: int = 8421
    token: str | None = field(default=None, repr=False)


_WEB_KEYS: dict[str, Checker] = {
    "host": nonempty_string,
    "port": integer(0, 65535),
    "token": secret,
}


def build_web_config(
    raw: Mapping[str, Any],
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> WebConfig:
    """The file's ``[web]`` table with ``flags`` over it (None values: not given). Listening
    on an address other than loopback needs a ``token``: the pages show the events'
    payloads, and their actions replay and purge."""
    values = section_with_flags(raw, "web", _WEB_KEYS, flags, os.environ if env is None else env)
    config = WebConfig(**values)
    if not config.token and not is_loopback(config.host):
        raise ConfigError(
            f"web.host: listening on {config.host} shows the spool's events to other hosts:"
            " set a token (web.token, SPOOLER_WEB_TOKEN) to log in with"
        )
    return config
