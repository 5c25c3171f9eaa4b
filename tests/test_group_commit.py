"""Group commit: every caller's events are committed before it returns, and errors reach
the callers they concern (correctness only; speed is measured in benchmarks/)."""

from __future__ import annotations

import asyncio
import errno
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from helpers.processes import wait_until
from helpers.spools import rows

import spooler.group_commit as group_commit_module
import spooler.store.sqlite.base as sqlite_base
from spooler import NotDurableError, Spool, SpoolFullError, StoreError
from spooler.group_commit import GroupCommit, Row

THREADS = 8
PER_THREAD = 40


def test_every_enqueue_is_visible_to_another_connection_when_it_returns(db: Path) -> None:
    spool = Spool(db, durability="normal")
    errors: list[str] = []

    def produce(thread: int) -> None:
        reader = sqlite3.connect(db)
        for n in range(PER_THREAD):
            event_id = spool.enqueue({"thread": thread, "n": n})
            found = reader.execute("SELECT count(*) FROM queue WHERE event_id = ?", (event_id,))
            if found.fetchone() != (1,):
                errors.append(f"{event_id} not committed when enqueue returned")
        reader.close()

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    spool.close()
    assert errors == []
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(DISTINCT event_id) FROM queue").fetchone() == (
        THREADS * PER_THREAD,
    )
    conn.close()


def grouped(commit: GroupCommit, rows_per_caller: Sequence[Sequence[Row]]) -> list[object]:
    """Submit each caller's rows from its own thread while a first commit is held up, so
    all of them wait and then share one group; return what each caller got."""
    results: list[object] = [None] * len(rows_per_caller)

    def call(index: int) -> None:
        try:
            commit.submit(rows_per_caller[index])
            results[index] = "ok"
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(rows_per_caller))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def behind_a_held_commit(
    commit: Callable[[Sequence[Row]], None], rows_per_caller: Sequence[Sequence[Row]]
) -> list[object]:
    """What each caller got, having submitted its rows while a first commit (of one
    row, by ``commit`` too) was held up: they all wait, then share one group."""
    first_commit_started = threading.Event()
    let_first_commit_finish = threading.Event()

    def held_first(rows: Sequence[Row]) -> None:
        if not first_commit_started.is_set():
            first_commit_started.set()
            assert let_first_commit_finish.wait(30)
        commit(rows)

    group_commit = GroupCommit(held_first)
    leader = threading.Thread(target=group_commit.submit, args=([("a", "d", "first")],))
    leader.start()
    assert first_commit_started.wait(30)
    outcome: list[list[object]] = []
    waiter = threading.Thread(target=lambda: outcome.append(grouped(group_commit, rows_per_caller)))
    waiter.start()
    assert wait_until(lambda: len(group_commit._pending) == len(rows_per_caller), timeout=30)
    let_first_commit_finish.set()
    leader.join(30)
    waiter.join(30)
    [results] = outcome
    return results


def test_a_failed_group_is_retried_per_caller_so_only_the_guilty_caller_fails() -> None:
    committed: list[list[Row]] = []
    groups: list[int] = []

    def commit(rows: Sequence[Row]) -> None:
        groups.append(len(rows))
        if any(body == "too big" for _, _, body in rows):
            raise SpoolFullError("over max_bytes")
        committed.append(list(rows))

    # While a first commit is held, three callers queue up behind it.
    callers = [[("b", "d", "small")], [("c", "d", "too big")], [("e", "d", "small")]]
    results = behind_a_held_commit(commit, callers)

    assert results[0] == "ok" and results[2] == "ok"
    assert isinstance(results[1], SpoolFullError)
    # One shared attempt of all three, then one transaction each.
    assert groups == [1, 3, 1, 1, 1]
    assert committed == [[("a", "d", "first")], [("b", "d", "small")], [("e", "d", "small")]]


def test_a_group_the_spool_fails_is_told_so_at_once_not_retried_per_caller() -> None:
    # Given a spool that fails every commit after the first (a PostgreSQL server still
    # unreachable after the URL's wait: each try costs that wait)
    tries: list[int] = []

    def commit(rows: Sequence[Row]) -> None:
        tries.append(len(rows))
        if len(tries) > 1:
            raise StoreError("PostgreSQL could not be reached for 10s")

    # When three callers share the next commit, which fails
    results = behind_a_held_commit(
        commit, [[("b", "d", "x")], [("c", "d", "y")], [("e", "d", "z")]]
    )

    # Then each of them gets the error after that one try, not after one more each
    assert all(isinstance(result, StoreError) for result in results), results
    assert tries == [1, 3]


