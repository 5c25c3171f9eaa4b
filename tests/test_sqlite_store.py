"""What only the SQLite file does: its header, WAL and schema checks, flushes to disk,
upgrades of older spools, a full disk, a clock jumping back, and giving space back.
(What both backends do is in test_store_contract.py and test_spool_contract.py.)"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.processes import wait_until
from helpers.spools import rows, spy_on_flushes

import spooler.store.sqlite.base as sqlite_base
import spooler.store.sqlite.maintenance as sqlite_maintenance
from spooler import (
    ConfigError,
    NotDurableError,
    Spool,
    SpoolFullError,
    StoreError,
)
from spooler.history import HistoryPoint
from spooler.records import DeadSelection, Failure
from spooler.store.sqlite import SCHEMA_VERSION, SQLiteStore
from spooler.store.sqlite.errors import store_error
from spooler.store.sqlite.maintenance import RECLAIM_MIN_PAGES
from spooler.store.sqlite.schema import APPLICATION_ID

NOW = 1_000_000.0


def enqueue(store: SQLiteStore, *bodies: str, destination: str = "default") -> list[str]:
    ids = [f"id-{destination}-{n}-{body}" for n, body in enumerate(bodies)]
    store.insert([(i, destination, b) for i, b in zip(ids, bodies, strict=True)], now=NOW)
    return ids


def test_new_spool_has_wal_meta_and_the_claim_index(db: Path) -> None:
    Spool(db).close()
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    assert dict(rows(db, "SELECT key, value FROM meta")) == {
        "application": "spooler",
        "schema_version": str(SCHEMA_VERSION),
    }


def test_every_read_of_the_queue_a_claim_makes_walks_the_claim_index(db: Path) -> None:
    # Given events enqueued at one instant and later, and leases with gaps between them
    store = SQLiteStore(db)
    enqueue(store, *["{}"] * 6)
    store.insert([("late", "default", "{}")], now=NOW + 1)
    statements: list[str] = []
    with store._connection() as conn:
        conn.set_trace_callback(statements.append)

    def claim(owner: str, limit: int) -> list[str]:
        taken = store.claim("default", limit, owner, due_by=NOW + 2, lease_until=NOW + 60)
        return [e.event_id for e in taken.events] if taken else []

    # When claims take the first gap, one between two leases, and the last one
    first, middle, _ = claim("a", 2), claim("b", 2), claim("c", 2)
    store.release_leases("b", now=NOW)
    assert claim("d", 2) == middle and first != middle
    assert claim("e", 9) == ["late"]
    assert store.next_due_at("default") == NOW + 60
    with store._connection() as conn:
        conn.set_trace_callback(None)
    # Then each is a search of the index in its order (or a look-up by rowid), never a
    # scan or a sort
    reads = [s for s in statements if s.startswith("SELECT") and "FROM queue" in s]
    assert len(reads) >= 6
    for read in reads:
        plan = " ".join(r[-1] for r in rows(db, "EXPLAIN QUERY PLAN " + read))
        assert re.match(
            r"SEARCH queue USING (COVERING )?INDEX queue_due|SEARCH queue USING INTEGER"
            r" PRIMARY KEY \(rowid=\?\)",
            plan,
        ), (read, plan)
        assert "TEMP B-TREE" not in plan and "SCAN" not in plan, (read, plan)


def test_a_claim_reads_no_more_of_the_queue_than_it_takes(db: Path) -> None:
    # Given a backlog of 20,000 due events and three live leases at its front
    store = SQLiteStore(db)
    enqueue(store, *["{}"] * 20_000)
    for owner in "abc":
        store.claim("default", 2, owner, due_by=NOW, lease_until=NOW + 60)
    store.release_leases("b", now=NOW)
    # When a drain claims two events, counting SQLite's steps (a step each thousand
    # instructions of its virtual machine)
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    with store._connection() as conn:
        conn.set_progress_handler(step, 1000)
    claim = store.claim("default", 2, "d", due_by=NOW, lease_until=NOW + 60)
    with store._connection() as conn:
        conn.set_progress_handler(None, 1000)
    # Then it found the gap and read its two events, not the backlog behind them
    assert [e.rowid for e in claim.events] == [3, 4]
    assert steps < 20


def test_a_new_spool_is_marked_as_spooler_s_in_its_header(db: Path) -> None:
    Spool(db).close()
    assert rows(db, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert rows(db, "PRAGMA auto_vacuum") == [(2,)]  # INCREMENTAL: set before the mark


def test_a_spool_whose_creation_was_cut_short_is_taken_over(db: Path) -> None:
    # Marked as spooler's, as a new spool's first write does, then the process died.
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    assert rows(db, "SELECT count(*) FROM queue") == [(1,)]


def test_a_spool_made_before_the_header_mark_still_opens(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 0")
    conn.close()
    with Spool(db) as spool:
        spool.enqueue({"n": 2})
    assert rows(db, "SELECT count(*) FROM queue") == [(2,)]


@pytest.mark.parametrize(
    "text", ["database table is locked", "cannot commit transaction - SQL statements in progress"]
)
def test_only_a_busy_timeout_that_ran_out_is_called_still_locked(db: Path, text: str) -> None:
    # SQLITE_LOCKED and "statements in progress" come at once, without any wait.
    store = SQLiteStore(db)
    assert "still locked" not in str(store._store_error(sqlite3.OperationalError(text)))
    waited = store._store_error(sqlite3.OperationalError("database is locked"))
    assert "still locked after 60s" in str(waited)


def test_full_from_a_damaged_file_is_called_damage(db: Path) -> None:
    # SQLite can answer SQLITE_FULL for a damaged page (issue 23 saw a drain stop with
    # "the disk or database is full"): with room on the disk, the file is checked.
    store = SQLiteStore(db)
    store.insert([(f"e{n}", "default", '{"pad":"%s"}' % ("x" * 500)) for n in range(500)], now=NOW)
    store.close()
    with open(db, "r+b") as file:
        file.seek(40 * 4096)
        file.write(os.urandom(4096))
    error = store_error(
        str(db), sqlite3.OperationalError("database or disk is full"), busy_timeout=60
    )
    assert "the spool file is damaged (database or disk is full, and the check" in str(error)
    assert f"spooler doctor --db {db}" in str(error)


def test_creates_parent_directories(tmp_path: Path) -> None:
    with Spool(tmp_path / "a" / "b" / "spool.db") as spool:
        spool.enqueue({"x": 1})
    assert (tmp_path / "a" / "b" / "spool.db").exists()


def test_unwritable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the directory"):
        Spool(tmp_path / "file" / "sub" / "spool.db")


def test_full_durability_flushes_the_log_after_each_commit(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = spy_on_flushes(monkeypatch, db)
    with Spool(db) as spool:
        flushes.clear()  # opening flushes once too (the schema)
        spool.enqueue({"n": 1})
        spool.enqueue_many([{"n": 2}, {"n": 3}])
        wal = os.stat(f"{db}-wal").st_ino
        # Each flush came after its commit (the events were already there to read)
        # and before the call returned.
        assert flushes == [(wal, 1), (wal, 3)]


def test_normal_durability_never_flushes(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushes = spy_on_flushes(monkeypatch, db)
    with Spool(db, durability="normal") as spool:
        spool.enqueue({"n": 1})
    assert flushes == [] and rows(db, "SELECT count(*) FROM queue") == [(1,)]


def test_a_spool_opened_through_a_symlink_flushes_the_real_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real" / "spool.db"
    real.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    flushes = spy_on_flushes(monkeypatch, real)
    with Spool(link) as spool:
        spool.enqueue({"n": 1})
        assert not Path(f"{link}-wal").exists()  # SQLite resolved the link
        assert flushes[-1] == (os.stat(f"{real}-wal").st_ino, 1)


def fail_flushes(fd: int) -> None:
    raise OSError(errno.EIO, "Input/output error")


def test_a_failed_flush_says_the_change_is_committed_but_not_durable(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Spool(db) as spool:
        monkeypatch.setattr(sqlite_base, "_flush_to_disk", fail_flushes)
        with pytest.raises(NotDurableError, match=r"committed but may not survive a power"):
            spool.enqueue({"n": 1})
    assert rows(db, "SELECT count(*) FROM queue") == [(1,)]


def test_a_spool_whose_first_flush_fails_is_not_opened(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_base, "_flush_to_disk", fail_flushes)
    with pytest.raises(NotDurableError):
        Spool(db)
    # Nothing of the spool is left open: not the log, not the database file.
    open_files = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd that closed while we looked
            open_files.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert str(db) not in open_files and f"{db}-wal" not in open_files


def test_an_unknown_durability_is_refused_before_any_file_exists(db: Path) -> None:
    with pytest.raises(ConfigError, match="durability must be 'full' or 'normal', not 'fast'"):
        Spool(db, durability="fast")
    assert not db.exists()


@pytest.mark.parametrize(
    ("limit", "value"),
    [("max_events", 0), ("max_bytes", -1), ("max_event_bytes", "10"), ("max_events", True)],
)
def test_a_bad_limit_is_refused_before_any_file_exists(db: Path, limit: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{limit} must be a positive integer, not {value!r}"):
        Spool(db, **{limit: value})
    assert not db.exists()


def test_a_version_1_spool_is_upgraded_in_place_and_keeps_its_events(db: Path) -> None:
    with Spool(db) as spool:
        event_id = spool.enqueue({"kept": 1})
    conn = sqlite3.connect(db)
    # A destination whose last outcome was a failure, one whose last was a success
    conn.executemany(
        "INSERT INTO destination_state (destination, last_success_at, last_error_at)"
        " VALUES (?, ?, ?)",
        [("down", NOW - 10, NOW), ("up", NOW, NOW - 10)],
    )
    conn.execute("ALTER TABLE destination_state DROP COLUMN url_digest")
    conn.execute("ALTER TABLE destination_state DROP COLUMN failures")
    conn.execute("ALTER TABLE destination_state DROP COLUMN paused_until")
    conn.execute("ALTER TABLE queue DROP COLUMN attempt_log")
    conn.execute("ALTER TABLE dead DROP COLUMN attempt_log")
    conn.execute("DROP TABLE leases")
    conn.execute("ALTER TABLE queue ADD COLUMN lease_owner TEXT")
    conn.execute("DROP TABLE history")
    conn.execute("DROP INDEX dead_by_destination")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    store = SQLiteStore(db)
    assert store.schema_version() == SCHEMA_VERSION
    # The failing destination is probed first, as before the upgrade
    assert store.pauses() == {"down": (1, None, None)}
    claim = store.claim("default", 1, "me", due_by=9e9, lease_until=9e9 + 60)
    [event] = claim.events
    assert (event.event_id, event.body) == (event_id, '{"kept":1}')
    store.settle(claim.lease, now=NOW, dead=[(event.rowid, "rejected", Failure(400, "bad"))])
    [dead] = store.dead_events(DeadSelection(everything=True))
    assert [a.status for a in dead.attempt_log] == [400]
    # and it keeps a history from now on
    store.record_history([HistoryPoint(60, "default", delivered=1)], now=120, keep=3600)
    assert store.history(since=0, now=120) == [HistoryPoint(60, "default", delivered=1)]


def test_a_version_5_spool_keeps_its_leases_until_they_end(db: Path) -> None:
    # Given a spool of version 5 (with the history), where a drain leased an event by
    # marking its row (due at the lease's end, its attempt counted), and another event
    # waits its turn
    with Spool(db) as spool:
        leased, waiting = spool.enqueue_many([{"n": 1}, {"n": 2}])
    now = time.time()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE leases")
    conn.execute("ALTER TABLE queue ADD COLUMN lease_owner TEXT")
    conn.execute(
        "UPDATE queue SET lease_owner = 'old', due_at = ?, attempts = 1 WHERE event_id = ?",
        (now + 60, leased),
    )
    conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    # When this version opens it
    store = SQLiteStore(db)
    assert store.schema_version() == SCHEMA_VERSION
    assert "lease_owner" not in {r[1] for r in rows(db, "PRAGMA table_info(queue)")}
    # Then the leased event waits for its old lease to end, and counts that attempt
    claim = store.claim("default", 9, "new", due_by=now, lease_until=now + 60)
    assert [e.event_id for e in claim.events] == [waiting]
    store.settle(claim.lease, now=now, delivered=[claim.events[0].rowid])
    later = store.claim("default", 9, "new", due_by=now + 60, lease_until=now + 120)
    assert [(e.event_id, e.attempts) for e in later.events] == [(leased, 2)]


def test_a_disk_full_enqueue_is_a_store_error_and_keeps_old_events(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"keep": 1})
        page_count = rows(db, "PRAGMA page_count")[0][0]
        # Cap the file at its current size, as a full disk would.
        with spool.store._connection() as conn:
            conn.execute(f"PRAGMA max_page_count = {page_count}")
        with pytest.raises(StoreError, match=r"reached its largest size .*max_page_count"):
            spool.enqueue_many([{"pad": "x" * 5000}] * 50)
        assert rows(db, "SELECT body FROM queue") == [('{"keep":1}',)]
        with spool.store._connection() as conn:
            conn.execute("PRAGMA max_page_count = 1073741823")
        spool.enqueue({"after": 1})
    assert rows(db, "SELECT count(*) FROM queue") == [(2,)]


def test_shift_schedule_moves_future_events_and_pauses_earlier_but_not_into_the_past(
    db: Path,
) -> None:
    store = SQLiteStore(db)
    store.record_pause("long", failures=2, until=NOW + 5000, url_digest="u")
    store.record_pause("short", failures=1, until=NOW + 100, url_digest="u")
    enqueue(store, "{}", "{}")
    claim = store.claim("default", 2, "me", due_by=NOW, lease_until=NOW + 60)
    [a, b] = claim.events
    store.settle(
        claim.lease,
        now=NOW,
        retry=[(a.rowid, NOW + 5000, Failure(503, "x")), (b.rowid, NOW + 100, Failure(503, "x"))],
    )
    assert store.shift_schedule(1000, now=NOW) == 2
    assert rows(db, "SELECT due_at FROM queue ORDER BY id") == [(NOW + 4000,), (NOW,)]
    assert {name: p.until for name, p in store.pauses().items()} == {
        "long": NOW + 4000,
        "short": NOW,
    }


def test_a_drained_backlog_gives_its_space_back(db: Path) -> None:
    store = SQLiteStore(db)
    for chunk in range(4):
        enqueue(store, *[f'{{"pad":"{"x" * 1000}","n":{chunk}}}'] * 2000)
    grown = db.stat().st_size
    while batch := store.claim("default", 500, "me", due_by=NOW, lease_until=NOW + 60):
        store.settle(batch.lease, now=NOW, delivered=[e.rowid for e in batch.events])
    assert db.stat().st_size >= grown  # deleting rows alone frees no disk space
    assert store.reclaim_space() > 0
    assert db.stat().st_size < grown / 10
    assert rows(db, "PRAGMA freelist_count")[0][0] < RECLAIM_MIN_PAGES
    assert store.reclaim_space() == 0  # nothing left worth a transaction
    assert rows(db, "PRAGMA auto_vacuum") == [(2,)]  # still INCREMENTAL


def test_space_is_given_back_in_chunks_while_many_pages_are_in_use(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a drained backlog beside dead events that keep more pages than a chunk
    monkeypatch.setattr(sqlite_maintenance, "RECLAIM_CHUNK_PAGES", 64)
    store = SQLiteStore(db)
    enqueue(store, *[f'{{"pad":"{"x" * 1000}","kept":1}}'] * 400, destination="dead")
    claim = store.claim("dead", 400, "me", due_by=NOW, lease_until=NOW + 60)
    assert claim is not None
    store.settle(
        claim.lease, now=NOW, dead=[(e.rowid, "rejected", Failure(400, "no")) for e in claim.events]
    )
    for chunk in range(4):
        enqueue(store, *[f'{{"pad":"{"x" * 1000}","n":{chunk}}}'] * 2000)
    while batch := store.claim("default", 500, "me", due_by=NOW, lease_until=NOW + 60):
        store.settle(batch.lease, now=NOW, delivered=[e.rowid for e in batch.events])
    (total, free), grown = (
        rows(db, "SELECT * FROM pragma_page_count, pragma_freelist_count")[0],
        db.stat().st_size,
    )
    assert total - free > 64
    # When the space is given back: in chunks of 64 pages, each its own transaction
    assert store.reclaim_space() > 0
    # Then the file shrank all the same, the dead events kept, the mode unchanged
    assert db.stat().st_size < grown / 5
    assert rows(db, "PRAGMA freelist_count")[0][0] < RECLAIM_MIN_PAGES
    assert store.counts(now=NOW)["dead"].dead == 400
    assert rows(db, "PRAGMA auto_vacuum") == [(2,)]


def test_a_spool_without_auto_vacuum_reports_no_space_given_back(db: Path) -> None:
    # Given a spool whose file has no auto_vacuum (made so by hand), a backlog drained
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    conn.close()
    store = SQLiteStore(db)
    enqueue(store, *[f'{{"pad":"{"x" * 1000}"}}'] * 2000)
    while batch := store.claim("default", 500, "me", due_by=NOW, lease_until=NOW + 60):
        store.settle(batch.lease, now=NOW, delivered=[e.rowid for e in batch.events])
    free = rows(db, "PRAGMA freelist_count")[0][0]
    assert free > RECLAIM_MIN_PAGES
    # When it is asked to give space back: it cannot, and says so
    assert store.reclaim_space() == 0
    assert rows(db, "PRAGMA freelist_count")[0][0] == free
    assert rows(db, "PRAGMA auto_vacuum") == [(0,)]


def test_a_spool_left_in_full_auto_vacuum_is_set_back_when_opened(db: Path) -> None:
    # Given a spool that a reclaim cut short left in auto_vacuum FULL
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA auto_vacuum = FULL")
    conn.close()
    assert rows(db, "PRAGMA auto_vacuum") == [(1,)]
    # When it is opened, it is INCREMENTAL again
    SQLiteStore(db).close()
    assert rows(db, "PRAGMA auto_vacuum") == [(2,)]


def test_reclaim_leaves_a_mostly_full_file_alone(db: Path) -> None:
    store = SQLiteStore(db)
    enqueue(store, *[f'{{"pad":"{"x" * 1000}"}}'] * 4000)
    claim = store.claim("default", 1, "me", due_by=NOW, lease_until=NOW + 60)
    store.settle(claim.lease, now=NOW, delivered=[claim.events[0].rowid])
    assert store.reclaim_space() == 0


def test_space_is_reclaimed_while_other_threads_commit(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four threads that enqueue, claim and ack on one spool's connection, so pages
    # keep being freed, and a fifth that gives them back as fast as it can (from one page)
    monkeypatch.setattr(sqlite_maintenance, "RECLAIM_MIN_PAGES", 1)
    with Spool(db, durability="normal") as spool:
        store, stop = spool.store, threading.Event()
        errors: list[BaseException] = []
        reclaims, give_up = 0, time.monotonic() + 120  # a guard against a hang, not a limit

        def work(n: int) -> None:
            try:
                while not stop.is_set():
                    spool.enqueue_many([{"pad": "x" * 2000}] * 20, destination=f"d{n}")
                    now = time.time()
                    batch = store.claim(f"d{n}", 20, f"w{n}", due_by=now, lease_until=now + 60)
                    assert batch is not None
                    store.settle(batch.lease, now=now, delivered=[e.rowid for e in batch.events])
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)
                stop.set()

        def reclaim() -> None:
            nonlocal reclaims
            try:
                while not stop.is_set() and reclaims < 200 and time.monotonic() < give_up:
                    reclaims += store.reclaim_space() > 0
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)
            stop.set()

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        threads.append(threading.Thread(target=reclaim))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # Then 200 reclaims (vacuum steps and checkpoints) ran, and no commit failed
    assert errors == []
    assert reclaims == 200
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


# -- totals and limits ----------------------------------------------------------------

COUNTED = (
    "SELECT count(*), coalesce(sum(length(CAST(body AS BLOB))), 0)"
    " FROM (SELECT body FROM queue UNION ALL SELECT body FROM dead)"
)


def test_totals_are_kept_from_the_first_limit_on_and_miss_no_event(db: Path) -> None:
    # Given producers that set no limit: their commits leave the totals row alone
    spool = Spool(db)
    spool.enqueue_many([{"n": n} for n in range(10)])
    spool.enqueue({"n": 10})
    assert rows(db, "SELECT events, bytes FROM totals") == [(0, 0)]
    assert spool.store.totals() == (11, 11 * len('{"n":1}') + 1)  # counted row by row
    # When a producer with a limit starts (a connection of its own, as another process
    # has), while others enqueue and a drain delivers
    stop, errors = threading.Event(), []

    def busy(work: Callable[[], object]) -> None:
        try:
            while not stop.is_set():
                work()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def deliver() -> None:
        now = time.time()
        batch = spool.store.claim("default", 5, "drain", due_by=now, lease_until=now + 60)
        if batch:
            spool.store.settle(batch.lease, now=now, delivered=[e.rowid for e in batch.events])

    threads = [
        threading.Thread(target=busy, args=(work,))
        for work in (
            lambda: spool.enqueue({"n": 1}),
            lambda: spool.enqueue_many([{"n": 2}, {"n": 3}]),
            deliver,
        )
    ]
    for thread in threads:
        thread.start()
    with Spool(db, max_events=10**9) as limited:
        limited.enqueue({"limited": True})
        before = spool.store.totals()[0]
        assert wait_until(lambda: spool.store.totals()[0] > before + 20, timeout=30)
    stop.set()
    for thread in threads:
        thread.join()
    # Then the totals kept match a count of every row: no event went uncounted
    assert errors == []
    assert rows(db, "SELECT events, bytes FROM totals") == rows(db, COUNTED)
    assert [spool.store.totals()] == rows(db, COUNTED)
    spool.close()


def test_a_limit_refusal_keeps_the_totals_it_counted(db: Path) -> None:
    # Given a spool where a producer without limits enqueued
    with Spool(db) as free:
        free.enqueue_many([{"n": n} for n in range(3)])
    # When a producer with a limit the spool is already at tries to enqueue
    with Spool(db, max_events=3) as limited:
        with pytest.raises(SpoolFullError):
            limited.enqueue({"limited": True})
        # Then it is refused, the spool untouched, and the totals it counted stay kept
        assert rows(db, "SELECT events, bytes FROM totals") == rows(db, COUNTED) == [(3, 21)]
        assert rows(db, "SELECT value FROM meta WHERE key = 'totals'") == [("kept",)]
        # And a producer without limits now counts its events against it
        with Spool(db) as free:
            free.enqueue({"n": 3})
        assert limited.store.totals() == (4, 28)


def test_a_version_6_spool_keeps_its_totals_row_kept_for_older_processes(db: Path) -> None:
    # Given a spool of version 6, whose writers kept the totals row at every commit
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(4)])
    conn = sqlite3.connect(db)
    conn.execute("UPDATE totals SET events = 4, bytes = 28")
    conn.execute("DELETE FROM meta WHERE key = 'totals'")
    conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    # When this version opens it: writers go on keeping the row, with no limit set, as
    # an older process still running on it does (tests/reliability/test_real_upgrades.py)
    with Spool(db) as spool:
        assert spool.store.schema_version() == SCHEMA_VERSION
        spool.enqueue({"n": 4})
        assert rows(db, "SELECT events, bytes FROM totals") == [(5, 35)]
    assert rows(db, "SELECT value FROM meta WHERE key = 'totals'") == [("kept",)]
    # Then the limits count from the row as it was
    with Spool(db, max_events=6) as limited:
        limited.enqueue({"n": 5})
        with pytest.raises(SpoolFullError):
            limited.enqueue({"n": 6})
    assert rows(db, "SELECT events, bytes FROM totals") == [(6, 42)]
