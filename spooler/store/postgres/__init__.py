"""A spool in PostgreSQL, shared by every host that names the same URL.

Usage::

    store = PostgresStore("postgresql://app@db.example.com/events?schema=spooler")

The URL is libpq's; the password comes from it, from ``PGPASSWORD`` or from
``~/.pgpass``, and never appears in a message (``path`` is the URL without it). Three
parameters are spooler's: ``schema`` (default ``spooler``), where the tables live;
``wait`` (default 10), how many seconds an operation keeps trying while the server
cannot be reached; ``prepared_statements`` (``on`` or ``off``, default ``on``), off
behind a pooler that cannot carry them (PgBouncer before 1.21 in transaction mode).
Only this package imports psycopg: ``import spooler`` stays light.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..postgres_url import parse_url
from ..shared import check_durability
from .connection import Connections
from .drains import PostgresDrains
from .history import PostgresHistory
from .maintenance import PostgresMaintenance
from .operators import PostgresOperators
from .producers import PostgresProducers
from .schema import SCHEMA_VERSION, prepare

__all__ = ["SCHEMA_VERSION", "PostgresStore"]


class PostgresStore(
    PostgresProducers, PostgresDrains, PostgresOperators, PostgresMaintenance, PostgresHistory
):
    """The spool's tables in one PostgreSQL schema. Thread-safe; each thread's operation
    runs on a connection of its own, and a child process after ``fork()`` opens its own."""

    SCHEMA_VERSION = SCHEMA_VERSION

    def __init__(
        self,
        url: str,
        *,
        durability: str = "full",
        create: bool = True,
        schema: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_durability(durability)
        target = parse_url(url, schema=schema)
        self.path = target.shown
        self.schema = target.schema
        self._clock = clock
        self._db = Connections(target, synchronous=durability == "full")
        self._statements: dict[str, str] = {}
        try:
            self.created = self._db.run(lambda conn: prepare(conn, target, create=create))
        except BaseException:
            self._db.close()
            raise

    @property
    def location(self) -> str:
        """Where the spool is, for logs: the URL without its password."""
        return self.path

    def is_own_file(self, path: str) -> bool:
        """False: the spool is in the server's files, which no destination may name."""
        return False

    def close(self) -> None:
        """Close this process's connections; the store is not usable afterwards."""
        self._db.close()

    def __repr__(self) -> str:
        return f"<PostgresStore {self.path}>"
