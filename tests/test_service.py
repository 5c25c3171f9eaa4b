"""spooler drain and spooler serve as systemd services: READY, WATCHDOG and STOPPING
over a real $NOTIFY_SOCKET (a datagram socket the test binds, as systemd does), and the
unit files checked by systemd's own parser."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.cli import SPOOLER, start_drain
from helpers.processes import free_port, wait_until
from relay import write_config

from spooler import Spool
from spooler.drain import HANG_ENV
from spooler.sd_notify import Notifier
from spooler.serve.commits import HANG_ENV as SERVE_HANG_ENV
from spooler.testing import Receiver

ROOT = Path(__file__).resolve().parent.parent
WATCHDOG_USEC = 1_000_000  # one second: the drain pings every half second while alive


class NotifySocket:
    """A datagram socket bound where ``$NOTIFY_SOCKET`` points, as systemd's is."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.received: list[str] = []

    def next(self, timeout: float) -> str | None:
        """The next state sent within ``timeout`` seconds (None: none came)."""
        self._socket.settimeout(max(timeout, 0.001))
        try:
            state = self._socket.recv(4096).decode()
        except TimeoutError:
            return None
        self.received.append(state)
        return state

    def wait_for(self, state: str, timeout: float = 30.0) -> bool:
        """Read states until ``state`` comes, or ``timeout`` passes; whether it came."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.next(left) == state:
                return True
        return False

    def close(self) -> None:
        self._socket.close()


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    """systemd's socket: a file (in a short folder: socket paths are limited to 107
    bytes) or a name in Linux's abstract namespace (``@...``)."""
    if request.param == "abstract":
        bound = NotifySocket(f"@spooler-test-{uuid.uuid4().hex}")
        yield bound
        bound.close()
        return
    with tempfile.TemporaryDirectory(prefix="sd-") as folder:
        bound = NotifySocket(os.path.join(folder, "notify"))
        yield bound
        bound.close()


def test_the_notifier_sends_each_state_and_reads_the_watchdog_interval(
    notify_socket: NotifySocket,
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2500000"}
    notifier = Notifier(env)
    for state in ("READY=1", "WATCHDOG=1", "STOPPING=1"):
        notifier.notify(state)
        assert notify_socket.next(timeout=5) == state
    assert notifier.watchdog_interval == 2.5
    # The interval is for the process WATCHDOG_PID names, when it names one
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 2.5
    assert Notifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None
    # Outside systemd: nothing to send to, nothing sent
    Notifier({}).notify("READY=1")
    assert notify_socket.next(timeout=0.2) is None


def keeps_pinging(notify: NotifySocket, pings: int = 4) -> bool:
    """Whether ``pings`` watchdog pings come, one after the other, each within 10 s."""
    return all(notify.wait_for("WATCHDOG=1", timeout=10) for _ in range(pings))


def stop_as_systemd(process: subprocess.Popen[str], notify: NotifySocket) -> tuple[int, str]:
    """SIGTERM, as systemd stops a unit: once the service said STOPPING, its exit status
    and what it wrote on stderr."""
    process.send_signal(signal.SIGTERM)
    assert notify.wait_for("STOPPING=1", timeout=30), notify.received
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def leased(db: Path) -> int:
    """How many events of the spool are leased to a drain (its public status)."""
    with Spool(db, create=False) as spool:
        return spool.status().total.leased


def notified_drain(
    db: Path, receiver: Receiver, notify: NotifySocket, *extra: str, **env: str
) -> subprocess.Popen[str]:
    """A daemon ``spooler drain`` started as systemd would start it with Type=notify and
    WatchdogSec=1s."""
    environ = {
        **os.environ,
        "NOTIFY_SOCKET": notify.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        **env,
    }
    return start_drain(
        db,
        receiver.url,
        "--poll-interval",
        "0.1",
        *extra,
        env=environ,
        stderr=subprocess.PIPE,
    )


def test_a_drain_is_ready_pings_the_watchdog_while_it_works_and_says_when_it_stops(
    db: Path, receiver: Receiver, notify_socket: NotifySocket
) -> None:
    # Given a drain started as a Type=notify service with a watchdog
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    drain = notified_drain(db, receiver, notify_socket)
    try:
        # Then it says READY once it runs, before anything else
        assert notify_socket.next(timeout=30) == "READY=1"
        # And while it works and waits for work, its watchdog pings keep coming
        assert receiver.wait_for(lambda r: len(r.delivered) == 1, timeout=30)
        assert keeps_pinging(notify_socket)
    finally:
        # When systemd stops it, then it says STOPPING, and exits cleanly
        code, err = stop_as_systemd(drain, notify_socket)
    assert code == 0, err
    assert notify_socket.received.count("READY=1") == 1
    assert notify_socket.received.count("STOPPING=1") == 1


def test_a_stuck_drain_stops_pinging_the_watchdog(
    db: Path, receiver: Receiver, notify_socket: NotifySocket
) -> None:
    # Given a drain whose worker gets stuck for good once it has claimed a batch (a
    # test-only hook), with a request timeout of one second
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    drain = notified_drain(
        db, receiver, notify_socket, "--timeout", "1", **{HANG_ENV: "after_claim"}
    )
    try:
        assert notify_socket.next(timeout=30) == "READY=1"
        assert wait_until(lambda: leased(db) == 1, timeout=30)
        # When the worker stays stuck past its step (the timeout), then the pings stop:
        # three intervals go by without one, while the process runs on
        silence = 3 * WATCHDOG_USEC / 1e6
        deadline = time.monotonic() + 30
        while notify_socket.next(timeout=silence) is not None:
            assert time.monotonic() < deadline, notify_socket.received
        assert drain.poll() is None
        assert receiver.requests == []
    finally:
        # And a stop still says STOPPING, and ends the drain (the stuck batch released)
        code, err = stop_as_systemd(drain, notify_socket)
    assert code == 0, err
    assert "in-flight requests did not finish in time" in err
    assert leased(db) == 0


def notified_relay(
    db: Path, notify: NotifySocket, *extra: str, **env: str
) -> tuple[subprocess.Popen[str], str]:
    """A ``spooler serve`` started as systemd would start it with Type=notify and
    WatchdogSec=1s, and its URL (it may not listen yet: READY says when it does)."""
    port = free_port()
    process = subprocess.Popen(
        [*SPOOLER, "serve", "--db", str(db), "--port", str(port), *extra],
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "NOTIFY_SOCKET": notify.address,
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            **env,
        },
    )
    return process, f"http://127.0.0.1:{port}"


