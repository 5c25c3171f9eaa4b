"""Scenarios 14 and 15 on a PostgreSQL spool: power cuts with the server's data
directory on a LazyFS mount (tests/reliability/lazyfs.py).

The server (tests/pg_server.py) runs with ``fsync`` on and ``full_page_writes`` at its
default (on); its data directory lies on the mount, its socket and log off it. Its WAL
segments are 1 MB instead of 16, so that the rounds cross from one to the next.
Producers enqueue through ``Spool("postgresql://...")`` and acknowledge each event, by
writing its id to a file off the mount, only once ``enqueue`` returned. A power cut is
a SIGKILL of the postmaster and every process of the server, then of the producer,
then the loss of every byte not fsynced. The server then starts again on the same data
directory and recovers from its WAL (its log must say so, every round). At
``synchronous_commit = on`` and ``durability="full"`` every acknowledged event must be
in the queue, and the queue's table and indexes must pass amcheck; with
``synchronous_commit = off`` on the server, or ``durability="normal"`` (which turns it
off for each of its transactions), some must be missing, or the harness could not see
a loss here at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lazyfs import LazyFS, mounted
from pg_server import PostgresServer, adopting_orphans, missing_postgres
from test_power_loss import CUT, SCALE, acknowledged, kill, start_producer, wait_for_acks

# Power cuts per scenario in `make test` (about 40 s in all on 2 cores), multiplied by
# SPOOLER_POWER_LOSS_SCALE for the campaign before a release.
CUTS = 5 * SCALE
LOSSY_CUTS = 4 * SCALE
# The cache must hold everything written or read between two cuts: the first round
# also holds the new cluster (about 40 MB).
CACHE = "256mb"
SCHEMA = "spool"
RECOVERED = "database system was not properly shut down; automatic recovery in progress"

StartServer = Callable[..., PostgresServer]


@pytest.fixture
def disk() -> Iterator[LazyFS]:
    """A LazyFS mount with room in its cache for a PostgreSQL cluster."""
    with mounted(cache=CACHE) as fs:
        yield fs


@pytest.fixture
def start_server(disk: LazyFS) -> Iterator[StartServer]:
    """Start a PostgreSQL server (with these ``postgresql.conf`` settings) whose data
    directory is on ``disk``; killed and removed after the test."""
    why = missing_postgres()
    if why:
        pytest.skip(why)
    servers: list[PostgresServer] = []

    def start(**settings: str) -> PostgresServer:
        server = PostgresServer(
            fsync=True, data=str(disk.mnt / "data"), initdb=["--wal-segsize=1"], settings=settings
        )
        servers.append(server)
        return server

    with adopting_orphans():
        try:
            yield start
        finally:
            for server in servers:
                try:
                    server.kill()
                finally:
                    server.close()


def version(server: PostgresServer) -> str:
    """The server's version, as in "15.18"."""
    return str(server.sql("SHOW server_version")[0][0]).split()[0]


def queued_ids(server: PostgresServer) -> set[str]:
    """The ids of the events in the spool's queue, whose table and indexes amcheck must
    find intact (none if a cut took the spool's schema too)."""
    if server.sql(f"SELECT to_regclass('{SCHEMA}.queue')") == [(None,)]:
        return set()
    server.sql("CREATE EXTENSION IF NOT EXISTS amcheck")
    assert server.sql(f"SELECT * FROM verify_heapam('{SCHEMA}.queue')") == []
    # Every index, with every row of the table looked up in it (heapallindexed);
    # bt_index_check raises on damage.
    checked = server.sql(
        "SELECT bt_index_check(indexrelid, true) FROM pg_index"
        f" WHERE indrelid = '{SCHEMA}.queue'::regclass"
    )
    assert checked
    return {row[0] for row in server.sql(f"SELECT event_id FROM {SCHEMA}.queue")}


