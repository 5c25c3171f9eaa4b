"""Scenarios 14-18: power cuts, on a LazyFS mount (tests/reliability/lazyfs.py).

A producer acknowledges each event, by writing its id to a file off the mount, only
once ``enqueue`` returned. A power cut is a SIGKILL of every process on the mount and
then the loss of every byte not fsynced. The spool is then read from a copy of what
the disk holds, as the next boot would find it. At ``durability="full"`` every
acknowledged event must be there, and ``integrity_check`` ok; at ``"normal"`` some
must be missing, or the harness could not see a loss at all.

``spooler serve`` is cut off the same way, mid-load (14 and 15 (serve)): a real relay
process with its spool on the mount, eight keep-alive HTTP clients in threads of the
test (serve_clients.py), each remembering the events of every request answered 200;
the power goes once a random number of events were answered. At ``"full"`` every
event answered 200 must be in the spool after the cut; at ``"normal"`` some must be
missing. With a ``spooler drain`` beside the relay (14 (serve and drain)), every event
answered 200 must be delivered, or still queued, after the cut.

Each scenario runs a few rounds in ``make test``; ``SPOOLER_POWER_LOSS_SCALE=10``
runs ten times as many (the campaign before a release). The same cuts on a PostgreSQL
spool, the server's data directory on LazyFS, are in test_power_loss_postgres.py.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.cli import SPOOLER, drain_cli, drain_command
from helpers.processes import wait_until
from lazyfs import LazyFS, mounted
from relay import relay, toml_value
from serve_clients import API_KEYS, GENERIC, Clients

from spooler.testing import Receiver

# Power cuts per scenario in `make test` (about 30 s in all on 2 cores); the
# campaign before a release multiplies them: SPOOLER_POWER_LOSS_SCALE=10 make reliability
SCALE = int(os.environ.get("SPOOLER_POWER_LOSS_SCALE", "1"))
PRODUCER_CUTS = 10 * SCALE
DRAIN_CUTS = 4 * SCALE
SERVE_CUTS = 6 * SCALE
SERVE_DRAIN_CUTS = 4 * SCALE

# argv: mode (single, threads, many or once), spool path, ack file, durability, seed.
# Small events and big ones (up to 40 KB, ten pages of overflow each), so that
# checkpoints copy the log into the file and the log restarts from its beginning. Their
# text is random, so that a store that compresses (PostgreSQL) writes all of it too.
#
# While a file "<ack file>.hold" exists, a producer makes no call: it waits between calls,
# with none of its writes under way, and says so by creating "<ack file>.held".
PRODUCER = """
import os, random, sys, threading, time
from spooler import Spool
mode, path, acks, durability, seed = sys.argv[1:]
spool = Spool(path, durability=durability)
out = open(acks, "a", buffering=1)
lock = threading.Lock()

def wait_while_held():
    while os.path.exists(acks + ".hold"):
        open(acks + ".held", "a").close()
        time.sleep(0.005)