def test_a_relay_is_ready_once_it_listens_pings_while_it_serves_and_says_when_it_stops(
    db: Path, notify_socket: NotifySocket
) -> None:
    # Given spooler serve started as a Type=notify service with a watchdog
    relay, url = notified_relay(db, notify_socket)
    try:
        # Then it says READY, before anything else, once it listens: a request sent at
        # once is taken
        assert notify_socket.next(timeout=30) == "READY=1"
        posted = httpx.post(f"{url}/v1/events/x", json={"n": 1}, timeout=30)
        assert posted.status_code == 200, posted.text
        # And while it serves and waits, its watchdog pings keep coming
        assert keeps_pinging(notify_socket)
    finally:
        # When systemd stops it, then it says STOPPING, and exits cleanly
        code, err = stop_as_systemd(relay, notify_socket)
    assert code == 0, err
    assert notify_socket.received.count("READY=1") == 1
    assert notify_socket.received.count("STOPPING=1") == 1
    with Spool(db, create=False) as spool:
        assert spool.status().total.queued == 1


# One kind of socket is enough here: the relay's other test sends to both.
@pytest.mark.parametrize("notify_socket", ["path"], indirect=True)
def test_a_relay_whose_commit_hangs_stops_pinging_the_watchdog(
    db: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    # Given a relay whose commits hang for good (a test-only hook), and may take one
    # second before they count as stuck
    config = write_config(tmp_path / "spooler.toml", {}, commit_timeout=1)
    relay, url = notified_relay(
        db, notify_socket, "--config", str(config), **{SERVE_HANG_ENV: "commit"}
    )
    answers: list[httpx.Response | httpx.HTTPError] = []

    def post() -> None:
        try:
            answers.append(httpx.post(f"{url}/v1/events/x", json={"n": 1}, timeout=60))
        except httpx.HTTPError as exc:
            answers.append(exc)

    poster = threading.Thread(target=post)
    try:
        assert notify_socket.next(timeout=30) == "READY=1"
        assert notify_socket.wait_for("WATCHDOG=1", timeout=10)  # alive while idle
        # When a request's commit starts, and stays stuck past its second
        poster.start()
        # Then the pings stop: three intervals go by without one, while the process runs on
        silence = 3 * WATCHDOG_USEC / 1e6
        deadline = time.monotonic() + 30
        while notify_socket.next(timeout=silence) is not None:
            assert time.monotonic() < deadline, notify_socket.received
        assert relay.poll() is None
        assert answers == []  # the request is never told its events are stored
    finally:
        # And a stop still says STOPPING, and ends the relay, saying why it could not
        # answer the request
        code, err = stop_as_systemd(relay, notify_socket)
    if poster.ident is not None:
        poster.join(timeout=60)
    assert code == 1, err
    assert "a commit has not returned after 1s (serve.commit_timeout)" in err
    assert len(answers) == 1 and not isinstance(answers[0], httpx.Response), answers


@pytest.mark.parametrize("name", ["spooler-drain.service", "spooler-serve.service"])
def test_the_unit_file_passes_systemds_own_check(tmp_path: Path, name: str) -> None:
    # Given a unit of docs/, its ExecStart pointed at this spooler
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (Debian package systemd; .ci/run installs it)")
    text = (ROOT / "docs" / name).read_text()
    assert re.search(r"^Type=notify$", text, re.M) and re.search(r"^WatchdogSec=\d", text, re.M)
    spooler = tmp_path / "spooler"
    spooler.write_text(f'#!/bin/sh\nexec {" ".join(SPOOLER)} "$@"\n')
    spooler.chmod(0o755)
    unit = tmp_path / name
    unit.write_text(text.replace("/usr/local/bin/spooler", str(spooler)))
    # When systemd's parser reads it, then it finds nothing to say
    checked = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
