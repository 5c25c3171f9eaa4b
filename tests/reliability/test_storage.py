"""Scenarios 5, 6 and 11: a full disk, damaged or foreign files (refused at open, or met
by a drain), and fork() after open."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
from helpers.cli import drain_cli, spooler_cmd
from helpers.spools import drain_once, enqueue_backlog, rows

from spooler import Spool, StoreError
from spooler.store.sqlite import SCHEMA_VERSION
from spooler.testing import Receiver


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


def make_empty_foreign(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 7")  # written, yet no table: not a spool
    conn.close()


def make_other_application(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 0x4D504B47")  # a GeoPackage's, say
    conn.close()


def make_without_tables(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE dead")
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
        ("a spool cut to half its size", make_truncated, "shorter than its header says"),
        ("random bytes", make_garbage, "not a SQLite database"),
        ("a spool whose header was overwritten", make_damaged_header, "not a SQLite database"),
        ("a spool from a newer schema version", make_newer, "newer than this spooler"),
        ("an empty SQLite database spooler did not make", make_empty_foreign, "did not create"),
        (
            "a SQLite database of another application, by its id",
            make_other_application,
            "another application's SQLite database",
        ),
        ("a spool missing one of its tables", make_without_tables, "has no dead table"),
    ],
    ids=[
        "foreign",
        "truncated",
        "random",
        "header",
        "newer",
        "empty",
        "application id",
        "missing table",
    ],
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


def overwrite_a_queue_page(db: Path, *, at: float) -> None:
    """Overwrite with random bytes the leaf page of the queue table that lies ``at`` (a
    share, 0 to 1) of the way through the table's leaves."""
    try:
        leaves = rows(
            db,
            "SELECT pageno FROM dbstat WHERE name = 'queue' AND pagetype = 'leaf' ORDER BY pageno",
        )
    except sqlite3.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        pytest.skip("needs SQLite's dbstat table to find a page of the queue")
    [(page_size,)] = rows(db, "PRAGMA page_size")
    (page,) = leaves[int(len(leaves) * at)]
    with open(db, "r+b") as file:
        file.seek((page - 1) * page_size)
        file.write(os.urandom(page_size))


def test_a_damaged_page_stops_the_drain_and_keeps_what_it_cannot_read(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "6 (damaged page)",
        "a page of the queue is damaged, mid-file, under a drain",
        "the test overwrites one leaf page of the queue table, 4/5 of the way through"
        " 20,001 events, with random bytes; events at risk: those on the other pages",
    )
    # Given a backlog, one page of which the disk then damaged
    with Spool(db) as spool:
        ids = enqueue_backlog(spool, pad=200)
        ids.append(spool.enqueue({"last": True}))
    event_ids = dict(rows(db, "SELECT id, event_id FROM queue"))
    overwrite_a_queue_page(db, at=0.8)
    # When a drain works through it
    drained = drain_cli(db, receiver.url, "--batch-size", "100")
    # Then it stops at the damage, says so, and points at the doctor
    assert drained.returncode == 1
    assert "the spool file is damaged (database disk image is malformed)" in drained.stderr
    assert f"spooler doctor --db {db}" in drained.stderr
    assert "full" not in drained.stderr
    # ...with its last summary all the same (the spool refused to give its leases back)
    assert re.search(
        r"stopped \(error\): delivered=\d+ retried=0 dead=0; the spool could not be used to"
        r" count what is left",
        drained.stderr,
    )
    # ...whose integrity check reports it, without writing to the file
    doctor = spooler_cmd("doctor", "--db", str(db))
    assert doctor.returncode == 1
    assert "problem  integrity  the file is damaged: database disk image is malformed" in (
        doctor.stdout
    )
    # ...and every event off the damaged page was delivered, or is still where it was.
    unreadable, queued = set(), set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for rowid, event_id in event_ids.items():
            try:
                found = conn.execute("SELECT 1 FROM queue WHERE id = ?", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                unreadable.add(event_id)
                continue
            if found:
                queued.add(event_id)
    finally:
        conn.close()
    assert 0 < len(unreadable) < 50  # one page's worth
    assert queued  # (how many were delivered first depends on what the drain read first)
    # (Not dead letters, but accounted for the same way: still queued, and readable.)
    row.tally(set(ids) - unreadable, [e["id"] for e in receiver.delivered], dead=queued)
    assert row.lost == 0 and row.duplicated == 0
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
