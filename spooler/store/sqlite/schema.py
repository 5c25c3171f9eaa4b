"""The spool file's tables, the checks made when it opens, and its schema upgrades.

One file holds three tables: ``queue`` (events waiting or in flight), ``dead`` (the
dead-letter table) and ``meta`` (application name and schema version), plus a
one-row ``totals`` table that keeps the spool's size so limits cost O(1) to check
(once one has been: until then writers leave it alone, see ``sql.TOTALS_KEPT``),
``destination_state`` (each destination's last outcome and circuit breaker),
``history`` (a row per destination and minute, for the dashboard's charts) and
``leases`` (one row per batch a drain holds: ``store/leases.py``).
"""

from __future__ import annotations

import os
import sqlite3
import time

from ...errors import StoreError
from ..shared import no_spool

__all__ = [
    "APPLICATION_ID",
    "MIN_SQLITE_VERSION",
    "SCHEMA_VERSION",
    "WAL_SIZE_LIMIT",
    "check_header",
    "prepare",
]

SCHEMA_VERSION = 7
APPLICATION = "spooler"
# In the file's header (PRAGMA application_id), set before anything else is written to a
# new spool: a file with this id and no tables yet is a spool whose creation was cut
# short, not another application's empty database. ("SPLR"; spools made before it have 0.)
APPLICATION_ID = 0x53504C52
_TABLES = frozenset({"meta", "totals", "queue", "dead", "destination_state", "history", "leases"})
# Tables an older spool does not have yet, by the version that added them.
_ADDED_IN = {"history": 5, "leases": 6}
MIN_SQLITE_VERSION = (3, 35, 0)  # RETURNING, and DROP COLUMN (the upgrade to leases)
_FULL = 1  # PRAGMA auto_vacuum's value for FULL
# How long a new spool's switch to WAL mode waits before it tries again, while others
# hold the file (``_switch_to_wal``).
_WAL_SWITCH_RETRY_SECONDS = 0.002
# The WAL file is cut back to this whenever a checkpoint empties it (it otherwise stays
# at its high mark).
WAL_SIZE_LIMIT = 16 * 1024 * 1024

