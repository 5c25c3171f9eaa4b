"""The store: schema checks, claims under lease, settling, limits, dead-letter moves."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import rows, spy_on_flushes
from hypothesis import given, settings
from hypothesis import strategies as st

import spooler.store.sqlite.base as sqlite_base
import spooler.store.sqlite.maintenance as sqlite_maintenance
from spooler import (
    ConfigError,
    InvalidEventError,
    NotDurableError,
    Spool,
    SpoolFullError,
    StoreError,
    UnknownEventError,
)
from spooler.events import encode_event
from spooler.records import DeadSelection, Failure, QueueSelection
from spooler.store.shared import ATTEMPT_LOG_ENTRIES, ATTEMPT_LOG_ERROR_CHARS
from spooler.store.sqlite import SCHEMA_VERSION
from spooler.store.sqlite import SQLiteStore as Store
from spooler.store.sqlite.errors import store_error
from spooler.store.sqlite.maintenance import RECLAIM_MIN_PAGES
from spooler.store.sqlite.schema import APPLICATION_ID

NOW = 1_000_000.0


def enqueue(store: Store, *bodies: str, destination: str = "default") -> list[str]:
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
    plan = " ".join(
        r[-1]
        for r in rows(
            db,
            "EXPLAIN QUERY PLAN SELECT id FROM queue WHERE destination = 'd' AND due_at <= 1 "
            "ORDER BY due_at LIMIT 5",
        )
    )
    assert "INDEX queue_due (destination=? AND due_at<?)" in plan and "TEMP B-TREE" not in plan


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
    store = Store(db)
    assert "still locked" not in str(store._store_error(sqlite3.OperationalError(text)))
    waited = store._store_error(sqlite3.OperationalError("database is locked"))
    assert "still locked after 60s" in str(waited)


def test_full_from_a_damaged_file_is_called_damage(db: Path) -> None:
    # SQLite can answer SQLITE_FULL for a damaged page (issue 23 saw a drain stop with
    # "the disk or database is full"): with room on the disk, the file is checked.
    store = Store(db)
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


def test_enqueue_many_is_all_or_nothing(spool: Spool, db: Path) -> None:
    with pytest.raises(InvalidEventError, match="event 2: ") as info:
        spool.enqueue_many([{"a": 1}, {"b": 2}, {"c": float("nan")}])
    assert info.value.index == 2
    assert rows(db, "SELECT count(*) FROM queue") == [(0,)]


# Events whose JSON text SQLite must split back out of the array exactly as
# encode_event writes it: escapes, non-ASCII (BMP and astral), numbers of every shape.
TRICKY_EVENTS = [
    {},
    {"s": 'quote " backslash \\ slash / tab \t newline \n nul \x00 del \x7f'},
    {"é": "ünïcødé \u2028 \u2029 😀 中文", "": ""},
    {"n": [0, -0.0, 1.5e-07, 1e16, 2**70, -(2**63), 3.141592653589793, True, False, None]},
    {"nested": {"a": [{"b": [[], {}]}], "},{": "],["}},
]


def fast_path_outcomes(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each call of the one-statement bulk insert returned (False: it fell back)."""
    taken: list[bool] = []
    fast = spool.store.insert_array

    def spy(*args: object, **kwargs: object) -> bool:
        taken.append(fast(*args, **kwargs))  # type: ignore[arg-type]
        return taken[-1]

    monkeypatch.setattr(spool.store, "insert_array", spy)
    return taken


def test_enqueue_many_stores_each_event_as_encode_event_writes_it(
    spool: Spool, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = fast_path_outcomes(spool, monkeypatch)
    ids = spool.enqueue_many(TRICKY_EVENTS)
    assert taken == [True]  # the one-statement path, not the per-event fallback
    stored = rows(db, "SELECT event_id, body FROM queue ORDER BY id")
    assert stored == [(i, encode_event(e)) for i, e in zip(ids, TRICKY_EVENTS, strict=True)]
    sizes = sum(len(encode_event(e).encode()) for e in TRICKY_EVENTS)
    assert rows(db, "SELECT events, bytes FROM totals") == [(len(TRICKY_EVENTS), sizes)]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.text(), JSON_VALUES, max_size=5), min_size=1, max_size=8))
