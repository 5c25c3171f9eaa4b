"""SIGTERM, SIGINT and SIGHUP on a real drain process: stop claiming, finish or release,
exit 0 (SIGHUP only where it is not ignored, as under nohup)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.cli import drain_args, spooler_cmd, start_drain
from helpers.processes import wait_until
from helpers.spools import leased_count, queued_count, rows

from spooler.testing import Receiver


def in_flight(db: Path) -> bool:
    return leased_count(db) > 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_the_in_flight_batch_finish(
    db: Path, receiver: Receiver, scenario, signum: int
) -> None:
    name = signal.Signals(signum).name
    row = scenario(
        f"4 ({name})",
        f"{name} while a batch is in flight",
        "signal the drain while the receiver holds its request, then answer",
    )
    ids = spooler_cmd("enqueue", "--db", str(db), "{}", "{}").stdout.split()
    receiver.hold()
    drain = start_drain(db, receiver.url, "--timeout", "5", stderr=subprocess.PIPE)
    assert wait_until(lambda: in_flight(db))
    sent = time.monotonic()
    drain.send_signal(signum)
    receiver.release()  # the receiver answers: the drain acks, then exits
    _, err = drain.communicate(timeout=30)
    row.recover_s = time.monotonic() - sent
    assert drain.returncode == 0, err
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0
    assert queued_count(db) == 0


def test_sigterm_while_the_receiver_hangs_exits_in_time(
    db: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "4 (hung receiver)",
        "SIGTERM while the receiver hangs",
        "receiver never answers; SIGTERM the drain (timeout 1 s)",
    )
    ids = spooler_cmd("enqueue", "--db", str(db), "{}", "{}", "{}").stdout.split()
    receiver.hold()
    drain = start_drain(db, receiver.url, "--timeout", "1", "--lease", "30", stderr=subprocess.PIPE)
    assert wait_until(lambda: in_flight(db))
    sent = time.monotonic()
    drain.send_signal(signal.SIGTERM)
    _, err = drain.communicate(timeout=30)
    # The hung request times out (1 s) within the grace period: the batch is finished
    # as a failed attempt and rescheduled, and the drain exits without waiting out
    # the 30 s lease.
    assert drain.returncode == 0, err
    assert "stopped (signal): delivered=0 retried=3 dead=0 backlog=3" in err  # the last line
    row.recover_s = time.monotonic() - sent
    assert row.recover_s < 10
    assert rows(db, "SELECT count(*), max(last_error) FROM queue") == [(3, "timed out after 1s")]
    assert leased_count(db) == 0
    receiver.release()
    final = spooler_cmd(*drain_args(db, receiver.url, "--until-empty"))
    assert final.returncode == 0, final.stderr
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0
    assert queued_count(db) == 0


def test_a_second_signal_abandons_the_request_and_releases_its_events(
    db: Path, receiver: Receiver
) -> None:
    assert spooler_cmd("enqueue", "--db", str(db), "{}", "{}").returncode == 0
    receiver.hold()
    drain = start_drain(
        db, receiver.url, "--timeout", "20", "--lease", "60", stderr=subprocess.PIPE
    )
    assert wait_until(lambda: in_flight(db))
    sent = time.monotonic()
    drain.send_signal(signal.SIGTERM)
    assert drain.stderr is not None
    for line in drain.stderr:  # signals do not queue: send the second after the first
        if "stopping (signal)" in line:
            break
    drain.send_signal(signal.SIGTERM)
    err = drain.communicate(timeout=30)[1]
    assert drain.returncode == 0, err
    assert time.monotonic() - sent < 10  # far less than the 20 s request timeout
    assert "releasing their events" in err
    # Released, not failed: due now, no owner, no error recorded.
    assert rows(db, "SELECT count(*), count(last_error) FROM queue") == [(2, 0)]
    assert leased_count(db) == 0


def test_a_hangup_stops_the_drain_as_sigterm_does(db: Path, receiver: Receiver) -> None:
    # Given a drain started by hand, with a batch in flight
    ids = spooler_cmd("enqueue", "--db", str(db), "{}", "{}").stdout.split()
    receiver.hold()
    drain = start_drain(db, receiver.url, "--timeout", "5", stderr=subprocess.PIPE)
    assert wait_until(lambda: in_flight(db))
    # When its terminal closes (SIGHUP)
    drain.send_signal(signal.SIGHUP)
    receiver.release()
    _, err = drain.communicate(timeout=30)
    # Then it stops as on SIGTERM: the batch finished, nothing left leased, exit 0
    # (SIGHUP's default would kill it with the batch leased, to be sent again)
    assert drain.returncode == 0, err
    assert "stopped (signal): delivered=2" in err
    assert sorted(e["id"] for e in receiver.delivered) == sorted(ids)
    assert leased_count(db) == 0


def ignore_hangups() -> None:
    """In the child before it runs spooler: what ``nohup`` does."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def test_a_drain_started_with_nohup_outlives_a_hangup(db: Path, receiver: Receiver) -> None:
    # Given a drain started under nohup (SIGHUP ignored)
    drain = start_drain(
        db,
        receiver.url,
        "--poll-interval",
        "0.1",
        stderr=subprocess.PIPE,
        preexec_fn=ignore_hangups,
    )
    try:
        first = spooler_cmd("enqueue", "--db", str(db), "{}").stdout.split()
        assert receiver.wait_for(lambda r: len(r.delivered) == 1, timeout=30)
        # When its terminal closes
        drain.send_signal(signal.SIGHUP)
        # Then it goes on delivering
        second = spooler_cmd("enqueue", "--db", str(db), "{}").stdout.split()
        assert receiver.wait_for(lambda r: len(r.delivered) == 2, timeout=30)
        assert drain.poll() is None
    finally:
        drain.send_signal(signal.SIGTERM)
        _, err = drain.communicate(timeout=30)
    assert drain.returncode == 0, err
    assert [e["id"] for e in receiver.delivered] == first + second
