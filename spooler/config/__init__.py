"""Configuration: a TOML file, ``${ENV}`` interpolation and command-line flags, merged.

Flags win over the file, the file wins over the defaults. Every bad value raises a
``ConfigError`` that names the key, e.g. ``destinations.amp.batch_size``.

One module per job: ``file`` reads the file and checks its tables, ``drain`` makes the
destinations' and the drain's settings, ``serve`` the relay's, ``web`` the dashboard's,
and ``settings`` shows what a whole file resolves to.
"""

from __future__ import annotations

from ..checks import parse_duration
from .drain import DestinationConfig, DrainConfig, build_drain_config, select_destinations
from .file import config_db_path, load_config_file, read_config_file, spool_options
from .serve import SERVE_APIS, ServeConfig, build_serve_config
from .settings import config_warnings, resolved_settings
from .web import WebConfig, build_web_config

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
