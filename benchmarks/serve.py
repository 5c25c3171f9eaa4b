"""Target 9: ``spooler serve``, a real process, loaded by a client in processes of its own,
against enqueueing directly, in the same run:

- one event per request (as Datalyr's SDK sends, ``/track``) from 10 connections,
  against one process's direct durable ``enqueue``: at least 2x;
- batches of 100 events per request (Amplitude's ``/2/httpapi``) from 4 connections: at
  least 50,000 events/s, beside one process's direct ``enqueue_many`` of 100 events;
- 8 producer processes, one event per request each, against 8 processes enqueueing
  directly (both reported).

Every measurement starts a fresh spool (and relay), at durability "full".

    python benchmarks/serve.py     # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import (
    EVENT,
    Row,
    at_least,
    context,
    free_port,
    interleaved,
    report,
    sized,
    wait_for_port,
    workdir,
)

import spooler

HERE = Path(__file__).parent
SECONDS = sized(3.0, smoke=0.2)
ROUNDS = sized(3, smoke=1)
PRODUCERS = 8
BATCH = 100
TARGET_BATCH_RATE = 50_000


@contextmanager
def relay(folder: Path) -> Iterator[int]:
    """``spooler serve`` on a fresh spool in ``folder``; its port, once it listens."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "spooler_cli", "serve", "--db", str(folder / "serve.db")),
            *("--port", str(port), "--log-level", "warning"),
        ],
    )
    try:
        wait_for_port(port, process, "spooler serve")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def load(port: int, path: str, connections: int, events: int, *, clients: int = 1) -> float:
    """Events per second ``clients`` load generator processes got answered with 200."""
    command = [sys.executable, str(HERE / "loadgen.py"), str(port), path]
    runs = [
        subprocess.Popen(
            [*command, str(connections), str(SECONDS), str(events)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    results = [json.loads(run.communicate()[0]) for run in runs]
    for result in results:
        if set(result["statuses"]) != {"200"}:
            raise RuntimeError(f"answers other than 200: {result['statuses']}")
    return sum(r["requests"] for r in results) * events / max(r["seconds"] for r in results)


def _enqueue_for(path: str, batch: int, out: multiprocessing.Queue) -> None:
    """Enqueue durably for SECONDS (one event a call, or ``batch`` with enqueue_many)."""
    with spooler.Spool(path) as spool:
        events = [EVENT] * batch
        count = 0
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < SECONDS:
            if batch == 1:
                spool.enqueue(EVENT)
            else:
                spool.enqueue_many(events)
            count += batch
        out.put((count, elapsed))


def direct(folder: Path, *, batch: int = 1, processes: int = 1) -> float:
    """Events per second of ``processes`` processes enqueueing into one fresh spool."""
    path = str(folder / f"direct-{time.monotonic_ns()}.db")
    spooler.Spool(path).close()
    out: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_enqueue_for, args=(path, batch, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(count for count, _ in results) / max(elapsed for _, elapsed in results)


def served(folder: Path, path: str, connections: int, events: int, clients: int = 1) -> float:
    """Events per second through a relay on a fresh spool in ``folder``."""
    with relay(folder) as port:
        return load(port, path, connections, events, clients=clients)


def main() -> None:
    with workdir() as folder:

        def fresh(name: str) -> Path:
            place = folder / f"{name}-{time.monotonic_ns()}"
            place.mkdir()
            return place

        rates = interleaved(
            {
                "single": lambda: served(fresh("s"), "/track", 10, 1),
                "direct": lambda: direct(fresh("d")),
                "batch": lambda: served(fresh("b"), "/2/httpapi", 4, BATCH),
                "direct_many": lambda: direct(fresh("m"), batch=BATCH),
                "producers": lambda: served(fresh("p"), "/track", 1, 1, clients=PRODUCERS),
                "direct_producers": lambda: direct(fresh("q"), processes=PRODUCERS),
            },
            ROUNDS,
        )
    rows: list[Row] = [
        at_least(
            "9. serve: 1 event/request (Datalyr /track), 10 connections",
            rates["single"],
            rates["direct"],
            "direct durable enqueue, 1 process",
            2.0,
            "ev/s",
        ),
        Row(
            "9. serve: 100 events/request (Amplitude /2/httpapi), 4 connections",
            f"{rates['batch']:,.0f} ev/s",
            f"goal: {TARGET_BATCH_RATE:,} ev/s",
            rates["batch"] / TARGET_BATCH_RATE,
            f">= {TARGET_BATCH_RATE:,} ev/s",
            rates["batch"] >= TARGET_BATCH_RATE,
        ),
        context(
            "9. serve: 100 events/request (Amplitude /2/httpapi), 4 connections",
            rates["batch"],
            rates["direct_many"],
            "direct enqueue_many of 100, 1 process",
            "ev/s",
        ),
        context(
            f"9. serve: {PRODUCERS} producer processes, 1 event/request each",
            rates["producers"],
            rates["direct_producers"],
            f"{PRODUCERS} processes enqueueing directly",
            "ev/s",
        ),
    ]
    report(rows)


if __name__ == "__main__":
    main()
