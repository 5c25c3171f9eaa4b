"""Crashes against a PostgreSQL spool: producers and drains SIGKILLed while three
producers and two drains run at once, and the server itself stopped and restarted
mid-drain. Every event whose enqueue returned must arrive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from helpers.cli import SPOOLER
from helpers.processes import wait_until
from pg_server import PostgresServer, drain_args
from test_crash import PRODUCER  # the same loop, on a PostgreSQL spool

from spooler import Spool
from spooler.testing import Receiver


class Producer:
    """A producer process, and a thread collecting the ids its enqueues returned."""

    def __init__(self, url: str) -> None:
        self.acknowledged: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, url], stdout=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if len(line.strip()) == 36:
                self.acknowledged.append(line.strip())

    def kill(self) -> None:
        """SIGKILL the producer (if it still runs); what it printed before is kept."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join()
        assert self.process.stdout is not None
        self.process.stdout.close()


class Fleet:
    """The producers and drains of a test, all SIGKILLed when it ends, whatever happens."""

    def __init__(self, url: str, receiver: Receiver, log: IO[str]) -> None:
        self.url = url
        self.receiver = receiver
        self.log = log
        self.producers: list[Producer] = []
        self.drains: list[subprocess.Popen[str]] = []

    def produce(self) -> Producer:
        """Start a producer."""
        self.producers.append(Producer(self.url))
        return self.producers[-1]

    def drain(self) -> subprocess.Popen[str]:
        """Start a drain as a daemon process, with a short lease."""
        drain = subprocess.Popen(
            [*SPOOLER, *drain_args(self.url, self.receiver.url, until_empty=False)],
            stderr=self.log,
            text=True,
        )
        self.drains.append(drain)
        return drain

    def acknowledged(self) -> set[str]:
        """The ids of every enqueue that returned."""
        return {i for producer in self.producers for i in producer.acknowledged}

    def kill_all(self) -> None:
        """SIGKILL every producer and drain still running."""
        for producer in self.producers:
            producer.kill()
        for drain in self.drains:
            if drain.poll() is None:
                os.kill(drain.pid, signal.SIGKILL)
            drain.wait()


@pytest.fixture
def fleet(own_postgres: PostgresServer, receiver: Receiver, tmp_path: Path) -> Iterator[Fleet]:
    """Producers and drains on a fresh spool of ``own_postgres`` (made before they race)."""
    url = own_postgres.url() + "&wait=120"
    Spool(url).close()
    with (tmp_path / "drains.log").open("w") as log:
        started = Fleet(url, receiver, log)
        try:
            yield started
        finally:
            started.kill_all()


def finish(url: str, receiver: Receiver) -> None:
    """Deliver what is left with a drain run until the queue is empty."""
    done = subprocess.run(
        [*SPOOLER, *drain_args(url, receiver.url, until_empty=True)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def arrived(receiver: Receiver) -> set[str]:
    return {event["id"] for event in receiver.delivered}


def test_three_producers_and_two_drains_killed_at_random_lose_nothing(fleet: Fleet) -> None:
    # Given three producers and two drains running at once
    producers = [fleet.produce() for _ in range(3)]
    drains = [fleet.drain() for _ in range(2)]
    assert wait_until(lambda: all(len(p.acknowledged) >= 30 for p in producers), timeout=60)
    assert wait_until(lambda: len(arrived(fleet.receiver)) >= 30, timeout=60)
    # When one producer and one drain are SIGKILLed mid-run, and another drain takes over
    producers[0].kill()
    os.kill(drains[0].pid, signal.SIGKILL)
    fleet.drain()
    settled = len(arrived(fleet.receiver))
    assert wait_until(lambda: len(arrived(fleet.receiver)) >= settled + 30, timeout=60)
    fleet.kill_all()
    # Then a last drain delivers every event whose enqueue returned
    finish(fleet.url, fleet.receiver)
    assert len(fleet.acknowledged()) >= 90
    assert fleet.acknowledged() - arrived(fleet.receiver) == set()


def test_a_server_restart_mid_drain_loses_nothing(
    own_postgres: PostgresServer, fleet: Fleet
) -> None:
    # Given producers and a drain at work
    producers = [fleet.produce() for _ in range(3)]
    drain = fleet.drain()
    assert wait_until(lambda: len(arrived(fleet.receiver)) >= 30, timeout=60)
    # When the server crashes (immediate stop: no clean shutdown) and starts again
    own_postgres.stop("immediate")
    acknowledged_before = len(fleet.acknowledged())
    own_postgres.start()
    # Then producers and the drain carry on by themselves
    assert wait_until(lambda: len(fleet.acknowledged()) >= acknowledged_before + 30, timeout=60)
    delivered_before = len(arrived(fleet.receiver))
    assert wait_until(lambda: len(arrived(fleet.receiver)) >= delivered_before + 30, timeout=60)
    assert drain.poll() is None  # it waited for the server, it did not give up
    for producer in producers:
        producer.kill()
    drain.send_signal(signal.SIGTERM)
    assert drain.wait(timeout=60) == 0
    finish(fleet.url, fleet.receiver)
    assert fleet.acknowledged() - arrived(fleet.receiver) == set()