def test_spool_limits_still_hold_under_concurrent_enqueues(db: Path) -> None:
    spool = Spool(db, max_events=50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def produce() -> None:
        for _ in range(20):
            try:
                spool.enqueue({"x": 1})
                result = "ok"
            except SpoolFullError:
                result = "full"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=produce) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert (outcomes.count("ok"), outcomes.count("full")) == (50, 50)
    assert spool.status().total.queued == 50
    spool.close()


def test_an_interrupted_leader_fails_its_group_instead_of_hanging_it() -> None:
    def commit(rows: Sequence[Row]) -> None:
        raise KeyboardInterrupt

    group_commit = GroupCommit(commit)
    with pytest.raises(KeyboardInterrupt):
        group_commit.submit([("a", "d", "x")])
    # The committer is usable again: the next caller leads.
    group_commit._commit = lambda rows: None
    group_commit.submit([("b", "d", "y")])


def test_a_waiter_interrupted_by_a_signal_withdraws_and_nobody_hangs() -> None:
    committed: list[Row] = []
    first_commit_started = threading.Event()
    let_first_commit_finish = threading.Event()

    def commit(rows: Sequence[Row]) -> None:
        if not first_commit_started.is_set():
            first_commit_started.set()
            assert let_first_commit_finish.wait(30)
        committed.extend(rows)

    group_commit = GroupCommit(commit)
    leader = threading.Thread(target=group_commit.submit, args=([("a", "d", "first")],))
    leader.start()
    assert first_commit_started.wait(30)

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    # The main thread waits behind the held commit until a timer signal interrupts it.
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            group_commit.submit([("b", "d", "withdrawn")])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    let_first_commit_finish.set()
    leader.join(30)

    # In a thread with a deadline: if leadership had been lost, this would wait forever.
    after = threading.Thread(target=group_commit.submit, args=([("c", "d", "after")],))
    after.daemon = True
    after.start()
    after.join(30)
    assert not after.is_alive(), "a caller after the interrupted one never got to commit"
    assert committed == [("a", "d", "first"), ("c", "d", "after")]


def test_a_group_whose_flush_fails_is_told_so_and_not_committed_twice(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(db)
    first_flush = threading.Event()
    let_first_flush_finish = threading.Event()
    flushes: list[int] = []

    def flush(fd: int) -> None:
        flushes.append(fd)
        if len(flushes) == 1:  # hold the first caller's flush while the others gather
            first_flush.set()
            assert let_first_flush_finish.wait(30)
            return
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sqlite_base, "_flush_to_disk", flush)
    results: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            spool.enqueue({"n": n})
            results[n] = "ok"
        except StoreError as exc:
            results[n] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(5)]
    threads[0].start()
    assert first_flush.wait(30)
    for thread in threads[1:]:
        thread.start()
    assert wait_until(lambda: len(spool._group_commit._pending) == 4, timeout=30)
    let_first_flush_finish.set()
    for thread in threads:
        thread.join(timeout=30)
    spool.close()
    # The four shared one commit whose flush failed: each is told its event may not be
    # durable, and the commit is not repeated one by one (that would store them twice).
    assert results[0] == "ok"
    assert all(isinstance(results[n], NotDurableError) for n in range(1, 5)), results
    assert len(flushes) == 2
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*), count(DISTINCT event_id) FROM queue").fetchone() == (
        5,
        5,
    )
    conn.close()


def test_async_handlers_enqueue_through_to_thread_as_the_readme_says(db: Path) -> None:
    # Given one Spool shared by many concurrent async handlers
    async def handlers(spool: Spool) -> list[str]:
        return await asyncio.gather(
            *(asyncio.to_thread(spool.enqueue, {"request": n}) for n in range(40))
        )

    with Spool(db) as spool:
        ids = asyncio.run(handlers(spool))
    # Then every handler got its own id, and every event is committed
    assert len(set(ids)) == 40
    assert sorted(
        n for (n,) in rows(db, "SELECT json_extract(body, '$.request') FROM queue")
    ) == list(range(40))


