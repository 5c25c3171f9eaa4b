"""Target 1 (issue 26's target 4): single-thread durable enqueue, one event per call,
against persist-queue's ``SQLiteAckQueue.put`` at the same durability (WAL,
synchronous=FULL), and as a share of what the disk itself allows: appends of 2 pages
(what a commit adds to the WAL: the queue row's page and its claim index entry's; the
totals row's page too, a third, once a limit is checked), each followed by an
``fdatasync``.

    python benchmarks/enqueue_single.py     # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import os
from pathlib import Path

import persistqueue
from common import (
    EVENT,
    Row,
    at_least,
    context,
    interleaved,
    memory_sdk,
    rate,
    raw_durable_insert,
    raw_queue,
    raw_spool,
    raw_spool_insert,
    report,
    sized,
    track,
    workdir,
)

import spooler

PER_ROUND = sized(400, smoke=20)  # one fsync each
ROUNDS = sized(7, smoke=1)
PAGE = 4096
PAGES = 2  # what one enqueue's commit appends to the WAL


def synced_appends(path: Path) -> float:
    """Writes of PAGES pages per second, one after the other, each made durable by
    ``fdatasync``: a WAL's commits. Into a file written out beforehand, as a WAL that
    has reached its size is rewritten in place: a write that grew the file would sync
    its size too, which no commit of a warm spool does."""
    block = b"\0" * (PAGES * PAGE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, block * PER_ROUND)
        os.fsync(fd)

        def appends() -> None:
            os.lseek(fd, 0, os.SEEK_SET)
            for _ in range(PER_ROUND):
                os.write(fd, block)
                os.fdatasync(fd)

        return rate(PER_ROUND, appends)
    finally:
        os.close(fd)


def measure(tmp: Path) -> list[Row]:
    spool = spooler.Spool(tmp / "spool.db")
    fast = spooler.Spool(tmp / "normal.db", durability="normal")
    queue = persistqueue.SQLiteAckQueue(str(tmp / "pq"), auto_commit=True, multithreading=True)
    queue._putter.execute("PRAGMA synchronous=FULL")  # SQLite's default, made explicit
    raw = raw_queue(tmp / "raw.db")
    schema = raw_spool(tmp / "schema.db")
    body = spooler.events.encode_event(EVENT)

    def raw_insert() -> None:
        for _ in range(PER_ROUND):
            raw_durable_insert(raw, body)

    def schema_insert() -> None:
        for _ in range(PER_ROUND):
            raw_spool_insert(schema, body)

    client = memory_sdk()
    rates = interleaved(
        {
            "spooler": lambda: rate(
                PER_ROUND, lambda: [spool.enqueue(EVENT) for _ in range(PER_ROUND)]
            ),
            "normal": lambda: rate(
                PER_ROUND, lambda: [fast.enqueue(EVENT) for _ in range(PER_ROUND)]
            ),
            "persist-queue": lambda: rate(
                PER_ROUND, lambda: [queue.put(EVENT) for _ in range(PER_ROUND)]
            ),
            "raw": lambda: rate(PER_ROUND, raw_insert),
            "disk": lambda: synced_appends(tmp / "appends"),
            "schema": lambda: rate(PER_ROUND, schema_insert),
            "memory": lambda: rate(
                PER_ROUND * 10,
                lambda: [track(client) for _ in range(PER_ROUND * 10)],
            ),
        },
        ROUNDS,
    )
    spool.close()
    fast.close()
    target = "1. durable enqueue, 1 thread, 1 event/call"
    return [
        at_least(
            target, rates["spooler"], rates["persist-queue"], "persist-queue put", 0.9, "ev/s"
        ),
        context(
            target,
            rates["spooler"],
            rates["disk"],
            f"the disk: {PAGES}-page appends, fdatasync each",
            "ev/s",
        ),
        context(target, rates["spooler"], rates["raw"], "raw sqlite3 insert+commit", "ev/s"),
        context(
            "1. spooler's statements from raw sqlite3 (the floor of its schema)",
            rates["schema"],
            rates["persist-queue"],
            "persist-queue put",
            "ev/s",
        ),
        context(
            "1. enqueue with durability=normal (no fsync)",
            rates["normal"],
            rates["spooler"],
            "durability=full",
            "ev/s",
        ),
        context(
            target, rates["spooler"], rates["memory"], "analytics-python track (memory)", "ev/s"
        ),
    ]


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