# A lease's id is its token: AUTOINCREMENT, so that no later lease ever gets the id of
# one that ended (a drain that lost its lease must find none under its token).
_LEASES = """
CREATE TABLE leases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner       TEXT NOT NULL,
    destination TEXT NOT NULL,
    until       REAL NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    ids         TEXT,
    events      INTEGER NOT NULL,
    bytes       INTEGER,
    low_due     REAL NOT NULL,
    low_id      INTEGER NOT NULL,
    high_due    REAL NOT NULL,
    high_id     INTEGER NOT NULL
)"""
_SCHEMA = (
    """
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
    + _LEASES
)
# The history's minutes (store/sqlite/history.py); the dead-letter table is read newest
# first by destination and reason (the dashboard's pages).
_HISTORY = (
    "CREATE TABLE history ("
    " minute INTEGER NOT NULL, destination TEXT NOT NULL,"
    " delivered INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0,"
    " dead INTEGER NOT NULL DEFAULT 0, requests INTEGER NOT NULL DEFAULT 0,"
    " latency_sum REAL NOT NULL DEFAULT 0, latency_max REAL NOT NULL DEFAULT 0,"
    " backlog INTEGER, oldest_age REAL,"
    " PRIMARY KEY (minute, destination)) WITHOUT ROWID",
    "CREATE INDEX dead_by_destination ON dead (destination, reason)",
)
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
    4: _HISTORY,
    # Leases move out of the rows into a table of their own. An event leased the old
    # way is due when its old lease ends, its attempt in flight counted: as it would
    # be after a lease of the new kind ran out.
    5: (_LEASES, "ALTER TABLE queue DROP COLUMN lease_owner"),
    # Writers keep the totals row only from the first limit checked on (a 'totals' key
    # in meta; sql.TOTALS_KEPT): no statement changes, only what the row means. A
    # spool of version 6 had its row kept by every writer, and an older process still
    # running on it (a rolling upgrade) goes on keeping it and checking limits against
    # it: so the upgraded spool's row stays kept, exact as it was, or older producers
    # would refuse events for what newer drains took off without counting.
    6: ("INSERT OR IGNORE INTO meta (key, value) VALUES ('totals', 'kept')",),
}


def prepare(conn: sqlite3.Connection, path: str, *, empty: bool, create: bool) -> str:
    """Check the file and set the connection up. Returns what it did to the schema:
    ``created``, ``upgraded`` or ``kept``. ``empty``: the file was missing or empty
    before it opened; ``create``: a file with no spool yet may become one (else it is
    refused, and left as it was)."""
    tables = _table_names(conn)
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    # Checked before any PRAGMA that writes: a file that is not ours stays untouched.
    if application_id not in (0, APPLICATION_ID):
        raise StoreError(
            f"{path} is another application's SQLite database (application_id"
            f" {application_id:#010x}); refusing to touch it"
        )
    version = SCHEMA_VERSION
    if tables:
        version = _check_schema(conn, path, tables)
    elif not empty and application_id != APPLICATION_ID:
        (user_version,) = conn.execute("PRAGMA user_version").fetchone()
        raise StoreError(
            f"{path} is a SQLite database that spooler did not create (no tables,"
            f" user_version {user_version}); refusing to touch it: delete it first if it"
            " should become a spool"
        )
    elif not create:
        raise StoreError(no_spool(path, "the file is empty" if empty else "it has no tables yet"))
    else:
        _mark_new_file(conn)
    mode = _switch_to_wal(conn)
    if mode.lower() != "wal":
        raise StoreError(f"{path}: cannot switch to WAL mode (got {mode!r})")
    # Commits never fsync on their own: "full" durability flushes the log after each
    # one (SQLiteBase._flush), "normal" leaves it to checkpoints.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _FULL:
        # Left by a reclaim cut short (SQLiteMaintenance.reclaim_space): every commit
        # would give its free pages back at once, producers' too.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if not tables:
        return "created" if _create_schema(conn, path) else "kept"
    if version < SCHEMA_VERSION:
        _migrate(conn)  # the write lock only for a spool that needs upgrading
        return "upgraded"
    return "kept"


def _mark_new_file(conn: sqlite3.Connection) -> None:
    """Write a new spool file's first page: marked as spooler's (``APPLICATION_ID``), in
    INCREMENTAL auto_vacuum, which lets a drained backlog give its pages back without a
    full VACUUM and only takes effect before the first page is written.

    One transaction: ``PRAGMA auto_vacuum`` alone writes that page, unmarked, and
    another process opening the file before the mark (or after a crash between the
    two) took it for another application's database and refused it.
    """
    conn.execute("BEGIN")
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode = WAL``, tried again for as long as the connection's busy
    timeout while other connections hold the file: SQLite takes the lock this needs
    without waiting (only a new spool, not yet in WAL mode, needs it)."""
    (timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if str(exc) != "database is locked" or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_SWITCH_RETRY_SECONDS)
        else:
            return mode


def _create_schema(conn: sqlite3.Connection, path: str) -> bool:
    """Create the tables; False if another process created them first."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created the schema while we waited for the lock.
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            conn.execute("COMMIT")
            _check_schema(conn, path, _table_names(conn))
            return False
        for statement in [*filter(str.strip, _SCHEMA.split(";")), *_HISTORY]:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def _check_schema(conn: sqlite3.Connection, path: str, tables: set[str]) -> int:
    """Refuse a file that is not a spool this code can use; return its schema version."""
    meta = _meta(conn) if "meta" in tables else {}
    if meta.get("application") != APPLICATION:
        raise StoreError(
            f"{path} is a SQLite database but not a spooler spool; refusing to touch it"
        )
    version = int(meta.get("schema_version", "0"))
    missing = {table for table in _TABLES - tables if _ADDED_IN.get(table, 0) <= version}
    if missing:
        raise StoreError(
            f"{path}: the spool has no {', '.join(sorted(missing))} table: damaged,"
            " or changed by hand; refusing to use it"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this spooler "
            f"understands ({SCHEMA_VERSION}); upgrade spooler"
        )
    if version < SCHEMA_VERSION and version not in _MIGRATIONS:
        raise StoreError(f"{path} has unknown schema version {version}")
    return version


def _migrate(conn: sqlite3.Connection) -> None:
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


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The ``meta`` table's keys and values; none if it lacks spooler's columns (another
    application's table of that name)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(meta)")}
    if not {"key", "value"} <= columns:
        return {}
    return dict(conn.execute("SELECT key, value FROM meta"))


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def check_header(path: str) -> bool:
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
        from .errors import NOT_SQLITE

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
