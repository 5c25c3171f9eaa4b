"""Enqueue and claim/ack throughput: spooler against the baselines, measured in one run.

Baselines: raw sqlite3 (the floor), persist-queue's SQLiteAckQueue (durable, one commit
per operation), and Segment's analytics-python track() (in memory, loses data).

    python benchmarks/enqueue.py            # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import platform
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import persistqueue
import segment.analytics as segment_analytics

import spooler
from spooler.store import Store

SINGLE = 2_000  # one durable commit each: a few seconds on a laptop SSD
BULK = 50_000
EVENT = {"event": "page_view", "userId": "u_12345", "properties": {"path": "/pricing", "n": 1}}


def rate(count: int, work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def raw_sqlite(path: Path, *, per_call: bool) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, eid TEXT, body TEXT)")
    body = spooler.events.encode_event(EVENT)
    if per_call:

        def work() -> None:
            for _ in range(SINGLE):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO q (eid, body) VALUES (?, ?)", (str(uuid.uuid4()), body))
                conn.execute("COMMIT")

        return rate(SINGLE, work)
    rows = [(str(uuid.uuid4()), body) for _ in range(BULK)]

    def bulk() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO q (eid, body) VALUES (?, ?)", rows)
        conn.execute("COMMIT")

    return rate(BULK, bulk)


def persist_queue_put(path: Path) -> tuple[float, float]:
    queue = persistqueue.SQLiteAckQueue(str(path), auto_commit=True, multithreading=True)
    put = rate(SINGLE, lambda: [queue.put(EVENT) for _ in range(SINGLE)])

    def get_ack() -> None:
        for _ in range(SINGLE):
            queue.ack(queue.get(block=False))

    return put, rate(SINGLE, get_ack)


def spooler_rates(workdir: Path) -> dict[str, float]:
    result = {}
    with spooler.Spool(workdir / "one.db") as spool:
        result["enqueue (full)"] = rate(
            SINGLE, lambda: [spool.enqueue(EVENT) for _ in range(SINGLE)]
        )
    with spooler.Spool(workdir / "normal.db", durability="normal") as spool:
        result["enqueue (normal)"] = rate(
            SINGLE, lambda: [spool.enqueue(EVENT) for _ in range(SINGLE)]
        )
    with spooler.Spool(workdir / "bulk.db") as spool:
        result["enqueue_many"] = rate(BULK, lambda: spool.enqueue_many([EVENT] * BULK))
        store: Store = spool.store

        def claim_ack() -> None:
            now = time.time()
            while batch := store.claim("default", 500, "bench", due_by=now, lease_until=now + 60):
                store.settle("bench", now=now, delivered=[e.rowid for e in batch])

        result["claim+ack, batches of 500"] = rate(BULK, claim_ack)
    return result


def in_memory_sdk() -> float:
    client = segment_analytics.Client("write-key", send=False, max_queue_size=BULK + 1)
    try:
        return rate(
            BULK,
            lambda: [
                client.track(user_id="u_12345", event="page_view", properties=EVENT["properties"])
                for _ in range(BULK)
            ],
        )
    finally:
        client.shutdown()


def main() -> None:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        workdir = Path(tmp)
        raw_single = raw_sqlite(workdir / "raw1.db", per_call=True)
        raw_bulk = raw_sqlite(workdir / "raw2.db", per_call=False)
        pq_put, pq_get_ack = persist_queue_put(workdir / "pq")
        ours = spooler_rates(workdir)
    memory = in_memory_sdk()
    print(
        f"# spooler {spooler.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()}, {platform.machine()}, {time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| operation | spooler (ops/s) | baseline | baseline (ops/s) | ratio |")
    print("|---|---:|---|---:|---:|")
    table = [
        ("enqueue, one per call, durable", ours["enqueue (full)"], "persist-queue put", pq_put),
        (
            "enqueue, one per call, durable",
            ours["enqueue (full)"],
            "raw sqlite3 insert+commit",
            raw_single,
        ),
        (
            "enqueue, one per call, durability=normal",
            ours["enqueue (normal)"],
            "persist-queue put",
            pq_put,
        ),
        ("enqueue_many of 50k", ours["enqueue_many"], "raw sqlite3 executemany", raw_bulk),
        ("enqueue_many of 50k", ours["enqueue_many"], "analytics-python track (memory)", memory),
        (
            "claim+ack, batches of 500",
            ours["claim+ack, batches of 500"],
            "persist-queue get+ack",
            pq_get_ack,
        ),
    ]
    for name, value, baseline, base in table:
        print(f"| {name} | {value:,.0f} | {baseline} | {base:,.0f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
