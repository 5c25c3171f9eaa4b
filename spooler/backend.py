"""Which store a spool location opens: a SQLite file for a path, PostgreSQL for a
``postgresql://`` URL (psycopg is imported only then)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .errors import StoreError
from .store import Store

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from .store_interface import SpoolStore

__all__ = ["is_database_url", "open_store"]

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(_URL_SCHEMES)


def open_store(
    location: str | os.PathLike[str],
    *,
    durability: str = "full",
    create: bool = True,
    clock: Callable[[], float] = time.time,
) -> SpoolStore:
    """Open the spool at ``location``: a file path, or a ``postgresql://`` URL."""
    if not is_database_url(location):
        return Store(location, durability=durability, create=create)
    try:
        from .pgstore import PostgresStore
    except ImportError as exc:
        raise StoreError(
            f"a postgresql:// spool needs psycopg: pip install 'spooler[postgres]' ({exc})"
        ) from None
    return PostgresStore(location, durability=durability, create=create, clock=clock)
