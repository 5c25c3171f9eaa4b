"""Target 4: drain a 50k backlog to a loopback receiver at default settings, against
Segment's analytics-python sending the same 50k events to the same receiver, and
against a bare httpx loop posting pre-built batches of the same size (the limit); and
the same drain keeping no per-minute history (``[drain] history = 0``), for its cost.
For context, two durable drains: a raw sqlite3 loop (read a batch by rowid, post it,
delete it: the floor of any drain that keeps its events in SQLite rows) and
persist-queue's get/ack.

    python benchmarks/drain.py      # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx
import persistqueue
import segment.analytics as segment_analytics
from common import (
    EVENT,
    RAW_INSERT,
    Row,
    at_least,
    context,
    interleaved,
    raw_queue,
    report,
    sized,
    workdir,
)
from loopback import Loopback

import spooler
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.events import encode_event
from spooler.store.sqlite import SQLiteStore

BACKLOG = sized(50_000, smoke=1_000)
# persist-queue commits every put, get and ack: two fsyncs per event
PQ_BACKLOG = sized(2_000, smoke=100)
ROUNDS = sized(3, smoke=1)
HISTORY_ROUNDS = sized(10, smoke=2)


def spooler_drain(path: Path, url: str, *, history: bool = True) -> float:
    path.unlink(missing_ok=True)
    with spooler.Spool(path) as spool:
        spool.enqueue_many([EVENT] * BACKLOG)
    # As `spooler drain` opens it: its own connection, at synchronous=NORMAL.
    store = SQLiteStore(path, durability="normal")
    config = build_drain_config(
        {}, destination_flags={"url": url}, drain_flags=None if history else {"history": 0}
    )
    began = time.perf_counter()
    report = Drain(store, config).run(Mode.UNTIL_EMPTY)
    elapsed = time.perf_counter() - began
    store.close()
    assert report.delivered == BACKLOG, report
    return BACKLOG / elapsed


def analytics_python(url: str) -> float:
    client = segment_analytics.Client("key", host=url, max_queue_size=BACKLOG + 1)
    began = time.perf_counter()
    for _ in range(BACKLOG):
        client.track(user_id="u_12345", event="page_view", properties=EVENT["properties"])
    client.flush()
    elapsed = time.perf_counter() - began
    client.shutdown()
    return BACKLOG / elapsed


def bare_httpx(url: str, batch_size: int) -> float:
    text = encode_event(EVENT)
    body = ("[" + ",".join([text] * batch_size) + "]").encode()
    with httpx.Client() as client:
        began = time.perf_counter()
        for _ in range(BACKLOG // batch_size):
            client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            ).raise_for_status()
        return BACKLOG / (time.perf_counter() - began)


def raw_sqlite3(path: Path, url: str, batch_size: int, *, count: int = BACKLOG) -> float:
    """Post the rows of a plain table in rowid order, deleting each batch once the
    receiver took it; commits at synchronous=NORMAL, as the drain's own do."""
    path.unlink(missing_ok=True)
    db = raw_queue(path)
    db.execute("PRAGMA synchronous=NORMAL")
    text = encode_event(EVENT)
    with db:
        db.executemany(RAW_INSERT, ((i, text) for i in spooler.events.new_event_ids(count)))
    with httpx.Client() as client:
        began = time.perf_counter()
        while batch := db.execute(
            "SELECT id, body FROM q ORDER BY id LIMIT ?", (batch_size,)
        ).fetchall():
            body = "[" + ",".join(text for _, text in batch) + "]"
            client.post(
                url, content=body.encode(), headers={"Content-Type": "application/json"}
            ).raise_for_status()
            with db:
                db.execute("DELETE FROM q WHERE id <= ?", (batch[-1][0],))
        elapsed = time.perf_counter() - began
    db.close()
    return count / elapsed


def persist_queue(path: Path, url: str, batch_size: int) -> float:
    """persist-queue as a durable spool: ``get`` a batch (each get commits the item as
    unacked), post it, ``ack`` each item (a commit each). Defaults: synchronous=FULL."""
    queue = persistqueue.SQLiteAckQueue(str(path), auto_commit=True, multithreading=True)
    for _ in range(PQ_BACKLOG):
        queue.put(EVENT)
    with httpx.Client() as client:
        began = time.perf_counter()
        while queue.size:
            items = [queue.get(block=False, raw=True) for _ in range(min(batch_size, queue.size))]
            client.post(url, json=[item["data"] for item in items]).raise_for_status()
            for item in items:
                queue.ack(item)
        elapsed = time.perf_counter() - began
    queue.clear_acked_data(max_delete=None, keep_latest=None)
    return PQ_BACKLOG / elapsed


def history_cost(path: Path, url: str) -> tuple[float, float]:
    """The drain's median rate keeping its per-minute history, and keeping none: in
    HISTORY_ROUNDS rounds, each going first in turn (whichever runs second in a round
    was measured a few percent faster either way)."""
    kept, none = [], []
    for round_ in range(HISTORY_ROUNDS):
        order = [True, False] if round_ % 2 else [False, True]
        for history in order:
            (kept if history else none).append(spooler_drain(path, url, history=history))
    return statistics.median(kept), statistics.median(none)


def measure(tmp: Path) -> list[Row]:
    batch_size = (
        build_drain_config({}, destination_flags={"url": "http://x"})
        .destinations["default"]
        .batch_size
    )
    with Loopback() as url:
        rates = interleaved(
            {
                "spooler": lambda: spooler_drain(tmp / "drain.db", url),
                "analytics-python": lambda: analytics_python(url),
                "httpx": lambda: bare_httpx(url, batch_size),
                "raw": lambda: raw_sqlite3(tmp / "raw.db", url, batch_size),
                "persist-queue": lambda: persist_queue(tmp / "pq", url, batch_size),
            },
            ROUNDS,
        )
        kept, none = history_cost(tmp / "drain.db", url)
    target = "4. drain 50k to loopback, defaults"
    return [
        at_least(
            target,
            rates["spooler"],
            rates["analytics-python"],
            "analytics-python send",
            1.5,
            "ev/s",
        ),
        at_least(
            target,
            rates["spooler"],
            rates["httpx"],
            f"bare httpx loop, {batch_size}/batch",
            0.5,
            "ev/s",
        ),
        at_least(
            "4b. the per-minute history's cost to the drain",
            kept,
            none,
            "the same drain keeping none",
            0.98,
            "ev/s",
        ),
        context(
            target,
            rates["spooler"],
            rates["raw"],
            f"raw sqlite3 read, post, delete, {batch_size}/batch",
            "ev/s",
        ),
        context(
            target,
            rates["spooler"],
            rates["persist-queue"],
            f"persist-queue get, post, ack, {batch_size}/batch",
            "ev/s",
        ),
    ]


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
