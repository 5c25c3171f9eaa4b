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
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import wait_until
from helpers.spools import rows

from spooler import Spool, SpoolerError
from spooler.store.sqlite import process_locks


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


def another_process_reads(db: Path) -> int:
    """How many events another process finds queued; it opens and closes a connection, as
    `spooler status` or a drain that stops would."""
    count = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; conn = sqlite3.connect(sys.argv[1]);"
            " print(conn.execute('SELECT count(*) FROM queue').fetchone()[0]); conn.close()",
            str(db),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(count)


def test_a_second_spool_on_the_same_file_leaves_the_first_its_locks(db: Path) -> None:
    with Spool(db) as first:
        first.enqueue({"n": 0})
        Spool(db).close()  # another part of the application opens the same spool
        assert another_process_reads(db) == 1
        # That process found the file still in use: the write-ahead log is still the
        # one the first spool writes, and what it commits now is there for all to read.
        assert os.path.exists(f"{db}-wal")
        for n in range(1, 6):
            first.enqueue({"n": n})
        assert another_process_reads(db) == 6


class EnqueuingChild:
    """A child of fork() that enqueues an event on ``spool`` (inherited), or on a Spool
    of its own (None), then, once its parent closed its spool, five more; it ends as a
    kill -9 would, nothing closed, nothing checkpointed."""

    def __init__(self, db: Path, spool: Spool | None) -> None:
        self._to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                child = spool if spool is not None else Spool(db)
                child.enqueue({"who": "child", "n": 0})  # on a connection of its own
                os.write(from_child, b"1")
                os.read(self._to_child, 1)  # the parent closed, another process came and went
                for n in range(1, 6):
                    child.enqueue({"who": "child", "n": n})
                os.write(from_child, b"2")
                os.read(self._to_child, 1)
            finally:
                os._exit(0)
        self._db, self._to_parent, self._from_parent = db, to_parent, from_parent

    def outlives(self, close: Callable[[], None]) -> int:
        """Once the child enqueued its first event, ``close`` the parent's spool; returns
        how many events another process saw queued once the child enqueued the rest."""
        assert os.read(self._to_parent, 1) == b"1"
        close()
        assert another_process_reads(self._db) == 2
        os.write(self._from_parent, b"1")
        assert os.read(self._to_parent, 1) == b"2"
        seen_while_the_child_ran = another_process_reads(self._db)
        os.write(self._from_parent, b"1")
        assert os.waitpid(self.pid, 0)[1] == 0
        return seen_while_the_child_ran


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
@pytest.mark.parametrize("childs_spool", ["inherited", "its own"])
def test_a_child_of_fork_keeps_its_locks_when_the_parent_closes_the_spool(
    db: Path, childs_spool: str
) -> None:
    spool = Spool(db)  # opened at import, say, before a pre-fork server forks
    spool.enqueue({"who": "parent"})
    child = EnqueuingChild(db, spool if childs_spool == "inherited" else None)
    # the parent (a daemon's first process) closes or exits
    assert child.outlives(spool.close) == 7
    assert rows(db, "SELECT count(*) FROM queue") == [(7,)]  # none lost with the child


def open_at_once(db: Path, threads: int, barrier: Any, outcomes: Any) -> None:
    """Open the new spool ``db`` and enqueue, from ``threads`` threads at the same moment;
    put what each got on ``outcomes``."""

    def open_and_enqueue() -> None:
        barrier.wait()
        try:
            with Spool(db) as spool:
                spool.enqueue({"n": 1})
        except SpoolerError as exc:
            outcomes.put(f"{type(exc).__name__}: {exc}")
        else:
            outcomes.put("ok")

    started = [threading.Thread(target=open_and_enqueue) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_many_processes_and_threads_create_one_new_spool_at_once(tmp_path: Path) -> None:
    # A pre-fork server's workers, each with threads, take their first requests at once.
    context = multiprocessing.get_context("fork")
    processes, threads = 4, 4
    outcomes = context.Queue()
    for round_ in range(16):
        db = tmp_path / f"spool{round_}.db"
        barrier = context.Barrier(processes * threads)
        workers = [
            context.Process(target=open_at_once, args=(db, threads, barrier, outcomes))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        got = sorted(outcomes.get(timeout=60) for _ in range(processes * threads))
        for worker in workers:
            worker.join()
        assert got == ["ok"] * (processes * threads), f"round {round_}"
        assert rows(db, "SELECT count(*) FROM queue") == [(processes * threads,)]


def write_lock_holder(db: Path) -> subprocess.Popen[str]:
    """Another process that holds the write lock of ``db`` until a line on its stdin."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; conn = sqlite3.connect(sys.argv[1], isolation_level=None);"
            " conn.execute('BEGIN IMMEDIATE'); print('held', flush=True); sys.stdin.readline();"
            " conn.execute('COMMIT')",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_fork_waits_for_a_spool_another_thread_is_opening(db: Path) -> None:
    # A spool of an older schema: opening it upgrades it, under the write lock, which
    # another process holds for now; so a thread's open of it is under way for a while.
    with Spool(db) as spool:
        spool.enqueue({"who": "before"})
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    holder = write_lock_holder(db)
    opened: list[Spool] = []
    opener = threading.Thread(target=lambda: opened.append(Spool(db)))
    opener.start()
    assert wait_until(lambda: process_locks._opening == 1)  # the opener waits for the lock

    fork_waited = []

    def let_the_holder_go_once_the_fork_waits() -> None:
        waiters = process_locks._opened._waiters  # type: ignore[attr-defined]
        fork_waited.append(wait_until(lambda: len(waiters) == 1))
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()

    releaser = threading.Thread(target=let_the_holder_go_once_the_fork_waits)
    releaser.start()
    child = EnqueuingChild(db, None)
    releaser.join()
    opener.join()
    holder.communicate(timeout=30)  # and closes its pipes
    assert holder.returncode == 0
    assert child.outlives(opened[0].close) == 7
    assert fork_waited == [True]  # the fork came after the open, not halfway