def test_enqueue_many_round_trips_any_json_objects(events: list[dict[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, Spool(Path(tmp) / "spool.db") as spool:
        spool.enqueue_many(events)
        stored = rows(Path(tmp) / "spool.db", "SELECT body FROM queue ORDER BY id")
    assert stored == [(encode_event(e),) for e in events]


def test_enqueue_many_checks_each_event_against_the_limit_not_the_whole_batch(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Spool(db) as spool:
        spool.enqueue({"big": "x" * 2000})  # stored before the limit was lowered
    with Spool(db, max_event_bytes=1000) as spool:
        taken = fast_path_outcomes(spool, monkeypatch)
        under = [{"pad": "y" * 900}, {"pad": "z" * 900}, {"pad": "w" * 900}]
        spool.enqueue_many(under)  # 2.7 KB together, each under 1000 bytes
        assert taken == [True]
        with pytest.raises(InvalidEventError, match=r"event 1: .* over the 1000-byte limit"):
            spool.enqueue_many([{"n": 0}, {"pad": "v" * 1000}])
        assert taken == [True, False]
    assert rows(db, "SELECT count(*) FROM queue") == [(4,)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"pad": "x" * 2000}, "over the 1000-byte limit"),
        ({"s": "\ud800"}, "not JSON-serialisable"),
        ({"f": float("inf")}, "not JSON-serialisable"),
        (["not", "a", "dict"], "must be a dict"),
    ],
)
def test_enqueue_many_names_the_bad_event_and_stores_none(
    db: Path, bad: object, message: str
) -> None:
    with Spool(db, max_event_bytes=1000) as spool:
        spool.enqueue({"before": 1})
        with pytest.raises(InvalidEventError, match=message) as info:
            spool.enqueue_many([{"n": 0}, {"n": 1}, bad, {"n": 3}])  # type: ignore[list-item]
    assert info.value.index == 2
    assert rows(db, "SELECT body FROM queue") == [('{"before":1}',)]
    assert rows(db, "SELECT events, bytes FROM totals") == [(1, 12)]


def test_enqueue_json_stores_each_text_as_enqueue_would_store_its_object(db: Path) -> None:
    texts = (json.dumps(event, indent=2) for event in TRICKY_EVENTS)  # a generator, spaced out
    with Spool(db) as spool:
        ids = spool.enqueue_json(texts, destination="amp")
    stored = rows(db, "SELECT event_id, destination, body FROM queue ORDER BY id")
    assert stored == [(i, "amp", encode_event(e)) for i, e in zip(ids, TRICKY_EVENTS, strict=True)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (json.dumps({"pad": "x" * 2000}), "over the 1000-byte limit"),
        ('{"a": NaN}', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"a": ', "not valid JSON: Expecting value"),
        ({"a": 1}, r"a JSON text \(str\), not dict: enqueue_many takes dicts"),
        (None, r"a JSON text \(str\), not NoneType"),
    ],
)
def test_enqueue_json_names_the_bad_text_and_stores_none(
    db: Path, bad: object, message: str
) -> None:
    read: list[object] = []

    def texts() -> Iterator[object]:
        for text in ['{"n": 0}', '{"n": 1}', bad, '{"n": 3}']:
            read.append(text)
            yield text

    with Spool(db, max_event_bytes=1000) as spool:
        spool.enqueue({"before": 1})
        with pytest.raises(InvalidEventError, match=f"event 2: .*{message}") as info:
            spool.enqueue_json(texts())
    assert info.value.index == 2 and read[-1] == bad  # it stopped at the bad text
    assert rows(db, "SELECT body FROM queue") == [('{"before":1}',)]


def test_limits_raise_spool_full_and_keep_earlier_events(db: Path) -> None:
    with Spool(db, max_events=3, max_bytes=10_000) as spool:
        spool.enqueue_many([{"n": 1}, {"n": 2}])
        with pytest.raises(SpoolFullError, match="max_events=3"):
            spool.enqueue_many([{"n": 3}, {"n": 4}])
        spool.enqueue({"n": 3})  # exactly at the limit
        with pytest.raises(SpoolFullError, match="holds 3 events, queued or dead, and 1 more"):
            spool.enqueue({"n": 4})
    assert rows(db, "SELECT body FROM queue ORDER BY id") == [
        ('{"n":1}',),
        ('{"n":2}',),
        ('{"n":3}',),
    ]
    with Spool(db, max_bytes=30) as spool, pytest.raises(SpoolFullError, match="max_bytes=30"):
        spool.enqueue({"pad": "x" * 20})


def test_dead_events_count_toward_the_limit_until_purged(db: Path) -> None:
    with Spool(db, max_events=2) as spool:
        spool.enqueue({"n": 1})
        spool.dead_letters.add({"n": 0}, destination="default", reason="manual", error="x")
        with pytest.raises(SpoolFullError, match="queued or dead"):
            spool.enqueue({"n": 2})
        assert spool.dead_letters.purge(everything=True) == 1
        spool.enqueue({"n": 2})
    assert rows(db, "SELECT body FROM queue ORDER BY id") == [('{"n":1}',), ('{"n":2}',)]


def test_totals_follow_deliveries_and_purges(db: Path) -> None:
    store = Store(db)
    enqueue(store, '{"a":1}', '{"b":22}')
    claimed = store.claim("default", 10, "me", due_by=NOW, lease_until=NOW + 60)
    store.settle(
        "me",
        now=NOW,
        delivered=[claimed[0].rowid],
        dead=[(claimed[1].rowid, "rejected", Failure(400, "no"))],
    )
    assert rows(db, "SELECT events, bytes FROM totals") == [(1, 8)]
    store.purge(DeadSelection(everything=True))
    assert rows(db, "SELECT events, bytes FROM totals") == [(0, 0)]


def test_totals_count_only_the_deliveries_still_leased(db: Path) -> None:
    store = Store(db)
    enqueue(store, '{"a":1}', '{"b":"é"}', '{"c":333}')
    mine = store.claim("default", 2, "me", due_by=NOW, lease_until=NOW + 1)
    # My lease runs out; another drain takes the unclaimed event and the first of mine.
    taken = store.claim("default", 2, "other", due_by=NOW + 2, lease_until=NOW + 60)
    assert {e.rowid for e in taken} == {mine[0].rowid, mine[1].rowid + 1}
    assert store.settle("me", now=NOW + 3, delivered=[e.rowid for e in mine]) == 1
    # Left: the taken event (7 bytes) and the unclaimed one (9 bytes); "é" was 2 bytes.
    assert rows(db, "SELECT events, bytes FROM totals") == [(2, 16)]


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


def test_a_closed_spool_says_so(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    for use in (lambda: spool.enqueue({"n": 2}), spool.status, lambda: spool.enqueue_many([{}])):
        with pytest.raises(StoreError, match=r"spool\.db: this spool was closed$"):
            use()
    spool.close()  # closing twice is harmless
    assert rows(db, "SELECT count(*) FROM queue") == [(1,)]


def test_claim_takes_due_events_in_order_under_a_lease(db: Path) -> None:
    store = Store(db)
    ids = enqueue(store, "{}", "{}", "{}")
    enqueue(store, "{}", destination="other")
    first = store.claim("default", 2, "a", due_by=NOW, lease_until=NOW + 60)
    assert [e.event_id for e in first] == ids[:2] and all(e.attempts == 1 for e in first)
    second = store.claim("default", 5, "b", due_by=NOW, lease_until=NOW + 90)
    assert [e.event_id for e in second] == ids[2:]
    assert store.claim("default", 5, "c", due_by=NOW + 59, lease_until=NOW + 120) == []
    # The lease of "a" runs out: its events are due again, for anyone.
    again = store.claim("default", 5, "c", due_by=NOW + 60, lease_until=NOW + 120)
    assert [e.event_id for e in again] == ids[:2] and all(e.attempts == 2 for e in again)


def test_settle_only_touches_rows_the_owner_still_leases(db: Path) -> None:
    store = Store(db)
    enqueue(store, "{}")
    [event] = store.claim("default", 1, "old", due_by=NOW, lease_until=NOW + 1)
    store.claim("default", 1, "new", due_by=NOW + 2, lease_until=NOW + 60)
    assert store.settle("old", now=NOW + 3, delivered=[event.rowid]) == 0
    assert store.settle("old", now=NOW + 3, dead=[(event.rowid, "x", Failure(None, ""))]) == 0
    assert rows(db, "SELECT lease_owner FROM queue") == [("new",)]
    assert store.settle("new", now=NOW + 3, delivered=[event.rowid]) == 1
    assert rows(db, "SELECT count(*) FROM queue") == [(0,)]


def test_a_pause_is_kept_until_a_later_change_or_retry_now(db: Path) -> None:
    store = Store(db)
    assert store.pauses() == {}
    # Given a destination paused after three failures, and another that recovered
    store.record_pause("default", failures=3, until=NOW + 60, url_digest="d1")
    store.record_pause("other", failures=1, until=NOW + 5, url_digest="o1")
    store.record_pause("other", failures=0, until=None, url_digest="o1")
    assert store.pauses() == {"default": (3, NOW + 60, "d1")}
    # Then the pause lives beside the destination's last outcome without touching it
    failure = Failure(503, "HTTP 503")
    enqueue(store, "{}")
    [event] = store.claim("default", 1, "me", due_by=NOW, lease_until=NOW + 60)
    store.settle("me", now=NOW, destination="default", retry=[(event.rowid, NOW + 1, failure)])
    assert store.pauses() == {"default": (3, NOW + 60, "d1")}
    # When an operator runs retry-now, the pause ends but the count of failures stays
    store.retry_now(QueueSelection(everything=True), now=NOW + 2)
    assert store.pauses() == {"default": (3, None, "d1")}


@pytest.mark.parametrize(
    ("selection", "ended"),
    [
        (QueueSelection(destination="a"), ["a"]),
        (QueueSelection(ids=("id-b-0-{}",)), ["b"]),
        (QueueSelection(everything=True), ["a", "b", "c"]),
    ],
)
def test_retry_now_ends_the_pauses_of_the_selected_destinations(
    db: Path, selection: QueueSelection, ended: list[str]
) -> None:
    # Given three paused destinations, "a" with no queued event
    store = Store(db)
    for name in ("a", "b", "c"):
        store.record_pause(name, failures=2, until=NOW + 60, url_digest="u")
    enqueue(store, "{}", destination="b")
    enqueue(store, "{}", destination="c")
    # When an operator runs retry-now for some of them
    store.retry_now(selection, now=NOW)
    # Then only theirs end, and every kept count of failures stays
    assert store.pauses() == {
        name: (2, None if name in ended else NOW + 60, "u") for name in ("a", "b", "c")
    }


def test_forgetting_failures_touches_only_that_destinations_waiting_events(db: Path) -> None:
    # Given two paused destinations, each with an event waiting out its backoff
    store = Store(db)
    failure = Failure(503, "HTTP 503")
    claimed = {}
    for name in ("moved", "other"):
        enqueue(store, "{}", "{}", "{}", destination=name)
        store.record_pause(name, failures=2, until=NOW + 60, url_digest="old")
        claimed[name] = store.claim(name, 3, "me", due_by=NOW, lease_until=NOW + 60)
        store.settle("me", now=NOW, retry=[(claimed[name][0].rowid, NOW + 60, failure)])
    # and, of "moved", one event held and one in flight (claimed, not yet settled)
    _, held, _ = claimed["moved"]
    store.settle("me", now=NOW, retry=[(held.rowid, NOW + 60, failure)])
    store.hold(QueueSelection(ids=(held.event_id,)), now=NOW)
    # When "moved" is sent to another URL
    assert store.forget_failures("moved", url_digest="new", now=NOW + 1) == 1
    # Then only its waiting event is due, and only its pause is gone
    due = "SELECT event_id FROM queue WHERE due_at <= ?"
    assert rows(db, due, (NOW + 1,)) == [(claimed["moved"][0].event_id,)]
    assert store.pauses() == {"other": (2, NOW + 60, "old")}
    state = "SELECT destination, failures, url_digest FROM destination_state"
    assert sorted(rows(db, state)) == [("moved", 0, "new"), ("other", 2, "old")]


def test_retry_reschedules_and_records_the_failure(db: Path) -> None:
    store = Store(db)
    enqueue(store, "{}")
    [event] = store.claim("default", 1, "me", due_by=NOW, lease_until=NOW + 60)
    store.settle("me", now=NOW, retry=[(event.rowid, NOW + 30, Failure(503, "HTTP 503: busy"))])
    assert rows(db, "SELECT due_at, lease_owner, attempts, last_status, last_error FROM queue") == [
        (NOW + 30, None, 1, 503, "HTTP 503: busy")
    ]
    assert store.next_due_at("default") == NOW + 30
    counts = store.counts(now=NOW)["default"]
    assert (counts.queued, counts.due, counts.leased, counts.retrying) == (1, 0, 0, 1)


def test_release_makes_leased_events_due_now(db: Path) -> None:
    store = Store(db)
    enqueue(store, "{}", "{}")
    store.claim("default", 1, "me", due_by=NOW, lease_until=NOW + 60)
    assert store.release_leases("me", now=NOW + 1) == 1
    assert len(store.claim("default", 5, "you", due_by=NOW + 1, lease_until=NOW + 60)) == 2


@pytest.mark.parametrize(
    ("destination", "reason", "message"),
    [("bad name", "invalid", "bad destination name 'bad name'"), ("d", "", "needs a reason")],
)
def test_adding_a_dead_letter_checks_its_destination_and_reason(
    spool: Spool, db: Path, destination: str, reason: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        spool.dead_letters.add({"n": 1}, destination=destination, reason=reason, error="x")
    assert rows(db, "SELECT count(*) FROM dead") == [(0,)]


def test_dead_letter_replay_and_purge_keep_the_event_id(db: Path) -> None:
    store = Store(db)
    ids = enqueue(store, '{"a":1}', '{"b":2}', '{"c":3}')
    claimed = store.claim("default", 3, "me", due_by=NOW, lease_until=NOW + 60)
    store.settle("me", now=NOW, dead=[(e.rowid, "rejected", Failure(400, "bad")) for e in claimed])
    assert rows(db, "SELECT count(*) FROM queue") == [(0,)]
    dead = store.dead_events(DeadSelection(everything=True))
    assert [(d.event_id, d.reason, d.status, d.attempts) for d in dead] == [
        (i, "rejected", 400, 1) for i in ids
    ]

    with pytest.raises(UnknownEventError, match="nope"):
        store.replay(DeadSelection(ids=(ids[0], "nope")), now=NOW)
    assert rows(db, "SELECT count(*) FROM dead") == [(3,)]  # all or nothing

    assert store.replay(DeadSelection(ids=(ids[0],)), now=NOW, dry_run=True) == 1
    assert store.replay(DeadSelection(ids=(ids[0],)), now=NOW + 5) == 1
    assert rows(db, "SELECT event_id, attempts, due_at FROM queue") == [(ids[0], 0, NOW + 5)]
    assert store.purge(DeadSelection(dead_before=NOW + 1)) == 2
    assert rows(db, "SELECT count(*) FROM dead") == [(0,)]


def test_the_attempt_log_keeps_the_latest_failures_bounded_and_follows_the_event(db: Path) -> None:
    store = Store(db)
    [event_id] = enqueue(store, "{}")
    failures = 3 + ATTEMPT_LOG_ENTRIES
    for attempt in range(failures):
        [event] = store.claim("default", 1, "me", due_by=NOW + attempt, lease_until=NOW + 999)
        store.settle(
            "me",
            now=NOW + attempt,
            retry=[(event.rowid, NOW + attempt + 1, Failure(500 + attempt, "x" * 1000))],
        )
    [event] = store.claim("default", 1, "me", due_by=NOW + failures, lease_until=NOW + 999)
    store.settle("me", now=NOW + failures, dead=[(event.rowid, "rejected", Failure(400, "no"))])

    [dead] = store.dead_events(DeadSelection(everything=True))
    assert dead.attempts == failures + 1
    # The latest entries only, the dead-lettering attempt last, each error cut short.
    assert [(a.at, a.status) for a in dead.attempt_log] == [
        (NOW + n, 500 + n) for n in range(failures + 1 - ATTEMPT_LOG_ENTRIES, failures)
    ] + [(NOW + failures, 400)]
    assert {len(a.error) for a in dead.attempt_log[:-1]} == {ATTEMPT_LOG_ERROR_CHARS}
    assert dead.attempt_log[-1].error == "no"

    # A replayed event keeps its history; an operator's expiry adds no attempt.
    store.replay(DeadSelection(ids=(event_id,)), now=NOW + 100)
    store.expire(QueueSelection(ids=(event_id,)), now=NOW + 101, error="by hand")
    [expired] = store.dead_events(DeadSelection(everything=True))
    assert (expired.reason, expired.attempt_log) == ("manual", dead.attempt_log)


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
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    # The failing destination is probed first, as before the upgrade
    assert store.pauses() == {"down": (1, None, None)}
    [event] = store.claim("default", 1, "me", due_by=9e9, lease_until=9e9 + 60)
    assert (event.event_id, event.body) == (event_id, '{"kept":1}')
    store.settle("me", now=NOW, dead=[(event.rowid, "rejected", Failure(400, "bad"))])
    [dead] = store.dead_events(DeadSelection(everything=True))
    assert [a.status for a in dead.attempt_log] == [400]


def test_an_empty_selection_is_refused() -> None:
    with pytest.raises(ValueError, match="everything=True"):
        DeadSelection()


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


def test_shift_schedule_moves_future_events_earlier_but_not_into_the_past(db: Path) -> None:
    store = Store(db)
    enqueue(store, "{}", "{}")
    [a, b] = store.claim("default", 2, "me", due_by=NOW, lease_until=NOW + 60)
    store.settle(
        "me",
        now=NOW,
        retry=[(a.rowid, NOW + 5000, Failure(503, "x")), (b.rowid, NOW + 100, Failure(503, "x"))],
    )
    assert store.shift_schedule(1000, now=NOW) == 2
    assert rows(db, "SELECT due_at FROM queue ORDER BY id") == [(NOW + 4000,), (NOW,)]


def test_extend_lease_only_for_the_holder(db: Path) -> None:
    store = Store(db)
    enqueue(store, "{}")
    [event] = store.claim("default", 1, "me", due_by=NOW, lease_until=NOW + 10)
    store.extend_lease("someone-else", [event.rowid], NOW + 500)
    assert rows(db, "SELECT due_at FROM queue") == [(NOW + 10,)]
    store.extend_lease("me", [event.rowid], NOW + 500)
    assert rows(db, "SELECT due_at FROM queue") == [(NOW + 500,)]


def test_a_drained_backlog_gives_its_space_back(db: Path) -> None:
    store = Store(db)
    for chunk in range(4):
        enqueue(store, *[f'{{"pad":"{"x" * 1000}","n":{chunk}}}'] * 2000)
    grown = db.stat().st_size
    while batch := store.claim("default", 500, "me", due_by=NOW, lease_until=NOW + 60):
        store.settle("me", now=NOW, delivered=[e.rowid for e in batch])
    assert db.stat().st_size >= grown  # deleting rows alone frees no disk space
    assert store.reclaim_space() > 0
    assert db.stat().st_size < grown / 10
    assert rows(db, "PRAGMA freelist_count")[0][0] < RECLAIM_MIN_PAGES
    assert store.reclaim_space() == 0  # nothing left worth a transaction


def test_reclaim_leaves_a_mostly_full_file_alone(db: Path) -> None:
    store = Store(db)
    enqueue(store, *[f'{{"pad":"{"x" * 1000}"}}'] * 4000)
    [event] = store.claim("default", 1, "me", due_by=NOW, lease_until=NOW + 60)
    store.settle("me", now=NOW, delivered=[event.rowid])
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
                    store.settle(f"w{n}", now=now, delivered=[e.rowid for e in batch])
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
