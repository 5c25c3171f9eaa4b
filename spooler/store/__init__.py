"""Where a spool keeps its events: the store seam and its two backends.

``open_store`` opens the store a spool location names: a SQLite file
(``store.sqlite``), or a PostgreSQL schema for a ``postgresql://`` URL
(``store.postgres``). Both provide ``store.interface.SpoolStore``, which is all the
spool, the drain, the dead-letter commands and doctor use; ``tests/test_store_contract.py``
holds both to it. Every SQL statement spooler runs is in this package.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from ..errors import ConfigError, StoreError
from ..files import DEFAULT_FILE_MODE
from .sqlite import SQLiteStore

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from .interface import SpoolStore

__all__ = ["is_conninfo", "is_url", "open_store", "shown_location"]

# Any ``scheme:`` start (RFC 3986) makes a location a URL: a mistyped PostgreSQL URL
# (``postgresql:/host/db``) must be refused, not become a folder that no drain reads.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_POSTGRESQL = re.compile(r"postgres(?:ql)?://")
# libpq's other form of a connection string, ``host=db dbname=events user=app``: taken
# as a file name, it became a local spool no drain reads, named with the password.
_CONNINFO = re.compile(r"\s*(?:host|hostaddr|port|dbname|user|password|passfile|service)\s*=")
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def open_store(
    location: str,
    *,
    durability: str = "full",
    create: bool = True,
    clock: Callable[[], float] = time.time,
    file_mode: int = DEFAULT_FILE_MODE,
) -> SpoolStore:
    """The store ``location`` names: a SQLite file, or a PostgreSQL database for a
    ``postgresql://`` URL (psycopg is imported only then; ``file_mode`` is the SQLite
    file's). Any other URL is refused, before anything is created."""
    if not is_url(location):
        _check_not_conninfo(location)
        return SQLiteStore(location, durability=durability, create=create, file_mode=file_mode)
    _check_scheme(location)
    try:
        from .postgres import PostgresStore
    except ImportError as exc:
        raise StoreError(
            f"a postgresql:// spool needs psycopg: pip install 'spooler[postgres]' ({exc})"
        ) from None
    return PostgresStore(location, durability=durability, create=create, clock=clock)


def is_url(location: str) -> bool:
    """Whether a spool location is a URL (``scheme:...``) rather than a file path (a
    file whose name has a colon is written ``./name``)."""
    return _URL.match(location) is not None


def is_conninfo(location: str) -> bool:
    """Whether a spool location is libpq's ``key=value`` connection string, which
    spooler refuses (``host=db dbname=events``): neither a file path nor a URL."""
    return _CONNINFO.match(location) is not None


def shown_location(location: str) -> str:
    """A spool location as output shows it: a file path as given, a ``postgresql://``
    URL without its password (``ConfigError`` if spooler's parameters in it are wrong)."""
    if not is_url(location):
        _check_not_conninfo(location)
        return location
    _check_scheme(location)
    from .postgres_url import parse_url

    return parse_url(location).shown


def _check_scheme(url: str) -> None:
    """Refuse a URL that is not ``postgresql://`` (or libpq's ``postgres://``)."""
    if not _POSTGRESQL.match(url):
        raise ConfigError(
            f"the spool {_shown_refused(url)} is a URL spooler cannot open: give a file path"
            " (./NAME for a file whose name has a colon), or a postgresql://host/dbname URL"
        )


def _check_not_conninfo(location: str) -> None:
    """Refuse libpq's ``key=value`` connection string where a path or URL goes (a file
    whose name starts so is written ``./NAME``)."""
    if is_conninfo(location):
        shown = _CONNINFO_PASSWORD.sub(r"\1***", location)
        raise ConfigError(
            f"the spool {shown} is a libpq key=value connection string: give a"
            " postgresql://user@host:port/dbname URL (./NAME for a file named so)"
        )


def _shown_refused(url: str) -> str:
    """A refused URL without its credentials, also where a missing ``//`` hides them
    from ``masked_url`` (``postgresql:user:pw@host``)."""
    if "@" not in url and "?" not in url:  # no user info, no query: as given
        return url
    from ..redact import MASK, masked_url  # only here: it imports logging

    scheme, _, rest = url.partition(":")
    try:
        rest = masked_url(url).partition(":")[2]
    except ValueError:  # not even parseable (``mysql://[db``): show only the scheme
        return f"{scheme}:{MASK}"
    if not rest.startswith("//") and "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    return f"{scheme}:{rest}"
