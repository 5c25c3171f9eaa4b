"""Target 2: ``enqueue_many`` of 50k events against raw ``sqlite3`` ``executemany`` of the
same rows in one transaction (the floor: rows built beforehand, no validation, no
secondary index).

    python benchmarks/enqueue_many.py       # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import sqlite3
import time
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
    report,
    sized,
    track,
    workdir,
)

import spooler
from spooler.events import encode_event, encode_event_array, new_event_ids

BULK = sized(50_000, smoke=500)
ROUNDS = sized(5, smoke=1)


def measure(tmp: Path) -> list[Row]:
    spool = spooler.Spool(tmp / "spool.db")
    raw = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute(
        "CREATE TABLE q (id INTEGER PRIMARY KEY, event_id TEXT, destination TEXT, body TEXT,"
        " created_at REAL, queued_at REAL, due_at REAL)"
    )
    now = time.time()
    body = encode_event(EVENT)
    rows = [(i, "default", body, now, now, now) for i in new_event_ids(BULK)]

    def executemany() -> None:
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany(
            "INSERT INTO q (event_id, destination, body, created_at, queued_at, due_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        raw.execute("COMMIT")

    queue = persistqueue.SQLiteAckQueue(str(tmp / "pq"), auto_commit=True, multithreading=True)
    pq_puts = sized(500, smoke=20)  # persist-queue has no bulk put: one commit per event

    events = [dict(EVENT) for _ in range(BULK)]
    client = memory_sdk()
    rates = interleaved(
        {
            "spooler": lambda: rate(BULK, lambda: spool.enqueue_many(events)),
            "raw": lambda: rate(BULK, executemany),
            "encoder": lambda: rate(BULK, lambda: encode_event_array(events)),
            "persist-queue": lambda: rate(
                pq_puts, lambda: [queue.put(EVENT) for _ in range(pq_puts)]
            ),
            "memory": lambda: rate(
                BULK,
                lambda: [track(client) for _ in range(BULK)],
            ),
        },
        ROUNDS,
    )
    spool.close()
    target = "2. enqueue_many of 50k, one transaction"
    return [
        at_least(target, rates["spooler"], rates["raw"], "raw sqlite3 executemany", 0.4, "ev/s"),
        context(
            target,
            rates["spooler"],
            rates["persist-queue"],
            "persist-queue put",
            "ev/s",
        ),
        context(
            target, rates["spooler"], rates["memory"], "analytics-python track (memory)", "ev/s"
        ),
        context(
            "2. encoding the 50k events alone (one call of the JSON encoder)",
            rates["encoder"],
            rates["raw"],
            "raw sqlite3 executemany",
            "ev/s",
        ),
        Row(
            "2. the encoder's share of enqueue_many's time",
            f"{rates['spooler'] / rates['encoder']:.0%}",
            "-",
            rates["spooler"] / rates["encoder"],
            "-",
            True,
        ),
    ]


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