def test_a_lone_caller_commits_directly_and_hands_over_to_the_callers_that_queued() -> None:
    # Given a lone caller, whose commit is held while three others arrive
    groups: list[list[Row]] = []
    first_commit_started = threading.Event()
    let_first_commit_finish = threading.Event()

    def commit(rows: Sequence[Row]) -> None:
        if not groups:
            first_commit_started.set()
            assert let_first_commit_finish.wait(30)
        if any(body == "too big" for _, _, body in rows):
            raise SpoolFullError("over max_bytes")
        groups.append(list(rows))

    group_commit = GroupCommit(commit)
    leader = threading.Thread(target=group_commit.submit, args=([("a", "d", "alone")],))
    leader.start()
    assert first_commit_started.wait(30)
    # It committed without queueing a request of its own
    assert group_commit._pending == []
    callers = [[("b", "d", "small")], [("c", "d", "too big")], [("e", "d", "small")]]
    outcome: list[list[object]] = []
    waiter = threading.Thread(target=lambda: outcome.append(grouped(group_commit, callers)))
    waiter.start()
    assert wait_until(lambda: len(group_commit._pending) == 3, timeout=30)
    # When its commit ends
    let_first_commit_finish.set()
    leader.join(30)
    waiter.join(30)
    # Then the three that queued meanwhile shared the next commit (and, as it failed,
    # one each): only the guilty one failed, nobody was committed twice
    [results] = outcome
    assert results[0] == "ok" and results[2] == "ok"
    assert isinstance(results[1], SpoolFullError)
    assert groups == [[("a", "d", "alone")], [("b", "d", "small")], [("e", "d", "small")]]
    # And once the callers are gone, a lone caller commits directly again (after one
    # group that finds nobody else arriving)
    group_commit.submit([("f", "d", "again")])
    group_commit.submit([("g", "d", "alone again")])
    assert group_commit._pending == [] and not group_commit._leader_busy
    assert groups[-2:] == [[("f", "d", "again")], [("g", "d", "alone again")]]


def test_a_lone_caller_interrupted_in_its_commit_hands_over_to_the_waiting_callers() -> None:
    committed: list[Row] = []
    first_commit_started = threading.Event()
    let_first_commit_finish = threading.Event()

    def commit(rows: Sequence[Row]) -> None:
        if not first_commit_started.is_set():
            first_commit_started.set()
            assert let_first_commit_finish.wait(30)
            raise KeyboardInterrupt
        committed.extend(rows)

    group_commit = GroupCommit(commit)
    interrupted: list[BaseException] = []

    def lone() -> None:
        try:
            group_commit.submit([("a", "d", "interrupted")])
        except BaseException as exc:
            interrupted.append(exc)

    leader = threading.Thread(target=lone)
    leader.start()
    assert first_commit_started.wait(30)
    outcome: list[list[object]] = []
    callers = [[("b", "d", "x")], [("c", "d", "y")]]
    waiter = threading.Thread(target=lambda: outcome.append(grouped(group_commit, callers)))
    waiter.start()
    assert wait_until(lambda: len(group_commit._pending) == 2, timeout=30)
    let_first_commit_finish.set()
    leader.join(30)
    waiter.join(30)
    assert [type(exc) for exc in interrupted] == [KeyboardInterrupt]
    assert outcome == [["ok", "ok"]]
    assert sorted(committed) == [("b", "d", "x"), ("c", "d", "y")]


def test_lone_and_grouped_commits_mix_and_every_event_is_committed_once(db: Path) -> None:
    # Threads that pause at random between calls: some calls find nobody else and
    # commit directly, others queue behind them or lead a group
    spool = Spool(db, durability="normal")
    errors: list[str] = []

    def produce(thread: int) -> None:
        reader = sqlite3.connect(db)
        pace = random.Random(thread)
        for n in range(PER_THREAD):
            event_id = spool.enqueue({"thread": thread, "n": n})
            found = reader.execute("SELECT count(*) FROM queue WHERE event_id = ?", (event_id,))
            if found.fetchone() != (1,):
                errors.append(f"{event_id} not committed when enqueue returned")
            time.sleep(pace.choice([0, 0, 0.0005, 0.002]))
        reader.close()

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    spool.close()
    assert errors == []
    assert rows(db, "SELECT count(*), count(DISTINCT event_id) FROM queue") == [
        (4 * PER_THREAD, 4 * PER_THREAD)
    ]


class Interrupted(Exception):
    pass


