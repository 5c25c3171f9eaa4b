"""The SQLite spool file: schema, open checks, and every SQL statement spooler runs.

One file holds three tables: ``queue`` (events waiting or in flight), ``dead`` (the
dead-letter table) and ``meta`` (application name and schema version), plus a
one-row ``totals`` table that keeps the spool's size so limits cost O(1) to check.

Every state change is one ``BEGIN IMMEDIATE`` transaction: taking the write lock up
front means a transaction never has to upgrade from reader to writer half-way, which
is the case where SQLite gives up with "database is locked" without waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from itertools import chain
from types import TracebackType

from . import files
from .errors import ConfigError, NotDurableError, SpoolFullError, StoreError, UnknownEventError
from .events import EVENT_ID_CHARS, events_phrase, utf8_size

# The record types come from .records where a method builds one, not here: a producer
# never needs them, and they would make `import spooler` load dataclasses.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import Any

    from .records import (
        ClaimedEvent,
        Counts,
        DeadEvent,
        DeadGroup,
        DeadSelection,
        Failure,
        KeptPause,
        QueueSelection,
        RetriedNow,
    )

__all__ = ["SCHEMA_VERSION", "SERVICE_PREFIX", "Store"]

SCHEMA_VERSION = 4
APPLICATION = "spooler"
# In the file's header (PRAGMA application_id), set before anything else is written to a
# new spool: a file with this id and no tables yet is a spool whose creation was cut
# short, not another application's empty database. ("SPLR"; spools made before it have 0.)
APPLICATION_ID = 0x53504C52
_TABLES = frozenset({"meta", "totals", "queue", "dead", "destination_state"})
MIN_SQLITE_VERSION = (3, 35, 0)  # UPDATE ... RETURNING, used by the claim
DURABILITIES = ("full", "normal")
# Where "full" durability flushes the write-ahead log after each commit: fdatasync
# where the platform has it (Linux), fsync elsewhere (macOS).
_flush_to_disk = getattr(os, "fdatasync", os.fsync)
REPLAY_CHUNK = 1000  # dead events moved back per transaction
DEAD_PAGE = 1000  # dead events read per transaction by a listing
# Disk: free pages go back to the file system once a quarter of the file is free, a
# few MB per transaction so producers never wait long; the WAL file is cut back to
# WAL_SIZE_LIMIT whenever a checkpoint empties it (it otherwise stays at its high mark).
RECLAIM_MIN_PAGES = 256
RECLAIM_CHUNK_PAGES = 2048
WAL_SIZE_LIMIT = 16 * 1024 * 1024
# The attempt log kept per event: the latest entries, each error cut short. Bounded so
# that a long outage grows a backlog by at most ~0.7 KB per event (docs/performance.md).
ATTEMPT_LOG_ENTRIES = 5
ATTEMPT_LOG_ERROR_CHARS = 100
# A held event's due_at: later than any real time, so the claim (an index range on
# due_at) never reaches it, and no other index or column is needed.
HELD = 1e18
SERVICE_PREFIX = "service:"  # meta keys of the reports services keep (record_service)
_ROWS_PER_INSERT = 500  # 3 parameters a row: far below SQLite's limit of 32766

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 0),
                     events INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO totals VALUES (0, 0, 0);
CREATE TABLE queue (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL,
    destination TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    queued_at   REAL NOT NULL,
    due_at      REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    last_status INTEGER,
    last_error  TEXT,
    attempt_log TEXT
);
CREATE INDEX queue_due ON queue (destination, due_at);
CREATE TABLE dead (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    destination TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    status      INTEGER,
    error       TEXT,
    dead_at     REAL NOT NULL,
    attempt_log TEXT
);
CREATE INDEX dead_by_time ON dead (dead_at);
CREATE TABLE destination_state (
    destination     TEXT PRIMARY KEY,
    last_success_at REAL,
    last_error_at   REAL,
    last_status     INTEGER,
    last_error      TEXT,
    failures        INTEGER NOT NULL DEFAULT 0,
    paused_until    REAL,
    url_digest      TEXT
);
"""
# Schema upgrades, by the version they lead from; each runs in one transaction.
_MIGRATIONS = {
    1: (
        "ALTER TABLE queue ADD COLUMN attempt_log TEXT",
        "ALTER TABLE dead ADD COLUMN attempt_log TEXT",
    ),
    2: (
        "ALTER TABLE destination_state ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE destination_state ADD COLUMN paused_until REAL",
        # A destination whose last outcome was a failure is probed first, as before.
        "UPDATE destination_state SET failures = 1"
        " WHERE last_error_at > coalesce(last_success_at, 0)",
    ),
    3: ("ALTER TABLE destination_state ADD COLUMN url_digest TEXT",),
}
# SQL for "the attempt log with the JSON entry ? appended, oldest entries dropped".
_APPEND_ATTEMPT = (
    "json_insert(CASE WHEN json_array_length(coalesce(attempt_log, '[]')) >= "
    f"{ATTEMPT_LOG_ENTRIES} THEN json_remove(attempt_log, '$[0]')"
    " ELSE coalesce(attempt_log, '[]') END, '$[#]', json(?))"
)


