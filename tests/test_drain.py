"""The drain against a real HTTP receiver on 127.0.0.1: every delivery rule of the contract."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import itertools
import json
import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from pathlib import Path

import pytest
from helpers.cli import spooler_cmd
from helpers.processes import wait_until
from helpers.spools import dead_rows, drain_once, leased_count, queued_count, rows

from spooler import ConfigError, Spool
from spooler.config import DrainConfig, build_drain_config
from spooler.destinations import Verdict
from spooler.drain import CRASH_ENV, Drain, DrainReport, Mode, url_digest
from spooler.testing import Receiver


def events(n: int, **extra: object) -> list[dict[str, object]]:
    return [{"event": "e", "n": i, **extra} for i in range(n)]


@contextmanager
def daemon(spool: Spool, config: DrainConfig) -> Iterator[Drain]:
    """A drain of ``spool`` running as a daemon in a thread, stopped (and waited for)
    when the block ends."""
    drain = Drain(spool.store, config)
    thread = threading.Thread(target=drain.run, args=(Mode.DAEMON,))
    thread.start()
    try:
        yield drain
    finally:
        drain.stop()
        thread.join(timeout=30)


def pause_over(spool: Spool) -> bool:
    """Whether no destination's pause, as the spool keeps it, is still running."""
    return all(p.until is None or p.until <= time.time() for p in spool.store.pauses().values())


