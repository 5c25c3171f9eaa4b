"""What a whole config file resolves to, for ``spooler config check`` and for the
warnings of the commands that do not drain: every section checked at once, defaults
filled in, secrets masked.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ..destinations import spec_for
from ..errors import ConfigError
from ..redact import mask, masked_url
from ..spool import Spool
from ..store import shown_location
from .drain import DRAIN_KEYS, RETRY_KEYS, DestinationConfig, build_drain_config
from .file import SPOOL_KEYS, Problems, check_table, check_top_level, spool_options
from .serve import build_serve_config
from .web import build_web_config

__all__ = ["config_warnings", "resolved_settings"]

# The wording of interpolate's error for a variable the environment does not set (or
# sets to nothing): a producer need not hold the drain's keys.
_UNSET_VARIABLE = re.compile(r": environment variable \w+ is (not set|set but empty)$")


def resolved_settings(
    raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Everything a config file resolves to, defaults filled in, secrets masked.

    Raises ``ConfigError`` for what ``spooler drain`` or ``spooler enqueue`` would refuse,
    listing every mistake of every section at once.
    """
    settings: dict[str, Any] = {"db": None}
    problems = Problems()
    check_top_level(raw, problems)
    if isinstance(raw.get("db"), str):
        with problems.noted():
            settings["db"] = shown_location(raw["db"])
    # The keys the file leaves out, as Spool takes them then.
    settings["spool"] = {
        name: parameter.default
        for name, parameter in inspect.signature(Spool).parameters.items()
        if name in SPOOL_KEYS
    } | spool_options(raw, problems)
    # As it is written: 0640, not 416.
    settings["spool"]["file_mode"] = f"{settings['spool']['file_mode']:04o}"
    if "serve" in raw:
        with problems.noted():
            serve_config = build_serve_config(raw, env=env)
            serve = asdict(serve_config)
            for key in ("keys", "configured"):
                del serve[key]  # the destinations' own, shown with them
            # Those whose destination this file does not define: the relay answers 404.
            serve["refused_apis"] = [
                api for api in serve_config.destinations if serve_config.refuses(api)
            ]
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
        check_table(raw.get("retry", {}), RETRY_KEYS, "retry.", problems)
        check_table(raw.get("drain", {}), DRAIN_KEYS, "drain.", problems)
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
