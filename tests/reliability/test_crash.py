"""Scenarios 1-2: SIGKILL producers mid-enqueue and drains at exact points mid-batch.

After every crash: each event whose enqueue returned is delivered or dead-lettered,
none is missing, duplicates stay within the documented bound (the batches in flight),
and ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import drain_cli, spooler_cmd, start_drain
from helpers.processes import wait_until
from helpers.spools import dead_rows, leased_count, queued_count, rows

from spooler.drain import CRASH_ENV
from spooler.testing import Receiver

PRODUCER = """
import sys
from spooler import Spool
spool = Spool(sys.argv[1])
n = 0
while True:
    if n % 3 == 2:
        ids = spool.enqueue_many([{"n": n, "k": k} for k in range(5)])
    else:
        ids = [spool.enqueue({"n": n})]
    sys.stdout.write("".join(i + "\\n" for i in ids))
    sys.stdout.flush()
    n += 1
"""


def acknowledged_ids(db: Path, kills: int, rng: random.Random) -> set[str]:
    """Start producers and SIGKILL each at a random point; the ids their enqueues returned."""
    returned: set[str] = set()
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(db)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 60)):  # wait on its output, not on the clock
            returned.add(proc.stdout.readline().strip())
        os.kill(proc.pid, signal.SIGKILL)
        returned.update(line.strip() for line in proc.stdout if len(line.strip()) == 36)
        proc.wait()
        proc.stdout.close()
    return returned


def dead_ids(db: Path) -> set[str]:
    return {event_id for (event_id,) in dead_rows(db, "event_id")}


def test_killed_producers_lose_nothing_that_enqueue_returned(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "1",
        "producer SIGKILLed mid-enqueue (20 times; enqueue and enqueue_many)",
        "kill -9 at a random point of a tight enqueue loop",
    )
    # Given producers killed with SIGKILL at random points of a tight enqueue loop
    returned = acknowledged_ids(db, kills=20, rng=random.Random(3))
    assert len(returned) >= 20
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    # When a drain delivers the spool
    row.recover_with_drain(db, receiver.url)
    # Then every event whose enqueue returned arrived (the spool may hold a few more:
    # committed just before the kill, their ids never printed)
    row.tally(returned, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0
    assert queued_count(db) == 0


def enqueue(db: Path, count: int) -> list[str]:
    lines = "".join(f'{{"n":{n}}}\n' for n in range(count))
    result = spooler_cmd("enqueue", "--db", str(db), input=lines)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def drain_killed_at(db: Path, url: str, point: str) -> subprocess.CompletedProcess[str]:
    """A drain of 10-event batches, one worker and a 1 s lease, that kills itself at
    ``point``."""
    return drain_cli(
        db,
        url,
        *("--batch-size", "10", "--concurrency", "1", "--timeout", "0.5", "--lease", "1"),
        env={CRASH_ENV: point},
    )


@pytest.mark.parametrize(("point", "duplicates"), [("after_claim", 0), ("after_response", 10)])
def test_drain_killed_at_a_named_point(
    db: Path, receiver: Receiver, scenario, point: str, duplicates: int
) -> None:
    row = scenario(
        f"2 ({point})",
        f"drain SIGKILLed {point.replace('_', ' ')}",
        f"{CRASH_ENV}={point}: the drain kills itself there",
    )
    ids = enqueue(db, 50)
    crashed = drain_killed_at(db, receiver.url, point)
    assert crashed.returncode == -signal.SIGKILL
    assert len(receiver.delivered) == duplicates  # the request was answered, or never sent
    # The recovery includes waiting out the 1 s lease.
    row.recover_with_drain(db, receiver.url, "--batch-size", "10")
    row.tally(ids, [e["id"] for e in receiver.delivered])
    # Only the batch whose answer came back before the crash is delivered twice,
    # with the same event ids.
    assert row.lost == 0 and row.duplicated == duplicates
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_drain_killed_mid_batch_after_part_of_it_settled(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "2 (mid_batch)",
        "drain SIGKILLed mid-batch: half of a bisected batch settled, the rest leased",
        f"{CRASH_ENV}=mid_batch: the drain kills itself there",
    )
    # Given a poison event in the second half of the first batch
    ids = enqueue(db, 50)
    receiver.reject = lambda event: event["n"] == 7
    # When the drain splits that batch, delivers its first half and is killed
    crashed = drain_killed_at(db, receiver.url, "mid_batch")
    assert crashed.returncode == -signal.SIGKILL
    assert sorted(e["n"] for e in receiver.delivered) == [0, 1, 2, 3, 4]
    # Then the first half is settled (not sent again), the rest of the batch comes back
    # when its lease ends, and only the poison event dies
    row.recover_with_drain(db, receiver.url, "--batch-size", "10")
    dead = dead_ids(db)
    row.tally(ids, [e["id"] for e in receiver.delivered], dead)
    assert row.lost == 0 and row.duplicated == 0
    assert dead == {ids[7]}
    assert queued_count(db) == 0
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_drain_killed_while_the_request_is_in_flight(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "2 (in flight)",
        "drain SIGKILLed while its request is in flight",
        "receiver holds the request; kill -9 the drain",
    )
    ids = enqueue(db, 20)
    receiver.hold()
    proc = start_drain(
        db, receiver.url, "--timeout", "5", "--lease", "6", stderr=subprocess.DEVNULL
    )
    assert wait_until(lambda: leased_count(db) == 20)
    proc.kill()
    proc.wait()
    receiver.release()  # the receiver finishes processing the orphaned request
    row.recover_with_drain(db, receiver.url)
    row.tally(ids, [e["id"] for e in receiver.delivered])
    # The receiver stored the orphaned batch and got it again: at most that batch twice.
    assert row.lost == 0 and row.duplicated <= 20


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drain_killed_at_random_mid_batch_loses_nothing(
    db: Path, receiver: Receiver, scenario, seed: int
) -> None:
    row = scenario(
        f"2 (random {seed})",
        "drain SIGKILLed at a random moment, poison events in the spool",
        "kill -9 after a random number of requests",
    )
    rng = random.Random(seed)
    ids = enqueue(db, 300)
    receiver.reject = lambda event: event["n"] % 50 == 7  # a few poison events too
    proc = start_drain(
        db,
        receiver.url,
        "--batch-size",
        "20",
        "--timeout",
        "0.5",
        "--lease",
        "1",
        "--until-empty",
        stderr=subprocess.DEVNULL,
    )
    target = rng.randint(1, 8)
    assert wait_until(lambda: len(receiver.requests) >= target, timeout=30)
    proc.kill()
    proc.wait()
    row.recover_with_drain(db, receiver.url)
    dead = dead_ids(db)
    row.tally(ids, [e["id"] for e in receiver.delivered], dead)
    # At most one batch per worker in flight at the kill: 4 workers x 20 events.
    assert row.lost == 0 and row.duplicated <= 4 * 20
    assert len(dead) == 6 and not {e["id"] for e in receiver.delivered} & dead
    assert queued_count(db) == 0
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_an_event_that_kills_the_drain_dies_once_out_of_attempts(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "2 (poison pill)",
        "an event whose delivery kills the drain, every time (max_attempts 2)",
        "the receiver SIGKILLs the drain while it holds the request carrying that event",
    )
    # Given a spool with an event that kills the drain whenever a request carries it
    ids = enqueue(db, 6)
    drains: list[subprocess.Popen[str]] = []
    carried: list[int] = []

    def kill_on_poison(event: dict[str, object]) -> bool:
        if event["n"] == 2:
            carried.append(len(drains))
            os.kill(drains[-1].pid, signal.SIGKILL)  # the drain never reads the answer
            return True
        return False

    receiver.reject = kill_on_poison
    receiver.reject_status = 500  # the receiver stored nothing of it
    # When drains allowed two attempts run one after the other (1 s leases), each
    # started once the last one ended
    for _ in range(4):
        started = time.monotonic()
        drains.append(
            start_drain(
                db,
                receiver.url,
                *("--until-empty", "--batch-size", "1", "--concurrency", "1", "--lease", "1"),
                *("--timeout", "0.5", "--max-attempts", "2", "--max-time", "60"),
                stderr=subprocess.PIPE,
            )
        )
        _, stderr = drains[-1].communicate(timeout=60)
        if drains[-1].returncode == 0:
            row.recover_s = time.monotonic() - started  # the drain that got past it
            break
    # Then the first two were killed by it, and the third dead-lettered it as out of
    # attempts without sending it, and delivered the rest
    assert [d.returncode for d in drains] == [-signal.SIGKILL, -signal.SIGKILL, 0]
    assert carried == [1, 2]
    assert f"dead-lettered event {ids[2]} (max_attempts) without sending" in stderr
    assert dead_rows(db, "event_id", "reason", "status") == [(ids[2], "max_attempts", None)]
    dead = dead_ids(db)
    row.tally(ids, [e["id"] for e in receiver.delivered], dead)
    assert row.lost == 0 and row.duplicated == 0
    assert sorted(e["n"] for e in receiver.delivered) == [0, 1, 3, 4, 5]
    assert queued_count(db) == 0
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