def event(rng):
    return {"pad": rng.randbytes(rng.choice((10, 10, 200, 3000, 40000)) // 2).hex()}

def produce(worker):
    rng = random.Random(int(seed) * 10 + worker)
    while True:
        wait_while_held()
        if mode == "many":
            ids = spool.enqueue_many([event(rng) for _ in range(rng.randint(2, 20))])
        else:
            ids = [spool.enqueue(event(rng))]
        with lock:
            out.write("".join(i + "\\n" for i in ids))
        if mode == "once":
            return

for worker in range(4 if mode == "threads" else 1):
    threading.Thread(target=produce, args=(worker,), daemon=True).start()
threading.Event().wait()
"""


@pytest.fixture
def lazyfs() -> Iterator[LazyFS]:
    """A LazyFS mount, unmounted and removed after the test."""
    with mounted() as fs:
        yield fs


def acknowledged(acks: Path) -> list[str]:
    """The ids in the ack file (a producer killed mid-line leaves a partial one)."""
    if not acks.exists():
        return []
    return [line for line in acks.read_text().splitlines() if len(line) == 36]


def wait_for_acks(acks: Path, count: int) -> bool:
    """Wait until the ack file holds ``count`` ids; returns whether it did in time."""
    return wait_until(lambda: len(acknowledged(acks)) >= count, timeout=60)


def start_producer(
    mode: str, spool: Path | str, acks: Path, durability: str, seed: int
) -> subprocess.Popen:
    """Start a producer of ``mode`` on ``spool`` (a file, or a PostgreSQL URL)."""
    args = [mode, str(spool), str(acks), durability, str(seed)]
    return subprocess.Popen([sys.executable, "-c", PRODUCER, *args], stdin=subprocess.DEVNULL)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class Boot:
    """What the next boot finds on the disk."""

    ids: set[str]
    numbers: set[str]  # the field "n" of the events that have one (serve_clients.py)
    integrity: list[tuple[str]]
    body_bytes: int  # of every event in the queue
    log_bytes: int  # the size of the write-ahead log


def boot(fs: LazyFS, db: Path) -> Boot:
    """Read the spool as the next boot finds it: from a copy of the spool file and its
    log as they are on the disk (SQLite rebuilds the shared memory file after a crash)."""
    copy = fs.scratch / "boot"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    wal = Path(f"{fs.disk(db)}-wal")
    shutil.copy(fs.disk(db), copy / "spool.db")
    log_bytes = wal.stat().st_size if wal.exists() else 0
    if log_bytes:
        shutil.copy(wal, copy / "spool.db-wal")
    conn = sqlite3.connect(copy / "spool.db")
    try:
        # At durability="normal" a cut may take the schema too: the spool is then empty.
        has_queue = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'queue'").fetchone()
        rows = (
            conn.execute(
                "SELECT event_id, length(CAST(body AS BLOB)), json_extract(body, '$.n') FROM queue"
            ).fetchall()
            if has_queue
            else []
        )
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return Boot(
        {row[0] for row in rows},
        {row[2] for row in rows if row[2] is not None},
        integrity,
        sum(row[1] for row in rows),
        log_bytes,
    )


@dataclass
class Rounds:
    """The outcome of producers cut off by power cuts, round after round."""

    acknowledged: int
    lost: int
    largest_log: int  # bytes: the write-ahead log's largest size at a power cut
    last: Boot


def cut_producers(
    fs: LazyFS,
    db: Path,
    mode: str,
    durability: str,
    rounds: int,
    rng: random.Random,
    *,
    events: tuple[int, int] = (30, 150),
) -> Rounds:
    """Run ``rounds`` producers on one spool, each ended by a power cut once it has
    acknowledged a random number of events more, within ``events``."""
    acks = fs.scratch / "acks"
    lost: set[str] = set()
    largest_log = 0
    for round_number in range(rounds):
        before = len(acknowledged(acks))
        target = before + rng.randint(*events)
        producer = start_producer(mode, db, acks, durability, seed=round_number)
        reached = wait_for_acks(acks, target)
        kill(producer)
        assert reached, f"the producer acknowledged {len(acknowledged(acks)) - before} events"
        fs.power_cut()
        found = boot(fs, db)
        assert found.integrity == [("ok",)]
        lost |= set(acknowledged(acks)) - found.ids
        largest_log = max(largest_log, found.log_bytes)
    return Rounds(len(acknowledged(acks)), len(lost), largest_log, found)


CUT = "kill -9 {}, then LazyFS drops every byte not fsynced"


@pytest.mark.parametrize(
    ("mode", "calls"),
    [("single", "enqueue"), ("threads", "4 threads, group commit"), ("many", "enqueue_many")],
)
def test_a_power_cut_loses_no_acknowledged_event_at_full_durability(
    lazyfs: LazyFS, scenario, mode: str, calls: str
) -> None:
    row = scenario(
        f"14 ({calls})", f"enqueue at durability=full: {calls}", CUT.format("the producer")
    )
    db = lazyfs.mnt / "spool.db"
    # Given producers of small and big events, each cut off by a power cut
    result = cut_producers(lazyfs, db, mode, "full", PRODUCER_CUTS, random.Random(14))
    row.rounds, row.at_risk, row.lost = PRODUCER_CUTS, result.acknowledged, result.lost
    # Then every event acknowledged before a cut is on the disk after it
    assert result.lost == 0
    # And the rounds went through checkpoints (only they grow the spool file) and through
    # restarts of the log (it never held as much as was written to it)
    assert os.path.getsize(lazyfs.disk(db)) > 4 * 2**20
    assert result.largest_log < result.last.body_bytes


def test_a_power_cut_at_normal_durability_loses_acknowledged_events(
    lazyfs: LazyFS, scenario
) -> None:
    row = scenario(
        "15",
        "enqueue at durability=normal (losses expected: they show that the harness sees one)",
        CUT.format("the producer"),
    )
    row.expected_loss = True
    result = cut_producers(
        lazyfs,
        lazyfs.mnt / "spool.db",
        "single",
        "normal",
        PRODUCER_CUTS,
        random.Random(15),
        events=(200, 1500),  # enough for checkpoints within a round
    )
    row.rounds, row.at_risk, row.lost = PRODUCER_CUTS, result.acknowledged, result.lost
    # normal commits reach the disk at checkpoints only: the last ones before a cut are
    # lost, and those a checkpoint wrote are not
    assert 0 < result.lost < result.acknowledged


# Fault commands, one per round in turn; {wal} is the log's path on the disk. torn-op
# cuts the next write to the log into parts and lets only some reach the disk; torn-seq
# lets only some writes of the next run (a commit's frames) reach it. Both then kill
# LazyFS, as a power cut at that moment would.
TORN = (
    "lazyfs::torn-op::file={wal}::parts=4::persist=1,3",
    "lazyfs::torn-seq::op=write::file={wal}::persist=2,3",
    "lazyfs::torn-op::file={wal}::parts=3::persist=2",
    "lazyfs::torn-seq::op=write::file={wal}::persist=1",
)


def test_torn_writes_on_the_log_lose_no_acknowledged_event(lazyfs: LazyFS, scenario) -> None:
    rounds = 2 * len(TORN) * SCALE
    row = scenario(
        "16",
        "enqueue at durability=full, a write of the WAL torn by the cut",
        "LazyFS torn-op / torn-seq on spool.db-wal: only some parts or writes of a commit"
        " reach the disk, then LazyFS dies",
    )
    db = lazyfs.mnt / "spool.db"
    acks = lazyfs.scratch / "acks"
    lost: set[str] = set()
    for round_number in range(rounds):
        target = len(acknowledged(acks)) + 20
        producer = start_producer("single", db, acks, "full", seed=round_number)
        assert wait_for_acks(acks, target)
        # When a write of the log is torn by a power cut: armed while the producer waits
        # between two calls, so that the fault's run of writes is one whole commit's (armed
        # mid-commit, a torn-seq whose run ended early at the commit's fsync never fired)
        hold, held = Path(f"{acks}.hold"), Path(f"{acks}.held")
        hold.touch()
        held.unlink(missing_ok=True)
        assert wait_until(held.exists, timeout=60), "the producer did not stop between calls"
        lazyfs.arm(TORN[round_number % len(TORN)].format(wal=f"{lazyfs.disk(db)}-wal"))
        hold.unlink()
        lazyfs.wait_until_killed()
        kill(producer)
        # Then the next boot finds every acknowledged event, and an intact spool
        found = boot(lazyfs, db)
        assert found.integrity == [("ok",)]
        lost |= set(acknowledged(acks)) - found.ids
        lazyfs.reboot()
    row.rounds, row.at_risk, row.lost = rounds, len(acknowledged(acks)), len(lost)
    assert row.lost == 0


def enqueue_with_cli(db: Path, count: int) -> list[str]:
    lines = "".join(f'{{"n":{n}}}\n' for n in range(count))
    result = subprocess.run(
        [*SPOOLER, "enqueue", "--db", str(db)],
        input=lines,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def cut_drain(fs: LazyFS, db: Path, receiver: Receiver, concurrency: int, requests: int) -> None:
    """Start a drain of ``db``, and cut the power once ``receiver`` got ``requests`` requests."""
    drain = subprocess.Popen(
        drain_command(
            db,
            receiver.url,
            *("--batch-size", "100", "--concurrency", str(concurrency)),
            # A timeout well above any answer's time, even on a loaded machine: a request
            # timed out and sent again would be a duplicate of another kind.
            *("--lease", "5", "--timeout", "4"),
        )
    )
    receiver.wait_for(lambda r: len(r.requests) >= requests or drain.poll() is not None, timeout=60)
    assert drain.poll() is None, "the drain ended before the power cut"
    kill(drain)
    assert len(receiver.requests) >= requests
    fs.power_cut()


def duplicated_out_of_turn(batches: list[list[str]], twice: set[str]) -> int:
    """How many of ``batches`` (in the order the receiver got them) arrived again although
    a later one did not.

    A drain's worker sends a batch, and commits its ack once answered, before it sends
    another: at the moment the log was last synced, each worker had at most one batch
    the receiver had got and the spool not acknowledged. A batch kept (its ack synced)
    was got before that moment, and so was every batch before it; of those, only the ones
    in flight at that moment arrive again, at most one per worker other than the kept
    batch's (its own earlier ones were acknowledged before it was sent). So with c
    workers this is at most c - 1; with one worker the duplicates are exactly the last
    batches. How far back those c - 1 lie is not bounded: while one worker waits between
    an answer and its ack, the others may deliver any number of batches.
    """
    kept = [twice.isdisjoint(batch) for batch in batches]
    last_kept = max((i for i, each in enumerate(kept) if each), default=0)
    return kept[:last_kept].count(False)


def test_the_drain_duplicate_check_counts_batches_delivered_again_out_of_turn() -> None:
    batches = [["a"], ["b"], ["c"], ["d"], ["e"]]
    # Only the last batches (one worker), or none, or all of them (no sync since the start)
    assert duplicated_out_of_turn(batches, {"d", "e"}) == 0
    assert duplicated_out_of_turn(batches, set()) == 0
    assert duplicated_out_of_turn(batches, set("abcde")) == 0
    # An early batch in flight at the last sync, or three of them
    assert duplicated_out_of_turn(batches, {"a", "e"}) == 1
    assert duplicated_out_of_turn(batches, {"a", "b", "c"}) == 3


def test_a_power_cut_mid_drain_delivers_every_event_at_least_once(lazyfs: LazyFS, scenario) -> None:
    rounds = DRAIN_CUTS
    row = scenario(
        "17",
        "a drain delivering 20,000 events (concurrency 1 and 4)",
        CUT.format("the drain") + "; then a new drain delivers what is left",
    )
    rng = random.Random(17)
    delivered_twice = 0
    acknowledged_ids = 0
    for round_number in range(rounds):
        concurrency = (1, 4)[round_number % 2]
        # Given 20,000 events enqueued at full durability, and a drain delivering them
        db = lazyfs.mnt / f"drain{round_number}" / "spool.db"
        ids = enqueue_with_cli(db, 20_000)
        acknowledged_ids += len(ids)
        with Receiver() as receiver:
            # When the power is cut after a random number of requests
            cut_drain(lazyfs, db, receiver, concurrency, requests=rng.randint(20, 150))
            # in the order the receiver got them (it records a request once answered)
            answered = sorted(receiver.requests, key=lambda r: r.received_at)
            before = [[e["id"] for e in r.events] for r in answered if r.status == 200]
            # And a new drain delivers what the spool still holds
            recovered = drain_cli(db, receiver.url, "--batch-size", "100")
            assert recovered.returncode == 0, recovered.stderr
            everything = [e["id"] for e in receiver.delivered]
        first = [event_id for batch in before for event_id in batch]
        again = everything[len(first) :]
        # Then every event arrived, at most once from each drain
        assert set(ids) <= set(everything)
        assert max(Counter(first).values()) == 1 and max(Counter(again).values()) == 1
        # And what arrived twice is whole batches: those the first drain acknowledged after
        # the log was last synced (a lost ack loses every commit after it too,
        # docs/guarantees.md) and those it had in flight, in the receiver's order all the
        # last ones but for at most concurrency - 1 (see duplicated_out_of_turn)
        twice = set(first) & set(again)
        assert twice == {e for batch in before if twice.intersection(batch) for e in batch}
        assert duplicated_out_of_turn(before, twice) <= concurrency - 1
        delivered_twice += len(twice)
    row.rounds, row.at_risk, row.duplicated = rounds, acknowledged_ids, delivered_twice


def test_the_first_event_of_a_spool_whose_folders_did_not_exist_survives_a_power_cut(
    lazyfs: LazyFS, scenario
) -> None:
    rounds = PRODUCER_CUTS
    row = scenario(
        "18",
        "the first enqueue into a spool whose folders did not exist",
        CUT.format("the producer once it acknowledged its one event"),
    )
    lost = 0
    for round_number in range(rounds):
        db = lazyfs.mnt / f"new{round_number}" / "a" / "b" / "spool.db"
        acks = lazyfs.scratch / f"first{round_number}"
        producer = start_producer("once", db, acks, "full", seed=round_number)
        acknowledged_in_time = wait_for_acks(acks, 1)
        kill(producer)
        assert acknowledged_in_time
        lazyfs.power_cut()
        found = boot(lazyfs, db)
        assert found.integrity == [("ok",)]
        lost += len(set(acknowledged(acks)) - found.ids)
    row.rounds, row.at_risk, row.lost = rounds, rounds, lost
    assert lost == 0


# -- spooler serve ------------------------------------------------------------------------


def serve_config(path: Path, durability: str, receiver: Receiver | None = None) -> Path:
    """A config file for ``spooler serve``, and for a drain beside it: the spool's
    ``durability``, and with ``receiver``, the destination of each API the clients
    post to (serve_clients.py), each delivering there with its key."""
    lines = ["[spool]", f"durability = {toml_value(durability)}"]
    if receiver is not None:
        tables = {
            "amplitude": {"type": "amplitude", "url": f"{receiver.url}/2/httpapi"},
            "posthog": {"type": "posthog", "url": f"{receiver.url}/batch/"},
            "datalyr": {"type": "datalyr", "url": f"{receiver.url}/track"},
            GENERIC: {"type": "http", "url": f"{receiver.url}/{GENERIC}"},
        }
        for name, table in tables.items():
            lines.append(f"[destinations.{name}]")
            table["api_key"] = API_KEYS[name]
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ServeRounds:
    """The outcome of relays cut off by power cuts mid-load, round after round."""

    answered: int  # events in requests answered 200
    lost: int  # of those, neither in the spool after a cut nor delivered
    delivered: int  # of those, delivered (to a receiver, where a drain ran)
    largest_log: int  # bytes: the write-ahead log's largest size at a power cut
    last: Boot


def load_relay(
    db: Path, config: Path, events: int, seed: int, receiver: Receiver | None
) -> list[str]:
    """Start a relay on ``db`` (and, with ``receiver``, a drain of it there), load it with
    the clients of serve_clients.py, and SIGKILL both once it answered ``events`` events
    (and the receiver took a request); the ``n`` of every event answered 200."""
    with relay(db, "--config", str(config)) as running:
        drain = None
        if receiver is not None:
            drain_args = ["--db", str(db), "--config", str(config), "--poll-interval", "0.05"]
            drain = subprocess.Popen([*SPOOLER, "drain", *drain_args])
        taken_before = len(receiver.requests) if receiver is not None else 0
        with Clients(running.url, seed=seed) as clients:
            reached = wait_until(
                lambda: (
                    len(clients.answered()) >= events
                    and (receiver is None or len(receiver.requests) > taken_before)
                ),
                timeout=60,
            )
            # The power goes: every process on the mount killed at once (the clients
            # stop at their next request)
            on_the_mount = [p for p in (running.process, drain) if p is not None]
            for process in on_the_mount:
                os.kill(process.pid, signal.SIGKILL)
            for process in on_the_mount:
                process.wait()
        # Every request was answered 200 until then, none refused
        taken = len(receiver.requests) - taken_before if receiver is not None else 0
        assert reached, (
            f"in a minute, the relay answered {len(clients.answered())} events and the"
            f" receiver took {taken} requests (drain: {drain and drain.returncode})"
        )
        assert clients.refused() == []
        return clients.answered()


def cut_relays(
    fs: LazyFS,
    db: Path,
    config: Path,
    rounds: int,
    rng: random.Random,
    *,
    events: tuple[int, int],
    receiver: Receiver | None = None,
) -> ServeRounds:
    """Run ``rounds`` relays on one spool (``load_relay``), each ended by a power cut once
    it answered a random number of events, within ``events``."""
    answered: set[str] = set()
    lost: set[str] = set()
    delivered: set[str] = set()
    largest_log = 0
    for round_number in range(rounds):
        answered |= set(
            load_relay(db, config, rng.randint(*events), seed=round_number, receiver=receiver)
        )
        fs.power_cut()
        # Then the next boot finds every event answered 200 in the queue, or delivered
        found = boot(fs, db)
        assert found.integrity == [("ok",)]
        if receiver is not None:
            delivered = {e["n"] for e in receiver.delivered}
        lost |= answered - found.numbers - delivered
        largest_log = max(largest_log, found.log_bytes)
    return ServeRounds(len(answered), len(lost), len(answered & delivered), largest_log, found)


SERVE_CUT = "kill -9 {} mid-load, then LazyFS drops every byte not fsynced"
SERVE_LOAD = (
    "spooler serve at durability={}: 8 keep-alive clients, single events to /track and"
    " /v1/events/NAME, batches of 100 to /2/httpapi and /batch/"
)


def test_a_power_cut_loses_no_event_spooler_serve_answered_at_full_durability(
    lazyfs: LazyFS, scenario, tmp_path: Path
) -> None:
    rounds = SERVE_CUTS
    row = scenario("14 (serve)", SERVE_LOAD.format("full"), SERVE_CUT.format("the relay"))
    db = lazyfs.mnt / "spool.db"
    config = serve_config(tmp_path / "spooler.toml", "full")
    # Given a relay on a spool at durability="full", loaded by clients until a power cut
    result = cut_relays(lazyfs, db, config, rounds, random.Random(19), events=(500, 2500))
    row.rounds, row.at_risk, row.lost = rounds, result.answered, result.lost
    # Then every event answered 200 before a cut is on the disk after it
    assert result.lost == 0
    # And the rounds went through checkpoints and through restarts of the log
    assert os.path.getsize(lazyfs.disk(db)) > 4 * 2**20
    assert result.largest_log < result.last.body_bytes


def test_a_power_cut_loses_events_spooler_serve_answered_at_normal_durability(
    lazyfs: LazyFS, scenario, tmp_path: Path
) -> None:
    rounds = SERVE_CUTS
    row = scenario(
        "15 (serve)",
        SERVE_LOAD.format("normal") + " (losses expected: they show that the harness sees one)",
        SERVE_CUT.format("the relay"),
    )
    row.expected_loss = True
    config = serve_config(tmp_path / "spooler.toml", "normal")
    result = cut_relays(
        lazyfs, lazyfs.mnt / "spool.db", config, rounds, random.Random(20), events=(1000, 4000)
    )
    row.rounds, row.at_risk, row.lost = rounds, result.answered, result.lost
    # normal commits reach the disk at checkpoints only: the last ones before a cut are
    # lost, and those a checkpoint wrote are not
    assert 0 < result.lost < result.answered


def test_a_power_cut_with_a_drain_beside_spooler_serve_loses_no_answered_event(
    lazyfs: LazyFS, scenario, tmp_path: Path
) -> None:
    rounds = SERVE_DRAIN_CUTS
    row = scenario(
        "14 (serve and drain)",
        SERVE_LOAD.format("full") + ", a spooler drain delivering them meanwhile",
        SERVE_CUT.format("the relay and the drain"),
    )
    with Receiver() as receiver:
        config = serve_config(tmp_path / "spooler.toml", "full", receiver)
        # Given a relay at durability="full" and a drain of its spool to a receiver
        result = cut_relays(
            lazyfs,
            lazyfs.mnt / "spool.db",
            config,
            rounds,
            random.Random(21),
            events=(500, 2500),
            receiver=receiver,
        )
        delivered = Counter(e["n"] for e in receiver.delivered)
    row.rounds, row.at_risk, row.lost = rounds, result.answered, result.lost
    row.duplicated = sum(delivered.values()) - len(delivered)
    # Then every event answered 200 before a cut is still queued after it, or delivered
    assert result.lost == 0
    # And the cuts found answered events in both places: the drain had delivered some,
    # and not all
    assert 0 < result.delivered < result.answered
