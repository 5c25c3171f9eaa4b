"""Targets 5 and 6 (issue 26's target 3): claim and ack cost flat in backlog size (1M
queued against 10k; the claim's own time per batch within 1.1x), a drain working
through 1M events as fast as through 100k (a drain of 10k is mostly its start-up) in
bounded memory, and enqueue keeping no per-event memory (against analytics-python,
which holds every event until it is sent).

    python benchmarks/backlog.py        # needs: pip install -e '.[bench]'; takes minutes
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from common import (
    EVENT,
    Row,
    at_least,
    at_most,
    interleaved,
    memory_sdk,
    rate,
    report,
    sized,
    track,
    workdir,
)
from loopback import Loopback

import spooler
from spooler.store.sqlite import SQLiteStore

BIG = sized(1_000_000, smoke=10_000)
SMALL = sized(10_000, smoke=1_000)
SMALL_DRAIN = sized(100_000, smoke=1_000)
BATCH = 500
CHUNK = 50_000
MEMORY_CALLS = sized(20_000, smoke=500)
ROUNDS = sized(5, smoke=1)
RSS_LIMIT_MB = 80
# A drain in a child process, as `spooler drain --until-empty` runs it: prints the time
# of Drain.run alone (not interpreter start-up) and the process's peak RSS in KB. The
# peak is VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so it
# reports the benchmark's own (larger) footprint at the fork, not the drain's.
DRAIN_CHILD = """
import sys, time
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1], durability="normal")  # as `spooler drain` opens it
drain = Drain(store, build_drain_config({}, destination_flags={"url": sys.argv[2]}))
began = time.perf_counter()
drain.run(Mode.UNTIL_EMPTY)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(time.perf_counter() - began, peak_kb)
"""


def fill(path: Path, count: int) -> None:
    with spooler.Spool(path, durability="normal") as spool:
        for start in range(0, count, CHUNK):
            spool.enqueue_many([EVENT] * min(CHUNK, count - start))


def claim_ack(store: SQLiteStore, count: int, claims: list[float] | None = None) -> float:
    """Rate of claiming and acking ``count`` events in batches, as a drain does; the
    seconds each claim took go to ``claims``."""

    def work() -> None:
        for _ in range(count // BATCH):
            now = time.time()
            began = time.perf_counter()
            batch = store.claim("default", BATCH, "bench", due_by=now, lease_until=now + 60)
            if claims is not None:
                claims.append(time.perf_counter() - began)
            assert batch is not None
            store.settle(batch.lease, now=now, delivered=[e.rowid for e in batch.events])

    return rate(count, work)


def child_drain(path: Path, url: str, count: int) -> tuple[float, float]:
    """Events per second and peak RSS (MB) of a drain delivering ``count`` events."""
    done = subprocess.run(
        [sys.executable, "-c", DRAIN_CHILD, str(path), url],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed, max_rss_kb = done.stdout.split()
    return count / float(elapsed), int(max_rss_kb) / 1024


def bytes_per_event(enqueue: Callable[[], object], count: int = MEMORY_CALLS) -> float:
    """Memory still allocated after ``count`` calls, per call."""
    enqueue()  # warm caches first
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(count):
        enqueue()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return max(after - before, 0) / count


def measure(tmp: Path) -> list[Row]:
    big, small = tmp / "big.db", tmp / "small.db"
    fill(big, BIG)
    big_store, small_store = SQLiteStore(big), SQLiteStore(small)

    claims: dict[str, list[float]] = {"1M": [], "10k": []}

    def small_round() -> float:
        fill(small, SMALL)  # each round drains exactly what it filled
        return claim_ack(small_store, SMALL, claims["10k"])

    flat = interleaved(
        {"1M": lambda: claim_ack(big_store, SMALL, claims["1M"]), "10k": small_round}, ROUNDS
    )
    big_store.close()
    small_store.close()
    fill(small, SMALL_DRAIN)
    with Loopback() as url:
        small_rate, _ = child_drain(small, url, SMALL_DRAIN)
        big_rate, big_rss = child_drain(big, url, BIG - ROUNDS * SMALL)
    claim_ms = {name: statistics.median(seconds) * 1000 for name, seconds in claims.items()}

    with spooler.Spool(tmp / "memory.db", durability="normal") as spool:
        ours = bytes_per_event(lambda: spool.enqueue(EVENT))
    client = memory_sdk()
    theirs = bytes_per_event(lambda: track(client))
    return [
        at_least("5. claim+ack, 500/batch", flat["1M"], flat["10k"], "10k queued", 0.8, "ev/s"),
        at_most(
            "5. claim's own time, 500/batch",
            claim_ms["1M"],
            claim_ms["10k"],
            "10k queued",
            1.1,
            "ms/batch",
        ),
        at_least("5. drain to loopback", big_rate, small_rate, "100k queued", 0.8, "ev/s"),
        at_most("6. drain of a 1M backlog, peak RSS", big_rss, RSS_LIMIT_MB, "limit", 1.0, "MB"),
        Row(
            "6. memory kept per enqueue",
            f"{ours:.1f} B/event",
            f"analytics-python track: {theirs:.0f} B/event",
            ours / theirs,
            "~0 B/event",
            ours < 1,
        ),
    ]


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