def test_delivers_in_batches_and_empties_the_queue(
    spool: Spool, receiver: Receiver, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = spool.enqueue_many(events(10))
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        report = drain_once(spool, receiver.url, batch_size=4, concurrency=1)  # 1 keeps order
    # The last line says why the drain ended, and what it did.
    assert "stopped (empty): delivered=10 retried=0 dead=0 backlog=0 rate=" in caplog.messages[-1]
    assert [e["n"] for e in receiver.delivered] == list(range(10))
    assert [len(r.events) for r in receiver.requests] == [4, 4, 2]
    assert report.delivered == 10 and report.dead == 0 and report.stopped_by == "empty"
    assert queued_count(db) == 0
    assert len(ids) == len(set(ids)) == 10


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_retryable_statuses_are_retried_until_delivered(
    spool: Spool, receiver: Receiver, status: int
) -> None:
    spool.enqueue_many(events(3))
    receiver.fail_next(status, status)
    report = drain_once(spool, receiver.url)
    # The batch fails, then a probe of one event fails, the next probe gets through,
    # and the rest follows
    statuses = [r.status for r in receiver.requests]
    assert statuses[:3] == [status, status, 200] and set(statuses[3:]) <= {200}
    assert [len(r.events) for r in receiver.requests][:3] == [3, 1, 1]
    assert len(receiver.delivered) == 3 and report.retried == 4 and report.dead == 0


@pytest.mark.parametrize("header", ["30", "http-date"])
def test_retry_after_is_honoured(spool: Spool, receiver: Receiver, db: Path, header: str) -> None:
    spool.enqueue({"e": 1})
    value = formatdate(time.time() + 31, usegmt=True) if header == "http-date" else header
    receiver.fail_next(429, headers={"Retry-After": value})
    before = time.time()
    drain_once(spool, receiver.url, mode=Mode.ONCE)
    [(due_at, status)] = rows(db, "SELECT due_at, last_status FROM queue")
    assert status == 429 and due_at >= before + 29


def test_retry_after_pauses_the_whole_destination(spool: Spool, receiver: Receiver) -> None:
    # Given three events, and a receiver that asks for a second's rest (a rate limit is
    # the API's, not one batch's)
    spool.enqueue_many(events(3))
    receiver.fail_next(429, headers={"Retry-After": "1"})
    drain_once(spool, receiver.url, batch_size=1, concurrency=1)
    # Then nothing is sent for that second, though two other events were due
    first, second = receiver.requests[:2]
    assert first.status == 429 and second.received_at - first.answered_at >= 0.9
    assert len(receiver.delivered) == 3


class Draws(random.Random):
    """A random source whose ``uniform(a, b)`` draws are the given fractions of the
    way from ``a`` to ``b``, then ``a``."""

    def __init__(self, *fractions: float) -> None:
        super().__init__(0)
        self._fractions = list(fractions)

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * (self._fractions.pop(0) if self._fractions else 0.0)


@pytest.mark.parametrize(
    ("pause", "backoff", "said"),
    [
        (0.9, 0.1, r"once the destination answers again, after its pause of 0\.[89]\ds"),
        (0.1, 0.9, r"in 0\.90s"),
    ],
)
def test_the_retry_line_says_when_the_events_go_again_pause_or_backoff(
    spool: Spool,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    pause: float,
    backoff: float,
    said: str,
) -> None:
    # Given an event, and a receiver down for one request, whose failure pauses the
    # destination for `pause` seconds (the breaker draws first) and gives the event a
    # backoff of `backoff` seconds
    spool.enqueue({"e": 1})
    receiver.fail_next(503)
    config = build_drain_config(
        {},
        destination_flags={"url": receiver.url},
        retry_flags={"backoff_base": 1.0, "backoff_cap": 1.0},
        drain_flags={"poll_interval": 0.05},
    )
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        Drain(spool.store, config, rng=Draws(pause, backoff)).run(Mode.UNTIL_EMPTY, max_time=30)
    # Then the retry line gives the later of the two: nothing is sent before the pause ends
    [retry] = [m for m in caplog.messages if "will be retried" in m]
    assert re.fullmatch(
        rf"default: 1 event will be retried {said} \(attempt 1 of 20\): HTTP 503.*", retry
    )
    first, second = receiver.requests
    assert second.received_at - first.answered_at >= max(pause, backoff) - 0.05
    assert len(receiver.delivered) == 1


def test_a_drain_names_each_drain_holding_its_events_and_leaves_them_be(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two drains holding three events of the destination and one of another, for a
    # minute at most
    spool.enqueue_many(events(3))
    spool.enqueue({"e": 1}, destination="elsewhere")
    now = time.time()
    spool.store.claim("default", 2, "h:1:a", due_by=now, lease_until=now + 30)
    spool.store.claim("default", 1, "h:2:b", due_by=now, lease_until=now + 60)
    spool.store.claim("elsewhere", 1, "h:2:b", due_by=now, lease_until=now + 90)
    # When a drain of the destination starts
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        drain_once(spool, receiver.url, mode=Mode.ONCE)
    # Then it names both, with when each lease of the destination ends, and sends nothing
    [held] = [m for m in caplog.messages if "leased by" in m]
    ends = [time.strftime("%H:%M:%S", time.gmtime(now + s)) for s in (30, 60)]
    assert re.fullmatch(
        rf"3 events are leased by 2 other drains until \d\d:\d\d:\d\d UTC at the latest"
        rf" \(h:1:a: 2 until {ends[0]} UTC, h:2:b: 1 until {ends[1]} UTC\) \(drains that"
        r" stopped without settling them, or still running\): to be sent again once the"
        r" leases end",
        held,
    )
    assert receiver.requests == []


def test_a_failing_destination_ends_a_once_pass(spool: Spool, receiver: Receiver, db: Path) -> None:
    # Given ten due events, one per request, and a receiver that is down for a moment
    spool.enqueue_many(events(10))
    receiver.fail_next(503)
    report = drain_once(spool, receiver.url, mode=Mode.ONCE, batch_size=1, concurrency=1)
    # Then the pass stops at the failure instead of trying every batch against it
    assert len(receiver.requests) == 1 and report.retried == 1
    assert queued_count(db) == 10


def test_during_an_outage_one_request_probes_at_a_time(spool: Spool, receiver: Receiver) -> None:
    # Given eight batches, four workers, and a receiver that takes 50 ms to fail each of
    # its first ten requests (the latency makes requests sent together overlap)
    spool.enqueue_many(events(8))
    answers = itertools.count()

    def slowly_down(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.05)
        return (503, {}, b"down") if next(answers) < 10 else (200, {}, b"{}")

    receiver.respond = slowly_down
    drain_once(spool, receiver.url, batch_size=1, concurrency=4)
    # Then after the first failure, only the requests already in flight overlapped: the
    # rest went one at a time, each after the one before had its answer
    failed = sorted((r for r in receiver.requests if r.status == 503), key=lambda r: r.received_at)
    first_answer = min(r.answered_at for r in failed)
    later = [r for r in failed if r.received_at > first_answer]
    assert len(failed) == 10 and len(later) >= 6
    assert all(b.received_at > a.answered_at - 0.01 for a, b in itertools.pairwise(later))
    assert len(receiver.delivered) == 8


def test_a_probe_carries_one_event_and_full_batches_follow_it(
    spool: Spool, receiver: Receiver
) -> None:
    # Given 16 events and a receiver that fails its first three requests
    spool.enqueue_many(events(16))
    receiver.fail_next(503, 503, 503)
    drain_once(spool, receiver.url, batch_size=8, concurrency=1)
    # Then after the first batch failed, each probe carries one event, until one gets
    # through; then batches flow again
    sizes = [len(r.events) for r in receiver.requests]
    assert sizes[:4] == [8, 1, 1, 1] and max(sizes[4:]) > 1
    assert sorted(e["n"] for e in receiver.delivered) == list(range(16))


def test_a_run_after_a_failed_run_probes_before_it_sends_batches(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a --once run that ended on a failure (a cron job during an outage)
    spool.enqueue_many(events(8))
    receiver.fail_next(503, 503)
    once = {"mode": Mode.ONCE, "batch_size": 4, "concurrency": 1}
    drain_once(spool, receiver.url, **once)
    # When the next run starts, after the pause the failure began, while the API is
    # still down
    assert wait_until(lambda: pause_over(spool))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        drain_once(spool, receiver.url, **once)
    # Then it sends one event, not a batch, and its pass ends there
    assert [len(r.events) for r in receiver.requests] == [4, 1]
    # And its log says so, right after the line that says the drain started
    assert "started (once)" in caplog.messages[0]
    assert caplog.messages[1] == "default: its last request failed; one request will probe it first"
    # And once the API answers, a run's probe gets through and batches follow it
    drain_once(spool, receiver.url, batch_size=4, concurrency=1)
    sizes = [len(r.events) for r in receiver.requests]
    assert sizes[2] == 1 and max(sizes[3:]) > 1
    assert sorted(e["n"] for e in receiver.delivered) == list(range(8))


ONCE_IN_FOURS = {"mode": Mode.ONCE, "batch_size": 4, "concurrency": 1}


def paused_for_an_hour(spool: Spool, receiver: Receiver, url: str) -> None:
    """Queue 8 events, and run a --once pass to ``url`` (on ``receiver``) that the API
    asks to come back in an hour."""
    spool.enqueue_many(events(8))
    receiver.fail_next(429, headers={"Retry-After": "3600"})
    drain_once(spool, url, **ONCE_IN_FOURS)


def test_a_run_started_during_a_pause_waits_it_out(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a --once run that the API asked to come back in an hour
    paused_for_an_hour(spool, receiver, receiver.url)
    # When the next cron run starts, well within the hour
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        report = drain_once(spool, receiver.url, **ONCE_IN_FOURS)
    # Then it sends nothing, not even a probe, and says why
    assert len(receiver.requests) == 1 and report.requests == 0
    [why] = [m for m in caplog.messages if m.startswith("default: ")]
    assert re.fullmatch(
        r"default: its last request failed; it stays paused for 3\d{3}\.\d\ds, so this pass"
        r" sends it nothing \(`spooler retry-now -d default` ends the pause\)",
        why,
    )
    # And once an operator says the API is back, the next run probes with one event
    spool.retry_now(everything=True)
    drain_once(spool, receiver.url, **ONCE_IN_FOURS)
    assert [len(r.events) for r in receiver.requests] == [4, 1, 4, 3]


def test_a_pause_earned_at_another_url_is_forgotten(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a --once run that a wrong URL paused for an hour
    paused_for_an_hour(spool, receiver, receiver.url + "/wrong")
    assert spool.store.pauses()["default"].failures == 1
    # When the operator fixes the URL, and the next run starts well within the hour
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        report = drain_once(spool, receiver.url, **ONCE_IN_FOURS)
    # Then it sends every event at once, those the wrong URL failed too
    assert report.delivered == 8 and [len(r.events) for r in receiver.requests] == [4, 4, 4]
    assert caplog.messages[1] == (
        "default: its last request failed at another URL, not this one: sending at once;"
        " 4 events waiting to be retried made due"
    )
    # And the spool keeps no pause for it any more
    assert spool.store.pauses() == {}


def test_a_kept_pause_is_never_longer_than_the_longest_retry_wait(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a pause kept by a drain whose wall clock was far ahead (or set back since)
    spool.enqueue({"n": 1})
    spool.store.record_pause(
        "default", failures=2, until=time.time() + 1e9, url_digest=url_digest(receiver.url)
    )
    # When a drain starts with a policy whose longest wait is a minute
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        drain_once(spool, receiver.url, mode=Mode.ONCE, retry={"max_age": 60})
    # Then it waits a minute at most, not the 30 years the clock said
    [paused] = [m for m in caplog.messages if "stays paused for" in m]
    match = re.search(r"stays paused for ([\d.]+)s", paused)
    assert match and 59 < float(match.group(1)) <= 60 and receiver.requests == []


def test_a_rejected_batch_does_not_make_the_next_run_probe(
    spool: Spool, receiver: Receiver
) -> None:
    # Given a run whose only batch the receiver rejected (it answers: it is up)
    spool.enqueue_many(events(2, bad=True))
    receiver.reject = lambda event: event.get("bad", False)
    drain_once(spool, receiver.url, batch_size=4, concurrency=1)
    # When the next run has good events to send
    spool.enqueue_many(events(8))
    drain_once(spool, receiver.url, batch_size=4, concurrency=1)
    # Then it sends full batches at once
    assert [len(r.events) for r in receiver.requests][-2:] == [4, 4]


def test_retry_now_ends_a_running_drains_pause(spool: Spool, receiver: Receiver, db: Path) -> None:
    # Given a drain that paused the destination for two minutes on the receiver's word
    spool.enqueue_many(events(3))
    receiver.fail_next(503, headers={"Retry-After": "120"})
    config = build_drain_config(
        {}, destination_flags={"url": receiver.url}, drain_flags={"poll_interval": 0.05}
    )
    drain = Drain(spool.store, config)
    reports: list[DrainReport] = []
    thread = threading.Thread(target=lambda: reports.append(drain.run(Mode.UNTIL_EMPTY)))
    thread.start()
    try:
        assert receiver.wait_for(lambda r: len(r.requests) == 1, timeout=10)
        # When the operator says the API is back
        assert spooler_cmd("retry-now", "--db", str(db), "--all").returncode == 0
        # Then the drain tries again at once, not in two minutes
        assert receiver.wait_for(lambda r: len(r.delivered) == 3, timeout=10)
    finally:
        drain.stop()
        thread.join(timeout=30)
    assert [r.delivered for r in reports] == [3]


def test_retry_now_for_one_destination_ends_only_its_pause(
    spool: Spool, receiver: Receiver, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a drain that paused two destinations for two minutes on their receivers' word
    spool.enqueue({"n": 1}, destination="one")
    spool.enqueue({"n": 2}, destination="two")
    with Receiver() as other:
        for each in (receiver, other):
            each.fail_next(503, headers={"Retry-After": "120"})
        config = build_drain_config(
            {
                "drain": {"poll_interval": 0.05},
                "destinations": {"one": {"url": receiver.url}, "two": {"url": other.url}},
            }
        )
        with caplog.at_level(logging.INFO, logger="spooler.drain"), daemon(spool, config):
            assert receiver.wait_for(lambda r: len(r.requests) == 1, timeout=10)
            assert other.wait_for(lambda r: len(r.requests) == 1, timeout=10)
            # When the operator says destination "one" is back
            result = spooler_cmd("retry-now", "--db", str(db), "-d", "one")
            assert result.returncode == 0, result.stderr
            # Then "one" is probed at once, and "two" stays paused
            assert receiver.wait_for(lambda r: len(r.delivered) == 1, timeout=10)
    probed = [m for m in caplog.messages if "retry-now was run" in m]
    assert probed == ["one: spooler retry-now was run: probing it at once"]
    assert other.delivered == [] and spool.store.pauses()["two"].until is not None


def test_a_summary_names_the_destination_whose_requests_fail(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a drain of two destinations: "up" delivers, "down" answers 503 for a minute
    spool.enqueue_many(events(3), destination="up")
    spool.enqueue_many(events(2), destination="down")
    with Receiver() as down:
        down.fail_next(503, headers={"Retry-After": "60"})
        config = build_drain_config(
            {
                "drain": {"poll_interval": 0.05, "summary_interval": 0.2},
                "destinations": {"up": {"url": receiver.url}, "down": {"url": down.url}},
            }
        )
        with caplog.at_level(logging.INFO, logger="spooler.drain"), daemon(spool, config):
            assert receiver.wait_for(lambda r: len(r.delivered) == 3, timeout=10)
            assert down.wait_for(lambda r: len(r.requests) == 1, timeout=10)
            # When a summary comes after the failure
            assert wait_until(
                lambda: any("summary:" in m and "down:" in m for m in caplog.messages)
            )
    # Then it says which destination holds the backlog, and why; not the healthy one
    summary = next(m for m in caplog.messages if "summary:" in m and "down:" in m)
    assert re.fullmatch(
        r"summary: delivered=3 retried=2 dead=0 backlog=2 rate=[0-9.]+/s; down: its last request"
        r" failed \(HTTP 503: .*\), paused for [0-9]+s more, 2 events queued",
        summary,
    ), summary
    assert "up:" not in summary
    # And so does the drain's last line
    assert "; down: its last request failed" in caplog.messages[-1]


def test_a_summary_gives_the_rate_since_the_one_before(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a daemon that delivered 3 events, then has nothing more to send
    spool.enqueue_many(events(3))
    config = build_drain_config(
        {"drain": {"poll_interval": 0.05, "summary_interval": 0.2}},
        destination_flags={"url": receiver.url},
    )
    with caplog.at_level(logging.INFO, logger="spooler.drain"), daemon(spool, config):
        assert receiver.wait_for(lambda r: len(r.delivered) == 3, timeout=10)
        # Then a later summary says it delivers nothing now (its average since it
        # started, 3 events over a few seconds, would read 0.3/s or more)
        assert wait_until(
            lambda: any(
                m.startswith("summary: delivered=3 ") and "rate=0.0/s" in m for m in caplog.messages
            )
        ), caplog.messages
    # And the last line gives the whole run's
    assert re.search(r"stopped \(signal\): delivered=3 .* rate=[0-9.]+/s", caplog.messages[-1])


def test_idle_and_paused_destinations_sleep_while_another_one_is_busy(
    spool: Spool, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given destination "down", paused for a minute by its first answer, destination
    # "idle" with nothing queued, and destination "busy" with 300 requests to make
    spool.enqueue({"n": 0}, destination="down")
    spool.enqueue_many(events(300), destination="busy")
    with Receiver() as down:
        down.fail_next(503, headers={"Retry-After": "60"})
        config = build_drain_config(
            {
                "drain": {"poll_interval": 3600},
                "destinations": {
                    "down": {"url": down.url, "concurrency": 2},
                    "idle": {"url": down.url, "concurrency": 2},
                    "busy": {"url": receiver.url, "batch_size": 1, "concurrency": 1},
                },
            }
        )
        looked: list[str] = []
        next_due_at = spool.store.next_due_at
        monkeypatch.setattr(
            spool.store, "next_due_at", lambda name: looked.append(name) or next_due_at(name)
        )
        drain = Drain(spool.store, config)
        thread = threading.Thread(target=drain.run)
        thread.start()
        try:
            assert receiver.wait_for(lambda r: len(r.delivered) == 300, timeout=30)
        finally:
            drain.stop()
            thread.join(timeout=30)
    # Then their workers looked at the queue a time or two each, not once per busy request
    assert len(down.requests) == 1
    assert looked.count("down") <= 4 and looked.count("idle") <= 4


def test_timeouts_are_retried(spool: Spool, receiver: Receiver, db: Path) -> None:
    spool.enqueue({"e": 1})
    receiver.hold()
    drain_once(spool, receiver.url, mode=Mode.ONCE, timeout=0.3)
    assert rows(db, "SELECT attempts, last_status, last_error FROM queue") == [
        (1, None, "timed out after 0.3s")
    ]
    receiver.release()
    drain_once(spool, receiver.url)
    assert queued_count(db) == 0


def test_an_unreachable_endpoint_keeps_events_queued(spool: Spool, db: Path) -> None:
    spool.enqueue_many(events(2))
    report = drain_once(spool, "http://127.0.0.1:1/ingest", mode=Mode.ONCE)
    assert report.retried == 2 and report.delivered == 0
    [(count, error)] = rows(db, "SELECT count(*), max(last_error) FROM queue")
    assert count == 2 and "ConnectError" in error


def test_redirects_are_not_followed_and_events_stay_queued(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    spool.enqueue({"e": 1})
    receiver.fail_next(302, headers={"Location": "/elsewhere"})
    drain_once(spool, receiver.url, mode=Mode.ONCE)
    assert rows(db, "SELECT last_status, last_error FROM queue") == [
        (302, "HTTP 302 (redirect to /elsewhere not followed; fix the URL)")
    ]


@pytest.mark.parametrize("poison", [(0,), (4,), (7,), (2, 5)])
def test_a_rejected_batch_is_bisected_so_only_poison_events_die(
    spool: Spool, receiver: Receiver, db: Path, poison: tuple[int, ...]
) -> None:
    ids = spool.enqueue_many([{"n": i, "bad": i in poison} for i in range(8)])
    receiver.reject = lambda event: event["bad"]
    report = drain_once(spool, receiver.url, batch_size=8)
    assert sorted(e["n"] for e in receiver.delivered) == [i for i in range(8) if i not in poison]
    dead = dead_rows(db, "event_id", "reason", "status", "error")
    assert [(d[0], d[1], d[2]) for d in dead] == [(ids[i], "rejected", 400) for i in poison]
    assert all(d[3].startswith("HTTP 400: ") for d in dead)
    assert report.dead == len(poison) and queued_count(db) == 0


@pytest.mark.parametrize("poison", [0, 5])
def test_an_event_that_crashes_the_receiver_dies_alone_on_the_last_attempt(
    spool: Spool, receiver: Receiver, db: Path, poison: int
) -> None:
    # Given a receiver that fails with 500 on any batch holding one particular event
    ids = spool.enqueue_many([{"n": i, "bad": i == poison} for i in range(8)])
    receiver.reject = lambda event: event["bad"]
    receiver.reject_status = 500
    report = drain_once(spool, receiver.url, batch_size=8, concurrency=1, retry={"max_attempts": 2})
    # Then its last attempt bisects the batch: only that event dies, the others arrive
    assert sorted(e["n"] for e in receiver.delivered) == [i for i in range(8) if i != poison]
    assert dead_rows(db, "event_id", "reason", "status") == [(ids[poison], "max_attempts", 500)]
    assert report.dead == 1


@pytest.mark.parametrize("poison", [(2, 6), (0, 4)])
def test_two_events_that_crash_the_receiver_in_different_halves_die_alone(
    spool: Spool, receiver: Receiver, db: Path, poison: tuple[int, int]
) -> None:
    # Given a batch of 8 on its last attempt, with an event the receiver crashes on in
    # each half
    ids = spool.enqueue_many([{"n": i, "bad": i in poison} for i in range(8)])
    receiver.reject = lambda event: event["bad"]
    receiver.reject_status = 500
    drain_once(spool, receiver.url, batch_size=8, concurrency=1, retry={"max_attempts": 1})
    # Then neither half gets through, but an event sent alone does (the first of the
    # first half, or if that one is bad, the next): the receiver is up, and the halves
    # are split further until only the two bad events die
    assert [len(r.events) for r in receiver.requests][:3] == [8, 4, 4]
    assert sorted(e["n"] for e in receiver.delivered) == [n for n in range(8) if n not in poison]
    assert dead_rows(db, "event_id", "reason", "status") == [
        (ids[n], "max_attempts", 500) for n in poison
    ]


def test_a_receiver_that_is_down_costs_a_dying_batch_only_four_more_requests(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    spool.enqueue_many(events(8))
    receiver.respond = lambda body, headers: (503, {}, b"down")
    drain_once(spool, receiver.url, batch_size=8, concurrency=1, retry={"max_attempts": 1})
    # The batch, its two halves, then two events alone: nothing got through, so the
    # halves are not split further
    assert [len(r.events) for r in receiver.requests] == [8, 4, 4, 1, 1]
    assert dead_rows(db, "reason", "status") == [("max_attempts", 503)] * 8


def test_413_splits_the_batch_and_a_lone_oversized_event_dies(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    spool.enqueue_many(events(8))
    receiver.max_batch = 3
    drain_once(spool, receiver.url, batch_size=8)
    assert sorted(e["n"] for e in receiver.delivered) == list(range(8))
    assert max(len(r.events) for r in receiver.requests if r.status == 200) <= 3

    spool.enqueue({"huge": True})
    receiver.max_batch = 0
    drain_once(spool, receiver.url)
    assert dead_rows(db, "reason", "status") == [("too_large", 413)]


def test_max_attempts_dead_letters_with_the_last_error(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    spool.enqueue({"e": 1})
    receiver.fail_next(*[503] * 10)
    drain_once(spool, receiver.url, retry={"max_attempts": 3})
    assert len(receiver.requests) == 3
    assert dead_rows(db, "reason", "status", "attempts", "error") == [
        ("max_attempts", 503, 3, 'HTTP 503: {"error":"scripted failure"}')
    ]


def test_max_age_dead_letters_old_events_that_fail(db: Path, receiver: Receiver) -> None:
    with Spool(db, clock=lambda: time.time() - 7200) as old:
        old.enqueue({"e": "old"})
    with Spool(db) as spool:
        spool.enqueue({"e": "new"})
        receiver.fail_next(503)
        # One worker, so the scripted 503 answers the old event's request.
        drain_once(spool, receiver.url, retry={"max_age": 3600}, batch_size=1, concurrency=1)
    assert rows(db, "SELECT reason, json_extract(body, '$.e') FROM dead") == [("max_age", "old")]
    assert [e["e"] for e in receiver.delivered] == ["new"]


def cut_off(spool: Spool, times: int) -> None:
    """End ``times`` attempts of every queued event unsettled, as a drain killed
    mid-request does: each claim's lease is dissolved, which counts the attempt."""
    for _ in range(times):
        now = time.time()
        assert spool.store.claim("default", 100, "crashed", due_by=now, lease_until=now + 60)
        assert spool.store.release_leases("crashed", now=time.time()) > 0


def test_an_event_out_of_attempts_before_its_claim_dies_unsent(
    spool_location: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an event whose two attempts were both cut off (its drains crashed mid-request)
    with Spool(spool_location) as spool:
        [spent] = spool.enqueue_many([{"e": "spent"}])
        cut_off(spool, 2)
        fresh = spool.enqueue({"e": "fresh"})
        # When a drain allowed two attempts claims it with a fresh event
        with caplog.at_level(logging.WARNING, logger="spooler.drain"):
            report = drain_once(spool, receiver.url, retry={"max_attempts": 2}, id_field="id")
    # Then no request carries it: it dies of max_attempts, saying why, and the fresh
    # event is delivered
    assert [e["id"] for e in receiver.delivered] == [fresh]
    assert [e["e"] for r in receiver.requests for e in r.events] == ["fresh"]
    error = (
        "out of attempts before this one: 2 of 2 ended (a drain stopped or crashed during"
        " the last one, or max_attempts was lowered)"
    )
    assert dead_rows(spool_location, "event_id", "reason", "status", "error") == [
        (spent, "max_attempts", None, error)
    ]
    assert f"dead-lettered event {spent} (max_attempts) without sending: {error}" in caplog.text
    assert report.delivered == 1 and report.dead == 1


def test_an_event_with_an_attempt_left_is_sent(spool: Spool, receiver: Receiver) -> None:
    # Given an event with one of its two attempts cut off
    [event_id] = spool.enqueue_many([{"e": 1}])
    cut_off(spool, 1)
    # Then its last attempt is made
    drain_once(spool, receiver.url, retry={"max_attempts": 2}, id_field="id")
    assert [e["id"] for e in receiver.delivered] == [event_id]


def test_an_event_past_max_age_before_its_claim_dies_unsent(db: Path, receiver: Receiver) -> None:
    # Given an event queued two hours ago (say, no drain ran all that time) and a new one
    with Spool(db, clock=lambda: time.time() - 7200) as old:
        [aged] = old.enqueue_many([{"e": "old"}])
    with Spool(db) as spool:
        fresh = spool.enqueue({"e": "new"})
        # When a drain whose max_age is an hour claims them
        report = drain_once(spool, receiver.url, retry={"max_age": 3600}, id_field="id")
    # Then the old one dies of max_age without a request, the new one is delivered
    assert [e["e"] for r in receiver.requests for e in r.events] == ["new"]
    assert [e["id"] for e in receiver.delivered] == [fresh]
    [(event_id, reason, status, error)] = dead_rows(db, "event_id", "reason", "status", "error")
    assert (event_id, reason, status) == (aged, "max_age", None)
    assert re.fullmatch(r"too old to send: queued 720\ds ago, over max_age \(3600s\)", error)
    assert report.dead == 1


def test_max_age_at_the_claim_counts_from_queued_at_on_every_backend(
    spool_location: str, receiver: Receiver
) -> None:
    # Given an event just queued (PostgreSQL takes the enqueue time from its own clock)
    with Spool(spool_location) as spool:
        [event_id] = spool.enqueue_many([{"e": 1}])
        # When a drain whose clock is two hours on claims it, with a max_age of an hour
        config = build_drain_config(
            {},
            destination_flags={"url": receiver.url},
            retry_flags={"max_age": 3600},
            drain_flags={"poll_interval": 0.05},
        )
        Drain(spool.store, config, clock=lambda: time.time() + 7200).run(
            Mode.UNTIL_EMPTY, max_time=30
        )
    # Then it dies of max_age, unsent
    assert receiver.requests == []
    assert dead_rows(spool_location, "event_id", "reason") == [(event_id, "max_age")]


def test_body_shapes_ids_and_headers(spool: Spool, receiver: Receiver) -> None:
    [first] = spool.enqueue_many([{}])
    second = spool.enqueue({"a": 1})
    drain_once(
        spool,
        receiver.url + "/in",
        batch_key="batch",
        id_field="event_id",
        api_key="sk_live_abcdef",
        headers={"X-Team": "core"},
    )
    [request] = receiver.requests
    assert request.path == "/in"
    assert json.loads(request.body) == {
        "batch": [{"event_id": first}, {"event_id": second, "a": 1}]
    }
    assert request.headers["Authorization"] == "Bearer sk_live_abcdef"
    assert request.headers["X-Team"] == "core"
    assert request.headers["Content-Type"] == "application/json"


def test_batch_size_one_sends_bare_objects_with_an_idempotency_key(
    spool: Spool, receiver: Receiver
) -> None:
    ids = spool.enqueue_many(events(2))
    drain_once(
        spool, receiver.url, batch_size=1, auth_header="X-Api-Key", api_key="k123456", concurrency=1
    )
    assert [json.loads(r.body) for r in receiver.requests] == events(2)
    assert [r.headers["Idempotency-Key"] for r in receiver.requests] == ids
    assert receiver.requests[0].headers["X-Api-Key"] == "k123456"


def test_a_lone_event_in_a_batch_has_an_idempotency_key_and_two_have_none(
    spool: Spool, receiver: Receiver
) -> None:
    # As the README says: any request carrying a single event, whatever batch_size.
    [lone] = spool.enqueue_many(events(1))
    drain_once(spool, receiver.url)
    spool.enqueue_many(events(2))
    drain_once(spool, receiver.url)
    first, second = receiver.requests
    assert json.loads(first.body) == events(1) and first.headers["Idempotency-Key"] == lone
    assert len(json.loads(second.body)) == 2 and "Idempotency-Key" not in second.headers


def test_stop_while_the_receiver_hangs_releases_the_batch(
    spool: Spool, receiver: Receiver, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool.enqueue_many(events(3))
    receiver.hold()
    config = build_drain_config({}, destination_flags={"url": receiver.url, "timeout": 20})
    drain = Drain(spool.store, config)
    caplog.set_level(logging.INFO, logger="spooler")
    result: list[DrainReport] = []
    thread = threading.Thread(
        target=lambda: result.append(drain.run(Mode.DAEMON, shutdown_grace=0.5))
    )
    thread.start()
    assert wait_until(lambda: _in_flight(db))
    drain.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and result
    assert queued_count(db) == 3 and leased_count(db) == 0
    said = list(caplog.messages)
    assert "stopped (signal)" in said[-1], said
    receiver.release()
    assert drain._all_done.wait(timeout=10)  # the abandoned worker ends and closes up
    # The receiver's late answer changes nothing, and the drain's last line stays its
    # last: no "delivered 3 events" of a batch it gave back (they are sent again)
    assert len(receiver.requests) == 1
    assert caplog.messages == said
    assert result[0].delivered == 0 and queued_count(db) == 3


class ClaimsWait:
    """A real store whose claims wait until the test lets them go, as a spool slow to
    answer (a server coming back within the URL's wait, a write lock held) makes them."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.waiting = threading.Event()
        self.go = threading.Event()

    def claim(self, *args: object, **kwargs: object) -> object:
        self.waiting.set()
        assert self.go.wait(timeout=30)
        return self._store.claim(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_a_batch_judged_without_a_request_after_the_run_ended_says_nothing(
    spool: Spool, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a drain stopped while its worker's claim waits on the spool, past its grace,
    # and a destination that judges the batch it gets without sending it (an event over
    # the API's limit)
    spool.enqueue({"n": 1})
    config = build_drain_config(
        {}, destination_flags={"url": "http://127.0.0.1:9/", "concurrency": 1}
    )
    destination = Scripted(
        config.destinations["default"],
        [Verdict("reject", error="over the limit", reason="too_large", sent=False)],
    )
    store = ClaimsWait(spool.store)
    drain = Drain(store, config, destinations={"default": destination})  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="spooler")
    result: list[DrainReport] = []
    thread = threading.Thread(
        target=lambda: result.append(drain.run(Mode.DAEMON, shutdown_grace=0.5))
    )
    thread.start()
    assert store.waiting.wait(timeout=10)
    drain.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and result
    said = list(caplog.messages)
    assert "stopped (signal)" in said[-1], said
    # When the claim returns after that, and its batch is judged without a request
    store.go.set()
    assert drain._all_done.wait(timeout=10)
    assert destination.sizes == [1]
    # Then the verdict is dropped, as a late answer is: the drain's last line stays its
    # last, and the event is not dead-lettered behind the report's back (it waits for
    # its lease, as the events of an abandoned request do)
    assert caplog.messages == said
    assert result[0].dead == 0 and dead_rows(db, "event_id") == [] and queued_count(db) == 1


def _in_flight(db: Path) -> bool:
    return leased_count(db) > 0


def test_two_drains_share_a_spool_without_delivering_twice(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    ids = spool.enqueue_many(events(400))
    config = build_drain_config(
        {},
        destination_flags={"url": receiver.url, "batch_size": 10},
        drain_flags={"poll_interval": 0.05},
    )
    threads = [
        threading.Thread(target=Drain(spool.store, config).run, args=(Mode.UNTIL_EMPTY,))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    delivered = [e["n"] for e in receiver.delivered]
    assert sorted(delivered) == list(range(400)) and len(ids) == 400


def test_a_mistyped_crash_point_is_refused(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_ENV, "after_clam")
    config = build_drain_config({}, destination_flags={"url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="SPOOLER_CRASH_AT must be one of after_claim"):
        Drain(spool.store, config)


def test_gzip_ndjson_and_a_signature_the_receiver_can_verify(
    spool: Spool, receiver: Receiver
) -> None:
    ids = spool.enqueue_many(events(3))
    secret = "whsec_0123456789"
    drain_once(
        spool,
        receiver.url,
        gzip=True,
        body_format="ndjson",
        signing_secret=secret,
        id_field="id",
        concurrency=1,
    )
    [request] = receiver.requests
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/x-ndjson"
    lines = gzip.decompress(request.body).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
    # The receiver's check: HMAC-SHA256 over "<timestamp>." + the raw body as received.
    timestamp = request.headers["X-Spooler-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(request.headers["X-Spooler-Signature"], f"sha256={expected}")
    assert abs(int(timestamp) - time.time()) < 60


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"url": "http://h", "body_format": "ndjson", "batch_key": "b"}, "NDJSON bodies have no"),
        ({"url": "http://h", "gzip": "yes"}, "gzip: expected true or false"),
        ({"type": "segment", "api_key": "k", "gzip": True}, "gzip: only for http"),
    ],
)
def test_http_option_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_drain_config({}, destination_flags=flags)


def test_an_idle_worker_wakes_when_a_sibling_finishes_instead_of_sleeping_out_the_poll(
    spool: Spool, receiver: Receiver
) -> None:
    spool.enqueue({"n": 1})
    receiver.hold()  # the one request stays in flight; the other worker finds nothing due
    config = build_drain_config(
        {},
        destination_flags={"url": receiver.url, "concurrency": 2},
        drain_flags={"poll_interval": 3600, "lease": 3600},
    )
    drain = Drain(spool.store, config)
    reports = []
    worker = threading.Thread(target=lambda: reports.append(drain.run(Mode.UNTIL_EMPTY)))
    worker.start()
    assert wait_until(lambda: spool.status().total.leased == 1, timeout=30)
    receiver.release()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the idle worker slept through its sibling's delivery"
    assert [r.delivered for r in reports] == [1]


class DeliversButCannotClose:
    """A destination that delivers everything and whose ``close()`` fails."""

    def __init__(self, config: object) -> None:
        self.config = config

    def request_batches(self, events: list) -> list[list]:
        return [events]

    def send(self, events: list[object]) -> Verdict:
        return Verdict("delivered")

    def close(self) -> None:
        raise OSError(28, "No space left on device")


def test_a_destination_that_fails_to_close_does_not_keep_the_drain_running(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    spool.enqueue_many(events(3))
    config = build_drain_config({}, destination_flags={"url": "file:///dev/null"})
    destination = DeliversButCannotClose(config.destinations["default"])
    drain = Drain(spool.store, config, destinations={"default": destination})
    finished: list[object] = []
    thread = threading.Thread(target=lambda: finished.append(drain.run(Mode.UNTIL_EMPTY)))
    thread.start()
    thread.join(timeout=30)
    assert finished, "the drain never ended"
    assert "default: could not close: [Errno 28] No space left on device" in caplog.text


class Scripted:
    """A destination that answers with the given verdicts, then delivers; it records the
    size of every batch it was given."""

    def __init__(self, config: object, verdicts: list[Verdict]) -> None:
        self.config = config
        self.verdicts = verdicts
        self.sizes: list[int] = []

    def request_batches(self, events: list) -> list[list]:
        return [events]

    def send(self, events: list[object]) -> Verdict:
        self.sizes.append(len(events))
        return self.verdicts.pop(0) if self.verdicts else Verdict("delivered", 200)

    def close(self) -> None:
        pass


def test_an_event_judged_without_a_request_does_not_end_the_pause(spool: Spool) -> None:
    # Given a destination whose first request fails, and whose probe after it is an event
    # over the API's size limit, judged without sending anything
    spool.enqueue_many(events(8))
    config = build_drain_config(
        {},
        destination_flags={"url": "http://127.0.0.1:9/", "batch_size": 4, "concurrency": 1},
        retry_flags={"backoff_base": 0.01, "backoff_cap": 0.05},
    )
    destination = Scripted(
        config.destinations["default"],
        [
            Verdict("retry", 503, "HTTP 503"),
            Verdict("reject", error="over the limit", reason="too_large", sent=False),
        ],
    )
    report = Drain(spool.store, config, destinations={"default": destination}).run(
        Mode.UNTIL_EMPTY, max_time=30
    )
    # Then the destination is still paused: the next claim is a probe again, of one
    # event, and full batches follow only once that one got through
    assert destination.sizes[:3] == [4, 1, 1] and max(destination.sizes[3:]) > 1
    assert report.delivered == 7 and report.dead == 1
    assert report.requests == len(destination.sizes) - 1  # the unsent one is not counted


def test_a_gzip_compressed_error_answer_is_recorded_decoded(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    spool.enqueue({"n": 1})
    receiver.respond = lambda body, headers: (
        400,
        {"Content-Encoding": "gzip"},
        gzip.compress(b'{"error":"field n is not allowed"}'),
    )
    drain_once(spool, receiver.url)
    assert dead_rows(db, "reason", "status", "error") == [
        ("rejected", 400, 'HTTP 400: {"error":"field n is not allowed"}')
    ]


def test_a_receivers_cookies_are_never_sent_back(spool: Spool, receiver: Receiver) -> None:
    # A session cookie sent back would come back echoed in error answers the spool keeps.
    spool.enqueue_many(events(3))
    receiver.respond = lambda body, headers: (
        200,
        {"Set-Cookie": "session=s3cr3t; Path=/", "Content-Type": "application/json"},
        b"{}",
    )
    report = drain_once(spool, receiver.url, batch_size=1, concurrency=1)
    assert report.delivered == 3 and len(receiver.requests) == 3
    assert [
        [name for name in request.headers if name.lower() == "cookie"]
        for request in receiver.requests
    ] == [[], [], []]


@pytest.mark.parametrize(("status", "requests"), [(401, 1), (407, 1), (403, 2 * 8 - 1)])
def test_a_refusal_of_the_request_itself_kills_the_batch_without_bisecting_it(
    spool: Spool, receiver: Receiver, db: Path, status: int, requests: int
) -> None:
    # A wrong API key refuses every request: bisecting would send ~2 requests per event.
    # A 403 may come from a filter that objects to one event, so that one is bisected.
    spool.enqueue_many(events(8))
    receiver.respond = lambda body, headers: (status, {}, b'{"error":"refused"}')
    report = drain_once(spool, receiver.url, batch_size=8, concurrency=1)
    assert len(receiver.requests) == requests
    assert report.dead == 8
    assert rows(db, "SELECT DISTINCT reason, status FROM dead") == [("rejected", status)]


def test_a_batch_whose_lease_was_lost_in_flight_is_said_and_sent_again(
    spool: Spool, receiver: Receiver, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a first request during which the drain's lease goes (as when a PostgreSQL
    # server's crash loses the claim, or the lease runs out while the drain stalls)
    ids = spool.enqueue_many(events(3))
    lost = []

    def lose_the_lease_once(
        body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if not lost:
            conn = sqlite3.connect(db)
            with conn:
                lost.extend(conn.execute("DELETE FROM leases RETURNING id").fetchall())
            conn.close()
        return 200, {}, b"{}"

    receiver.respond = lose_the_lease_once
    with caplog.at_level(logging.INFO, logger="spooler.drain"):
        report = drain_once(spool, receiver.url, id_field="id", concurrency=1)
    # Then the drain says that the events were no longer its own, and they go again
    # (the same ids), counted delivered once
    assert len(lost) == 1
    said = [m for m in caplog.messages if "no longer leased to this drain" in m]
    assert said == [
        "default: 3 events of these 3 were no longer leased to this drain (its lease ran out,"
        " or the spool lost its claim): they stay queued and will be sent again, with the"
        " same ids"
    ]
    assert [[e["id"] for e in r.events] for r in receiver.requests] == [ids, ids]
    assert report.delivered == 3 and queued_count(db) == 0
