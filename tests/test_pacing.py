"""Pacing: how many of a destination's workers send at once, from what its requests and
batches cost (the rule on its own, then a real drain against a receiver far away)."""

from __future__ import annotations

import threading
import time

from helpers.spools import drain_once

from spooler import Spool
from spooler.pacing import REVIEW_EVERY, Pacer, workers_for
from spooler.testing import Receiver


def feed(pacer: Pacer, *, wait: float, cycle: float, batches: int) -> list[int]:
    """Tell ``pacer`` of ``batches`` batches, each one answered request; the changes."""
    changes = []
    for _ in range(batches):
        pacer.waited(wait)
        changed = pacer.cycled(cycle)
        if changed is not None:
            changes.append(changed)
    return changes


def test_enough_workers_to_keep_the_processor_busy_while_requests_wait() -> None:
    assert workers_for(0.0001, 0.008, 4) == 1  # a receiver on the same machine
    assert workers_for(0.020, 0.008, 4) == 4  # 1 + 2.5, rounded
    assert workers_for(0.020, 0.008, 16) == 4
    assert workers_for(0.004, 0.008, 16) == 2
    assert workers_for(1.0, 0.008, 3) == 3  # never beyond concurrency
    assert workers_for(1.0, 0.0, 3) == 3


def test_a_fast_receiver_keeps_one_worker_sending() -> None:
    pacer = Pacer(4)
    assert feed(pacer, wait=0.0002, cycle=0.008, batches=100) == []
    assert pacer.active == 1
    assert pacer.admits(0) and not pacer.admits(1)


def test_a_slow_receiver_lets_workers_in_at_once_and_out_one_at_a_time() -> None:
    pacer = Pacer(4)
    # Given requests that wait 20 ms for each 8 ms a batch costs
    assert feed(pacer, wait=0.020, cycle=0.008, batches=3 * REVIEW_EVERY) == [4]
    assert pacer.admits(3) and not pacer.admits(4)
    assert feed(pacer, wait=0.020, cycle=0.008, batches=4 * REVIEW_EVERY) == []
    # When the receiver comes close (the medians of the last requests move)
    assert feed(pacer, wait=0.0001, cycle=0.008, batches=40) == [3, 2, 1]
    assert pacer.active == 1


def test_a_parked_worker_goes_on_when_let_in_or_when_the_pacer_closes() -> None:
    pacer = Pacer(2)
    woke = threading.Event()

    def parked() -> None:
        while not pacer.admits(1):
            pacer.park(1, timeout=30)
        woke.set()

    thread = threading.Thread(target=parked)
    thread.start()
    assert not woke.wait(0.05)  # still parked: one worker sends
    feed(pacer, wait=1.0, cycle=0.001, batches=REVIEW_EVERY)
    assert woke.wait(10) and pacer.active == 2
    thread.join()
    closing = Pacer(2)
    thread = threading.Thread(target=lambda: closing.park(1, timeout=30))
    thread.start()
    closing.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and closing.admits(1)


def test_a_drain_sends_at_once_to_a_receiver_far_away(spool: Spool, receiver: Receiver) -> None:
    # Given a receiver that answers each request after 50 ms, as one far away would
    def far_away(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.05)
        return 200, {}, b"{}"

    receiver.respond = far_away
    spool.enqueue_many([{"n": n} for n in range(120)])
    # When a drain with up to 4 workers delivers them, 5 a request
    report = drain_once(spool, receiver.url, batch_size=5, concurrency=4)
    # Then requests overlapped: more than one of its workers sent at once
    assert report.delivered == 120
    spans = [(r.received_at, r.answered_at) for r in receiver.requests]
    overlapping = max(sum(1 for start, end in spans if start <= at < end) for at, _ in spans)
    assert overlapping >= 2
