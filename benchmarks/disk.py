"""Target 8: a delivered backlog gives its disk space back, and the WAL stays bounded
under steady load (producers and a drain running at once).

    python benchmarks/disk.py       # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import persistqueue
from common import EVENT, Row, at_most, report, sized, workdir
from loopback import Loopback

import spooler
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.store.sqlite.schema import WAL_SIZE_LIMIT

BACKLOG = sized(200_000, smoke=2_000)
STEADY_SECONDS = sized(10.0, smoke=0.5)
CHUNK = 50_000
MB = 1024 * 1024


def drained_backlog(path: Path, url: str) -> tuple[float, float]:
    """File size (MB) with the backlog queued, and after `drain --until-empty`."""
    with spooler.Spool(path, durability="normal") as spool:
        for start in range(0, BACKLOG, CHUNK):
            spool.enqueue_many([EVENT] * min(CHUNK, BACKLOG - start))
        full = path.stat().st_size / MB
        Drain(spool.store, build_drain_config({}, destination_flags={"url": url})).run(
            Mode.UNTIL_EMPTY
        )
    return full, path.stat().st_size / MB


def persist_queue_backlog(directory: Path) -> tuple[float, float]:
    """The same for persist-queue, put and then get+ack of every item."""
    count = BACKLOG // 10  # one commit per operation: a tenth is enough to see the trend
    queue = persistqueue.SQLiteAckQueue(str(directory), auto_commit=True, multithreading=True)
    for _ in range(count):
        queue.put(EVENT)
    db = directory / "data.db"
    full = db.stat().st_size / MB
    for _ in range(count):
        queue.ack(queue.get(block=False))
    queue.clear_acked_data(max_delete=count, keep_latest=0)
    return full, db.stat().st_size / MB


def steady_wal(path: Path, url: str) -> float:
    """Largest WAL file seen (MB) while producers and a daemon drain run together."""
    spool = spooler.Spool(path)
    drain = Drain(spool.store, build_drain_config({}, destination_flags={"url": url}))
    worker = threading.Thread(target=drain.run, args=(Mode.DAEMON,))
    worker.start()
    wal = Path(f"{path}-wal")
    largest = 0
    deadline = time.monotonic() + STEADY_SECONDS
    while time.monotonic() < deadline:
        spool.enqueue_many([EVENT] * 200)
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    drain.stop()
    worker.join()
    spool.close()
    return largest / MB


def measure(tmp: Path) -> list[Row]:
    with Loopback() as url:
        full, after = drained_backlog(tmp / "backlog.db", url)
        wal = steady_wal(tmp / "steady.db", url)
    pq_full, pq_after = persist_queue_backlog(tmp / "pq")
    limit = WAL_SIZE_LIMIT / MB
    return [
        at_most("8. file after draining 200k", after, full, "file with 200k queued", 0.1, "MB"),
        Row(
            "8. file after draining, share of its peak",
            f"{after / full:.0%}",
            f"persist-queue: {pq_after / pq_full:.0%}",
            (after / full) / (pq_after / pq_full),
            "-",
            True,
        ),
        at_most("8. largest WAL, 10 s steady load", wal, limit, "journal_size_limit", 1.0, "MB"),
    ]


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
