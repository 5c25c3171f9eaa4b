"""A spool file in an application's process: what the process holds open on it, and what
its other doings (a second Spool on the same file, fork()) leave of SQLite's locks.

SQLite's locks on a file are the process's POSIX locks, which go when the process closes
any descriptor of that file, and which a child of fork() does not inherit. A connection
that has lost them looks unused to other processes: the next one to close checkpoints
and deletes the write-ahead log under it, and what it commits after that goes to a
deleted file, which no drain reads and a kill -9 loses.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

from helpers.spools import rows

from spooler import Spool


def open_descriptors() -> list[str]:
    """What each of this process's file descriptors refers to."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return targets


def test_a_spool_left_unclosed_to_the_garbage_collector_keeps_no_descriptor(db: Path) -> None:
    def enqueue_once(n: int) -> None:
        Spool(db).enqueue({"n": n})  # never closed: the application forgot

    enqueue_once(0)
    gc.collect()
    before = open_descriptors()
    for n in range(1, 21):
        enqueue_once(n)
    gc.collect()
    assert open_descriptors() == before
    assert rows(db, "SELECT count(*) FROM queue") == [(21,)]
