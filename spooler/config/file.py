"""The config file: TOML read and parsed, ``${VAR}`` replaced from the environment, and
tables checked so that one run reports every problem.

The sections are each checked by the module of the command that reads them
(``config.drain``, ``config.serve``, ``config.web``); the ``[spool]`` table and the file's own keys
(``db``) are checked here.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from string import Template
from typing import Any

from ..checks import Checker, choice, integer, nonempty_string
from ..errors import ConfigError
from ..files import check_file_mode
from ..store import is_conninfo, is_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "SPOOL_KEYS",
    "Problems",
    "check_table",
    "check_top_level",
    "config_db_path",
    "interpolate",
    "load_config_file",
    "read_config_file",
    "section_with_flags",
    "spool_options",
    "unknown_key",
]

_TOP_KEYS = {"db", "spool", "drain", "retry", "destinations", "serve", "web"}
SPOOL_KEYS: dict[str, Checker] = {
    "durability": choice("full", "normal"),
    "max_events": integer(1),
    "max_bytes": integer(1),
    "max_event_bytes": integer(1),
    "file_mode": check_file_mode,
}


class Problems:
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


def unknown_key(key: str, known: set[str] | Mapping[str, Any], where: str) -> ConfigError:
    """The error for ``key``, which is none of ``known``: with the likeliest it meant."""
    hint = difflib.get_close_matches(key, list(known), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"{where}{key}: unknown key{suggestion}")


def check_table(
    table: Any, spec: Mapping[str, Checker], where: str, problems: Problems | None = None
) -> dict[str, Any]:
    """The table's values, checked. Its problems are raised, or noted in ``problems``
    (then the values that are right are returned, so that the checks that use them go
    on and report their own problems in the same run)."""
    noted = problems if problems is not None else Problems()
    checked = {}
    with noted.noted():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where.rstrip('.')}: expected a table")
        for key, value in table.items():
            with noted.noted():
                if key not in spec:
                    raise unknown_key(key, spec, where)
                checked[key] = spec[key](value, f"{where}{key}")
    if problems is None:
        noted.raise_any()
    return checked


def interpolate(value: Any, key: str, env: Mapping[str, str]) -> Any:
    """``value`` (a string, or a table of them) with each ``${VAR}`` replaced from ``env``."""
    if isinstance(value, Mapping):
        return {name: interpolate(text, f"{key}.{name}", env) for name, text in value.items()}
    try:
        text = Template(value).substitute(env)
    except KeyError as exc:  # settings.config_warnings knows this wording
        raise ConfigError(f"{key}: environment variable {exc.args[0]} is not set") from None
    except ValueError as exc:
        raise ConfigError(f"{key}: bad ${{VAR}} reference ({exc})") from None
    if value and not text:
        # A variable set to nothing (a "KEY=" line of an EnvironmentFile left blank)
        # would pass for a value: an api_key of "" sends no key, and every batch dies
        # of 401 at once, where a literal "" in the file is refused.
        named = next(
            match["named"] or match["braced"]
            for match in Template.pattern.finditer(value)
            if match["named"] or match["braced"]
        )
        raise ConfigError(f"{key}: environment variable {named} is set but empty")
    return text


def section_with_flags(
    raw: Mapping[str, Any],
    section: str,
    keys: Mapping[str, Checker],
    flags: Mapping[str, Any] | None,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """The file's ``[section]`` table, checked, its ``token`` read from ``${VAR}``s in
    ``env``, with ``flags`` (checked alike; None values: not given) over it."""
    values = check_table(raw.get(section, {}), keys, f"{section}.")
    if "token" in values:
        values["token"] = interpolate(values["token"], f"{section}.token", env)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    values.update(check_table(given, keys, "option "))
    return values


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a TOML config file; the top level is checked, sections later."""
    raw = read_config_file(path)
    problems = Problems()
    check_top_level(raw, problems)
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
        raw["db"] = interpolate(raw["db"], "db", os.environ if env is None else env)
        if not is_url(raw["db"]) and not is_conninfo(raw["db"]):  # refused when opened
            # Relative to the file, not to wherever the command runs: a shell script and
            # a service (whose working directory is /) reading one config share one spool.
            db = os.path.expanduser(raw["db"])
            raw["db"] = os.path.join(os.path.dirname(os.path.abspath(path)), db)
    return raw


def check_top_level(raw: Mapping[str, Any], problems: Problems) -> None:
    """Note the file's unknown sections, and a ``db`` that is not a string."""
    for key in raw:
        with problems.noted():
            if key not in _TOP_KEYS:
                raise unknown_key(key, _TOP_KEYS, "")
    if "db" in raw:
        with problems.noted():
            nonempty_string(raw["db"], "db")


def spool_options(raw: Mapping[str, Any], problems: Problems | None = None) -> dict[str, Any]:
    """Keyword arguments for ``Spool`` from the config file's ``[spool]`` table."""
    return check_table(raw.get("spool", {}), SPOOL_KEYS, "spool.", problems)


def config_db_path(raw: Mapping[str, Any]) -> str | None:
    """The ``db`` key of a config file, if any (a str: a ``Path`` would turn a URL's
    ``//`` into ``/``, and a URL into a path)."""
    return raw.get("db")
