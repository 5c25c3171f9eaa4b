"""Keeping a spool file healthy: its space given back to the disk, and the checks of
``spooler doctor`` (integrity, write-ahead log, file modes, free disk, stale leases,
bodies that are not events)."""

from __future__ import annotations

import os
import sqlite3

from .base import SQLiteBase
from .sql import LEASED, dissolve, move_to_dead

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from ...records import Finding

__all__ = ["SQLiteMaintenance"]

# Disk: free pages go back to the file system once a quarter of the file is free, a
# few MB per transaction so producers never wait long.
RECLAIM_MIN_PAGES = 256
RECLAIM_CHUNK_PAGES = 2048
WAL_WARNING_BYTES = 64 * 1024 * 1024  # SQLite checkpoints at ~4 MB: more means a stuck reader


class SQLiteMaintenance(SQLiteBase):
    """Keeping a spool file healthy."""

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``["ok"]`` for a sound file, else the problems (SQLite's
        error, when the damage stops the check itself)."""
        # Not in a transaction: after the check trips over damage, its COMMIT would too.
        with self._as_store_errors(), self._connection() as conn:
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
            if before is not None:
                # What the step gave back (others' commits may have freed pages since).
                released += max(before - free, 0)
            # (A file without auto_vacuum, made by hand, frees nothing: then stop.)
            if free < RECLAIM_MIN_PAGES or free * 4 < total or free == before:
                break
            before = free
            # Few pages in use (a backlog drained): all the free ones go at once.
            at_once = total - free <= RECLAIM_CHUNK_PAGES
            with self._as_store_errors(), self._connection() as conn:
                if at_once:
                    # One commit in FULL mode moves the pages in use down and cuts every
                    # free page off: no more work than a chunk. incremental_vacuum looks
                    # each page it frees up in the free list, in a time that grows with
                    # the list (~80 ms for the 10k pages of 200k events, against ~2 ms).
                    # A crash between the two leaves FULL, which the next open sets back
                    # (schema.prepare).
                    conn.execute("PRAGMA auto_vacuum = FULL")
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                else:
                    # Its own transaction; executescript, because execute() would step
                    # the pragma once and so free a single page.
                    conn.executescript(f"PRAGMA incremental_vacuum({RECLAIM_CHUNK_PAGES})")
        if released:
            # The file shrinks when the WAL is copied back into it; do that now rather
            # than at the next automatic checkpoint (PASSIVE: never waits for anyone).
            with self._as_store_errors(), self._connection() as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return released

    def stale_leases(self, *, now: float) -> int:
        """Events held by leases that ran out (their drains died, or stalled): the next
        claim of their destination ends those leases."""
        with self._read() as conn:
            events: int = conn.execute(  # sqlite3 types its rows as Any
                "SELECT coalesce(sum(events), 0) FROM leases WHERE until <= ?", (now,)
            ).fetchone()[0]
            return events

    def quarantine_corrupt(self, *, now: float) -> int:
        """Move queued events whose body is not a JSON object to the dead-letter table
        (reason ``corrupt``), so no drain sends them; returns how many."""
        from ...records import Failure

        bad = "CASE WHEN json_valid(body) THEN json_type(body) <> 'object' ELSE 1 END"
        with self._write() as conn:
            # Not those a drain is sending: their lease could not be settled as it was.
            dissolve(conn, "until <= ?", [now], now=now)
            return move_to_dead(
                conn,
                f"{bad} AND NOT {LEASED}",
                [now],
                reason="corrupt",
                failure=Failure(None, "the stored body is not a JSON object"),
                now=now,
            )

    def storage_checks(self, *, min_free_bytes: int) -> list[Finding]:
        """The file's own checks: the write-ahead log's size, who may read the files, and
        the free space of their disk."""
        import shutil  # here: `import spooler` stays small

        from ...records import Finding

        wal = f"{self.path}-wal"
        size = os.path.getsize(wal) if os.path.exists(wal) else 0
        stuck = size > WAL_WARNING_BYTES
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
        short = free < min_free_bytes
        return [
            Finding(
                "warning" if stuck else "ok",
                "wal",
                f"{size / 1024 / 1024:.1f} MiB"
                + (" (a long-running reader may be blocking checkpoints)" if stuck else ""),
            ),
            self._file_access(),
            Finding(
                "problem" if short else "ok",
                "disk",
                f"{free / 1024 / 1024:.0f} MiB free"
                + (f" (under {min_free_bytes / 1024 / 1024:.0f} MiB)" if short else ""),
            ),
        ]

    def _file_access(self) -> Finding:
        """Whether others may read the spool's files: they hold the event payloads."""
        from ...records import Finding

        real = os.path.realpath(self.path)
        exposed = []
        for name in (real, f"{real}-wal", f"{real}-shm"):
            try:
                mode = os.stat(name).st_mode & 0o777
            except FileNotFoundError:
                continue
            if mode & 0o006:
                exposed.append(f"{name} ({mode:04o})")
        if not exposed:
            return Finding("ok", "files", "not readable by others")
        return Finding(
            "warning",
            "files",
            f"readable by others, payloads included: {', '.join(exposed)}; run chmod o-rwx on"
            " them (SQLite gives new -wal and -shm files the spool file's mode)",
        )
