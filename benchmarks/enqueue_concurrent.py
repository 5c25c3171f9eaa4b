"""Target 3 (issue 26's target 4): durable enqueue from 8 threads of one process (group
commit) against the single-thread per-call rate and against persist-queue from the same
8 threads; and from 4 processes at once against one process, each warmed up first (its
first call opens the file: it is not counted). For context: analytics-python's
in-memory ``track()`` and raw sqlite3 (a connection per thread, one commit per insert)
from the same 8 threads.

    python benchmarks/enqueue_concurrent.py     # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
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
    report,
    sized,
    track,
    workdir,
)

import spooler

THREADS = 8
PROCESSES = 4
PER_WORKER = sized(250, smoke=10)  # enqueues per thread or process per round
ROUNDS = sized(5, smoke=1)


def threaded(call: Callable[[], object]) -> float:
    """Aggregate rate of ``call`` run PER_WORKER times in each of THREADS threads."""
    start = threading.Barrier(THREADS + 1)

    def work() -> None:
        start.wait()
        for _ in range(PER_WORKER):
            call()

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    return THREADS * PER_WORKER / (time.perf_counter() - began)


def _produce(path: str, ready: multiprocessing.Barrier, times: multiprocessing.Queue) -> None:
    with spooler.Spool(path) as spool:
        spool.enqueue(EVENT)  # warm: the first call opens the file and starts the flusher
        ready.wait()
        began = time.time()
        for _ in range(PER_WORKER):
            spool.enqueue(EVENT)
        times.put((began, time.time()))


def processes(path: Path, count: int) -> float:
    """Aggregate rate of ``count`` processes each enqueueing PER_WORKER events, from the
    first start to the last finish (process start-up and exit are not counted)."""
    ready = multiprocessing.Barrier(count)
    times: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_produce, args=(str(path), ready, times))
        for _ in range(count)
    ]
    for worker in workers:
        worker.start()
    spans = [times.get() for _ in workers]
    for worker in workers:
        worker.join()
    return count * PER_WORKER / (max(end for _, end in spans) - min(start for start, _ in spans))


def raw_inserter(path: Path) -> Callable[[], None]:
    """One durable insert+commit per call into the raw sqlite3 floor's table, on a
    connection of the calling thread's own (sqlite3 connections are not shared between
    threads)."""
    raw_queue(path).close()  # create the table before the threads race to
    body = spooler.events.encode_event(EVENT)
    local = threading.local()

    def insert() -> None:
        if not hasattr(local, "db"):
            local.db = raw_queue(path)
        raw_durable_insert(local.db, body)

    return insert


def measure(tmp: Path) -> list[Row]:
    spool = spooler.Spool(tmp / "threads.db")
    client = memory_sdk()
    queue = persistqueue.SQLiteAckQueue(str(tmp / "pq"), auto_commit=True, multithreading=True)
    raw_insert = raw_inserter(tmp / "raw.db")
    rates = interleaved(
        {
            "single": lambda: rate(
                PER_WORKER, lambda: [spool.enqueue(EVENT) for _ in range(PER_WORKER)]
            ),
            "threads": lambda: threaded(lambda: spool.enqueue(EVENT)),
            "memory": lambda: threaded(lambda: track(client)),
            "persist-queue": lambda: threaded(lambda: queue.put(EVENT)),
            "raw": lambda: threaded(raw_insert),
            "1 process": lambda: processes(tmp / "processes.db", 1),
            "4 processes": lambda: processes(tmp / "processes.db", PROCESSES),
        },
        ROUNDS,
    )
    spool.close()
    target = "3. durable enqueue, 8 threads (group commit)"
    return [
        at_least(target, rates["threads"], rates["single"], "1 thread, same spool", 2.5, "ev/s"),
        at_least(
            target,
            rates["threads"],
            rates["persist-queue"],
            "persist-queue put, 8 threads",
            2.0,
            "ev/s",
        ),
        context(
            target, rates["threads"], rates["memory"], "analytics-python track, 8 threads", "ev/s"
        ),
        context(
            target,
            rates["threads"],
            rates["raw"],
            "raw sqlite3 insert+commit, 8 threads",
            "ev/s",
        ),
        context(
            "3. durable enqueue, 4 processes, warmed up",
            rates["4 processes"],
            rates["1 process"],
            "1 process",
            "ev/s",
        ),
    ]


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
