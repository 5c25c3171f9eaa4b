"""Scenario 10: the wall clock jumps back or forward under a running drain.

The drain's clock is injected; it runs at real speed and the test moves it by a day.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from helpers.processes import wait_until
from helpers.spools import FAST_RETRY, dead_rows, rows

from spooler import Spool
from spooler.config import build_drain_config
from spooler.drain import Drain, DrainReport, Mode
from spooler.testing import Receiver

DAY = 86400.0


class JumpingClock:
    """Wall-clock time that runs at real speed and can be moved by ``jump()``."""

    def __init__(self) -> None:
        self._offset = 0.0

    def __call__(self) -> float:
        return time.time() + self._offset

    def jump(self, seconds: float) -> None:
        self._offset += seconds


def run_drain(
    spool: Spool, url: str, clock: JumpingClock, **retry: float
) -> tuple[threading.Thread, list[DrainReport]]:
    config = build_drain_config(
        {},
        destination_flags={"url": url, "concurrency": 1, "id_field": "id"},
        retry_flags={**FAST_RETRY, **retry},
        drain_flags={"poll_interval": 0.05},
    )
    reports: list[DrainReport] = []
    drain = Drain(spool.store, config, clock=clock)
    thread = threading.Thread(
        target=lambda: reports.append(drain.run(Mode.UNTIL_EMPTY, max_time=20))
    )
    thread.start()
    return thread, reports


def test_clock_set_back_a_day_does_not_strand_scheduled_events(
    db: Path, receiver: Receiver, scenario, caplog: pytest.LogCaptureFixture
) -> None:
    row = scenario(
        "10 (back)",
        "wall clock set back one day during a retry wait",
        "injected clock moved back 86400 s",
    )
    clock = JumpingClock()
    with Spool(db, clock=clock) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(5)])
        receiver.fail_next(503, headers={"Retry-After": "1"})
        thread, reports = run_drain(spool, receiver.url, clock)
        # Once the batch waits for its retry, the clock goes back a day: without a
        # repair the retry would be due in a day and one second.
        assert wait_until(lambda: rows(db, "SELECT max(last_status) FROM queue") == [(503,)])
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="spooler.drain"):
            clock.jump(-DAY)
            thread.join(timeout=30)
        row.recover_s = time.monotonic() - started
    [report] = reports
    assert report.stopped_by == "empty"  # not "max_time": nothing stayed stranded
    assert "the wall clock went back 86400s; moved 5 events earlier by as much" in caplog.messages
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0


def test_a_clock_set_back_with_nothing_scheduled_by_it_says_none_moved(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a daemon drain with nothing waiting (as on a PostgreSQL spool, whose server's
    # clock schedules every event)
    clock = JumpingClock()
    config = build_drain_config(
        {}, destination_flags={"url": "http://127.0.0.1:9/"}, drain_flags={"poll_interval": 0.05}
    )
    with Spool(db, clock=clock) as spool, caplog.at_level(logging.WARNING, "spooler.drain"):
        drain = Drain(spool.store, config, clock=clock)
        beats: list[float] = []  # its loop's heartbeats: it follows the clock from the 2nd
        thread = threading.Thread(target=drain.run, kwargs={"heartbeat": beats.append})
        thread.start()
        try:
            # When its clock goes back an hour
            assert wait_until(lambda: len(beats) >= 2)
            clock.jump(-3600)
            # Then it says so, and that there was nothing to repair (not "moved 0 events")
            said = "the wall clock went back 3600s; no event waited by it, none moved"
            assert wait_until(lambda: said in caplog.messages)
        finally:
            drain.stop()
            thread.join(timeout=30)


def test_clock_jumping_forward_causes_no_hot_loop(db: Path, receiver: Receiver, scenario) -> None:
    row = scenario(
        "10 (forward)",
        "wall clock jumps forward one day while the receiver fails",
        "injected clock moved forward 86400 s; receiver answers 503 throughout",
    )
    clock = JumpingClock()
    with Spool(db, clock=clock) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(5)])
        receiver.fail_next(*[503] * 100)
        thread, reports = run_drain(spool, receiver.url, clock, max_attempts=6)
        assert receiver.wait_for(lambda r: len(r.requests) >= 1, timeout=10)
        started = time.monotonic()
        clock.jump(DAY)
        thread.join(timeout=30)
        row.recover_s = time.monotonic() - started
    [report] = reports
    # Every retry was still spaced by backoff: exactly max_attempts attempts per event
    # (the first in one batch, then in probes of one event each), then the events are
    # dead-lettered (not lost), with the reason.
    assert [len(r.events) for r in receiver.requests] == [5] + [1] * 5 * 5
    assert report.stopped_by == "empty"
    dead = {eid for eid, reason in dead_rows(db, "event_id", "reason") if reason == "max_attempts"}
    row.tally(ids, [], dead)
    assert row.lost == 0 and dead == set(ids)
