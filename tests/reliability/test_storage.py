"""Scenarios 5, 6 and 11: a full disk, damaged or foreign files, and fork() after open."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import drain_once, rows

from spooler import Spool, StoreError
from spooler.receiver import Receiver
from spooler.store import SCHEMA_VERSION


def test_a_full_disk_fails_enqueue_clearly_and_recovers(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "5",
        "disk full (SQLITE_FULL) under a producer",
        "PRAGMA max_page_count caps the producer's file at its current size",
    )
    with Spool(db) as producer, Spool(db) as drainer:
        # Given a producer whose every earlier enqueue succeeded
        kept = producer.enqueue_many([{"n": n, "pad": "x" * 500} for n in range(200)])
        # When the disk is full: the producer's connection may not grow the file
        pages = rows(db, "PRAGMA page_count")[0][0]
        with producer.store._connection() as conn:
            conn.execute(f"PRAGMA max_page_count = {pages}")
        failed = 0
        for n in range(200):
            try:
                kept.append(producer.enqueue({"late": n, "pad": "y" * 500}))
            except StoreError as exc:
                assert "full" in str(exc)
                failed += 1
        # Then enqueue raised a clear StoreError, earlier events are intact...
        assert failed > 0
        assert rows(db, "PRAGMA integrity_check") == [("ok",)]
        # ...the drain keeps delivering (deleting frees pages inside the file)...
        started = time.monotonic()
        drain_once(drainer, receiver.url, id_field="id")
        # ...and once there is room again the producer enqueues as before.
        kept.append(producer.enqueue({"after": True}))
        drain_once(drainer, receiver.url, id_field="id")
        row.recover_s = time.monotonic() - started
    row.tally(kept, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_foreign(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO orders (total) VALUES (9.5)")
    conn.commit()
    conn.close()


def make_truncated(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n, "pad": "x" * 200} for n in range(3000)])
    with open(db, "r+b") as file:
        file.truncate(os.path.getsize(db) // 2)


def make_garbage(db: Path) -> None:
    db.write_bytes(os.urandom(64 * 1024))


def make_newer(db: Path) -> None:
    Spool(db).close()
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.commit()
    conn.close()


def make_damaged_header(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    with open(db, "r+b") as file:
        file.write(b"not the SQLite magic")


@pytest.mark.parametrize(
    ("kind", "make", "message"),
    [
        ("another application's SQLite database", make_foreign, "not a spooler spool"),
        ("a spool cut to half its size", make_truncated, "malformed"),
        ("random bytes", make_garbage, "not a database"),
        ("a spool whose header was overwritten", make_damaged_header, "not a database"),
        ("a spool from a newer schema version", make_newer, "newer than this spooler"),
    ],
    ids=["foreign", "truncated", "random", "header", "newer"],
)
def test_damaged_or_foreign_files_are_refused_never_reset(
    db: Path, scenario, request: pytest.FixtureRequest, kind: str, make, message: str
) -> None:
    case = request.node.callspec.id
    row = scenario(
        f"6 ({case})",
        f"--db is {kind}",
        "file written or cut by the test; open and enqueue must refuse it, "
        "and leave it byte for byte as it was",
    )
    make(db)
    before = digest(db)
    for attempt in (lambda: Spool(db), lambda: Spool(db).enqueue({"x": 1})):
        with pytest.raises(StoreError, match=message):
            attempt()
    assert digest(db) == before  # never a silent reset or repair
    row.recover_s = None


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_fork_after_open_gives_the_child_its_own_connection(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "11",
        "fork() after opening a Spool (pre-fork servers)",
        "os.fork(); parent and child enqueue through the same Spool object",
    )
    read_end, write_end = os.pipe()
    with Spool(db) as spool:
        parent_ids = [spool.enqueue({"who": "parent-before"})]
        pid = os.fork()
        if pid == 0:  # the child: enqueue through the inherited object, report ids, exit
            try:
                ids = [spool.enqueue({"who": "child", "n": n}) for n in range(20)]
                reopened = spool.store._connection().pid == os.getpid()
                os.write(write_end, ("\n".join(ids) + f"\n{reopened}").encode())
            finally:
                os._exit(0)
        os.close(write_end)
        parent_ids += [spool.enqueue({"who": "parent", "n": n}) for n in range(20)]
        with os.fdopen(read_end) as pipe:
            *child_ids, reopened = pipe.read().split("\n")
        assert os.waitpid(pid, 0)[1] == 0
        assert reopened == "True"  # the child did not use the parent's connection
        assert spool.store._connection().pid == os.getpid()
        drain_once(spool, receiver.url, id_field="id")
    row.tally(parent_ids + child_ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and len(child_ids) == 20
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_an_unwritable_directory_is_a_clear_error(scenario) -> None:
    row = scenario(
        "6 (unwritable directory)",
        "spool path in a directory nobody may write",
        "a path under /proc (refused even to root, unlike chmod)",
    )
    with pytest.raises(StoreError, match="cannot create the directory of /proc/spooler"):
        Spool("/proc/spooler/spool.db")
    with pytest.raises(StoreError):
        Spool("/proc/spool.db")
    row.recover_s = None
