"""Scenario 13: the disk answers EIO, injected into a live producer and a live drain.

libfiu's ``fiu-run -x`` preloads a library that can make chosen libc calls fail in a
running process; ``fiu-ctrl`` switches a failure on and off from outside. SQLite writes
its log with ``pwrite`` and "full" durability flushes it with ``fdatasync``, so these
are the real error paths of SQLite and of spooler, not a mock of them.
"""

from __future__ import annotations

import errno
import itertools
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.cli import drain_command
from helpers.faults import fiu, switch
from helpers.processes import wait_for_line
from helpers.spools import queued_count, rows

from spooler import Spool
from spooler.testing import Receiver

# Each enqueue waits for a line on stdin, so the test decides exactly which calls run
# while a failure is switched on. It prints "ok <ids>" or "error <events> <type>: <text>".
PRODUCER = """
import sys
from spooler import Spool, SpoolerError
spool = Spool(sys.argv[1])
for n, _ in enumerate(sys.stdin):
    events = [{"n": n, "k": k} for k in range(1 + 4 * (n % 3 == 2))]
    try:
        ids = spool.enqueue_many(events) if len(events) > 1 else [spool.enqueue(events[0])]
        print("ok", *ids, flush=True)
    except SpoolerError as exc:
        print("error", len(events), f"{type(exc).__name__}: {exc}", flush=True)
"""


@contextmanager
def killed_at_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Yield ``proc``; kill it if it still runs when the block ends (a failed test)."""
    with proc:
        try:
            yield proc
        finally:
            proc.kill()


class Producer:
    """A producer process (under libfiu if ``run`` says so), driven one enqueue at a time."""

    def __init__(self, db: Path, run: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*run, sys.executable, "-c", PRODUCER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def enqueue(self, times: int) -> list[list[str]]:
        """Run ``times`` enqueues; each one's answer, split into words."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        answers = []
        for _ in range(times):
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
            assert select.select([self.proc.stdout], [], [], 30)[0], "the producer hangs"
            answers.append(self.proc.stdout.readline().split() or ["exited"])
        return answers

    def stop(self) -> None:
        """Close its input, so it exits, and check that it exited cleanly."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def acknowledged(answers: list[list[str]]) -> list[str]:
    return [event_id for words in answers if words[0] == "ok" for event_id in words[1:]]


@pytest.mark.parametrize(
    ("call", "error", "reason", "committed"),
    [
        # A failed write of the log: the transaction is rolled back, the spool untouched.
        ("posix/io/rw/pwrite", "StoreError: ", "disk I/O error", False),
        # A failed flush after the commit: the caller is told the events are committed
        # but not yet safe from a power loss; they are in the spool and get delivered.
        ("posix/io/sync/fdatasync", "NotDurableError: ", "Input/output error", True),
    ],
    ids=["pwrite", "fdatasync"],
)
def test_io_errors_under_a_producer_are_typed_and_it_recovers(
    db: Path,
    tmp_path: Path,
    receiver: Receiver,
    scenario,
    request: pytest.FixtureRequest,
    call: str,
    error: str,
    reason: str,
    committed: bool,
) -> None:
    run, control = fiu(tmp_path)
    case = request.node.callspec.id
    row = scenario(
        f"13 ({case}, producer)",
        f"{case}() fails with EIO under a producer",
        f"libfiu: fiu-ctrl turns {call} on for 12 enqueues, then off again",
    )
    producer = Producer(db, run)
    with killed_at_exit(producer.proc):
        # Given a producer whose enqueues succeed
        before = producer.enqueue(12)
        # When the disk answers EIO for a while, and then recovers
        switch(control, producer.proc.pid, f"enable name={call},failinfo={errno.EIO}")
        during = producer.enqueue(12)
        switch(control, producer.proc.pid, f"disable name={call}")
        after = producer.enqueue(12)
        producer.stop()
    # Then every call during the fault raised the typed error, and only those...
    assert all(words[0] == "ok" for words in before + after), before + after
    failures = [" ".join(words[2:]) for words in during]
    assert all(text.startswith(error) and reason in text for text in failures), failures
    # ...the spool holds exactly what was committed: the acknowledged events, plus the
    # not-durable ones (committed before their flush failed) and nothing else...
    ids = acknowledged(before + after)
    failed_events = sum(int(words[1]) for words in during)
    expected = len(ids) + (failed_events if committed else 0)
    assert rows(db, "SELECT count(*) FROM queue") == [(expected,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    # ...and a drain delivers every acknowledged event.
    row.recover_with_drain(db, receiver.url)
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0
    assert len(receiver.delivered) == expected


def test_io_errors_under_a_drain_stop_it_and_a_new_drain_delivers_everything(
    db: Path, tmp_path: Path, receiver: Receiver, scenario
) -> None:
    run, control = fiu(tmp_path)
    row = scenario(
        "13 (pwrite, drain)",
        "pwrite() fails with EIO under a drain, mid-backlog",
        "libfiu: fiu-ctrl turns posix/io/rw/pwrite on in the drain while its 11th request waits",
    )
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(2000)])
    # The receiver holds the 11th request until the fault is on, so that the drain is
    # mid-backlog, with a batch to settle, however fast it runs.
    arrivals, held, fault_on = itertools.count(1), threading.Event(), threading.Event()

    def hold_the_11th(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if next(arrivals) == 11:  # next() on a count is atomic: handlers run in threads
            held.set()
            fault_on.wait(30)
        return 200, {}, b'{"ok":true}'

    receiver.respond = hold_the_11th
    # Given a drain working through the backlog
    with killed_at_exit(
        subprocess.Popen(
            [
                *run,
                *drain_command(db, receiver.url),
                "--until-empty",
                "--batch-size",
                "50",
                "--lease",
                "3",
                "--timeout",
                "2",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
    ) as drain:
        assert held.wait(30)
        # When its writes to the spool start failing
        switch(control, drain.pid, f"enable name=posix/io/rw/pwrite,failinfo={errno.EIO}")
        fault_on.set()
        # Then it stops with exit 1 and says why, rather than looping on the error...
        assert drain.stderr is not None
        assert wait_for_line(drain.stderr, "drain stopped:"), "the drain did not report it"
        assert drain.wait(timeout=30) == 1
        assert "disk I/O error" in drain.stderr.read()
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert rows(db, "SELECT count(*) FROM queue")[0][0] >= 50  # at least the held batch
    # ...and a new drain (the service manager restarts it) delivers all the rest, once
    # the leases of the batches the failed drain could not settle run out.
    row.recover_with_drain(db, receiver.url)
    row.tally(ids, [e["id"] for e in receiver.delivered])
    # Duplicates: at most the batches in flight when the fault hit (4 workers x 50).
    assert row.lost == 0 and row.duplicated <= 4 * 50
    assert queued_count(db) == 0
