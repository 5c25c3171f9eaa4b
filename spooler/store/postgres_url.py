"""A PostgreSQL spool's URL: what libpq connects to, spooler's own parameters, and the URL
as messages show it (masked by ``redact``). Apart from ``store.postgres``, so that a config
check can read and show a URL without psycopg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from ..redact import masked_postgres_url

__all__ = ["DEFAULT_SCHEMA", "DEFAULT_WAIT", "Target", "parse_url"]

DEFAULT_SCHEMA = "spooler"
DEFAULT_WAIT = 10.0  # seconds an operation waits for an unreachable server
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SPOOLER_PARAMETERS = ("schema", "wait", "prepared_statements")


@dataclass(frozen=True)
class Target:
    """Where a PostgreSQL spool is: what libpq connects to, and what spooler adds."""

    conninfo: str  # the URL as libpq takes it (spooler's own parameters removed)
    schema: str
    wait: float
    prepared_statements: bool  # off for a pooler that cannot carry them (PgBouncer < 1.21)
    shown: str  # the URL for messages: no password

    @property
    def quoted_schema(self) -> str:
        """The schema as an SQL identifier."""
        return f'"{self.schema}"'


def parse_url(url: str, *, schema: str | None = None) -> Target:
    """Read a ``postgresql://`` URL; its ``schema``, ``wait`` and ``prepared_statements``
    parameters are spooler's."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in params if key in _SPOOLER_PARAMETERS}
    schema = schema or own.get("schema") or DEFAULT_SCHEMA
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(
            f"schema must be a plain SQL name (letters, digits, underscores), not {schema!r}"
        )
    try:
        wait = float(own.get("wait", DEFAULT_WAIT))
    except ValueError:
        wait = -1.0
    if not 0 <= wait < float("inf"):
        raise ConfigError(f"wait must be a number of seconds, not {own['wait']!r}")
    prepared = own.get("prepared_statements", "on")
    if prepared not in ("on", "off"):
        raise ConfigError(f"prepared_statements must be 'on' or 'off', not {prepared!r}")
    libpq = [(key, value) for key, value in params if key not in own]
    shown = urlunsplit(parts._replace(query=urlencode([*libpq, ("schema", schema)], safe="/")))
    return Target(
        conninfo=urlunsplit(parts._replace(query=urlencode(libpq))),
        schema=schema,
        wait=wait,
        prepared_statements=prepared == "on",
        shown=masked_postgres_url(shown),
    )
