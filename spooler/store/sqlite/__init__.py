"""A spool in one SQLite file, the default: one per host, no server to run.

Usage::

    store = SQLiteStore("/var/spool/app/spool.db")

The file is opened in WAL mode, checked (``schema``), and upgraded when its schema is
older; the operations are split by who runs them: producers, drains, operators, the
maintenance of the file, and the history the dashboard charts.
"""

from __future__ import annotations

import os
import sqlite3

from ... import files
from ...errors import StoreError
from ..shared import check_durability, no_spool
from .drains import SQLiteDrains
from .history import SQLiteHistory
from .maintenance import SQLiteMaintenance
from .operators import SQLiteOperators
from .producers import SQLiteProducers
from .schema import MIN_SQLITE_VERSION, SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]


class SQLiteStore(SQLiteProducers, SQLiteDrains, SQLiteOperators, SQLiteMaintenance, SQLiteHistory):
    """The spool file. Thread-safe; reopens itself in a child after ``fork()``."""

    SCHEMA_VERSION = SCHEMA_VERSION

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "full",
        busy_timeout: float = 60.0,
        create: bool = True,
        file_mode: int = files.DEFAULT_FILE_MODE,
    ) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old: spooler needs 3.35 or newer"
            )
        self.path = os.fspath(path)  # a str: pathlib would add ~7 ms to `import spooler`
        check_durability(durability)
        self._flushes_commits = durability == "full"
        file_mode = files.check_file_mode(file_mode)
        self._busy_timeout = busy_timeout
        self._creates = create
        if not create:
            self._check_exists()
        if create:
            self._create_file(file_mode)
        self._closed = False
        self._current, self.created = self._open()

    def _check_exists(self) -> None:
        """Refuse a spool file that is not there, or that this user cannot look at."""
        try:
            os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(no_spool(self.path, "no such file")) from None
        except OSError as exc:  # EACCES: os.path.exists says False, as if no file were there
            from .errors import unreachable

            raise StoreError(unreachable(self.path, exc)) from None

    @property
    def location(self) -> str:
        """Where the spool is, for logs: the file's absolute path."""
        return os.path.abspath(self.path)

    def is_own_file(self, path: str) -> bool:
        """Whether ``path`` is the spool file, or its -wal or -shm file."""
        real = os.path.realpath(path)
        return any(real == os.path.realpath(self.path + end) for end in ("", "-wal", "-shm"))

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path}>"