@dataclass
class Rounds:
    """The outcome of producers cut off by power cuts, round after round."""

    acknowledged: int
    lost: int
    recoveries: int  # how many times the server's log says it recovered from a crash
    wal_segments: int  # in how many WAL segments the restarted server went on writing


def cut_producers(
    disk: LazyFS,
    server: PostgresServer,
    mode: str,
    durability: str,
    rounds: int,
    rng: random.Random,
    *,
    events: tuple[int, int],
) -> Rounds:
    """Run ``rounds`` producers on one spool of ``server``, each ended by a power cut
    once it has acknowledged a random number of events more, within ``events``."""
    url = server.url(SCHEMA)
    acks = disk.scratch / "acks"
    lost: set[str] = set()
    segments = []
    for round_number in range(rounds):
        before = len(acknowledged(acks))
        target = before + rng.randint(*events)
        producer = start_producer(mode, url, acks, durability, seed=round_number)
        reached = wait_for_acks(acks, target)
        # The server first: once it is gone, nothing more is committed or acknowledged.
        server.kill()
        kill(producer)
        assert reached, f"the producer acknowledged {len(acknowledged(acks)) - before} events"
        disk.power_cut()
        server.start()
        lost |= set(acknowledged(acks)) - queued_ids(server)
        segments.append(server.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")[0][0])
    recoveries = Path(server.log).read_text().count(RECOVERED)
    return Rounds(len(acknowledged(acks)), len(lost), recoveries, len(set(segments)))


CUT_SERVER = (
    CUT.format("the server's processes and the producer")
    + "; the server recovers from its data directory"
)


@pytest.mark.parametrize(
    ("mode", "calls"),
    [("single", "enqueue"), ("threads", "4 threads"), ("many", "enqueue_many")],
)
def test_a_power_cut_loses_no_acknowledged_event_at_synchronous_commit_on(
    disk: LazyFS, start_server: StartServer, scenario, mode: str, calls: str
) -> None:
    # Given producers of small and big events on a server at its default synchronous_commit
    server = start_server()
    row = scenario(
        f"14 (postgres: {calls})",
        f"enqueue on PostgreSQL {version(server)} at synchronous_commit=on,"
        f" durability=full: {calls}",
        CUT_SERVER,
    )
    # When each is cut off by a power cut, and the server recovers on what the disk holds
    result = cut_producers(disk, server, mode, "full", CUTS, random.Random(14), events=(30, 150))
    row.rounds, row.at_risk, row.lost = CUTS, result.acknowledged, result.lost
    # Then every event acknowledged before a cut is in the queue after it
    assert result.lost == 0
    # And each round went through crash recovery, and the rounds crossed WAL segments
    assert result.recoveries == CUTS
    assert result.wal_segments > 1


@pytest.mark.parametrize(
    ("label", "settings", "durability"),
    [
        ("synchronous_commit=off", {"synchronous_commit": "off"}, "full"),
        ('durability="normal"', {}, "normal"),
    ],
)
def test_a_power_cut_without_synchronous_commit_loses_acknowledged_events(
    disk: LazyFS,
    start_server: StartServer,
    scenario,
    label: str,
    settings: dict[str, str],
    durability: str,
) -> None:
    server = start_server(**settings)
    row = scenario(
        f"15 (postgres: {label})",
        f"enqueue on PostgreSQL {version(server)} with {label} (losses expected: they show"
        " that the harness sees one)",
        CUT_SERVER,
    )
    row.expected_loss = True
    result = cut_producers(
        disk,
        server,
        "single",
        durability,
        LOSSY_CUTS,
        random.Random(15),
        events=(500, 2000),  # longer than the WAL writer's 200 ms between flushes
    )
    row.rounds, row.at_risk, row.lost = LOSSY_CUTS, result.acknowledged, result.lost
    # The commits acknowledged since the WAL writer's last flush are lost, the earlier
    # ones are not
    assert 0 < result.lost < result.acknowledged
    assert result.recoveries == LOSSY_CUTS
