"""The relay's group commit: requests that arrive during a commit share the next one, and
a request learns only of its own error."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from spooler import SpoolFullError
from spooler.serve.commits import Committer

Row = tuple[str, str, str]


class GatedStore:
    """Records each commit; the first one waits until ``gate`` is set, so that batches
    can pile up behind it. A commit holding a ``"bad"`` event fails."""

    def __init__(self) -> None:
        self.commits: list[list[Row]] = []
        self.gate = threading.Event()
        self.first_started = threading.Event()

    def commit(self, rows: Sequence[Row]) -> None:
        if not self.commits and not self.first_started.is_set():
            self.first_started.set()
            self.gate.wait(10)
        if any(body == "bad" for _, _, body in rows):
            raise SpoolFullError("full")
        self.commits.append(list(rows))


def submit(committer: Committer, events: list[tuple[str, str]]) -> asyncio.Future[list[str]]:
    """``committer.submit``, its outcome as a future (to await in a test)."""
    future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

    def done(outcome: list[str] | Exception) -> None:
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    committer.submit(events, done)
    return future


def test_batches_that_wait_for_a_commit_share_the_next_one() -> None:
    store = GatedStore()

    async def scenario() -> list[list[str]]:
        committer = Committer(store.commit)
        first = submit(committer, [("d", "a")])
        # Given a commit in progress
        assert await asyncio.to_thread(store.first_started.wait, 10)
        # When three more requests arrive meanwhile
        waiting = [submit(committer, [("d", f"{n}.1"), ("d", f"{n}.2")]) for n in range(3)]
        store.gate.set()
        ids = [await first, *[await future for future in waiting]]
        committer.close()
        return ids

    ids = asyncio.run(scenario())
    # Then they were committed together, in one transaction, in order
    assert [[body for _, _, body in commit] for commit in store.commits] == [
        ["a"],
        ["0.1", "0.2", "1.1", "1.2", "2.1", "2.2"],
    ]
    # And each request got the ids of its own events
    assert ids == [[row[0] for row in store.commits[0]]] + [
        [row[0] for row in store.commits[1][i : i + 2]] for i in (0, 2, 4)
    ]


def test_a_failing_request_does_not_fail_those_it_shared_a_commit_with() -> None:
    store = GatedStore()

    async def scenario() -> tuple[list[str], list[str]]:
        committer = Committer(store.commit)
        first = submit(committer, [("d", "a")])
        assert await asyncio.to_thread(store.first_started.wait, 10)
        good, bad = submit(committer, [("d", "b")]), submit(committer, [("d", "bad")])
        store.gate.set()
        await first
        with pytest.raises(SpoolFullError):
            await bad
        result = await good, [body for _, _, body in store.commits[-1]]
        committer.close()
        return result

    good_ids, last_commit = asyncio.run(scenario())
    assert last_commit == ["b"] and len(good_ids) == 1


def test_a_commit_past_its_step_is_overdue_and_a_close_does_not_wait_for_it() -> None:
    store = GatedStore()
    now = [100.0]

    async def scenario() -> tuple[float, float, float, bool]:
        committer = Committer(store.commit, step=5.0, clock=lambda: now[0])
        idle = committer.overdue()
        # Given a commit in progress (held by the store)
        pending = submit(committer, [("d", "a")])
        assert await asyncio.to_thread(store.first_started.wait, 10)
        # When it runs for its step, then past it
        now[0] += 5.0
        within = committer.overdue()
        now[0] += 2.5
        past = committer.overdue()
        # Then a close gives up on it at once, instead of waiting for it
        closed = await asyncio.to_thread(committer.close)
        store.gate.set()  # the commit returns after all: its request is answered
        await pending
        return idle, within, past, closed

    idle, within, past, closed = asyncio.run(scenario())
    assert (idle, within, past, closed) == (0.0, 0.0, 2.5, False)


def test_a_close_waits_for_the_commits_that_are_not_stuck() -> None:
    store = GatedStore()

    async def scenario() -> bool:
        committer = Committer(store.commit, step=60.0)
        submit(committer, [("d", "a")])
        assert await asyncio.to_thread(store.first_started.wait, 10)
        # Given a commit in progress, within its step, when the relay closes
        closing = asyncio.ensure_future(asyncio.to_thread(committer.close))
        store.gate.set()
        return await closing

    # Then the close returns once the commit has, and reports that it stopped cleanly
    assert asyncio.run(scenario()) is True
    assert [[body for _, _, body in commit] for commit in store.commits] == [["a"]]
