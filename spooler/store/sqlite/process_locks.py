"""What this process does beside its connections to spool files, kept from undoing
SQLite's locks on them.

SQLite's locks on a file are the process's POSIX locks: they go as soon as the process
closes *any* descriptor of the file, and a child of fork() does not inherit them (though
it inherits SQLite's note, in memory, that they are held, so the child's own connections
to the file never take theirs). A connection without its locks looks unused to the other
processes, and the next of them to close checkpoints and deletes the write-ahead log
under it: what it commits afterwards goes to a deleted file, which no drain reads and
which is lost when the process is killed. Two rules keep the locks:

- A file this process has a connection to is never opened beside SQLite: the checks made
  before a connection opens (``check_header``, the creation of the file) run under
  ``files_lock``, only on a file with no connection here (``is_open``), and the new
  connection is counted (``count_open``) before that lock is let go.
- At fork(), every connection is idle: the parent holds each one's lock across the fork
  (a waiting fork waits for the transaction in progress). The child closes the log
  descriptors it inherited at once, and the connections before it opens one of its own
  (``close_inherited``), so that SQLite forgets the locks it believes it holds there. (A
  child that never opens a spool makes no SQLite call for it: a fork while another
  thread was inside SQLite on some other database could find SQLite's own mutexes held.)
"""

from __future__ import annotations

import os
import threading

# weakref.WeakSet, without importing weakref (~0.3 ms of `import spooler`): threading has
# loaded it already.
from _weakrefset import WeakSet

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from .base import LockedConnection

__all__ = [
    "close_inherited",
    "count_closed",
    "count_open",
    "file_key",
    "files_lock",
    "is_open",
    "opened",
    "track",
]

# Held while a file's checks run before a connection to it opens, and while the
# connection is counted; and across fork(), so that the child's copy is free.
files_lock = threading.RLock()
# Connections counted by ``count_open`` and not yet open and tracked (``opened``): a fork
# waits for them, or the child would inherit one half set up, SQLite's locks noted for
# it, that no store of the child knows of to close.
_opening = 0
_opened = threading.Condition(files_lock)
# The spool files this process has connections to, by (device, inode): how many.
_open_files: dict[tuple[int, int], int] = {}
# Connections closed since, by file: counted out under ``files_lock`` (``count_closed``).
_closed: list[tuple[int, int]] = []
# This process's open connections, for the fork hooks.
_connections: WeakSet[LockedConnection] = WeakSet()
# The connections whose locks the parent holds across a fork in progress.
_held: list[LockedConnection] = []
# In a child of fork(): the connections it inherited, to close before it opens its own.
_inherited: list[LockedConnection] = []


def file_key(path: str) -> tuple[int, int] | None:
    """The file ``path`` names (through symlinks), as (device, inode); None if missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def is_open(key: tuple[int, int] | None) -> bool:
    """Whether this process has a connection to the file ``key`` (``files_lock`` held)."""
    _settle()
    return key in _open_files


def count_open(key: tuple[int, int] | None) -> None:
    """Count a connection to the file ``key`` about to open (``files_lock`` held); the
    opener calls ``opened`` once it is open and tracked, or has failed."""
    global _opening
    _settle()
    if key is not None:
        _open_files[key] = _open_files.get(key, 0) + 1
    _opening += 1


def opened() -> None:
    """A connection ``count_open`` counted is open and tracked, or failed to open."""
    global _opening
    with files_lock:
        _opening -= 1
        _opened.notify_all()


def count_closed(key: tuple[int, int] | None) -> None:
    """Count a connection to the file ``key`` closed (or that failed to open).

    Only noted here (``list.append`` is atomic), and counted at the next ``is_open`` or
    ``count_open``: this runs where taking ``files_lock`` could deadlock, in a garbage
    collection that a thread inside a transaction set off while a fork waits for it.
    """
    if key is not None:
        _closed.append(key)


def _settle() -> None:
    while _closed:
        key = _closed.pop()
        left = _open_files.get(key, 0) - 1
        if left > 0:
            _open_files[key] = left
        else:
            _open_files.pop(key, None)


def track(connection: LockedConnection) -> None:
    """Have the fork hooks hold ``connection`` idle across a fork, and close it in the child."""
    _connections.add(connection)


def close_inherited() -> None:
    """Close the connections this process inherited from its parent at fork(), before it
    opens one of its own (``files_lock`` held)."""
    while _inherited:
        _inherited.pop().close_inherited()


def _before_fork() -> None:
    files_lock.acquire()
    _opened.wait_for(lambda: _opening == 0)
    pid = os.getpid()
    for connection in list(_connections):
        if connection.pid == pid:
            connection.hold()
            _held.append(connection)


def _after_fork_in_parent() -> None:
    for connection in _held:
        connection.let_go()
    _held.clear()
    files_lock.release()


def _after_fork_in_child() -> None:
    for connection in _held:
        connection.let_go_inherited()
    _inherited.extend(_held)
    _held.clear()
    _connections.clear()
    _open_files.clear()
    _closed.clear()
    files_lock.release()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
