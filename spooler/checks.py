"""Value checkers for configuration keys: each takes ``(value, key)`` and returns the
value converted, or raises a ``ConfigError`` that names ``key``.

``config`` checks the shared tables with them, and each destination type its own keys
(``spooler.destinations``), so that both speak alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

__all__ = [
    "Checker",
    "boolean",
    "choice",
    "integer",
    "nonempty_string",
    "parse_duration",
    "positive_seconds",
    "secret",
]

Checker = Callable[[Any, str], Any]

_DURATION = re.compile(r"(\d+(?:\.\d*)?)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object, *, key: str = "duration") -> float:
    """Seconds from ``90s``, ``15m``, ``12h``, ``3d`` or plain seconds (str or number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        raise ConfigError(f"{key}: expected a duration like 90s, 15m, 12h, 3d, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{key}: a duration cannot be negative, got {value!r}")
    return seconds


def integer(low: int, high: int | None = None) -> Callable[[Any, str], int]:
    """A checker for an integer from ``low`` to ``high`` (no upper bound: None)."""

    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"{key}: must be {bound}, got {value}")
        return value

    return check


def positive_seconds(value: Any, key: str) -> float:
    """A duration of more than zero seconds (``parse_duration``'s forms)."""
    seconds = parse_duration(value, key=key)
    if seconds <= 0:
        raise ConfigError(f"{key}: must be more than zero, got {value!r}")
    return seconds


def nonempty_string(value: Any, key: str) -> str:
    """A string with something in it."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def secret(value: Any, key: str) -> str:
    """A string that may be a secret: a mistyped one is not shown, only its type."""
    if value == "":
        raise ConfigError(f"{key}: expected a non-empty string, got an empty one")
    if not isinstance(value, str):
        raise ConfigError(
            f"{key}: expected a non-empty string, got a value of type {type(value).__name__}"
            " (not shown: it may be a secret)"
        )
    return value


def boolean(value: Any, key: str) -> bool:
    """``true`` or ``false``, nothing that merely looks like one."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def choice(*options: str) -> Callable[[Any, str], str]:
    """A checker for one of ``options``."""

    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise ConfigError(f"{key}: must be one of {', '.join(options)}; got {value!r}")
        return value

    return check
