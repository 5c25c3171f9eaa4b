"""Shared fixtures: a spool path, a live receiver on 127.0.0.1, drain helpers, and a spy on
flushes to disk."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from pg_server import PostgresServer, missing_postgres

import spooler.store.sqlite.base as sqlite_base
from spooler import Spool
from spooler.config import build_drain_config
from spooler.drain import Drain, DrainReport, Mode
from spooler.testing import Receiver


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A path for a fresh spool file."""
    return tmp_path / "spool.db"


@pytest.fixture
def spool(db: Path) -> Iterator[Spool]:
    """An open spool on a fresh file."""
    with Spool(db) as opened:
        yield opened


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A recording HTTP receiver on 127.0.0.1."""
    with Receiver() as live:
        yield live


FAST_RETRY = {"backoff_base": 0.01, "backoff_cap": 0.05}


def drain_once(
    spool: Spool,
    url: str,
    *,
    mode: Mode = Mode.UNTIL_EMPTY,
    max_time: float = 30,
    retry: dict[str, Any] | None = None,
    **destination: Any,
) -> DrainReport:
    """Drain ``spool`` to ``url`` with fast retries; extra keywords configure the destination."""
    config = build_drain_config(
        {},
        destination_flags={"url": url, **destination},
        retry_flags={**FAST_RETRY, **(retry or {})},
        drain_flags={"poll_interval": 0.05},
    )
    return Drain(spool.store, config).run(mode, max_time=max_time)


def enqueue_backlog(spool: Spool, *, pad: int) -> list[str]:
    """Enqueue a backlog of 20,000 events padded with ``pad`` characters each, in
    twenty transactions; return their ids."""
    return [
        event_id
        for chunk in range(20)
        for event_id in spool.enqueue_many(
            [{"c": chunk, "n": n, "pad": "x" * pad} for n in range(1000)]
        )
    ]


def queued_count(location: Path | str) -> int:
    """How many events the spool at ``location`` holds queued (its public status)."""
    with Spool(location, create=False) as spool:
        return spool.status().total.queued


def dead_count(location: Path | str) -> int:
    """How many events the spool at ``location`` holds dead (its public status)."""
    with Spool(location, create=False) as spool:
        return spool.status().total.dead


def dead_rows(location: Path | str, *fields: str) -> list[tuple[Any, ...]]:
    """The named fields of each dead event of the spool at ``location``, oldest first, as
    ``spooler dlq inspect`` reads them (``event_id``, ``reason``, ``status``, ...)."""
    with Spool(location, create=False) as spool:
        return [tuple(getattr(d, f) for f in fields) for d in spool.dead_letters.inspect()]


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a read-only query on a spool file with plain sqlite3 (what an operator would
    do): for what only a SQLite file has, or no public interface shows."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


SPOOLER = [sys.executable, "-m", "spooler_cli"]


# Linux carries a process's peak RSS (ru_maxrss) across exec: a command started straight
# from pytest would report pytest's own footprint if that is larger. A small launcher
# starts it instead, and reports the command's peak (KiB) as its child's, last on stderr.
_PEAK_RSS_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
    "sys.exit(code)"
)


def run_measuring_peak_rss(
    command: list[str], **kwargs: Any
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command`` to completion: the finished process, and its peak RSS in MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_LAUNCHER, *command],
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        **kwargs,
    )
    *_, peak_kib = proc.stderr.split()
    return proc, int(peak_kib) / 1024


def spooler_cmd(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the ``spooler`` command line as a real subprocess and wait for it."""
    env = {**os.environ, **kwargs.pop("env", {})}
    return subprocess.run(
        [*SPOOLER, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=kwargs.pop("timeout", 60),
        **kwargs,
    )


def drain_args(db: Path, url: str, *extra: str) -> list[str]:
    """The arguments of ``spooler drain`` delivering to ``url`` with ids in ``id``."""
    return ["drain", "--db", str(db), "--url", url, "--id-field", "id", *extra]


def drain_command(db: Path, url: str, *extra: str) -> list[str]:
    """The ``spooler drain`` command line delivering to ``url`` with ids in ``id``."""
    return [*SPOOLER, *drain_args(db, url, *extra)]


def start_drain(db: Path, url: str, *extra: str, **popen: Any) -> subprocess.Popen[str]:
    """Start ``spooler drain`` as a real process delivering to ``url`` with ids in ``id``."""
    return subprocess.Popen(drain_command(db, url, *extra), text=True, **popen)


def drain_cli(
    db: Path, url: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``spooler drain --until-empty`` with fast retries to ``url`` (ids in ``id``),
    bounded by a minute; ``extra`` flags are added at the end."""
    return spooler_cmd(
        *drain_args(db, url, "--until-empty", "--backoff-base", "0.01", "--poll-interval", "0.05"),
        *("--max-time", "60", *extra),
        env=env or {},
    )


def require_program(name: str, package: str) -> None:
    """Skip the test, saying what to install, if the program ``name`` is not on PATH
    (``.ci/run`` installs every one the tests use, so CI never skips)."""
    if shutil.which(name) is None:
        pytest.skip(f"needs {name} (Debian package {package}; .ci/run installs it)")


def fiu(tmp_path: Path) -> tuple[list[str], list[str]]:
    """The command prefixes that start a process under libfiu (``fiu-run -x``: it can make
    chosen libc calls fail) and control it from outside (``fiu-ctrl``)."""
    require_program("fiu-run", "fiu-utils")
    control = str(tmp_path / "fiu-ctrl")
    return ["fiu-run", "-x", "-f", control], ["fiu-ctrl", "-f", control]


def switch(control: list[str], pid: int, command: str) -> None:
    """Run one ``fiu-ctrl`` command (``enable name=...``, ``disable name=...``) in ``pid``."""
    result = subprocess.run(
        [*control, "-c", command, str(pid)], capture_output=True, text=True, timeout=10
    )
    # fiu-ctrl exits 0 even when it cannot reach the process; it says so on stderr.
    assert result.returncode == 0 and not result.stderr, result.stderr


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (until a test starts something there)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def wait_for_line(stream: IO[str], text: str, timeout: float = 30.0) -> bool:
    """Read ``stream`` (a child's pipe) line by line until one contains ``text``, or
    ``timeout`` passes; returns whether it was seen. What was read is consumed."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([stream], [], [], left)[0]:
            return False
        line = stream.readline()
        if not line:
            return False
        if text in line:
            return True
    return False


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the reliability campaign -------------------------------------------------------------

REPORT_ENV = "SPOOLER_RELIABILITY_REPORT"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/reliability/ carries the ``reliability`` marker."""
    for item in items:
        if "reliability" in item.path.parts:
            item.add_marker(pytest.mark.reliability)


@dataclass
class Scenario:
    """One row of the table in docs/reliability.md, filled in by the test that runs it."""

    number: str
    fault: str
    injection: str
    test: str = ""
    at_risk: int = 0
    lost: int = 0
    duplicated: int = 0
    recover_s: float | None = None
    rounds: int | None = None  # power-loss scenarios: how many power cuts
    expected_loss: bool = False  # durability="normal" may lose its last commits by design

    def recover_with_drain(self, db: Path, url: str, *extra: str) -> None:
        """Recover by running ``drain_cli`` to the end, which must succeed; its time is
        this scenario's time to recover."""
        started = time.monotonic()
        drained = drain_cli(db, url, *extra)
        assert drained.returncode == 0, drained.stderr
        self.recover_s = time.monotonic() - started

    def tally(
        self, acknowledged: Iterable[str], arrived: Iterable[str], dead: Iterable[str] = ()
    ) -> None:
        """Count lost and duplicated events: acknowledged ids against what arrived or died."""
        acknowledged = set(acknowledged)
        arrivals = Counter(arrived)
        self.at_risk = len(acknowledged)
        self.lost = len(acknowledged - set(arrivals) - set(dead))
        self.duplicated = sum(n - 1 for n in arrivals.values() if n > 1)


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Callable[[str, str, str], Scenario]]:
    """Start a report row; it is appended to $SPOOLER_RELIABILITY_REPORT when that is set."""
    started: list[Scenario] = []

    def start(number: str, fault: str, injection: str) -> Scenario:
        row = Scenario(number, fault, injection, test=request.node.name)
        started.append(row)
        return row

    yield start
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as report:
            for row in started:
                report.write(json.dumps(asdict(row)) + "\n")


def spy_on_flushes(monkeypatch: pytest.MonkeyPatch, db: Path) -> list[tuple[int, int]]:
    """Record each flush to disk as (inode flushed, events committed at that moment)."""
    flushes: list[tuple[int, int]] = []
    flush = sqlite_base._flush_to_disk

    def spy(fd: int) -> None:
        queued = rows(db, "SELECT count(*) FROM queue")[0][0] if db.exists() else 0
        flushes.append((os.fstat(fd).st_ino, queued))
        flush(fd)

    monkeypatch.setattr(sqlite_base, "_flush_to_disk", spy)
    return flushes


# -- PostgreSQL ------------------------------------------------------------------------


def _postgres_server() -> Iterator[PostgresServer]:
    why = missing_postgres()
    if why:
        pytest.skip(why)
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (skips, saying why, where there is none)."""
    yield from _postgres_server()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, to stop, crash and start."""
    yield from _postgres_server()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a fresh spool on the session's PostgreSQL: a schema of its own."""
    return postgres.url()


@pytest.fixture(params=["sqlite", "postgres"])
def spool_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh spool goes on each backend: a file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "spool.db")
    return str(request.getfixturevalue("pg_url"))
