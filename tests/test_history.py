"""The per-minute history: what the drain's recorder writes, and the charts' buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.spools import drain_once

from spooler import Spool, StoreError, StoreUnreachableError
from spooler.history import Bucket, HistoryPoint, HistoryRecorder, buckets, minute_of
from spooler.store.interface import SpoolStore
from spooler.testing import Receiver

T0 = 1_700_000_040.0  # the start of a minute


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FailingOnce:
    """A real store whose next ``record_history`` fails, as a spool on a full disk would
    (or with ``error``: a server that could not be reached)."""

    def __init__(self, store: SpoolStore, error: StoreError | None = None) -> None:
        self._store = store
        self._error = error or StoreError("disk full")
        self.fail = True

    def record_history(self, *args: Any, **kwargs: Any) -> None:
        if self.fail:
            self.fail = False
            raise self._error
        self._store.record_history(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_the_recorder_writes_each_minute_once_it_has_ended(spool: Spool) -> None:
    # Given a backlog of three events, and a drain's recorder
    clock = Clock(T0 + 10)
    spool.enqueue_many([{"n": n} for n in range(3)], destination="a")
    recorder = HistoryRecorder(spool.store, clock=clock)
    # When a minute's outcomes and requests are counted
    recorder.outcome("a", delivered=5, dead=1)
    recorder.outcome("a", retried=2)
    recorder.request("a", 0.5)
    recorder.request("a", 0.25)
    assert not recorder.due()
    assert spool.store.history(since=0, now=T0) == []  # nothing is written yet
    clock.now = T0 + 61
    recorder.outcome("a", delivered=1)  # in the next minute
    assert recorder.due()
    recorder.flush()
    # Then the ended minute holds its counts and the backlog at its end; what was counted
    # in the next minute waits for its end (charted now, it would read as a fall)
    [first] = spool.store.history(since=0, now=clock.now)
    assert first == HistoryPoint(int(T0), "a", 5, 2, 1, 2, 0.75, 0.5, 3, first.oldest_age)
    assert first.oldest_age is not None
    assert not recorder.due()
    # When the drain stops, the minute it stops in is written, with the backlog then
    recorder.flush(closing=True)
    [second] = spool.store.history(since=T0 + 60, now=clock.now)
    assert second == HistoryPoint(int(T0) + 60, "a", 1, 0, 0, 0, 0.0, 0.0, 3, second.oldest_age)


@pytest.mark.parametrize("unreachable", [False, True])
def test_a_write_that_fails_is_made_at_the_next_minute(
    spool: Spool, caplog: pytest.LogCaptureFixture, unreachable: bool
) -> None:
    clock = Clock(T0 + 5)
    error = StoreUnreachableError("could not be reached for 10s") if unreachable else None
    failing = FailingOnce(spool.store, error)
    recorder = HistoryRecorder(failing, clock=clock)  # type: ignore[arg-type]
    recorder.outcome("a", delivered=4)
    clock.now += 60
    if unreachable:  # the drain stops on it, with the minute kept
        with pytest.raises(StoreUnreachableError):
            recorder.flush()
        assert "history" not in caplog.text
    else:  # logged, kept
        recorder.flush()
        assert "could not keep the minute's history in the spool: disk full" in caplog.text
    assert spool.store.history(since=0, now=clock.now) == []
    recorder.outcome("a", delivered=1)
    clock.now += 60
    recorder.flush()
    assert [(p.minute - T0, p.delivered) for p in spool.store.history(since=0, now=T0)] == [
        (0, 4),
        (60, 1),
    ]


def test_a_recorder_that_keeps_nothing_writes_nothing(spool: Spool) -> None:
    clock = Clock(T0)
    recorder = HistoryRecorder(spool.store, keep=0, clock=clock)
    recorder.outcome("a", delivered=1)
    clock.now += 120
    assert not recorder.due()
    recorder.flush(closing=True)
    assert spool.store.history(since=0, now=clock.now) == []


def test_buckets_sum_minutes_and_derive_what_was_enqueued() -> None:
    m = int(T0)
    points = [
        HistoryPoint(m, "a", delivered=0, backlog=10),
        # 10 -> 14 while 6 left the queue: 10 arrived
        HistoryPoint(m + 60, "a", delivered=5, dead=1, requests=2, latency_sum=1.0, backlog=14),
        # no backlog seen at the end of this minute: what arrived is unknown
        HistoryPoint(m + 120, "a", delivered=2, requests=1, latency_sum=0.5, latency_max=0.5),
        HistoryPoint(m + 180, "a", delivered=0, backlog=12, oldest_age=90.0),
        HistoryPoint(m + 60, "b", retried=3, backlog=0),
    ]
    series = buckets(points, start=m, end=m + 240, step=120)
    assert series["a"] == [
        Bucket(m, 120, 2, 10, delivered=5, dead=1, requests=2, latency_sum=1.0, backlog=14),
        Bucket(
            m + 120,
            120,
            2,
            enqueued=None,
            delivered=2,
            requests=1,
            latency_sum=0.5,
            latency_max=0.5,
            backlog=12,
            oldest_age=90.0,
        ),
    ]
    assert series["a"][0].delivery_rate == pytest.approx(5 / 120)
    assert series["a"][0].latency == 0.5 and series["a"][1].latency == 0.5
    assert [b.retried for b in series["b"]] == [3, 0]
    assert Bucket(m, 60).latency is None


def test_a_backlog_that_shrinks_faster_than_deliveries_is_not_negative_arrivals() -> None:
    # An operator expired 10 events: no drain counted them leaving
    m = int(T0)
    points = [HistoryPoint(m, "a", backlog=20), HistoryPoint(m + 60, "a", delivered=1, backlog=9)]
    assert [b.enqueued for b in buckets(points, start=m, end=m + 120, step=60)["a"]] == [None, 0]


def test_a_drain_run_leaves_its_minutes_in_the_spool(tmp_path: Path, receiver: Receiver) -> None:
    # Given events for a receiver that fails twice, then takes them
    receiver.fail_next(503, 503)
    with Spool(tmp_path / "spool.db") as spool:
        spool.enqueue_many([{"n": n} for n in range(30)])
        # When a drain delivers them
        report = drain_once(spool, receiver.url, batch_size=10, concurrency=1)
        # Then its minutes count what it did, and the queue left empty
        history = spool.store.history(since=minute_of(0), now=0)
    assert report.delivered == 30
    assert sum(p.delivered for p in history) == 30
    assert sum(p.retried for p in history) == report.retried > 0
    assert sum(p.requests for p in history) == report.requests == len(receiver.requests)
    assert max(p.latency_max for p in history) > 0
    assert history[-1].backlog == 0
