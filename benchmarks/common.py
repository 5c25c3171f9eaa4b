"""What every benchmark shares: the event, timing helpers and the result table.

Each benchmark script measures spooler and its baselines in the same run and prints
markdown rows; ``python benchmarks/run_all.py`` (``make bench``) prints them all as one
table. Rates on a shared VM wander by tens of percent between runs, so contenders are
measured in interleaved rounds and compared by their medians.

``SPOOLER_BENCH_SMOKE=1`` runs every script at tiny sizes (a backlog of a few thousand, one
round, fractions of a second of load): each still takes every step and prints every
row, so that tests/test_benchmarks.py can run them all in seconds and catch a broken
benchmark before ``make bench`` does. Its figures mean nothing. Each script gives its
sizes through ``sized``, the real one first.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import segment.analytics as segment_analytics

import spooler

SMOKE = os.environ.get("SPOOLER_BENCH_SMOKE") == "1"
Size = TypeVar("Size", int, float)

EVENT = {"event": "page_view", "userId": "u_12345", "properties": {"path": "/pricing", "n": 1}}
HEADER = "| target | spooler | baseline | ratio | goal | met |"
RULE = "|---|---|---|---:|---|---|"


def sized(real: Size, *, smoke: Size) -> Size:
    """``real`` (a count, a number of rounds, seconds), or ``smoke`` in a smoke run."""
    return smoke if SMOKE else real


@dataclass(frozen=True)
class Row:
    """One line of the results table: what we measured against which baseline."""

    target: str
    ours: str
    baseline: str
    ratio: float
    goal: str
    met: bool

    def markdown(self) -> str:
        return (
            f"| {self.target} | {self.ours} | {self.baseline} | {self.ratio:.2f}x | "
            f"{self.goal} | {'-' if self.goal == '-' else 'yes' if self.met else '**no**'} |"
        )


def at_least(target: str, ours: float, base: float, name: str, goal: float, unit: str) -> Row:
    """A row whose ratio ``ours / base`` must reach ``goal``."""
    return _ratio_row(target, ours, base, name, unit, f">= {goal}x", ours / base >= goal, ",.0f")


def at_most(target: str, ours: float, base: float, name: str, goal: float, unit: str) -> Row:
    """A row whose ratio ``ours / base`` must stay at or under ``goal``."""
    return _ratio_row(target, ours, base, name, unit, f"<= {goal}x", ours / base <= goal, ",.1f")


def _ratio_row(
    target: str, ours: float, base: float, name: str, unit: str, goal: str, met: bool, form: str
) -> Row:
    return Row(
        target, f"{ours:{form}} {unit}", f"{name}: {base:{form}} {unit}", ours / base, goal, met
    )


def context(
    target: str, ours: float, base: float, name: str, unit: str, *, form: str = ",.0f"
) -> Row:
    """A row that puts a number in perspective; there is no goal to meet."""
    return Row(
        target, f"{ours:{form}} {unit}", f"{name}: {base:{form}} {unit}", ours / base, "-", True
    )


def memory_sdk() -> segment_analytics.Client:
    """Segment's analytics-python as an in-memory SDK: ``track()`` builds the message and
    puts it on the client's in-memory queue. No consumer thread is started, so nothing
    is sent and the queue holds every event, as it would while the API is down."""
    client = segment_analytics.Client("key", max_queue_size=10**8, thread=0)
    client.consumers = []  # what join() at exit expects when there are none
    return client


def track(client: segment_analytics.Client) -> None:
    """One in-memory ``track()`` of the benchmark event."""
    client.track(user_id="u_12345", event="page_view", properties=EVENT["properties"])


def raw_queue(path: Path) -> sqlite3.Connection:
    """A connection to the raw sqlite3 floor's table, created if missing: a plain queue
    table without a secondary index, WAL, synchronous=FULL, no implicit transactions.
    ``raw_durable_insert`` adds one event to it."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, eid TEXT, body TEXT)")
    return db


RAW_INSERT = "INSERT INTO q (eid, body) VALUES (?, ?)"


def raw_durable_insert(db: sqlite3.Connection, body: str) -> None:
    """One event into the raw floor's table, in a transaction and commit of its own."""
    db.execute("BEGIN IMMEDIATE")
    db.execute(RAW_INSERT, (str(uuid.uuid4()), body))
    db.execute("COMMIT")


def raw_spool(path: Path) -> sqlite3.Connection:
    """A raw sqlite3 connection to a new file with spooler's own schema (the claim index,
    the ``totals`` row, not kept), WAL, synchronous=FULL. ``raw_spool_insert`` issues the
    statements ``Spool.enqueue`` issues, with none of spooler's Python around them: the
    floor of any code on this schema."""
    spooler.Spool(path).close()
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA synchronous=FULL")
    return db


def raw_spool_insert(db: sqlite3.Connection, body: str) -> None:
    """One event into a ``raw_spool``, as ``Spool.enqueue`` writes it: the queue row (and
    so its claim index entry), and the totals row if writers keep it (they do not: no
    limit was checked on this spool), in one transaction."""
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO queue (event_id, destination, body, created_at, queued_at, due_at)"
        " VALUES (?, 'default', ?, ?, ?, ?)",
        (str(uuid.uuid4()), body, now, now, now),
    )
    db.execute(
        "UPDATE totals SET events = events + 1, bytes = bytes + ?"
        " WHERE EXISTS (SELECT 1 FROM meta WHERE key = 'totals')",
        (len(body),),
    )
    db.execute("COMMIT")


def rate(count: int, work: Callable[[], object]) -> float:
    """Operations per second of ``work``, which performs ``count`` operations."""
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each contender once per round, alternating, and return each one's median rate."""
    seen: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, measure in contenders.items():
            seen[name].append(measure())
    return {name: statistics.median(rates) for name, rates in seen.items()}


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A scratch directory on the same disk as the checkout (not a tmpfs in /tmp)."""
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        yield Path(tmp)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a fixed one may be taken, by another
    run of the benchmarks for one)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    """Return once something listens on 127.0.0.1:``port``; raise if ``process`` exits
    first or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


def environment() -> str:
    """One line naming what the numbers were measured with."""
    return (
        f"spooler {spooler.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def report(rows: list[Row]) -> None:
    """Print rows as a markdown table (with its header when run on its own)."""
    if os.environ.get("SPOOLER_BENCH_ROWS_ONLY") != "1":
        print(f"# {environment()}\n\n{HEADER}\n{RULE}")
    for row in rows:
        print(row.markdown())
    sys.stdout.flush()
