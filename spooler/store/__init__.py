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

__all__ = ["is_url", "open_store", "shown_location"]

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")


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
    """Whether a spool location is a URL (``scheme://...``) rather than a file path."""
    return _URL.match(location) is not None


def shown_location(location: str) -> str:
    """A spool location as output shows it: a file path as given, a ``postgresql://``
    URL without its password (``ConfigError`` if spooler's parameters in it are wrong)."""
    if not is_url(location):
        return location
    _check_scheme(location)
    from .postgres_url import parse_url

    return parse_url(location).shown


def _check_scheme(url: str) -> None:
    """Refuse a URL that is not ``postgresql://``."""
    # Only the scheme is shown: the rest of a database URL may hold a password.
    scheme = url.partition(":")[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"the spool {scheme}://... is a URL spooler cannot open: give a file path, or a"
            " postgresql:// URL"
        )
