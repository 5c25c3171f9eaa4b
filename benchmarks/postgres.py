"""The PostgreSQL store, on a server this script starts (initdb + pg_ctl, fsync on, a Unix
socket, its data beside the checkout or elsewhere on its disk; as the tests do, see
tests/pg_server.py):

- target 8: durable enqueue from 8 producer processes (``Spool.enqueue``, one event a
  call) against raw psycopg single-row inserts from 8 connections (one process each,
  autocommit: one commit per insert);
- target 9: a drain of a backlog to a loopback receiver against a raw loop on the same
  server: claim a batch with ``FOR UPDATE SKIP LOCKED``, post it, delete it.

For context: spooler's schema without spooler, raw psycopg sending the statement
``Spool.enqueue`` sends from 8 connections, which against the raw inserts shows what
the schema costs (a row three times as wide, two more indexes, the check of the limits'
switch); and what limits cost, raw inserts that also add to one counter row (every
producer queues behind its lock) and to one of 16 counter rows (what the spool does).

    python benchmarks/postgres.py             # needs: pip install -e '.[bench]'
    SPOOLER_BENCH_SMOKE=1 python benchmarks/postgres.py   # a short run that only shows it works
    python benchmarks/postgres.py --enqueue --rounds 9   # target 8 alone, 9 rounds
"""

from __future__ import annotations

import multiprocessing
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from common import EVENT, SMOKE, Row, at_least, context, interleaved, report, sized
from loopback import Loopback

import spooler
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.events import encode_event, new_event_ids
from spooler.store import open_store
from spooler.store.postgres.producers import _ONE_EVENT_UNCOUNTED

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from pg_server import PostgresServer  # the tests' own harness

PROCESSES = 8
ENQUEUE_ONLY = "--enqueue" in sys.argv  # target 8 alone
PER_PROCESS = sized(500, smoke=20)  # enqueues per process per round
BACKLOG = sized(50_000, smoke=1_000)
ROUNDS = sized(3, smoke=1)
if "--rounds" in sys.argv:
    ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1])
SCHEMA = "bench"
SHARDS = 16

RAW_TABLE = (
    "CREATE TABLE IF NOT EXISTS raw_q (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " event_id text NOT NULL, body text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS counter (shard int PRIMARY KEY, n bigint NOT NULL);"
    "INSERT INTO counter SELECT s, 0 FROM generate_series(0, 15) s ON CONFLICT DO NOTHING"
)
RAW_INSERTS = {
    "plain": "INSERT INTO raw_q (event_id, body) VALUES (%s, %s)",
    "one counter": "WITH i AS (INSERT INTO raw_q (event_id, body) VALUES (%s, %s))"
    " UPDATE counter SET n = n + 1 WHERE shard = 0",
    "16 counters": "WITH i AS (INSERT INTO raw_q (event_id, body) VALUES (%s, %s))"
    f" UPDATE counter SET n = n + 1 WHERE shard = mod(pg_backend_pid(), {SHARDS})",
}
# What Spool.enqueue sends for one event on a spool without limits, in psycopg's style.
SPOOLER_INSERT = re.sub(r"\$\d", "%s", _ONE_EVENT_UNCOUNTED[1].replace("{s}", SCHEMA))


def in_processes(work: Callable[[str, int, Any], None], url: str) -> float:
    """Events per second of ``work(url, count, barrier)`` run at once in PROCESSES
    processes: from the moment all of them are connected and waiting on ``barrier``
    until the last one is done and waits on it again (not until the processes have
    ended: the teardown of an interpreter is neither side's enqueue)."""
    barrier = multiprocessing.Barrier(PROCESSES + 1)
    processes = [
        multiprocessing.Process(target=work, args=(url, PER_PROCESS, barrier))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    began = time.perf_counter()
    barrier.wait()
    elapsed = time.perf_counter() - began
    for process in processes:
        process.join()
        assert process.exitcode == 0
    return PROCESSES * PER_PROCESS / elapsed


def spooler_enqueue(url: str, count: int, barrier: Any) -> None:
    with spooler.Spool(url) as spool:
        spool.enqueue(EVENT)  # connected and prepared, as a long-lived producer is
        barrier.wait()
        for _ in range(count):
            spool.enqueue(EVENT)
        barrier.wait()


def raw_insert(statement: str, *, destination: bool = False) -> Callable[[str, int, Any], None]:
    """Single-row inserts of ``statement``, as a competent engineer writes them: an
    autocommit connection per process, the statement prepared on the server."""

    def row() -> tuple[str, ...]:
        body = encode_event(EVENT)
        return (str(uuid.uuid4()), "default", body) if destination else (str(uuid.uuid4()), body)

    def work(url: str, count: int, barrier: Any) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement, row(), prepare=True)  # before the clock, as spooler's
            barrier.wait()
            for _ in range(count):
                conn.execute(statement, row())
            barrier.wait()

    return work


