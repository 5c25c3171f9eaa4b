"""Crashes for real: SIGKILL producers mid-enqueue and drains mid-batch, then count events.

After every crash: each event whose enqueue returned is delivered or dead-lettered,
none is missing, and ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import rows, spooler_cmd, start_drain, wait_until

from spooler.drain import CRASH_ENV
from spooler.receiver import Receiver

pytestmark = pytest.mark.crash

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


def drain_cli(
    db: Path, url: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return spooler_cmd(
        "drain",
        "--db",
        str(db),
        "--url",
        url,
        "--id-field",
        "id",
        "--until-empty",
        "--backoff-base",
        "0.01",
        "--poll-interval",
        "0.05",
        "--max-time",
        "60",
        *extra,
        env=env or {},
    )


def test_killed_producers_lose_nothing_that_enqueue_returned(db: Path, receiver: Receiver) -> None:
    # Given producers killed with SIGKILL at random points of a tight enqueue loop
    returned = acknowledged_ids(db, kills=12, rng=random.Random(3))
    assert len(returned) >= 12
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    # When a drain delivers the spool
    assert drain_cli(db, receiver.url).returncode == 0
    # Then every event whose enqueue returned arrived (the spool may hold a few more:
    # committed just before the kill, their ids never printed)
    delivered = {e["id"] for e in receiver.delivered}
    assert returned <= delivered
    assert rows(db, "SELECT count(*) FROM queue") == [(0,)]


def enqueue(db: Path, count: int) -> list[str]:
    lines = "".join(f'{{"n":{n}}}\n' for n in range(count))
    result = spooler_cmd("enqueue", "--db", str(db), input=lines)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_drain_killed_after_the_receiver_answered_redelivers_that_batch(
    db: Path, receiver: Receiver
) -> None:
    ids = enqueue(db, 50)
    # The drain dies after its first request was answered, before the ack commits.
    crashed = drain_cli(
        db,
        receiver.url,
        "--batch-size",
        "10",
        "--concurrency",
        "1",
        "--timeout",
        "0.5",
        "--lease",
        "1",
        env={CRASH_ENV: "after_response"},
    )
    assert crashed.returncode == -signal.SIGKILL
    assert len(receiver.delivered) == 10
    assert drain_cli(db, receiver.url, "--batch-size", "10").returncode == 0
    seen = Counter(e["id"] for e in receiver.delivered)
    assert set(seen) == set(ids)
    # Exactly the batch in flight at the crash came twice, with the same event ids.
    assert sorted(seen.values()) == [1] * 40 + [2] * 10
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_drain_killed_after_claiming_delivers_once_the_lease_expires(
    db: Path, receiver: Receiver
) -> None:
    ids = enqueue(db, 30)
    crashed = drain_cli(
        db, receiver.url, "--timeout", "0.5", "--lease", "1", env={CRASH_ENV: "after_claim"}
    )
    assert crashed.returncode == -signal.SIGKILL and receiver.requests == []
    assert rows(db, "SELECT count(*), count(lease_owner) FROM queue") == [(30, 30)]
    assert drain_cli(db, receiver.url).returncode == 0
    assert sorted(e["id"] for e in receiver.delivered) == sorted(ids)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drain_killed_at_random_mid_batch_loses_nothing(
    db: Path, receiver: Receiver, seed: int
) -> None:
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
    assert drain_cli(db, receiver.url).returncode == 0
    delivered = {e["id"] for e in receiver.delivered}
    dead = {eid for (eid,) in rows(db, "SELECT event_id FROM dead")}
    assert delivered | dead == set(ids) and not delivered & dead
    assert len(dead) == 6
    assert rows(db, "SELECT count(*) FROM queue") == [(0,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