class WokenThenInterrupted:
    """A caller's wake-up lock whose wait ends in an interruption right after it acquired,
    as when a signal's handler raises at that moment."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def acquire(self) -> bool:
        self._lock.acquire()
        raise Interrupted

    def release(self) -> None:
        self._lock.release()


def test_a_caller_interrupted_right_after_it_was_woken_still_wakes_the_rest_of_its_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a group of three callers queued behind a held commit, the middle one to be
    # interrupted just after it is woken (its rows are committed by then)
    class Request(group_commit_module._Request):
        def __init__(self, rows: Sequence[Row]) -> None:
            super().__init__(rows)
            if rows[0][0] == "c":
                self.wakeup = WokenThenInterrupted(self.wakeup)

    monkeypatch.setattr(group_commit_module, "_Request", Request)
    committed: list[Row] = []
    first_commit_started = threading.Event()
    let_first_commit_finish = threading.Event()

    def commit(rows: Sequence[Row]) -> None:
        if not first_commit_started.is_set():
            first_commit_started.set()
            assert let_first_commit_finish.wait(30)
        committed.extend(rows)

    group_commit = GroupCommit(commit)
    leader = threading.Thread(target=group_commit.submit, args=([("a", "d", "first")],))
    leader.start()
    assert first_commit_started.wait(30)
    results: dict[str, object] = {}

    def call(name: str) -> None:
        try:
            group_commit.submit([(name, "d", "x")])
            results[name] = "ok"
        except BaseException as exc:
            results[name] = exc

    callers = {name: threading.Thread(target=call, args=(name,)) for name in "bcd"}
    for queued, thread in enumerate(callers.values(), start=1):  # in this order
        thread.start()
        assert wait_until(lambda n=queued: len(group_commit._pending) == n, timeout=30)
    # When the commits end
    let_first_commit_finish.set()
    leader.join(30)
    for thread in callers.values():
        thread.join(30)
    # Then the middle one is told of its interruption, and the others, woken after it,
    # returned: nobody hangs, and every row is committed once
    assert not any(thread.is_alive() for thread in callers.values())
    assert results["b"] == "ok" and results["d"] == "ok"
    assert isinstance(results["c"], Interrupted)
    assert sorted(committed) == [
        ("a", "d", "first"),
        ("b", "d", "x"),
        ("c", "d", "x"),
        ("d", "d", "x"),
    ]


@pytest.mark.parametrize("signals", [1, 2])
def test_the_main_thread_interrupted_while_its_group_commits_hangs_nobody(signals: int) -> None:
    # Given the main thread queued between two other callers behind a held commit
    committed: list[Row] = []
    started = [threading.Event(), threading.Event()]
    finish = [threading.Event(), threading.Event()]

    def commit(rows: Sequence[Row]) -> None:
        held = sum(event.is_set() for event in started)
        if held < 2:
            started[held].set()
            assert finish[held].wait(30)
        committed.extend(rows)

    group_commit = GroupCommit(commit)
    leader = threading.Thread(target=group_commit.submit, args=([("a", "d", "first")],))
    leader.start()
    assert started[0].wait(30)
    results: dict[str, object] = {}

    def call(name: str) -> None:
        try:
            group_commit.submit([(name, "d", "x")])
            results[name] = "ok"
        except Exception as exc:
            results[name] = exc

    others = {name: threading.Thread(target=call, args=(name,)) for name in "bc"}
    others["b"].start()
    assert wait_until(lambda: len(group_commit._pending) == 1, timeout=30)
    interruptions: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        interruptions.append(signum)
        raise Interrupted

    def conduct() -> None:
        assert wait_until(lambda: len(group_commit._pending) == 2, timeout=30)
        others["c"].start()  # after the main thread
        assert wait_until(lambda: len(group_commit._pending) == 3, timeout=30)
        finish[0].set()  # the three commit next, together
        assert started[1].wait(30)
        # When signals interrupt the main thread while its rows are being committed (a
        # second one while it waits for that commit after the first)
        for sent in range(1, signals + 1):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)
            assert wait_until(lambda n=sent: len(interruptions) == n, timeout=30)
        finish[1].set()

    conductor = threading.Thread(target=conduct)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        conductor.start()
        with pytest.raises(Interrupted):
            group_commit.submit([("m", "d", "main")])
        commit_was_over = finish[1].is_set()
    finally:
        signal.signal(signal.SIGALRM, previous)
    conductor.join(30)
    leader.join(30)
    for thread in others.values():
        thread.join(30)
    # Then, interrupted once, it raised only once its group's commit was over; and the
    # others returned either way (the main thread is not in the chain of wake-ups)
    assert commit_was_over or signals == 2
    assert results == {"b": "ok", "c": "ok"}
    assert sorted(committed) == [
        ("a", "d", "first"),
        ("b", "d", "x"),
        ("c", "d", "x"),
        ("m", "d", "main"),
    ]