class _Connection:
    """A connection that only its lock hands out: ``with current as conn:`` holds the lock
    for the block, so no thread can run a statement while another is inside a
    transaction on it. (A PRAGMA run without the lock while a worker committed left
    the connection stuck in a transaction, and the drain dead: issue 23.) Also the
    process that opened it and, for "full" durability, a file descriptor of the
    write-ahead log, to flush it."""

    __slots__ = ("_conn", "_lock", "pid", "wal_fd")

    def __init__(self, conn: sqlite3.Connection, pid: int, wal_fd: int | None) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.pid = pid
        self.wal_fd = wal_fd

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


class Store:
    """The spool file. Thread-safe; reopens itself in a child after ``fork()``."""

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
        if durability not in DURABILITIES:
            raise ConfigError(f"durability must be 'full' or 'normal', not {durability!r}")
        self._flushes_commits = durability == "full"
        file_mode = files.check_file_mode(file_mode)
        self._busy_timeout = busy_timeout
        if not create and not os.path.exists(self.path):
            raise StoreError(f"no spool at {self.path} (check --db / SPOOLER_DB)")
        if create:
            self._create(file_mode)
        self._closed = False
        self._current = self._open()

    @property
    def directory(self) -> str:
        """The directory holding the spool file (and its -wal and -shm files)."""
        return os.path.dirname(os.path.abspath(self.path))

    def _create(self, file_mode: int) -> None:
        """Create the spool's folders and an empty file, if missing, with ``file_mode``
        (SQLite gives the -wal and -shm files the mode of the file it finds). Where the
        path is a symlink, they are created where it points, as SQLite would."""
        real = os.path.realpath(self.path)
        try:
            files.make_folders(os.path.dirname(real), files.folder_mode(file_mode))
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path}: {exc}") from None
        try:
            os.close(files.open_creating(real, os.O_RDONLY, file_mode))
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc}") from None

    # -- connection management ------------------------------------------------------

    def _open(self) -> _Connection:
        empty = _check_header(self.path)
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
            with self._translated():
                wrote_schema = self._prepare(conn, empty=empty)
            wal_fd = self._open_wal() if self._flushes_commits else None
        except BaseException:
            conn.close()
            raise
        current = _Connection(conn, os.getpid(), wal_fd)
        if wal_fd is not None and wrote_schema:
            try:
                self._flush(current)
            except StoreError:
                self._close(current)
                raise
        return current

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

    def _flush(self, current: _Connection) -> None:
        """Put every commit made so far on disk: what ``synchronous=FULL`` does inside
        ``COMMIT``, done just after it, once SQLite's write lock is free again, so that
        another process's commit overlaps this flush instead of waiting behind it
        (docs/guarantees.md says why this is as durable)."""
        try:
            _flush_to_disk(current.wal_fd)
        except OSError as exc:
            raise NotDurableError(
                f"{self.path}: could not flush the write-ahead log to disk ({exc}); the last"
                " change is committed but may not survive a power loss"
            ) from None

    def _prepare(self, conn: sqlite3.Connection, *, empty: bool) -> bool:
        """Check the file and set the connection up; return whether this created or
        upgraded the schema. ``empty``: the file was missing or empty before it opened."""
        tables = _table_names(conn)
        (application_id,) = conn.execute("PRAGMA application_id").fetchone()
        # Checked before any PRAGMA that writes: a file that is not ours stays untouched.
        if application_id not in (0, APPLICATION_ID):
            raise StoreError(
                f"{self.path} is another application's SQLite database (application_id"
                f" {application_id:#010x}); refusing to touch it"
            )
        version = SCHEMA_VERSION
        if tables:
            version = self._check_schema(conn, tables)
        elif not empty and application_id != APPLICATION_ID:
            (user_version,) = conn.execute("PRAGMA user_version").fetchone()
            raise StoreError(
                f"{self.path} is a SQLite database that spooler did not create (no tables,"
                f" user_version {user_version}); refusing to touch it: delete it first if it"
                " should become a spool"
            )
        else:
            # auto_vacuum only takes effect before the first table exists; INCREMENTAL lets
            # a drained backlog give its pages back without a full VACUUM. (It writes
            # nothing: set after the application id, it would come too late.)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
        # Commits never fsync on their own: "full" durability flushes the log after each
        # one (_flush), "normal" leaves it to checkpoints.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        if not tables:
            self._create_schema(conn)
        elif version < SCHEMA_VERSION:
            self._migrate(conn)  # the write lock only for a spool that needs upgrading
        return not tables or version < SCHEMA_VERSION

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created the schema while we waited for the lock.
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                conn.execute("COMMIT")
                self._check_schema(conn, _table_names(conn))
                return
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection, tables: set[str]) -> int:
        """Refuse a file that is not a spool this code can use; return its schema version."""
        meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        if meta.get("application") != APPLICATION:
            raise StoreError(
                f"{self.path} is a SQLite database but not a spooler spool; refusing to touch it"
            )
        missing = _TABLES - tables
        if missing:
            raise StoreError(
                f"{self.path}: the spool has no {', '.join(sorted(missing))} table: damaged,"
                " or changed by hand; refusing to use it"
            )
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this spooler "
                f"understands ({SCHEMA_VERSION}); upgrade spooler"
            )
        if version < SCHEMA_VERSION and version not in _MIGRATIONS:
            raise StoreError(f"{self.path} has unknown schema version {version}")
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Upgrade an older spool in place, one transaction per version step."""
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have upgraded it.
                (version,) = conn.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
                version = int(version)
                if version >= SCHEMA_VERSION:
                    conn.execute("COMMIT")
                    return
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version + 1),)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _connection(self) -> _Connection:
        # A connection must never be used on both sides of a fork(): the child opens its
        # own. (The parent's log descriptor is left open: the child may have closed it
        # and reused its number for a file of its own.)
        if self._closed:
            raise StoreError(f"{self.path}: this spool was closed")
        if self._current.pid != os.getpid():
            self._current = self._open()
        return self._current

    def close(self) -> None:
        """Close the connection (only in the process that opened it); the store is not
        usable afterwards."""
        self._closed = True
        if self._current.pid == os.getpid():
            self._close(self._current)

    @staticmethod
    def _close(current: _Connection) -> None:
        with current as conn:
            conn.close()
        if current.wal_fd is not None:
            os.close(current.wal_fd)
            current.wal_fd = None

    def _translated(self) -> _Translated:
        """A context manager that lets SQLite's errors out only as ``StoreError``."""
        return _Translated(self)

    def _store_error(self, exc: sqlite3.DatabaseError) -> StoreError:
        """The ``StoreError`` an operator reads for a SQLite error on this spool."""
        from .sqlite_errors import store_error  # only on errors: `import spooler` stays small

        return store_error(self.path, exc, busy_timeout=self._busy_timeout)

    def _write(self) -> _Transaction:
        """A write transaction (``BEGIN IMMEDIATE``): committed and flushed when the block
        ends, rolled back if it raises."""
        return _Transaction(self, write=True)

    def _read(self) -> _Transaction:
        """A read transaction: one snapshot for all the reads of an operation."""
        return _Transaction(self, write=False)

    # -- producers ------------------------------------------------------------------

    def insert(
        self,
        rows: Sequence[tuple[str, str, str]],
        *,
        now: float,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Insert ``(event_id, destination, body)`` rows in one transaction, within limits."""
        added_bytes = sum(utf8_size(body) for _, _, body in rows)
        with self._write() as conn:
            _check_limits(conn, len(rows), added_bytes, max_events, max_bytes)
            # Many rows per statement, not executemany's one step per row: each step
            # lets go of the GIL, and with threads enqueueing at once every hand-over
            # costs the committing thread tens of microseconds (group commit).
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                conn.execute(_insert_sql(len(chunk)), [now, *chain.from_iterable(chunk)])
            _add_totals(conn, len(rows), added_bytes)

    def insert_array(
        self,
        array: str,
        size: int,
        id_block: bytes,
        destination: str,
        *,
        now: float,
        max_event_bytes: int,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> bool:
        """Insert the events of a JSON array text in one transaction, within limits: the
        i-th element as the i-th event id of ``id_block`` (``new_event_id_block``);
        ``size`` is the elements' total bytes.

        SQLite splits the array (``json_each``), so a bulk insert costs no Python per
        event. Returns False, inserting nothing, if an element is over
        ``max_event_bytes``, the ids and elements do not pair up, or SQLite refuses the
        text.
        """
        count, odd = divmod(len(id_block), EVENT_ID_CHARS)
        if odd:
            raise ValueError("an id block holds whole event ids")
        try:
            with self._write() as conn:
                _check_limits(conn, count, size, max_events, max_bytes)
                # Only a batch larger than the limit can hold an event over it.
                check_sizes = size > max_event_bytes
                if check_sizes:
                    (last_before,) = conn.execute(
                        "SELECT coalesce(max(id), 0) FROM queue"
                    ).fetchone()
                try:
                    # The ids are cut from the block by position (substr of a blob is
                    # O(1); of a text it is O(position)).
                    inserted = conn.execute(
                        "INSERT INTO queue (event_id, destination, body, created_at, queued_at,"
                        " due_at) SELECT CAST(substr(:ids, key * :width + 1, :width) AS TEXT),"
                        " :destination, value, :now, :now, :now FROM json_each(:array)",
                        {
                            "ids": id_block,
                            "width": EVENT_ID_CHARS,
                            "destination": destination,
                            "now": now,
                            "array": array,
                        },
                    ).rowcount
                except sqlite3.OperationalError as exc:
                    if "JSON" not in str(exc):
                        raise
                    raise _NotInserted from None
                if inserted != count or (
                    check_sizes and _any_over(conn, last_before, max_event_bytes)
                ):
                    raise _NotInserted
                _add_totals(conn, inserted, size)
        except _NotInserted:
            return False
        return True

    def insert_dead(
        self,
        event_id: str,
        destination: str,
        body: str,
        *,
        now: float,
        reason: str,
        failure: Failure,
    ) -> None:
        """Put an event straight into the dead-letter table (a client's own rejection)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO dead (event_id, destination, body, created_at, attempts, reason,"
                " status, error, dead_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (event_id, destination, body, now, reason, failure.status, failure.error, now),
            )
            _add_totals(conn, 1, utf8_size(body))

    # -- drains ---------------------------------------------------------------------

    def claim(
        self, destination: str, limit: int, owner: str, *, due_by: float, lease_until: float
    ) -> list[ClaimedEvent]:
        """Lease up to ``limit`` events of ``destination`` that are due at ``due_by``.

        A lease is just ``due_at`` moved to the lease's end: a holder that dies leaves
        the event due again when the lease runs out, with no sweeper process needed.
        """
        from .records import ClaimedEvent

        with self._write() as conn:
            rows = conn.execute(
                "UPDATE queue SET due_at = ?, lease_owner = ?, attempts = attempts + 1"
                " WHERE id IN (SELECT id FROM queue WHERE destination = ? AND due_at <= ?"
                "              ORDER BY due_at LIMIT ?)"
                " RETURNING id, event_id, destination, body, attempts, created_at, queued_at",
                (lease_until, owner, destination, due_by, limit),
            ).fetchall()
        return sorted((ClaimedEvent(*row) for row in rows), key=lambda event: event.rowid)

    def extend_lease(self, owner: str, rowids: Sequence[int], lease_until: float) -> None:
        """Push the lease of events still held by ``owner`` out to ``lease_until``."""
        with self._write() as conn:
            conn.execute(
                "UPDATE queue SET due_at = ? WHERE lease_owner = ?"
                " AND id IN (SELECT value FROM json_each(?))",
                (lease_until, owner, json.dumps(list(rowids))),
            )

    def settle(
        self,
        owner: str,
        *,
        now: float,
        delivered: Sequence[int] = (),
        retry: Sequence[tuple[int, float, Failure]] = (),
        dead: Sequence[tuple[int, str, Failure]] = (),
        destination: str | None = None,
    ) -> int:
        """Record one delivery outcome in one transaction; returns the rows changed.

        ``delivered`` rows are deleted; ``retry`` rows ``(rowid, due_at, failure)`` go
        back to the queue; ``dead`` rows ``(rowid, reason, failure)`` move to the
        dead-letter table. Only rows still leased by ``owner`` are touched: if the lease
        was lost to another drain, that drain owns the outcome now. With ``destination``,
        its last success or last error is recorded too (for ``spooler status``).
        """
        changed = 0
        with self._write() as conn:
            if destination is not None:
                failure = next((f for *_, f in [*retry, *dead]), None)
                _record_outcome(conn, destination, now, bool(delivered), failure)
            if delivered:
                changed += _delete_counted(
                    conn,
                    "queue",
                    "lease_owner = ? AND id IN (SELECT value FROM json_each(?))",
                    (owner, json.dumps(list(delivered))),
                )
            for rowid, due_at, failure in retry:
                changed += conn.execute(
                    "UPDATE queue SET due_at = ?, lease_owner = NULL, last_status = ?,"
                    f" last_error = ?, attempt_log = {_APPEND_ATTEMPT}"
                    " WHERE id = ? AND lease_owner = ?",
                    (due_at, failure.status, failure.error, failure.log_entry(now), rowid, owner),
                ).rowcount
            for rowid, reason, failure in dead:
                changed += _move_to_dead(
                    conn,
                    "id = ? AND lease_owner = ?",
                    [rowid, owner],
                    reason=reason,
                    failure=failure,
                    now=now,
                    attempted=True,
                )
        return changed

    def release(self, owner: str, *, now: float) -> int:
        """Give back every lease ``owner`` holds, making those events due at once."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE queue SET due_at = ?, lease_owner = NULL WHERE lease_owner = ?"
                " AND due_at > ?",
                (now, owner, now),
            ).rowcount

    def shift_schedule(self, seconds: float, *, now: float) -> int:
        """Move every event due after ``now`` earlier by ``seconds`` (never before ``now``).

        After the wall clock jumps back, leases and retry times computed before the jump
        lie that much too far in the future; this gives them their intended wait back.
        """
        with self._write() as conn:
            return conn.execute(
                "UPDATE queue SET due_at = max(?, due_at - ?) WHERE due_at > ? AND due_at < ?",
                (now, seconds, now, HELD),
            ).rowcount

    def record_pause(
        self, destination: str, *, failures: int, until: float | None, url_digest: str
    ) -> None:
        """Keep a destination's circuit breaker: requests failed in a row, no claims
        before ``until`` (None: none pending), and a digest of the URL they failed at (a
        URL may hold a secret). A drain that starts later takes it up."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO destination_state (destination, failures, paused_until, url_digest)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
                " failures = excluded.failures, paused_until = excluded.paused_until,"
                " url_digest = excluded.url_digest",
                (destination, failures, until, url_digest),
            )

    def forget_failures(self, destination: str, *, url_digest: str, now: float) -> int:
        """A destination now sent to another URL: end its pause, reset its count of
        failures, and make its events that wait to be retried due at once (not those in
        flight or held); returns how many were."""
        from .records import QueueSelection

        return self._update_selected(
            QueueSelection(destination=destination),
            "due_at = ?",
            "due_at > ? AND due_at < ? AND lease_owner IS NULL AND attempts > 0",
            [now],
            [now, HELD],
            also=(
                (
                    "UPDATE destination_state SET failures = 0, paused_until = NULL,"
                    " url_digest = ? WHERE destination = ?",
                    [url_digest, destination],
                ),
            ),
        )

    def pauses(self) -> dict[str, KeptPause]:
        """Destinations whose last requests failed, with their kept circuit breakers."""
        from .records import KeptPause

        with self._read() as conn:
            return {
                name: KeptPause(*kept)
                for name, *kept in conn.execute(
                    "SELECT destination, failures, paused_until, url_digest"
                    " FROM destination_state WHERE failures > 0"
                )
            }

    def next_due_at(self, destination: str) -> float | None:
        """When the earliest event of ``destination`` falls due (None: nothing queued but
        held events, which wait for an operator)."""
        with self._read() as conn:
            return conn.execute(
                "SELECT min(due_at) FROM queue WHERE destination = ? AND due_at < ?",
                (destination, HELD),
            ).fetchone()[0]

    # -- operators ------------------------------------------------------------------

    def counts(self, *, now: float) -> dict[str, Counts]:
        """Counts per destination (every destination with a queued or dead event)."""
        from .records import Counts

        by_destination: dict[str, Counts] = {}
        with self._read() as conn:
            for dest, queued, due, leased, retrying, held, oldest in conn.execute(
                "SELECT destination, count(*), total(due_at <= :now),"
                " total(lease_owner IS NOT NULL AND due_at > :now),"
                " total(due_at < :held"
                "       AND attempts > (lease_owner IS NOT NULL AND due_at > :now)),"
                " total(due_at >= :held),"
                " min(queued_at) FROM queue GROUP BY destination",
                {"now": now, "held": HELD},
            ):
                by_destination[dest] = Counts(
                    queued, int(due), int(leased), int(retrying), 0, oldest, held=int(held)
                )
            for dest, dead in conn.execute("SELECT destination, count(*) FROM dead GROUP BY 1"):
                by_destination.setdefault(dest, Counts()).dead = dead
            for dest, *state in conn.execute(
                "SELECT destination, last_success_at, last_error_at, last_error, failures,"
                " paused_until FROM destination_state"
            ):
                counts = by_destination.setdefault(dest, Counts())
                (
                    counts.last_success_at,
                    counts.last_error_at,
                    counts.last_error,
                    counts.failed_in_a_row,
                    counts.paused_until,
                ) = state
        return by_destination

    def totals(self) -> tuple[int, int]:
        """How many events the spool holds, queued or dead, and their bodies' bytes: what
        ``max_events`` and ``max_bytes`` are checked against."""
        with self._read() as conn:
            return _totals(conn)

    def dead_summary(self, *, now: float) -> list[DeadGroup]:
        """Dead events grouped by destination, reason and status, the largest group first."""
        from .records import DEAD_AGE_BUCKETS, DeadGroup

        cutoffs = {"hour": now - 3600, "day": now - 86400, "week": now - 7 * 86400}
        with self._read() as conn:
            groups = conn.execute(
                "SELECT destination, reason, status, count(*),"
                " total(dead_at > :hour),"
                " total(dead_at <= :hour AND dead_at > :day),"
                " total(dead_at <= :day AND dead_at > :week),"
                " total(dead_at <= :week)"
                " FROM dead GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2",
                cutoffs,
            ).fetchall()
            errors: dict[tuple[object, ...], str] = {}
            for dest, reason, status, error, _ in conn.execute(
                "SELECT destination, reason, status, error, count(*) FROM dead"
                " GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC"
            ):
                errors.setdefault((dest, reason, status), error)
        return [
            DeadGroup(
                dest,
                reason,
                status,
                count,
                dict(zip(DEAD_AGE_BUCKETS, map(int, ages), strict=True)),
                errors.get((dest, reason, status)),
            )
            for dest, reason, status, count, *ages in groups
        ]

    def dead_events(
        self, selection: DeadSelection, *, limit: int | None = None
    ) -> Iterator[DeadEvent]:
        """Dead events matching ``selection``, oldest first, read ``DEAD_PAGE`` at a time:
        listing a million holds one page in memory, and no transaction while the
        caller prints. Named ids must all be dead letters (``UnknownEventError``, at
        once)."""
        if selection.ids:
            with self._read() as conn:
                self._require_ids(conn, selection)
        return self._dead_pages(selection, limit)

    def _dead_pages(self, selection: DeadSelection, limit: int | None) -> Iterator[DeadEvent]:
        from .records import Attempt, DeadEvent

        where, params = selection.where()

        def read_page(after: int, count: int) -> list[tuple[Any, ...]]:
            # Each page its own read, by rowid (the primary key): no OFFSET to skip over.
            with self._read() as conn:
                return conn.execute(
                    "SELECT id, event_id, destination, body, created_at, attempts, reason,"
                    f" status, error, dead_at, attempt_log FROM dead WHERE {where} AND id > ?"
                    " ORDER BY id LIMIT ?",
                    [*params, after, count],
                ).fetchall()

        for _, *row, log in read_in_pages(read_page, limit):
            attempts = tuple(Attempt(*entry) for entry in json.loads(log or "[]"))
            yield DeadEvent(*row, attempt_log=attempts)

    def replay(
        self,
        selection: DeadSelection,
        *,
        now: float,
        dry_run: bool = False,
        to: str | None = None,
        limit: int | None = None,
        chunk: int = REPLAY_CHUNK,
    ) -> int:
        """Move matching dead events back to the queue (attempts reset, same event id),
        oldest first, optionally to another destination (``to``).

        Each chunk of ``chunk`` rows is one transaction: a replay of 100k rows never
        holds the write lock for long, and a crash halfway leaves each row in exactly
        one table. Named ids must all be dead letters, or nothing moves.
        """
        where, params = selection.where()
        with self._read() as conn:
            self._require_ids(conn, selection)
            rowids = [
                rowid
                for (rowid,) in conn.execute(
                    f"SELECT id FROM dead WHERE {where} ORDER BY id LIMIT ?",
                    [*params, -1 if limit is None else limit],
                )
            ]
        if dry_run:
            return len(rowids)
        moved = 0
        for start in range(0, len(rowids), chunk):
            ids = json.dumps(rowids[start : start + chunk])
            with self._write() as conn:
                moved += conn.execute(
                    "INSERT INTO queue (event_id, destination, body, created_at, queued_at,"
                    " due_at, attempt_log) SELECT event_id, coalesce(?, destination), body,"
                    " created_at, ?, ?, attempt_log FROM dead"
                    " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                    (to, now, now, ids),
                ).rowcount
                conn.execute(
                    "DELETE FROM dead WHERE id IN (SELECT value FROM json_each(?))", (ids,)
                )
        return moved

    def purge(self, selection: DeadSelection, *, dry_run: bool = False) -> int:
        """Delete matching dead events for good."""
        where, params = selection.where()
        with self._write() as conn:
            self._require_ids(conn, selection)
            if dry_run:
                return conn.execute(f"SELECT count(*) FROM dead WHERE {where}", params).fetchone()[
                    0
                ]
            return _delete_counted(conn, "dead", where, params)

    def _update_selected(
        self,
        selection: QueueSelection,
        assignments: str,
        condition: str,
        values: Sequence[object],
        condition_values: Sequence[object],
        *,
        also: Sequence[tuple[str, Sequence[object]]] = (),
        returned: list[object] | None = None,
    ) -> int:
        """``UPDATE queue SET assignments`` on the selected events that meet ``condition``,
        and the statements ``also`` (with their parameters), in one transaction; named
        ids must all be queued. The first column of the rows ``also`` return goes into
        ``returned``."""
        where, params = selection.where()
        with self._write() as conn:
            self._require_ids(conn, selection, "queue")
            for statement, statement_params in also:
                rows = conn.execute(statement, statement_params).fetchall()
                if returned is not None:
                    returned.extend(row[0] for row in rows)
            return conn.execute(
                f"UPDATE queue SET {assignments} WHERE {where} AND {condition}",
                [*values, *params, *condition_values],
            ).rowcount

    def retry_now(self, selection: QueueSelection, *, now: float) -> RetriedNow:
        """Make waiting events due at once (their backoff is cleared); not those in flight
        or held. The selected destinations' pauses end (those of the named events, or
        every one): running drains see :meth:`retry_now_count` change and probe them,
        drains started later find no pause."""
        from .records import RetriedNow

        if selection.destination is not None:
            paused, paused_params = "destination = ?", [selection.destination]
        elif selection.ids:
            where, paused_params = selection.where()
            paused = f"destination IN (SELECT destination FROM queue WHERE {where})"
        else:
            paused, paused_params = "1", []
        ended: list[str] = []
        events = self._update_selected(
            selection,
            "due_at = ?, lease_owner = NULL",
            "due_at > ? AND due_at < ? AND lease_owner IS NULL",
            [now],
            [now, HELD],
            also=(
                (
                    "INSERT INTO meta (key, value) VALUES ('retry_now_count', '1')"
                    " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                    [],
                ),
                (
                    # First the pauses still running, to say which ended; then the rest.
                    "UPDATE destination_state SET paused_until = NULL"
                    f" WHERE {paused} AND paused_until > ? RETURNING destination",
                    [*paused_params, now],
                ),
                (f"UPDATE destination_state SET paused_until = NULL WHERE {paused}", paused_params),
            ),
            returned=ended,
        )
        return RetriedNow(events, tuple(sorted(ended)))

    def retry_now_count(self) -> int:
        """How many times an operator has run ``retry-now`` on this spool."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'retry_now_count'").fetchone()
            return int(row[0]) if row else 0

    def record_service(self, name: str, report: str) -> None:
        """Keep the report (a JSON text) of a running service such as ``spooler serve``
        under ``name``, for ``spooler status``; it replaces that name's last one."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (SERVICE_PREFIX + name, report),
            )

    def service_reports(self) -> dict[str, str]:
        """The reports services keep, by name."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(SERVICE_PREFIX), SERVICE_PREFIX),
            ).fetchall()
        return {key.removeprefix(SERVICE_PREFIX): value for key, value in rows}

    def hold(self, selection: QueueSelection, *, now: float) -> int:
        """Park queued events: never claimed, so never sent and never expired, until
        ``release_held``. Events being delivered at this moment are left alone."""
        return self._update_selected(
            selection,
            "due_at = ?, lease_owner = NULL",
            "NOT (lease_owner IS NOT NULL AND due_at > ?) AND due_at < ?",
            [HELD],
            [now, HELD],
        )

    def release_held(self, selection: QueueSelection, *, now: float) -> int:
        """Make held events due at once."""
        return self._update_selected(selection, "due_at = ?", "due_at >= ?", [now], [HELD])

    def expire(self, selection: QueueSelection, *, now: float, error: str) -> int:
        """Move queued events to the dead-letter table (reason ``manual``), except those a
        drain is delivering right now."""
        from .records import Failure

        where, params = selection.where()
        idle = f"{where} AND NOT (lease_owner IS NOT NULL AND due_at > ?)"
        with self._write() as conn:
            self._require_ids(conn, selection, "queue")
            return _move_to_dead(
                conn, idle, [*params, now], reason="manual", failure=Failure(None, error), now=now
            )

    # -- health ---------------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``["ok"]`` for a sound file, else the problems (SQLite's
        error, when the damage stops the check itself)."""
        # Not in a transaction: after the check trips over damage, its COMMIT would too.
        with self._translated(), self._connection() as conn:
            try:
                return [row[0] for row in conn.execute("PRAGMA integrity_check")]
            except sqlite3.DatabaseError as exc:
                return [str(exc)]

    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        with self._read() as conn:
            return int(
                conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            )

    def reclaim_space(self) -> int:
        """Give free pages back to the file system once at least a quarter of the file is
        free (a drained backlog); returns how many pages were released."""
        released, before = 0, None
        while True:
            with self._read() as conn:
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                total = conn.execute("PRAGMA page_count").fetchone()[0]
            # (A file without auto_vacuum, made by hand, frees nothing: then stop.)
            if free < RECLAIM_MIN_PAGES or free * 4 < total or free == before:
                break
            before = free
            with self._translated(), self._connection() as conn:
                # Its own transaction; executescript, because execute() would step the
                # pragma once and so free a single page.
                conn.executescript(f"PRAGMA incremental_vacuum({RECLAIM_CHUNK_PAGES})")
            released += min(free, RECLAIM_CHUNK_PAGES)
        if released:
            # The file shrinks when the WAL is copied back into it; do that now rather
            # than at the next automatic checkpoint (PASSIVE: never waits for anyone).
            with self._translated(), self._connection() as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return released

    def stale_leases(self, *, now: float) -> int:
        """Events still marked as leased by a drain whose lease has run out."""
        with self._read() as conn:
            return conn.execute(
                "SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL AND due_at <= ?",
                (now,),
            ).fetchone()[0]

    def quarantine_corrupt(self, *, now: float) -> int:
        """Move queued events whose body is not a JSON object to the dead-letter table
        (reason ``corrupt``), so no drain sends them; returns how many."""
        from .records import Failure

        bad = "CASE WHEN json_valid(body) THEN json_type(body) <> 'object' ELSE 1 END"
        with self._write() as conn:
            return _move_to_dead(
                conn,
                bad,
                [],
                reason="corrupt",
                failure=Failure(None, "the stored body is not a JSON object"),
                now=now,
            )

    @staticmethod
    def _require_ids(
        conn: sqlite3.Connection, selection: QueueSelection, table: str = "dead"
    ) -> None:
        """Refuse an operation naming ids that are not in ``table``."""
        if not selection.ids:
            return
        found = {
            row[0]
            for row in conn.execute(
                f"SELECT event_id FROM {table} WHERE event_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(selection.ids)),),
            )
        }
        missing = [eid for eid in selection.ids if eid not in found]
        if missing:
            where = "the dead-letter table" if table == "dead" else "the queue"
            raise UnknownEventError(
                f"not in {where}: {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _check_header(path: str) -> bool:
    """Check what can be checked of a spool file before SQLite opens it: its header, and
    that it is as long as the header says. Returns whether it is missing or empty (a
    spool to create)."""
    try:
        with open(path, "rb") as file:
            header = file.read(100)
            size = file.seek(0, os.SEEK_END)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # SQLite's error, and the operating system's cause, will say why
    if not header:
        return True
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        from .sqlite_errors import NOT_SQLITE

        raise StoreError(f"{path}: {NOT_SQLITE}")
    page_size = int.from_bytes(header[16:18], "big")
    pages = int.from_bytes(header[28:32], "big")
    expected = pages * (65536 if page_size == 1 else page_size)
    # The page count is current when the two change counters agree (SQLite's rule), and
    # the file holds every page unless a write-ahead log still has frames to copy in.
    wal = os.path.realpath(path) + "-wal"
    if (
        header[24:28] == header[92:96]
        and size < expected
        and not (os.path.exists(wal) and os.path.getsize(wal) > 32)
    ):
        raise StoreError(
            f"{path}: the file is shorter than its header says ({size} of {expected} bytes):"
            " cut short or damaged; refusing to use it"
        )
    return False


def read_in_pages(
    read_page: Callable[[int, int], list[tuple[Any, ...]]], limit: int | None
) -> Iterator[tuple[Any, ...]]:
    """The rows ``read_page(after, count)`` gives, page after page, up to ``limit`` in
    all: each page the next ``count`` (``DEAD_PAGE`` at most) rows by key, the first
    column, after ``after``. Memory holds one page, whatever the total."""
    after, left = 0, limit
    while left is None or left > 0:
        count = DEAD_PAGE if left is None else min(DEAD_PAGE, left)
        page = read_page(after, count)
        yield from page
        if len(page) < count:
            return
        after = page[-1][0]
        left = None if left is None else left - count


class _Translated:
    """Lets SQLite's errors out of its block only as the spool's ``StoreError``."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
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


class _Transaction:
    """One transaction on the spool's connection, which it gives to its block.

    The connection's lock is held throughout, and SQLite's errors leave as
    ``StoreError``. A write begins ``IMMEDIATE``, then commits and flushes when the
    block ends, or rolls back if it raises; a read ends its snapshot either way.

    A class, not ``@contextmanager`` generators: every enqueue runs one, and the
    generators cost 4-14 µs of a ~190 µs durable enqueue (docs/performance.md).
    """

    __slots__ = ("_conn", "_current", "_store", "_write")

    def __init__(self, store: Store, *, write: bool) -> None:
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


def _move_to_dead(
    conn: sqlite3.Connection,
    condition: str,
    params: Sequence[object],
    *,
    reason: str,
    failure: Failure,
    now: float,
    attempted: bool = False,
) -> int:
    """Move the queued rows meeting ``condition`` to the dead-letter table, oldest first.

    ``attempted``: the failure ended a delivery attempt, so it joins the attempt log (an
    operator's expiry or a quarantine is not an attempt). The copy and the delete run
    in the caller's transaction, so every row is in exactly one of the two tables
    whatever happens; returns how many rows moved.
    """
    log = _APPEND_ATTEMPT if attempted else "attempt_log"
    log_params = [failure.log_entry(now)] if attempted else []
    moved = conn.execute(
        "INSERT INTO dead (event_id, destination, body, created_at, attempts, reason, status,"
        " error, dead_at, attempt_log) SELECT event_id, destination, body, created_at,"
        f" attempts, ?, ?, ?, ?, {log} FROM queue WHERE {condition} ORDER BY id",
        [reason, failure.status, failure.error, now, *log_params, *params],
    ).rowcount
    conn.execute(f"DELETE FROM queue WHERE {condition}", list(params))
    return moved


def _record_outcome(
    conn: sqlite3.Connection, destination: str, now: float, success: bool, failure: Failure | None
) -> None:
    if success:
        conn.execute(
            "INSERT INTO destination_state (destination, last_success_at) VALUES (?, ?)"
            " ON CONFLICT (destination) DO UPDATE SET last_success_at = excluded.last_success_at",
            (destination, now),
        )
    if failure is not None:
        conn.execute(
            "INSERT INTO destination_state (destination, last_error_at, last_status, last_error)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
            " last_error_at = excluded.last_error_at, last_status = excluded.last_status,"
            " last_error = excluded.last_error",
            (destination, now, failure.status, failure.error),
        )


class _NotInserted(Exception):
    """``insert_array`` could not take every element: roll back, insert nothing."""


def _any_over(conn: sqlite3.Connection, after_id: int, max_event_bytes: int) -> bool:
    """Whether a queued event after ``after_id`` is over ``max_event_bytes``.

    ``insert_array`` checks the rows it wrote rather than filtering in its ``SELECT``:
    there, SQLite would render each element's text twice (~10% of the insert).
    """
    return (
        conn.execute(
            "SELECT 1 FROM queue WHERE id > ? AND length(CAST(body AS BLOB)) > ? LIMIT 1",
            (after_id, max_event_bytes),
        ).fetchone()
        is not None
    )


@lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` queue rows: parameter 1 is the time, then three per row."""
    values = ", ".join(f"(?{i}, ?{i + 1}, ?{i + 2}, ?1, ?1, ?1)" for i in range(2, 3 * rows, 3))
    return (
        "INSERT INTO queue (event_id, destination, body, created_at, queued_at, due_at)"
        f" VALUES {values}"
    )


def _check_limits(
    conn: sqlite3.Connection,
    count: int,
    added_bytes: int,
    max_events: int | None,
    max_bytes: int | None,
) -> None:
    """Raise ``SpoolFullError`` if ``count`` more events of ``added_bytes`` would pass a limit."""
    if max_events is None and max_bytes is None:
        return  # no read of totals: the common case costs nothing
    events, size = _totals(conn)
    # Dead events count: they take the same disk until they are replayed or purged.
    if max_events is not None and events + count > max_events:
        raise SpoolFullError(
            f"the spool holds {events_phrase(events)}, queued or dead, and {count} more "
            f"would pass max_events={max_events}; nothing was enqueued"
        )
    if max_bytes is not None and size + added_bytes > max_bytes:
        raise SpoolFullError(
            f"the spool's events, queued or dead, take {size} bytes, and "
            f"{added_bytes} more would pass max_bytes={max_bytes}; nothing was enqueued"
        )


def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """The spool's events, queued or dead, and their bodies' bytes (the ``totals`` row)."""
    events, size = conn.execute("SELECT events, bytes FROM totals").fetchone()
    return events, size


def _delete_counted(
    conn: sqlite3.Connection, table: str, condition: str, params: Sequence[object]
) -> int:
    """Delete the rows of ``table`` meeting ``condition``, take them off the totals, and
    return how many went.

    The sizes are summed in SQL before the delete: a ``DELETE ... RETURNING`` would hand
    every row to Python (~0.4 ms of a 500-event settle).
    """
    count, size = conn.execute(
        "SELECT count(*), coalesce(sum(length(CAST(body AS BLOB))), 0)"
        f" FROM {table} WHERE {condition}",
        params,
    ).fetchone()
    conn.execute(f"DELETE FROM {table} WHERE {condition}", params)
    _add_totals(conn, -count, -size)
    return count


def _add_totals(conn: sqlite3.Connection, events: int, size: int) -> None:
    conn.execute("UPDATE totals SET events = events + ?, bytes = bytes + ?", (events, size))
