"""What every part of ``SQLiteStore`` shares: the spool file's connection, reached only
through its lock, and the transactions that run on it.

Every state change is one ``BEGIN IMMEDIATE`` transaction: taking the write lock up
front means a transaction never has to upgrade from reader to writer half-way, which
is the case where SQLite gives up with "database is locked" without waiting.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from types import TracebackType

from ... import files
from ...errors import NotDurableError, StoreError
from . import process_locks
from .schema import check_header, prepare

__all__ = ["LockedConnection", "SQLiteBase", "unwritable_file"]

# Where "full" durability flushes the write-ahead log after each commit: fdatasync
# where the platform has it (Linux), fsync elsewhere (macOS).
_flush_to_disk = getattr(os, "fdatasync", os.fsync)


class LockedConnection:
    """A connection that only its lock hands out: ``with current as conn:`` holds the lock
    for the block, so no thread can run a statement while another is inside a
    transaction on it. (A PRAGMA run without the lock while a worker committed left
    the connection stuck in a transaction, and the drain dead: issue 23.) Also the
    process that opened it, the file it is to (``process_locks.file_key``) and, for
    "full" durability, a file descriptor of the write-ahead log, to flush it."""

    __slots__ = ("__weakref__", "_conn", "_lock", "file", "pid", "wal_fd")

    def __init__(
        self,
        conn: sqlite3.Connection,
        pid: int,
        wal_fd: int | None,
        file: tuple[int, int] | None,
    ) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.pid = pid
        self.wal_fd = wal_fd
        self.file = file
        process_locks.track(self)

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()

    def close(self) -> None:
        """Close the connection and the log's descriptor (in the process that opened them)."""
        with self as conn:
            conn.close()
        self._forget()

    def _forget(self) -> None:
        """Close the log's descriptor, and count the connection out of its file's."""
        if self.wal_fd is not None:
            os.close(self.wal_fd)
            self.wal_fd = None
        process_locks.count_closed(self.file)
        self.file = None

    def __del__(self) -> None:
        # A spool left to the garbage collector unclosed: the log's descriptor would stay
        # open for the life of the process (one a spool, on a log that may be deleted,
        # its space kept), and the file counted open (process_locks). Not in a forked
        # child: the fork closed the descriptor there, and the child closes the
        # connection itself before it opens one (process_locks.close_inherited).
        if self.pid == os.getpid():
            self._conn.close()
            self._forget()

    def hold(self) -> None:
        """Wait until no transaction runs on the connection, and keep it so (across a fork)."""
        self._lock.acquire()

    def let_go(self) -> None:
        """End a ``hold``."""
        self._lock.release()

    def let_go_inherited(self) -> None:
        """In a child of fork(), at once: end the parent's ``hold`` and close the log's
        descriptor (its number is not reused yet). ``pid`` stays the parent's: the store
        opens a connection of the child's own when it is next used."""
        if self.wal_fd is not None:
            os.close(self.wal_fd)
            self.wal_fd = None
        self.file = None
        self._lock.release()

    def close_inherited(self) -> None:
        """In a child of fork(), before it opens a connection of its own: close the one it
        inherited (idle: the parent held it across the fork), so that SQLite forgets the
        parent's locks on the file, which the child does not have, and the child's own
        connections take theirs."""
        self._conn.close()


def unwritable_file(path: str) -> str | None:
    """The first of the spool ``path``'s files (the file, its -wal, its -shm) that this
    user may not read and write; None: none (or none that exists)."""
    # os.access asks as the real user, which is who runs spooler (no setuid here).
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name) and not os.access(name, os.R_OK | os.W_OK):
            return name
    return None


