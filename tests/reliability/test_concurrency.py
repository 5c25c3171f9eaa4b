"""Scenarios 3 and 19: many producers and drains on one spool at once, drains killed and
restarted; a drain giving space back to the disk while its workers commit."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.cli import drain_args, spooler_cmd, start_drain
from helpers.processes import wait_for_line
from helpers.spools import enqueue_backlog, queued_count, rows

import spooler.drain.run as drain_run
import spooler.store.sqlite.maintenance as sqlite_maintenance
from spooler import Spool
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.testing import Receiver

PRODUCER = """
import sys
from spooler import Spool
with Spool(sys.argv[1]) as spool:
    for n in range(int(sys.argv[2])):
        if n % 4 == 0:
            ids = spool.enqueue_many([{"p": sys.argv[3], "n": n, "k": k} for k in range(3)])
        else:
            ids = [spool.enqueue({"p": sys.argv[3], "n": n})]
        print("\\n".join(ids), flush=True)
"""
DRAIN_ARGS = ("--batch-size", "25", "--poll-interval", "0.05", "--timeout", "2", "--lease", "3")


def running_drain(db: Path, url: str) -> subprocess.Popen[str]:
    """A drain that has started, so its SIGTERM handler is in place: a SIGTERM during
    interpreter start-up would kill it before it could shut down cleanly."""
    drain = start_drain(db, url, *DRAIN_ARGS, stderr=subprocess.PIPE)
    assert drain.stderr is not None and wait_for_line(drain.stderr, " started ")
    return drain


def overlapping_deliveries(receiver: Receiver) -> list[str]:
    """Event ids that were inside two requests the receiver was handling at the same time."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for request in receiver.requests:
        for event in request.events:
            spans.setdefault(event["id"], []).append((request.received_at, request.answered_at))
    return [
        event_id
        for event_id, times in spans.items()
        for (a_start, a_end), (b_start, b_end) in itertools.combinations(times, 2)
        if a_start < b_end and b_start < a_end
    ]


def test_producers_and_drains_at_once_with_drains_killed(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "3",
        "8 producers and 3 drains at once; drains SIGKILLed and restarted",
        "kill -9 a running drain twice while producers run, start a new one",
    )
    # Given a spool that exists, and three drains already running as daemons
    Spool(db).close()
    drains = [running_drain(db, receiver.url) for _ in range(3)]
    # When eight producer processes enqueue at full speed meanwhile
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(db), "150", str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(8)
    ]
    # ...and drains are killed and replaced while they work
    for victim in (0, 1):
        assert receiver.wait_for(lambda r, n=victim: len(r.requests) > 5 * (n + 1), timeout=60)
        drains[victim].kill()
        drains[victim].communicate()
        drains[victim] = running_drain(db, receiver.url)
    returned: set[str] = set()
    for producer in producers:
        out, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err  # no "database is locked" reached a producer
        returned.update(out.split())
    assert len(returned) == 8 * (150 + 2 * 38)  # every 4th call enqueues 3
    started = time.monotonic()
    # Then the drains deliver every event...
    assert receiver.wait_for(lambda r: {e["id"] for e in r.delivered} >= returned, timeout=120)
    row.recover_s = time.monotonic() - started
    for drain in drains:
        drain.terminate()
        _, err = drain.communicate(timeout=30)
        assert drain.returncode == 0, err
        assert "locked" not in err and "ERROR" not in err
    # Batches a killed drain delivered but never acked come back once their lease ends.
    final = spooler_cmd(*drain_args(db, receiver.url, "--until-empty", "--max-time", "60"))
    assert final.returncode == 0, final.stderr
    row.tally(returned, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated <= 2 * 4 * 25  # two kills, 4 workers, 25 a batch
    # ...and no event was ever in two requests at once: a lease is exclusive.
    assert overlapping_deliveries(receiver) == []
    assert queued_count(db) == 0
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_threads_share_one_spool(spool: Spool, db: Path) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []

    def produce() -> None:
        try:
            for n in range(100):
                ids.append(spool.enqueue({"n": n}))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 800
    assert queued_count(db) == 800


def test_space_is_given_back_while_workers_commit(
    db: Path, receiver: Receiver, scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = scenario(
        "19",
        "the drain gives free pages back to the disk while 8 workers commit",
        "a 20,000-event backlog drained 5 a batch by 8 workers, the check for free pages"
        " run every 0.1 s instead of every minute, from 1 free page instead of 256",
    )
    # Given a backlog large enough that draining it frees many pages
    with Spool(db) as spool:
        ids = enqueue_backlog(spool, pad=300)
    # When a drain gives them back to the disk as often as its loop turns (every 0.1 s),
    # while its workers claim and ack small batches on the same connection
    monkeypatch.setattr(drain_run, "RECLAIM_INTERVAL", 0.0)
    monkeypatch.setattr(sqlite_maintenance, "RECLAIM_MIN_PAGES", 1)
    config = build_drain_config(
        {},
        destination_flags={
            "url": receiver.url,
            "id_field": "id",
            "batch_size": 5,
            "concurrency": 8,
        },
        drain_flags={"poll_interval": 0.05},
    )
    started = time.monotonic()
    with Spool(db, durability="normal") as spool:
        report = Drain(spool.store, config).run(Mode.UNTIL_EMPTY, max_time=120)
    row.recover_s = time.monotonic() - started
    # Then no commit of a worker failed, and every event was delivered once
    assert report.error is None and report.stopped_by == "empty"
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0
    assert queued_count(db) == 0
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
