"""SQLite's errors on a spool file, said the way an operator can act on them.

SQLite names the symptom ("disk I/O error", "unable to open database file", "database
or disk is full") and keeps the cause (the ``errno``) to itself. So where it can only
be the disk or the file system, the operating system is asked what is wrong: a full
disk, a read-only file system, no permission; and where SQLite says the file is full
while the disk is not, the file is checked for damage.
"""

from __future__ import annotations

import os
import sqlite3

from ...errors import StoreError
from .base import unwritable_file

__all__ = ["NOT_SQLITE", "damaged", "os_problem", "store_error", "unreachable", "unwritable"]

NOT_SQLITE = "not a SQLite database, or its header is damaged; refusing to touch it"

# Less than this free on the spool's file system counts as a full disk: SQLite writes a
# page (4 KiB) at a time, but a file system may keep some space back for itself.
FULL_DISK_BYTES = 1024 * 1024
# SQLite's texts for the errors whose cause is on the disk or in the file system.
_OS_SYMPTOMS = (
    "disk I/O error",
    "unable to open database file",
    "attempt to write a readonly database",
    "database or disk is full",
)
_DAMAGED = "database disk image is malformed"


def store_error(path: str, exc: sqlite3.DatabaseError, *, busy_timeout: float) -> StoreError:
    """The ``StoreError`` an operator reads for SQLite's error ``exc`` on the spool ``path``."""
    text = str(exc)
    if text == "database is locked":  # SQLITE_BUSY: the busy timeout ran out
        return StoreError(
            f"{path}: still locked after {busy_timeout:g}s: another process holds its write"
            f" lock ({text})"
        )
    if text == _DAMAGED:
        return StoreError(damaged(path, text))
    if text == "file is not a database":
        return StoreError(f"{path}: {NOT_SQLITE} ({text})")
    if not isinstance(exc, sqlite3.OperationalError):
        return StoreError(f"{path}: {text} (damaged, or not a spooler spool?)")
    if text in _OS_SYMPTOMS:
        problem = os_problem(path)
        if problem:
            return StoreError(f"{path}: {problem} ({text})")
        if text == "database or disk is full":
            return StoreError(_full_with_room(path, text))
    return StoreError(f"{path}: {text}")


def damaged(path: str, text: str) -> str:
    """The message for a spool file SQLite found damaged while reading it."""
    return (
        f"{path}: the spool file is damaged ({text}); the events SQLite cannot read stay"
        f" where they are. Run `spooler doctor --db {path}` to check the whole file"
    )


def os_problem(path: str) -> str | None:
    """What the operating system says is wrong with writing the spool ``path``: a
    folder or a device where the file should be, a read-only file system, no
    permission, a full disk (or none of these: None)."""
    if os.path.isdir(path):  # --db /var/spool/myapp/ for --db /var/spool/myapp/spool.db
        example = os.path.join(path, "spool.db")
        return f"a folder, not a spool file: give a file's path, such as {example}"
    if os.path.exists(path) and not os.path.isfile(path):
        return "not a regular file: a spool is a file SQLite can write beside its -wal and -shm"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fs = os.statvfs(directory)
    except OSError as exc:
        return f"cannot reach its folder {directory} ({exc.strerror})"
    if fs.f_flag & os.ST_RDONLY:
        return f"the file system holding {directory} is mounted read-only"
    refused = unwritable(path)
    if refused:
        return refused
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"no permission to create files in {directory} (as user {_user()}); SQLite"
            " keeps its -wal and -shm files beside the spool"
        )
    free = fs.f_bavail * fs.f_frsize
    if free < FULL_DISK_BYTES:
        return f"the disk is full ({_size(free)} free on {directory})"
    if fs.f_files and not fs.f_favail:
        return f"the file system holding {directory} has no free inodes left"
    return None


def unreachable(path: str, exc: OSError) -> str:
    """The refusal of a spool ``path`` this user cannot look at (``os.stat`` raised
    ``exc``): a folder on the way it may not enter, most often. Not "no such file",
    which would send an operator looking for a spool that is there."""
    return f"cannot reach {path}: {exc.strerror} (as user {_user()})"


def unwritable(path: str) -> str | None:
    """The first of the spool ``path``'s files (the file, its -wal, its -shm) that this
    user may not read and write, said so; or None (none, or none that exists)."""
    name = unwritable_file(path)
    return None if name is None else f"no permission to read and write {name} (as user {_user()})"


def _full_with_room(path: str, text: str) -> str:
    """SQLite says "full", but the disk has room: either the file reached its page
    limit (``max_page_count``), or a damaged page made SQLite think so."""
    problems = _quick_check(path)
    if problems:
        return damaged(path, f"{text}, and the check of the file found: {problems}")
    return f"{path}: the database reached its largest size (SQLite's max_page_count) ({text})"


def _quick_check(path: str) -> str | None:
    """``PRAGMA quick_check`` on a connection of its own (read-only); its first problem,
    or None if the file is sound."""
    try:
        conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        (result,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    return None if result == "ok" else result


def _size(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def _user() -> str:
    """The user spooler runs as, by name where the system knows it."""
    import pwd  # here, not at the top: only an error message needs it

    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