def spooler_drain(url: str, loopback: str) -> float:
    with spooler.Spool(url) as spool:
        spool.enqueue_many([EVENT] * BACKLOG)
    # As `spooler drain` opens it: its own connections, commits that do not wait for disk.
    store = open_store(url, durability="normal")
    config = build_drain_config({}, destination_flags={"url": loopback})
    began = time.perf_counter()
    report = Drain(store, config).run(Mode.UNTIL_EMPTY)
    elapsed = time.perf_counter() - began
    store.close()
    assert report.delivered == BACKLOG, report
    return BACKLOG / elapsed


def raw_skip_locked(url: str, loopback: str, batch_size: int) -> float:
    """Claim a batch (``UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING``), post it,
    delete it; commits do not wait for the disk, as the drain's do not."""
    text = encode_event(EVENT)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("ALTER TABLE raw_q ADD COLUMN IF NOT EXISTS leased_until float8")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO raw_q (event_id, body) VALUES (%s, %s)",
                [(i, text) for i in new_event_ids(BACKLOG)],
            )
        with httpx.Client() as client:
            began = time.perf_counter()
            while batch := conn.execute(
                "UPDATE raw_q SET leased_until = extract(epoch FROM now()) + 60 WHERE id IN"
                " (SELECT id FROM raw_q ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, body",
                (batch_size,),
            ).fetchall():
                body = "[" + ",".join(text for _, text in batch) + "]"
                client.post(
                    loopback, content=body.encode(), headers={"Content-Type": "application/json"}
                ).raise_for_status()
                conn.execute("DELETE FROM raw_q WHERE id = ANY(%s)", ([i for i, _ in batch],))
            return BACKLOG / (time.perf_counter() - began)


def measure(server: PostgresServer) -> list[Row]:
    url = server.url(SCHEMA)
    raw_url = server.admin_url()
    with psycopg.connect(raw_url, autocommit=True) as conn:
        conn.execute(RAW_TABLE)
    open_store(url).close()  # the schema exists before the producers start
    enqueue = interleaved(
        {
            "spooler": lambda: in_processes(spooler_enqueue, url),
            "spooler's statement": lambda: in_processes(
                raw_insert(SPOOLER_INSERT, destination=True), raw_url
            ),
            **{
                name: lambda statement=statement: in_processes(raw_insert(statement), raw_url)
                for name, statement in RAW_INSERTS.items()
            },
        },
        ROUNDS,
    )
    enqueue_target = f"8. PostgreSQL: durable enqueue, {PROCESSES} processes"
    rows = [
        at_least(
            enqueue_target,
            enqueue["spooler"],
            enqueue["plain"],
            f"raw psycopg single-row inserts, {PROCESSES} connections",
            1.0,
            "ev/s",
        ),
        context(
            f"8. spooler's statement from raw psycopg, {PROCESSES} connections"
            " (its schema, none of its Python)",
            enqueue["spooler's statement"],
            enqueue["plain"],
            f"raw psycopg single-row inserts, {PROCESSES} connections",
            "ev/s",
        ),
        context(
            enqueue_target,
            enqueue["16 counters"],
            enqueue["one counter"],
            "raw inserts + 16 counter rows vs + 1 counter row",
            "ev/s",
        ),
    ]
    if ENQUEUE_ONLY:
        return rows
    batch_size = (
        build_drain_config({}, destination_flags={"url": "http://x"})
        .destinations["default"]
        .batch_size
    )
    with psycopg.connect(raw_url, autocommit=True) as conn:
        conn.execute("TRUNCATE raw_q")
    with Loopback() as loopback:
        drain = interleaved(
            {
                "spooler": lambda: spooler_drain(server.url(), loopback),  # a fresh schema
                "raw": lambda: raw_skip_locked(raw_url, loopback, batch_size),
            },
            ROUNDS,
        )
    drain_target = f"9. PostgreSQL: drain {BACKLOG // 1000}k to loopback, defaults"
    return [
        *rows,
        at_least(
            drain_target,
            drain["spooler"],
            drain["raw"],
            f"raw SKIP LOCKED claim, post, delete, {batch_size}/batch",
            0.5,
            "ev/s",
        ),
    ]


if __name__ == "__main__":
    # The cluster on the checkout's disk (not a tmpfs in /tmp), for real fsyncs; a smoke
    # run's figures mean nothing, so it takes the temporary folder. Where the server's
    # user (postgres, when run as root) cannot reach the checkout (a folder of mode 0700
    # on the way), PostgresServer takes an open folder on the same disk, or says what
    # to do.
    parent = None if SMOKE else str(Path(__file__).parent)
    started = PostgresServer(fsync=True, parent=parent)
    if parent is not None and Path(started.folder).parent != Path(parent):
        print(
            f"the cluster is in {started.folder}: on the checkout's disk, where the user"
            " postgres can reach it (it cannot reach the checkout)",
            file=sys.stderr,
        )
    try:
        report(measure(started))
    finally:
        started.close()
