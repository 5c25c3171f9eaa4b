"""The store contract: one suite, run against every backend (SQLite and PostgreSQL).

Written against the public methods of the store interface only, with the real clock:
the PostgreSQL store keeps the database's clock, so a test cannot move time for it;
leases that must run out are given an end already past, or a short one polled for.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.processes import wait_until

import spooler.store.shared as store_shared
from spooler import SpoolFullError, UnknownEventError
from spooler.history import HistoryPoint, minute_of
from spooler.records import Claim, DeadPage, DeadSelection, Failure, QueueSelection
from spooler.store import open_store
from spooler.store.interface import SpoolStore
from spooler.store.sqlite import SQLiteStore

ALL = QueueSelection(everything=True)
ALL_DEAD = DeadSelection(everything=True)
BOOM = Failure(503, "service unavailable")


@pytest.fixture(params=["sqlite", "postgres", "postgres-normal"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpoolStore]:
    """A fresh, empty store of each backend (PostgreSQL's commits differ by durability)."""
    location = (
        str(tmp_path / "spool.db")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    opened = open_store(location, durability=request.param.partition("-")[2] or "full")
    yield opened
    opened.close()


def add(store: SpoolStore, *names: str, destination: str = "d") -> list[str]:
    """Queue one event per name (its event id is the name); returns the ids."""
    store.insert([(n, destination, f'{{"n": "{n}"}}') for n in names], now=time.time())
    return list(names)


def take(
    store: SpoolStore,
    owner: str = "a",
    *,
    limit: int = 100,
    lease: float = 60.0,
    destination: str = "d",
) -> Claim | None:
    """Claim what is due now."""
    now = time.time()
    return store.claim(destination, limit, owner, due_by=now, lease_until=now + lease)


def claim(
    store: SpoolStore,
    owner: str = "a",
    *,
    limit: int = 100,
    lease: float = 60.0,
    destination: str = "d",
) -> list[str]:
    """Claim what is due now; returns the claimed event ids."""
    taken = take(store, owner, limit=limit, lease=lease, destination=destination)
    return [event.event_id for event in taken.events] if taken else []


def rowids(
    store: SpoolStore, owner: str = "a", limit: int = 100, *, destination: str = "d"
) -> tuple[int, list[int]]:
    """Claim what is due for ``owner``; returns the lease and the rowids."""
    taken = take(store, owner, limit=limit, destination=destination)
    assert taken is not None
    return taken.lease, [e.rowid for e in taken.events]


def counts(store: SpoolStore, destination: str = "d") -> tuple[int, ...]:
    c = store.counts(now=time.time())[destination]
    return c.queued, c.due, c.leased, c.retrying, c.dead, c.held


# -- the interface -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_backend_has_every_method_of_the_interface(backend: str) -> None:
    if backend == "sqlite":
        implementation: type = SQLiteStore
    else:
        pytest.importorskip("psycopg")
        from spooler.store.postgres import PostgresStore

        implementation = PostgresStore
    for name, member in vars(SpoolStore).items():
        if name.startswith("_") or not callable(member):
            continue
        assert inspect.signature(getattr(implementation, name)) == inspect.signature(member), name


def test_an_empty_selection_is_refused() -> None:
    with pytest.raises(ValueError, match="everything=True"):
        DeadSelection()
    with pytest.raises(ValueError, match="everything=True"):
        QueueSelection(ids=())
    assert DeadSelection(reason="rejected").reason == "rejected"


# -- insert and claim ----------------------------------------------------------------


def test_claim_leases_events_in_enqueue_order(store: SpoolStore) -> None:
    add(store, "e1", "e2", "e3")
    now = time.time()
    batch = store.claim("d", 2, "a", due_by=now, lease_until=now + 60).events
    assert [(e.event_id, e.body, e.attempts) for e in batch] == [
        ("e1", '{"n": "e1"}', 1),
        ("e2", '{"n": "e2"}', 1),
    ]
    assert abs(batch[0].queued_at - now) < 5 and batch[0].created_at == batch[0].queued_at
    assert claim(store, "b") == ["e3"]
    assert claim(store, "c") == []  # every event is leased
    assert counts(store) == (3, 0, 3, 0, 0, 0)


def test_destinations_are_isolated(store: SpoolStore) -> None:
    add(store, "a1", "a2", destination="a")
    add(store, "b1", destination="b")
    assert claim(store, destination="b") == ["b1"]
    assert claim(store, destination="a", limit=1) == ["a1"]
    assert store.counts(now=time.time())["a"].queued == 2
    assert store.counts(now=time.time())["b"].leased == 1
    assert store.next_due_at("c") is None


def test_queued_elsewhere_counts_the_destinations_not_served(store: SpoolStore) -> None:
    # Given events of three destinations, one of them held, one leased
    add(store, "a1", "a2", destination="a")
    add(store, "b1", destination="b")
    add(store, "c1", "c2", "c3", destination="c")
    store.hold(QueueSelection(destination="c"), now=time.time())
    assert claim(store, destination="b") == ["b1"]
    # Then each destination not served counts every event it has queued, as counts does
    assert store.queued_elsewhere(["a"]) == {"b": 1, "c": 3}
    assert store.queued_elsewhere(["b", "c", "z"]) == {"a": 2}
    assert store.queued_elsewhere([]) == {
        name: c.queued for name, c in store.counts(now=time.time()).items()
    }
    assert store.queued_elsewhere(["a", "b", "c"]) == {}


def test_totals_are_the_same_counted_or_kept(store: SpoolStore) -> None:
    # Given writes before the totals are kept: an insert, a dead event, a delivery
    add(store, "e1", "e2", "e3")
    store.insert_dead(
        "x", "d", '{"dead":1}', now=time.time(), reason="r", failure=Failure(400, "no")
    )
    lease, taken = rowids(store, limit=1)
    store.settle(lease, now=time.time(), delivered=taken)
    counted = store.totals()
    assert counted == (3, 2 * len('{"n": "e1"}') + len('{"dead":1}'))
    # When they are kept from now on (twice: the second time changes nothing)
    store.keep_totals()
    store.keep_totals()
    # Then they start from the count, and every write moves them as it did the count
    assert store.totals() == counted
    add(store, "e4")
    lease, taken = rowids(store, limit=1)
    store.settle(lease, now=time.time(), delivered=taken)
    assert store.totals() == counted


def test_insert_is_all_or_nothing_within_limits(store: SpoolStore) -> None:
    add(store, "e1", "e2")
    assert store.totals() == (2, 2 * len('{"n": "e1"}'))
    rows = [("x1", "d", "{}"), ("x2", "d", "{}")]
    with pytest.raises(SpoolFullError, match="max_events=3"):
        store.insert(rows, now=time.time(), max_events=3)
    with pytest.raises(SpoolFullError, match="max_bytes=25"):
        store.insert(rows, now=time.time(), max_bytes=25)
    assert store.totals() == (2, 22)
    store.insert(rows, now=time.time(), max_events=4, max_bytes=26)
    assert store.totals() == (4, 26)
    # Dead events take room too.
    lease, taken = rowids(store)
    store.settle(lease, now=time.time(), dead=[(r, "rejected", BOOM) for r in taken])
    with pytest.raises(SpoolFullError, match="holds 4 events"):
        store.insert([("x3", "d", "{}")], now=time.time(), max_events=4)


def test_insert_array_pairs_ids_and_refuses_what_does_not_fit(store: SpoolStore) -> None:
    ids = b"a" * 36 + b"b" * 36
    assert store.insert_array(
        '[{"x":1},{"y":[2]}]', 16, ids, "d", now=time.time(), max_event_bytes=100
    )
    assert [
        (e.event_id, e.body)
        for e in store.claim("d", 9, "o", due_by=time.time(), lease_until=time.time() + 60).events
    ] == [
        ("a" * 36, '{"x":1}'),
        ("b" * 36, '{"y":[2]}'),
    ]
    big = '[{"x": 1}, {"y": "' + "z" * 100 + '"}]'
    assert not store.insert_array(
        big,
        len(big),
        ids.replace(b"a", b"c").replace(b"b", b"e"),
        "d",
        now=time.time(),
        max_event_bytes=50,
    )
    assert not store.insert_array(
        '[{"x": 1}]', 8, b"f" * 72, "d", now=time.time(), max_event_bytes=100
    )
    assert not store.insert_array("[{", 2, b"g" * 36, "d", now=time.time(), max_event_bytes=100)
    assert store.totals() == (2, 16)
    with pytest.raises(SpoolFullError):
        store.insert_array(
            '[{"x": 1}]', 8, b"h" * 36, "d", now=time.time(), max_event_bytes=100, max_events=2
        )


# -- leases --------------------------------------------------------------------------


def test_a_lease_that_ran_out_is_claimed_again_and_the_late_settle_changes_nothing(
    store: SpoolStore,
) -> None:
    add(store, "e1")
    now = time.time()
    old = store.claim("d", 10, "a", due_by=now, lease_until=now - 1)  # already over
    assert store.stale_leases(now=time.time()) == 1
    new = take(store, "b")
    [first], [second] = old.events, new.events
    assert second.event_id == "e1" and second.attempts == 2 and second.rowid == first.rowid
    assert new.lease != old.lease and store.stale_leases(now=time.time()) == 0
    # Drain a, whose lease ran out, finally answers: nothing it says counts.
    assert store.settle(old.lease, now=time.time(), delivered=[first.rowid]) == 0
    assert store.settle(old.lease, now=time.time(), dead=[(first.rowid, "rejected", BOOM)]) == 0
    assert not store.extend_lease(old.lease, time.time() + 60)
    assert counts(store) == (1, 0, 1, 1, 0, 0)  # leased, and on its second attempt
    assert store.totals() == (1, len('{"n": "e1"}'))  # nothing taken off twice
    assert store.settle(new.lease, now=time.time(), delivered=[second.rowid]) == 1
    assert store.counts(now=time.time()) == {} and store.totals() == (0, 0)


def test_a_short_lease_runs_out_on_its_own(store: SpoolStore) -> None:
    add(store, "e1")
    assert claim(store, "a", lease=0.3) == ["e1"]
    assert claim(store, "b") == []
    assert wait_until(lambda: claim(store, "b") == ["e1"])


def test_extend_lease_and_release_touch_only_the_owners_events(store: SpoolStore) -> None:
    add(store, "e1", "e2")
    mine, theirs = take(store, "a", limit=1), take(store, "b", limit=1)
    assert store.extend_lease(mine.lease, time.time() - 1)  # a's lease is over
    assert claim(store, "c") == ["e1"]
    assert not store.extend_lease(mine.lease, time.time() + 60)  # and c holds e1 now
    assert store.extend_lease(theirs.lease, time.time() + 120)
    assert store.release_leases("b", now=time.time()) == 1
    assert store.release_leases("b", now=time.time()) == 0
    assert store.settle(theirs.lease, now=time.time(), delivered=[theirs.events[0].rowid]) == 0
    again = take(store, "c")
    assert [(e.event_id, e.attempts) for e in again.events] == [("e2", 2)]  # released: counted
    assert store.stale_leases(now=time.time()) == 0


def test_live_leases_say_which_drain_holds_how_many_events_and_until_when(
    store: SpoolStore,
) -> None:
    # Given drain a holding two leases of d, one of e, and a lease of b's that ran out
    add(store, "d1", "d2", "d3", "d4")
    add(store, "e1", destination="e")
    now = time.time()
    store.claim("d", 2, "a", due_by=now, lease_until=now + 30)
    store.claim("d", 1, "a", due_by=now, lease_until=now + 60)
    store.claim("e", 1, "a", due_by=now, lease_until=now + 45)
    store.claim("d", 1, "b", due_by=now, lease_until=now - 1)
    # Then the live ones are counted by drain and destination, with the last one's end
    found = store.live_leases(now=time.time())
    assert [(f.owner, f.destination, f.events) for f in found] == [("a", "d", 3), ("a", "e", 1)]
    assert [f.until for f in found] == pytest.approx([now + 60, now + 45], abs=0.5)
    # And none once they end
    store.release_leases("a", now=time.time())
    assert store.live_leases(now=time.time()) == []


def test_a_whole_batch_settles_by_its_lease(store: SpoolStore) -> None:
    # Given a batch with bodies of several sizes, some of them multi-byte
    bodies = ['{"n": 1}', '{"n": "é"}', '{"n": "' + "ü" * 40 + '"}']
    store.insert([(f"e{n}", "d", body) for n, body in enumerate(bodies)], now=time.time())
    batch = take(store)
    assert store.counts(now=time.time())["d"].leased == 3
    # When it is delivered whole
    assert (
        store.settle(batch.lease, now=time.time(), delivered=[e.rowid for e in batch.events]) == 3
    )
    # Then the events, their bytes and the lease are gone
    assert store.counts(now=time.time()) == {} and store.totals() == (0, 0)
    assert not store.extend_lease(batch.lease, time.time() + 60)
    assert store.settle(batch.lease, now=time.time(), delivered=[batch.events[0].rowid]) == 0


def test_a_lease_token_is_never_given_out_again(store: SpoolStore) -> None:
    # Given a lease that ended with the last event the spool held
    add(store, "e1")
    first = take(store)
    store.settle(first.lease, now=time.time(), delivered=[first.events[0].rowid])
    # When a new event is claimed
    add(store, "e2")
    second = take(store)
    # Then its lease is another, which the first lease's drain cannot settle
    assert second.lease != first.lease
    assert store.settle(first.lease, now=time.time(), delivered=[second.events[0].rowid]) == 0
    assert claim(store, "b") == [] and counts(store)[:3] == (1, 0, 1)


def test_claims_skip_the_spans_of_live_leases(store: SpoolStore) -> None:
    # Given six events enqueued at one instant, in three leases of two
    add(store, *(f"e{n}" for n in range(6)))
    a, b, c = (take(store, owner, limit=2) for owner in "abc")
    assert [[e.event_id for e in x.events] for x in (a, b, c)] == [
        ["e0", "e1"],
        ["e2", "e3"],
        ["e4", "e5"],
    ]
    assert claim(store, "d") == []
    # When the middle one is given back
    assert store.release_leases("b", now=time.time()) == 2
    # Then its events, between two live leases, are what the next claim finds
    again = take(store, "d")
    assert [(e.event_id, e.attempts) for e in again.events] == [("e2", 2), ("e3", 2)]
    assert store.settle(a.lease, now=time.time(), delivered=[e.rowid for e in a.events]) == 2
    assert claim(store, "e") == []
    assert counts(store)[:3] == (4, 0, 4)


def test_a_lease_whose_claim_order_is_not_its_rowid_order_keeps_its_events(
    store: SpoolStore,
) -> None:
    # Given two events sent back to wait, the later enqueued due first
    add(store, "e1", "e2")
    first = take(store)
    r1, r2 = (e.rowid for e in first.events)
    queued = first.events[0].queued_at
    retry = [(r2, queued - 20, BOOM), (r1, queued - 10, BOOM)]
    assert store.settle(first.lease, now=time.time(), retry=retry) == 2
    # When one drain claims them both, in due order, and an event is enqueued after
    second = take(store, "b")
    assert [e.event_id for e in second.events] == ["e1", "e2"]  # in enqueue order
    add(store, "e3")
    # Then another drain finds only that one, and nothing once it holds it
    assert claim(store, "c") == ["e3"]
    assert claim(store, "d") == []
    assert counts(store)[:3] == (3, 0, 3)
    assert store.settle(second.lease, now=time.time(), delivered=[r1, r2]) == 2


def test_a_lease_settled_in_parts_ends_with_its_last_event(store: SpoolStore) -> None:
    # Given a lease of five events, two of them sent back to wait, due before the rest
    add(store, "e1", "e2", "e3", "e4", "e5")
    first = take(store)
    r1, r2, r3, r4, r5 = (e.rowid for e in first.events)
    earlier = first.events[0].queued_at - 10
    assert (
        store.settle(first.lease, now=time.time(), retry=[(r2, earlier, BOOM), (r4, earlier, BOOM)])
        == 2
    )
    assert store.settle(first.lease, now=time.time(), delivered=[r1]) == 1
    # When another drain claims: the two, not the lease's others
    second = take(store, "b")
    assert [(e.event_id, e.attempts) for e in second.events] == [("e2", 2), ("e4", 2)]
    # Then each lease settles what it holds, in parts, and nothing it does not
    assert store.settle(second.lease, now=time.time(), delivered=[r3, r4]) == 1
    assert (
        store.settle(
            first.lease, now=time.time(), dead=[(r3, "rejected", BOOM), (r4, "rejected", BOOM)]
        )
        == 1
    )
    assert store.settle(second.lease, now=time.time(), delivered=[r2]) == 1
    assert not store.extend_lease(second.lease, time.time() + 60)  # it ended with e2
    assert store.extend_lease(first.lease, time.time() + 60)  # e5 is still held
    assert counts(store) == (1, 0, 1, 0, 1, 0)
    assert store.settle(first.lease, now=time.time(), delivered=[r5]) == 1
    assert not store.extend_lease(first.lease, time.time() + 60)
    assert store.totals() == (1, len('{"n": "e3"}'))  # the dead one
    assert [(d.event_id, d.attempts) for d in store.dead_events(ALL_DEAD)] == [("e3", 1)]


def test_an_operator_ends_a_lease_that_ran_out_before_changing_its_events(
    store: SpoolStore,
) -> None:
    # Given an event whose lease ran out, its drain stalled
    add(store, "e1")
    now = time.time()
    stalled = store.claim("d", 1, "a", due_by=now, lease_until=now - 1)
    # When an operator holds it
    assert store.hold(ALL, now=time.time()) == 1
    # Then the stalled drain's late answer changes nothing: the event stays held
    assert (
        store.settle(stalled.lease, now=time.time(), retry=[(stalled.events[0].rowid, now, BOOM)])
        == 0
    )
    assert counts(store) == (1, 0, 0, 0, 0, 1) and store.stale_leases(now=time.time()) == 0
    # (and the attempt its lease ended counts)
    assert store.release_held(ALL, now=time.time()) == 1
    assert [e.attempts for e in take(store, "b").events] == [2]


def test_concurrent_claims_never_share_an_event(store: SpoolStore) -> None:
    names = [f"e{n:03}" for n in range(300)]
    add(store, *names)
    got: dict[str, list[str]] = {}

    def worker(owner: str) -> None:
        mine = got[owner] = []
        while batch := claim(store, owner, limit=7):
            mine.extend(batch)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [name for batch in got.values() for name in batch]
    assert sorted(claimed) == names


# -- settle --------------------------------------------------------------------------


def test_settle_delivers_retries_and_dead_letters_in_one_call(store: SpoolStore) -> None:
    add(store, "ok", "again", "bad")
    lease, (ok, again, bad) = rowids(store)
    later = time.time() + 3600
    changed = store.settle(
        lease,
        now=time.time(),
        delivered=[ok],
        retry=[(again, later, BOOM)],
        dead=[(bad, "rejected", Failure(400, "no userId"))],
        destination="d",
    )
    assert changed == 3
    assert counts(store) == (1, 0, 0, 1, 1, 0)
    assert abs(store.next_due_at("d") - later) < 1
    assert claim(store, "b") == []  # the retry waits for its time
    state = store.counts(now=time.time())["d"]
    assert state.last_success_at is not None and state.last_error == "service unavailable"
    [dead] = store.dead_events(ALL_DEAD)
    assert (dead.event_id, dead.reason, dead.status, dead.error, dead.attempts) == (
        "bad",
        "rejected",
        400,
        "no userId",
        1,
    )
    assert [(a.status, a.error) for a in dead.attempt_log] == [(400, "no userId")]
    assert abs(dead.dead_at - time.time()) < 5
    assert store.totals() == (2, len('{"n": "again"}') + len('{"n": "bad"}'))


def test_the_attempt_log_keeps_each_failure_up_to_its_limit(store: SpoolStore) -> None:
    add(store, "e1")
    for n in range(7):
        lease, [rowid] = rowids(store)
        store.settle(
            lease, now=time.time(), retry=[(rowid, time.time() - 1, Failure(500 + n, "x"))]
        )
    lease, [rowid] = rowids(store)
    store.settle(lease, now=time.time(), dead=[(rowid, "max_attempts", Failure(599, "y" * 500))])
    [dead] = store.dead_events(ALL_DEAD)
    assert dead.attempts == 8
    statuses = [a.status for a in dead.attempt_log]
    assert statuses[-1] == 599 and statuses == sorted(statuses) and len(statuses) == 5
    assert dead.attempt_log[-1].error == "y" * 100
    assert all(abs(a.at - time.time()) < 5 for a in dead.attempt_log)
    # A replayed event keeps its history; an operator's expiry adds no attempt.
    assert store.replay(ALL_DEAD, now=time.time()) == 1
    assert store.expire(QueueSelection(ids=("e1",)), now=time.time(), error="by hand") == 1
    [expired] = store.dead_events(ALL_DEAD)
    assert (expired.reason, expired.attempts) == ("manual", 0)
    assert [(a.status, a.error) for a in expired.attempt_log] == [
        (a.status, a.error) for a in dead.attempt_log
    ]
    # (the times read back within a millisecond: PostgreSQL's come from its own clock)
    assert all(
        abs(a.at - b.at) < 1 for a, b in zip(expired.attempt_log, dead.attempt_log, strict=True)
    )


# -- the dead-letter table ----------------------------------------------------------


def dead_letter(
    store: SpoolStore, *names: str, destination: str = "d", reason: str = "rejected"
) -> None:
    add(store, *names, destination=destination)
    batch = take(store, "x", destination=destination)
    store.settle(batch.lease, now=time.time(), dead=[(e.rowid, reason, BOOM) for e in batch.events])


def test_replay_moves_dead_events_back_with_their_ids(store: SpoolStore) -> None:
    dead_letter(store, "r1", "r2", "r3", "r4", "r5")
    dead_letter(store, "o1", destination="other", reason="invalid")
    with pytest.raises(UnknownEventError, match="not-there"):
        store.replay(DeadSelection(ids=("r1", "not-there")), now=time.time())
    assert store.replay(DeadSelection(reason="rejected"), now=time.time(), dry_run=True) == 5
    assert store.replay(DeadSelection(ids=("r2",)), now=time.time(), to="elsewhere") == 1
    assert claim(store, destination="elsewhere") == ["r2"]
    moved = store.replay(DeadSelection(destination="d"), now=time.time(), limit=3, chunk=2)
    assert moved == 3
    assert [e.event_id for e in store.dead_events(ALL_DEAD)] == ["r5", "o1"]
    assert [
        e.attempts
        for e in store.claim("d", 9, "b", due_by=time.time(), lease_until=time.time() + 60).events
    ] == [1, 1, 1]
    assert store.totals()[0] == 6


def test_dead_events_are_selected_by_the_status_they_died_of(store: SpoolStore) -> None:
    # Given events killed by a wrong key (401) and one the API found malformed (400)
    add(store, "k1", "b1", "k2")
    lease, (k1, b1, k2) = rowids(store)
    wrong_key, malformed = Failure(401, "HTTP 401: bad key"), Failure(400, "HTTP 400: bad")
    dead = [(k1, "rejected", wrong_key), (b1, "rejected", malformed), (k2, "rejected", wrong_key)]
    store.settle(lease, now=time.time(), dead=dead)
    # Then each status selects its own, alone or with other criteria
    key_killed = DeadSelection(reason="rejected", status=401)
    assert [d.event_id for d in store.dead_events(key_killed)] == ["k1", "k2"]
    assert store.purge(DeadSelection(status=400), dry_run=True) == 1
    assert store.purge(DeadSelection(status=503), dry_run=True) == 0
    assert store.replay(key_killed, now=time.time()) == 2
    assert claim(store, "b") == ["k1", "k2"]
    assert [d.event_id for d in store.dead_events(ALL_DEAD)] == ["b1"]


def test_dead_events_are_read_a_page_at_a_time_in_order(
    store: SpoolStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 3 (else 1000): the listing goes on past page ends, a limit included,
    # and a named id that is not there is refused before anything is listed.
    monkeypatch.setattr(store_shared, "DEAD_PAGE", 3)
    names = [f"p{n}" for n in range(7)]
    dead_letter(store, *names)
    assert [d.event_id for d in store.dead_events(ALL_DEAD)] == names
    assert [d.event_id for d in store.dead_events(ALL_DEAD, limit=5)] == names[:5]
    assert [d.event_id for d in store.dead_events(DeadSelection(ids=("p5", "p1")))] == [
        "p1",
        "p5",
    ]
    with pytest.raises(UnknownEventError, match="nope"):
        store.dead_events(DeadSelection(ids=("p1", "nope")))


def test_purge_deletes_dead_events_for_good(store: SpoolStore) -> None:
    dead_letter(store, "p1", "p2", "p3")
    before = store.totals()
    assert store.purge(DeadSelection(dead_before=time.time() - 3600)) == 0
    assert store.purge(DeadSelection(ids=("p1",)), dry_run=True) == 1
    with pytest.raises(UnknownEventError):
        store.purge(DeadSelection(ids=("p1", "nope")))
    assert store.purge(DeadSelection(ids=("p1",))) == 1
    assert store.totals() == (before[0] - 1, before[1] - len('{"n": "p1"}'))
    assert store.purge(DeadSelection(dead_after=time.time() - 3600)) == 2
    assert list(store.dead_events(ALL_DEAD)) == [] and store.totals() == (0, 0)


def test_dead_events_are_read_newest_first_a_page_at_a_time(store: SpoolStore) -> None:
    # Given seven dead letters of one destination, and one of another
    names = [f"p{n}" for n in range(7)]
    dead_letter(store, *names)
    dead_letter(store, "o1", destination="other", reason="invalid")
    mine = DeadSelection(destination="d", reason="rejected")

    def ids(page: DeadPage) -> list[str]:
        return [event.event_id for _, event in page.events]

    # The newest first, then those older than the last key of a page
    first = store.dead_page(mine, limit=3)
    assert (ids(first), first.total) == (["p6", "p5", "p4"], 7)
    second = store.dead_page(mine, limit=3, before=first.events[-1][0])
    assert ids(second) == ["p3", "p2", "p1"]
    assert ids(store.dead_page(mine, limit=3, before=second.events[-1][0])) == ["p0"]
    # and back: the oldest of those newer than the first key of a page, newest first
    assert ids(store.dead_page(mine, limit=2, after=second.events[0][0])) == ["p5", "p4"]
    # Every dead event, in full; a named id that is not there is refused
    everything = store.dead_page(ALL_DEAD, limit=1)
    [(_, newest)] = everything.events
    assert (newest.event_id, newest.reason, newest.status, everything.total) == (
        "o1",
        "invalid",
        503,
        8,
    )
    assert [a.status for a in newest.attempt_log] == [503]
    assert abs(newest.attempt_log[0].at - time.time()) < 5 and abs(newest.dead_at - time.time()) < 5
    assert store.dead_page(DeadSelection(reason="max_age"), limit=5) == DeadPage([], 0)
    with pytest.raises(UnknownEventError, match="nope"):
        store.dead_page(DeadSelection(ids=("p1", "nope")), limit=5)


def test_insert_dead_and_the_summary(store: SpoolStore) -> None:
    store.insert_dead(
        "c1", "d", "{}", now=time.time(), reason="invalid", failure=Failure(None, "no event name")
    )
    dead_letter(store, "r1", "r2")
    summary = store.dead_summary(now=time.time())
    assert [
        (g.destination, g.reason, g.status, g.count, g.by_age["<1h"], g.top_error) for g in summary
    ] == [
        ("d", "rejected", 503, 2, 2, "service unavailable"),
        ("d", "invalid", None, 1, 1, "no event name"),
    ]
    [first, *_] = store.dead_events(DeadSelection(reason="invalid"))
    assert (first.event_id, first.attempts, first.attempt_log) == ("c1", 0, ())
    assert store.totals()[0] == 3
    assert [d.event_id for d in store.dead_events(ALL_DEAD, limit=1)] == ["c1"]


# -- operators on the queue ----------------------------------------------------------


def test_hold_and_release(store: SpoolStore) -> None:
    add(store, "h1", "h2", "h3")
    assert claim(store, "a", limit=1) == ["h1"]
    assert store.hold(ALL, now=time.time()) == 2  # not the one being delivered
    assert claim(store, "b") == []
    assert counts(store) == (3, 0, 1, 0, 0, 2)
    assert abs(store.next_due_at("d") - (time.time() + 60)) < 5  # held ones never fall due
    with pytest.raises(UnknownEventError):
        store.release_held(QueueSelection(ids=("h2", "zz")), now=time.time())
    assert store.release_held(QueueSelection(ids=("h3",)), now=time.time()) == 1
    assert claim(store, "b") == ["h3"]


def test_retry_now_clears_backoff_and_ends_the_pause(store: SpoolStore) -> None:
    add(store, "w1", "w2")
    lease, (first, second) = rowids(store)
    store.settle(lease, now=time.time(), retry=[(first, time.time() + 3600, BOOM)])
    store.record_pause("d", failures=3, until=time.time() + 600, url_digest="u1")
    assert store.retry_now_count() == 0
    store.record_pause("e", failures=1, until=time.time() - 1, url_digest="u1")  # over
    assert store.retry_now(QueueSelection(destination="d"), now=time.time()) == (1, ("d",))
    assert store.retry_now_count() == 1
    assert store.pauses()["d"].until is None and store.pauses()["d"].failures == 3
    assert claim(store, "b") == ["w1"]  # w2 stays with its drain
    store.record_pause("f", failures=1, until=time.time() + 600, url_digest="u1")
    assert store.retry_now(ALL, now=time.time()) == (0, ("f",))  # not e's, already over
    assert store.retry_now_count() == 2
    assert store.settle(lease, now=time.time(), delivered=[second]) == 1


def test_expire_dead_letters_what_is_not_in_flight(store: SpoolStore) -> None:
    add(store, "x1", "x2", "x3")
    assert claim(store, "a", limit=1) == ["x1"]
    with pytest.raises(UnknownEventError):
        store.expire(QueueSelection(ids=("x2", "gone")), now=time.time(), error="e")
    assert store.expire(ALL, now=time.time(), error="expired by an operator") == 2
    assert [(d.event_id, d.reason, d.error) for d in store.dead_events(ALL_DEAD)] == [
        ("x2", "manual", "expired by an operator"),
        ("x3", "manual", "expired by an operator"),
    ]
    assert store.totals()[0] == 3


def test_a_bound_on_the_key_leaves_out_what_came_after_it_was_read(store: SpoolStore) -> None:
    # Given two dead letters and two queued events, and each table's last key read then
    assert (store.last_key(dead=True), store.last_key(dead=False)) == (0, 0)
    dead_letter(store, "b1", "b2")
    add(store, "q1", "q2", destination="q")
    dead_then, queued_then = store.last_key(dead=True), store.last_key(dead=False)
    # When more events that match the same selections die, and are queued
    dead_letter(store, "b3", "b4", "b5")
    add(store, "q3", destination="q")
    assert store.last_key(dead=True) > dead_then and store.last_key(dead=False) > queued_then
    # Then each operation on a selection bounded by those keys leaves them alone
    dead = DeadSelection(destination="d", last_key=dead_then)
    assert store.purge(dead, dry_run=True) == 2
    assert store.replay(dead, now=time.time(), dry_run=True) == 2
    assert store.replay(DeadSelection(ids=("b1",), last_key=dead_then), now=time.time()) == 1
    assert store.purge(DeadSelection(everything=True, last_key=dead_then)) == 1
    assert [d.event_id for d in store.dead_events(ALL_DEAD)] == ["b3", "b4", "b5"]
    queued = QueueSelection(destination="q", last_key=queued_then)
    assert store.hold(queued, now=time.time()) == 2
    assert store.hold(QueueSelection(destination="q"), now=time.time()) == 1
    assert (
        store.release_held(QueueSelection(everything=True, last_key=queued_then), now=time.time())
        == 2
    )
    assert counts(store, "q")[-1] == 1  # q3 is still held
    assert store.release_held(QueueSelection(destination="q"), now=time.time()) == 1
    lease, waiting = rowids(store, destination="q")
    later = time.time() + 3600
    store.settle(lease, now=time.time(), retry=[(rowid, later, BOOM) for rowid in waiting])
    assert store.retry_now(queued, now=time.time()).events == 2
    assert store.expire(queued, now=time.time(), error="e") == 2
    assert [e.event_id for e in store.dead_events(DeadSelection(reason="manual"))] == ["q1", "q2"]
    assert counts(store, "q")[:2] == (1, 0)  # q3 is left, waiting out its backoff


def kept(store: SpoolStore) -> dict[str, tuple[int, float | None, str | None]]:
    """The kept breakers, their ends rounded to the second (PostgreSQL's come back on the
    caller's clock from the database's, a few microseconds apart)."""
    return {
        name: (p.failures, None if p.until is None else round(p.until), p.url_digest)
        for name, p in store.pauses().items()
    }


def test_a_pause_is_kept_until_a_later_change_or_retry_now(store: SpoolStore) -> None:
    assert store.pauses() == {}
    # Given a destination paused after three failures, and another that recovered
    until = round(time.time()) + 60
    store.record_pause("d", failures=3, until=until, url_digest="d1")
    store.record_pause("e", failures=1, until=until - 55, url_digest="e1")
    store.record_pause("e", failures=0, until=None, url_digest="e1")
    assert kept(store) == {"d": (3, until, "d1")}
    # Then the pause lives beside the destination's last outcome without touching it
    add(store, "p1")
    lease, [rowid] = rowids(store)
    store.settle(lease, now=time.time(), destination="d", retry=[(rowid, time.time() + 1, BOOM)])
    assert kept(store) == {"d": (3, until, "d1")}
    assert store.counts(now=time.time())["d"].last_error == BOOM.error
    # When an operator runs retry-now, the pause ends but the count of failures stays
    store.retry_now(ALL, now=time.time())
    assert kept(store) == {"d": (3, None, "d1")}


@pytest.mark.parametrize(
    ("selection", "ended"),
    [
        (QueueSelection(destination="a"), ["a"]),
        (QueueSelection(ids=("b1",)), ["b"]),
        (QueueSelection(everything=True), ["a", "b", "c"]),
    ],
)
def test_retry_now_ends_the_pauses_of_the_selected_destinations(
    store: SpoolStore, selection: QueueSelection, ended: list[str]
) -> None:
    # Given three paused destinations, "a" with no queued event
    until = round(time.time()) + 60
    for name in ("a", "b", "c"):
        store.record_pause(name, failures=2, until=until, url_digest="u")
    add(store, "b1", destination="b")
    add(store, "c1", destination="c")
    # When an operator runs retry-now for some of them
    done = store.retry_now(selection, now=time.time())
    # Then only theirs end, and every kept count of failures stays
    assert done.pauses_ended == tuple(ended)
    assert kept(store) == {
        name: (2, None if name in ended else until, "u") for name in ("a", "b", "c")
    }


def test_forgetting_failures_touches_only_that_destinations_waiting_events(
    store: SpoolStore,
) -> None:
    # Given two paused destinations, each with an event waiting out its backoff
    later = time.time() + 3600
    for name in ("moved", "other"):
        add(store, f"{name}1", f"{name}2", f"{name}3", destination=name)
        store.record_pause(name, failures=2, until=later, url_digest="old")
        batch = take(store, destination=name)
        waiting, held, _ = (e.rowid for e in batch.events)
        # and one held, and (the third) one in flight: claimed, not yet settled
        store.settle(
            batch.lease, now=time.time(), retry=[(waiting, later, BOOM), (held, later, BOOM)]
        )
        store.hold(QueueSelection(ids=(f"{name}2",)), now=time.time())
    # When "moved" is sent to another URL
    assert store.forget_failures("moved", url_digest="new", now=time.time()) == 1
    # Then only its waiting event is due, and only its pause is gone
    assert claim(store, "b", destination="moved") == ["moved1"]
    assert claim(store, "b", destination="other") == []
    assert kept(store) == {"other": (2, round(later), "old")}
    assert store.counts(now=time.time())["moved"].failed_in_a_row == 0


def test_counts_and_health(store: SpoolStore) -> None:
    add(store, "c1", "c2", "c3")
    store.insert([("bad", "d", "not json")], now=time.time())
    assert claim(store, "a", limit=1) == ["c1"]
    c = store.counts(now=time.time())["d"]
    assert (c.queued, c.due, c.leased) == (4, 3, 1)
    assert abs(c.oldest_queued_at - time.time()) < 5
    assert store.quarantine_corrupt(now=time.time()) == 1
    [dead] = store.dead_events(ALL_DEAD)
    assert (dead.event_id, dead.reason) == ("bad", "corrupt")
    assert store.integrity_check() == ["ok"]
    assert store.schema_version() >= 1
    assert store.reclaim_space() >= 0


# -- history ------------------------------------------------------------------------


def test_history_adds_up_the_drains_minutes_and_keeps_the_latest_backlog(
    store: SpoolStore,
) -> None:
    now = time.time()
    minute = minute_of(now)
    # Two drains write the same minute: counts add up, the later backlog stays, and a
    # point without a backlog keeps the one written
    store.record_history(
        [
            HistoryPoint(
                minute - 60,
                "a",
                delivered=10,
                requests=2,
                latency_sum=0.5,
                latency_max=0.3,
                backlog=100,
                oldest_age=30.0,
            ),
            HistoryPoint(minute - 60, "b", dead=1),
        ],
        now=now,
        keep=3600,
    )
    store.record_history(
        [
            HistoryPoint(
                minute - 60,
                "a",
                delivered=5,
                retried=4,
                requests=1,
                latency_sum=0.25,
                latency_max=0.25,
                backlog=90,
                oldest_age=40.0,
            ),
            HistoryPoint(minute - 60, "b", dead=2),
            HistoryPoint(minute, "a", delivered=1),
        ],
        now=now,
        keep=3600,
    )
    assert store.history(since=now - 60, now=now) == [
        HistoryPoint(minute - 60, "a", 15, 4, 0, 3, 0.75, 0.3, 90, 40.0),
        HistoryPoint(minute - 60, "b", 0, 0, 3, 0, 0.0, 0.0, None, None),
        HistoryPoint(minute, "a", delivered=1),
    ]
    # One destination, from a later minute on
    assert store.history(since=now, now=now, destination="a") == [
        HistoryPoint(minute, "a", delivered=1)
    ]
    assert store.history(since=now, now=now, destination="b") == []


def test_history_forgets_minutes_older_than_it_keeps(store: SpoolStore) -> None:
    now = time.time()
    minute = minute_of(now)
    old = [HistoryPoint(minute - 60 * n, "a", delivered=n) for n in (10, 5, 1)]
    store.record_history(old, now=now, keep=7 * 86400)
    assert len(store.history(since=now - 3600, now=now)) == 3
    # Keeping seven minutes from now on: the minute that began ten minutes ago goes
    store.record_history([], now=now, keep=420)
    assert [p.delivered for p in store.history(since=now - 3600, now=now)] == [5, 1]


def test_a_closed_store_refuses_work(store: SpoolStore) -> None:
    store.close()
    with pytest.raises(Exception, match="closed"):
        add(store, "late")


def test_service_reports_are_kept_by_name(store: SpoolStore) -> None:
    assert store.service_reports() == {}
    store.record_service("127.0.0.1:8420", '{"requests_accepted": 1}')
    store.record_service("127.0.0.1:8421", '{"requests_accepted": 5}')
    store.record_service("127.0.0.1:8420", '{"requests_accepted": 2}')  # replaces the first
    assert store.service_reports() == {
        "127.0.0.1:8420": '{"requests_accepted": 2}',
        "127.0.0.1:8421": '{"requests_accepted": 5}',
    }
    assert store.totals() == (0, 0)  # not events: nothing counts them against the limits