class SQLiteBase:
    """The spool file's connection (``SQLiteStore`` opens it)."""

    path: str
    _busy_timeout: float
    _flushes_commits: bool
    _closed: bool
    _creates: bool  # whether a file with no spool yet may become one
    _current: LockedConnection

    def _create_file(self, file_mode: int) -> None:
        """Create the spool's folders and an empty file, if missing, with ``file_mode``
        (SQLite gives the -wal and -shm files the mode of the file it finds). Where the
        path is a symlink, they are created where it points, as SQLite would."""
        real = os.path.realpath(self.path)
        try:
            files.make_folders(os.path.dirname(real), files.folder_mode(file_mode))
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path}: {exc}") from None
        with process_locks.files_lock:
            if os.path.exists(real):
                return  # not opened: a connection of this process to it would lose its locks
            try:
                os.close(files.open_creating(real, os.O_RDONLY, file_mode))
            except OSError as exc:
                raise StoreError(f"cannot create {self.path}: {exc}") from None

    def _open(self) -> tuple[LockedConnection, bool]:
        """Open the file, checked and set up; returns the connection and whether this
        created the spool's tables."""
        with process_locks.files_lock:
            process_locks.close_inherited()
            file = process_locks.file_key(self.path)
            # The header is read only where no connection of this process would lose its
            # locks when the read closes the file; an open one checked it already (and
            # may be making the spool in it still: whether it is empty is a stat's).
            if process_locks.is_open(file):
                empty = os.path.getsize(self.path) == 0
            else:
                empty = check_header(self.path)
            process_locks.count_open(file)
        try:
            try:
                conn, schema, wal_fd = self._connect(empty)
            except BaseException:
                process_locks.count_closed(file)
                raise
            current = LockedConnection(conn, os.getpid(), wal_fd, file)
        finally:
            process_locks.opened()
        if wal_fd is not None and schema != "kept":
            try:
                self._flush(current)
            except StoreError:
                current.close()
                raise
        return current, schema == "created"

    def _connect(self, empty: bool) -> tuple[sqlite3.Connection, str, int | None]:
        """A new connection to the file, checked and set up; with what it did to the
        schema (``prepare``), and the log's descriptor for "full" durability."""
        self._refuse_unwritable()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.DatabaseError as exc:
            raise self._store_error(exc) from None
        try:
            with self._as_store_errors():
                schema = prepare(conn, self.path, empty=empty, create=self._creates)
            wal_fd = self._open_wal() if self._flushes_commits else None
        except BaseException:
            conn.close()
            raise
        return conn, schema, wal_fd

    def _refuse_unwritable(self) -> None:
        """Refuse a spool this user may not write before SQLite opens it: SQLite would
        read it all the same, making its -wal and -shm files as this user's, with the
        spool file's mode, and the accounts that own the spool could then no longer
        write them (a `spooler status` run by a reader stopped every producer)."""
        if unwritable_file(self.path) is None:
            return
        from .errors import unwritable  # only on errors: `import spooler` stays small

        if os.statvfs(os.path.dirname(os.path.abspath(self.path))).f_flag & os.ST_RDONLY:
            return  # no file can be made there; SQLite's own error is named as it comes
        problem = unwritable(self.path)
        if problem:
            raise StoreError(f"{self.path}: {problem}")

    def _open_wal(self) -> int:
        """A read-only descriptor of the connection's write-ahead log, its entry in its
        folder made durable.

        SQLite names the log after the file's real path (it resolves symlinks). The log
        exists from the connection's first transaction, and is only deleted when the
        last connection closes, so while ours is open this is the file it writes.
        """
        wal = os.path.realpath(self.path) + "-wal"
        try:
            fd = os.open(wal, os.O_RDONLY)
        except OSError as exc:
            raise StoreError(f"cannot open the write-ahead log {wal}: {exc}") from None
        try:
            # SQLite creates the log without syncing its folder (it would at its first
            # sync of the log, which a commit at synchronous=NORMAL never makes): a
            # flushed commit counts on the log's entry in the folder surviving too.
            files.sync_folder(os.path.dirname(wal))
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot sync the folder of {wal}: {exc}") from None
        return fd

    def _flush(self, current: LockedConnection) -> None:
        """Put every commit made so far on disk: what ``synchronous=FULL`` does inside
        ``COMMIT``, done just after it, once SQLite's write lock is free again, so that
        another process's commit overlaps this flush instead of waiting behind it
        (docs/guarantees.md says why this is as durable)."""
        if current.wal_fd is None:
            return  # "normal" durability: commits are left to checkpoints
        try:
            _flush_to_disk(current.wal_fd)
        except OSError as exc:
            raise NotDurableError(
                f"{self.path}: could not flush the write-ahead log to disk ({exc}); the last"
                " change is committed but may not survive a power loss"
            ) from None

    def _connection(self) -> LockedConnection:
        # A connection must never be used on both sides of a fork(): the child opens its
        # own (and closes the one it inherited first: process_locks).
        if self._closed:
            raise StoreError(f"{self.path}: this spool was closed")
        if self._current.pid != os.getpid():
            self._current, _ = self._open()
        return self._current

    def close(self) -> None:
        """Close the connection (only in the process that opened it); the store is not
        usable afterwards."""
        self._closed = True
        if self._current.pid == os.getpid():
            self._current.close()

    def _as_store_errors(self) -> AsStoreErrors:
        """A context manager that lets SQLite's errors out only as ``StoreError``."""
        return AsStoreErrors(self)

    def _store_error(self, exc: sqlite3.DatabaseError) -> StoreError:
        """The ``StoreError`` an operator reads for a SQLite error on this spool."""
        from .errors import store_error  # only on errors: `import spooler` stays small

        return store_error(self.path, exc, busy_timeout=self._busy_timeout)

    def _write(self) -> Transaction:
        """A write transaction (``BEGIN IMMEDIATE``): committed and flushed when the block
        ends, rolled back if it raises."""
        return Transaction(self, write=True)

    def _read(self) -> Transaction:
        """A read transaction: one snapshot for all the reads of an operation."""
        return Transaction(self, write=False)


class AsStoreErrors:
    """Lets SQLite's errors out of its block only as the spool's ``StoreError``."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteBase) -> None:
        self._store = store

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, sqlite3.DatabaseError):
            raise self._store._store_error(exc) from None


class Transaction:
    """One transaction on the spool's connection, which it gives to its block.

    The connection's lock is held throughout, and SQLite's errors leave as
    ``StoreError``. A write begins ``IMMEDIATE``, then commits and flushes when the
    block ends, or rolls back if it raises; a read ends its snapshot either way.

    A class, not ``@contextmanager`` generators: every enqueue runs one, and the
    generators cost a share of a durable enqueue that ``benchmarks/enqueue_single.py``
    measures (docs/performance.md, target 1).
    """

    __slots__ = ("_conn", "_current", "_store", "_write")

    def __init__(self, store: SQLiteBase, *, write: bool) -> None:
        self._store = store
        self._write = write

    def __enter__(self) -> sqlite3.Connection:
        current = self._current = self._store._connection()
        conn = self._conn = current.__enter__()
        try:
            conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")
        except BaseException as exc:
            current.__exit__(None, None, None)
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._store._store_error(exc) from None
            raise
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current, conn = self._current, self._conn
        try:
            if not self._write or exc is None:
                conn.execute("COMMIT")
                if self._write and current.wal_fd is not None:
                    self._store._flush(current)
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as own:
            # A COMMIT that failed may leave the transaction open: its changes must not
            # be committed later by another block's COMMIT, nor its BEGIN fail.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.DatabaseError):
                    conn.execute("ROLLBACK")
            raise self._store._store_error(own) from None
        finally:
            current.__exit__(None, None, None)
        if isinstance(exc, sqlite3.DatabaseError):
            raise self._store._store_error(exc) from None
