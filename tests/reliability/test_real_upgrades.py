"""Upgrades from spools the real older spooler wrote: its code, built from this
repository's history, runs as real processes; then this version opens the spool.

Users upgrade spooler with a backlog on disk that the older code wrote, sometimes with
an older drain still running or killed mid-delivery. A spool faked by altering today's
schema by hand (tests/test_sqlite_store.py's upgrade tests) only shows what we think the
older code left behind; these tests check what it did leave. Each older version is the
last commit of its schema version on the main line, built once per session with
``git archive`` and ``pip install`` into a venv of its own (the worktree stays
untouched). Where the history is not there (not a git checkout, or a shallow clone)
they skip and say why; ``.ci/run`` runs on a full clone, where they run.

What each scenario checks is the product: every event the older code enqueued is
delivered, with its id and body, or dead-lettered and still inspectable and replayable;
nothing is lost; and an older process that cannot go on fails loudly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import drain_cli, spooler_cmd
from helpers.processes import wait_until
from helpers.reliability import Scenario
from helpers.spools import rows
from pg_server import PostgresServer

from spooler import Spool
from spooler.errors import SpoolFullError
from spooler.store.sqlite.schema import SCHEMA_VERSION
from spooler.testing import Receiver

REPO = Path(__file__).resolve().parents[2]
# The last commit on the main line of each older schema version (git log --first-parent
# -G"SCHEMA_VERSION = " -- spooler): 4 had no history table, 4 and 5 kept a drain's
# lease in each queue row (lease_owner), 6 moved leases into a table of their own; all
# kept the totals row at every write, which 7 (this code) does only from the first
# limit checked on. Older ones are left out: up to schema 3 the wheel missed
# subpackages (spooler.destinations), so a non-editable install does not run.
OLDER = {
    4: "f0d22a21194824482ad18426f75e7685c0b5b8a0",
    5: "ba585c36568b7f556dc4090d6a0dd87b479910e2",
    6: "9ac067b466883fc325bc11f6610d317ab538e29b",
}


# -- the older spooler, built from history -------------------------------------------------


def _history_missing(commit: str) -> str | None:
    """Why the older code cannot be built from this checkout, or None if it can."""
    if not (REPO / ".git").exists():
        return f"{REPO} is not a git checkout: the older spooler comes from its history"
    git = ["git", "-C", str(REPO)]
    shallow = subprocess.run(
        [*git, "rev-parse", "--is-shallow-repository"], capture_output=True, text=True
    )
    if shallow.returncode != 0:
        return f"git cannot read {REPO}: {shallow.stderr.strip()}"
    if shallow.stdout.strip() == "true":
        return "a shallow clone: the older spooler's commits are not in it (git fetch --unshallow)"
    found = subprocess.run([*git, "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    if found.returncode != 0:
        return f"commit {commit[:7]} is not in this clone's history"
    return None


@dataclass(frozen=True)
class OlderSpooler:
    """An older spooler installed in a venv of its own."""

    schema_version: int
    venv: Path
    workdir: Path  # the older processes' working directory: never this checkout

    def command(self, *args: str) -> list[str]:
        """Its ``spooler`` command line."""
        return [str(self.venv / "bin" / "spooler"), *args]

    def python(self, code: str, *args: str) -> list[str]:
        """Its Python running ``code``, which imports the older ``spooler``."""
        return [str(self.venv / "bin" / "python"), "-c", code, *args]

    def run(self, argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run one of its commands to the end; fail the test if it fails."""
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=120, **self.popen_args()
        )
        assert done.returncode == 0, f"older spooler failed: {argv}\n{done.stderr}"
        return done

    def popen_args(self) -> dict[str, Any]:
        """Where and how its processes run: outside this checkout (or ``python -c``
        would import this version from the working directory)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        return {"cwd": self.workdir, "env": env}

    def enqueue(self, db: str, events: list[dict[str, Any]]) -> list[str]:
        """Enqueue ``events`` with its ``spooler enqueue``; the ids it printed."""
        lines = "".join(json.dumps(event) + "\n" for event in events)
        done = self.run(self.command("enqueue", "--db", db), stdin=lines)
        ids = done.stdout.split()
        assert len(ids) == len(events)
        return ids


class OlderSpoolers:
    """The older spoolers of this session, each built the first time a test asks."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._built: dict[int, OlderSpooler] = {}

    def get(self, version: int) -> OlderSpooler:
        """The older spooler of schema ``version``; skips, saying why, without history."""
        why = _history_missing(OLDER[version])
        if why:
            pytest.skip(why)
        if version not in self._built:
            tmp = self._tmp_path_factory.mktemp(f"spooler-schema{version}")
            self._built[version] = _build(OLDER[version], version, tmp)
        return self._built[version]


def _build(commit: str, version: int, tmp: Path) -> OlderSpooler:
    """``git archive`` the commit into ``tmp`` and ``pip install`` it into a venv there."""
    source = tmp / "src"
    source.mkdir()
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(source)], stdin=archive.stdout, check=True)
    assert archive.stdout is not None
    archive.stdout.close()
    assert archive.wait() == 0
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Not editable, as users install it; pip's cache makes a second session cheap.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", f"{source}[postgres]"], check=True, cwd=tmp)
    older = OlderSpooler(version, venv, tmp)
    probe = tmp / "probe.db"
    older.enqueue(str(probe), [{"probe": True}])
    assert schema_version(probe) == version, "the venv does not run the older code"
    return older


@pytest.fixture(scope="session")
def older_spoolers(tmp_path_factory: pytest.TempPathFactory) -> OlderSpoolers:
    """The older spoolers, built once per session (about ten seconds each)."""
    return OlderSpoolers(tmp_path_factory)


@pytest.fixture(params=sorted(OLDER), ids=lambda version: f"schema{version}")
def older(request: pytest.FixtureRequest, older_spoolers: OlderSpoolers) -> OlderSpooler:
    """The older spooler of each schema version."""
    return older_spoolers.get(request.param)


# -- what the tests share ---------------------------------------------------------------


def events_of(kind: str, count: int) -> list[dict[str, Any]]:
    """``count`` distinct events of ``kind``, with text that JSON must carry as it is."""
    return [{"kind": kind, "n": n, "text": f'événement {n} \u2713 "q"'} for n in range(count)]


def delivered(receiver: Receiver, since: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The bodies the receiver took (2xx) by event id, from its ``since``-th request on;
    the drains write the id into each event under ``id``."""
    bodies: dict[str, list[dict[str, Any]]] = {}
    for request in receiver.requests[since:]:
        if 200 <= request.status < 300:
            for event in request.events:
                body = dict(event)
                bodies.setdefault(body.pop("id"), []).append(body)
    return bodies


def arrivals(*deliveries: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The event ids that arrived, once per arrival (for a report row's tally)."""
    return [i for bodies in deliveries for i, times in bodies.items() for _ in times]


def enqueued_by(older: OlderSpooler, location: str, kind: str, count: int) -> dict[str, Any]:
    """``count`` events of ``kind`` the older code enqueued at ``location``, by their ids."""
    events = events_of(kind, count)
    return dict(zip(older.enqueue(location, events), events, strict=True))


def answer_503(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A receiver that is down."""
    return 503, {}, b'{"error":"down"}'


def old_drain_args(db: str, url: str, *extra: str) -> list[str]:
    """An older ``spooler drain``'s arguments: ids in ``id``, fast polls and retries."""
    return [
        "drain", "--db", db, "--url", url, "--id-field", "id",
        "--poll-interval", "0.05", "--backoff-base", "0.5s", *extra,
    ]  # fmt: skip


def schema_version(db: Path) -> int:
    """The schema version the spool file says it has."""
    [(value,)] = rows(db, "SELECT value FROM meta WHERE key = 'schema_version'")
    return int(value)


# -- a backlog the older code left, delivered by this version ----------------------------


# Runs SQL on a spool for the test's own look into it: {s} before each table name stands
# for the PostgreSQL spool's schema ("" in a file).
Query = Callable[[str], list[tuple[Any, ...]]]


def file_query(db: Path) -> Query:
    """A ``Query`` on the spool file ``db``."""
    return lambda sql: rows(db, sql.format(s=""))


def postgres_spool(postgres: PostgresServer) -> tuple[str, Query]:
    """A PostgreSQL spool on the test's server: its URL, and a ``Query`` on its schema."""
    url = postgres.url()
    schema = url.rsplit("=", 1)[1]
    return url, lambda sql: postgres.sql(sql.format(s=f"{schema}."))


def deliver_what_the_older_spooler_left(
    older: OlderSpooler,
    location: str,
    query: Query,
    receiver: Receiver,
    row: Scenario,
    *,
    upgraded_to: int,
) -> None:
    """The older code leaves dead letters, events in retry and a backlog at
    ``location``; this version upgrades it to schema ``upgraded_to`` and delivers every
    one as enqueued, the dead letters once replayed."""
    # Given dead letters the older drain made: a receiver that rejects them (400)
    receiver.reject = lambda event: event["kind"] == "bad"
    bad = enqueued_by(older, location, "bad", 5)
    older.run(
        older.command(*old_drain_args(location, receiver.url, "--until-empty", "--max-time", "60"))
    )
    # ... events it is retrying: attempted once, answered 503
    retrying = enqueued_by(older, location, "retry", 30)
    receiver.respond = answer_503
    older.run(older.command(*old_drain_args(location, receiver.url, "--once")))
    # ... and a backlog never sent
    backlog = enqueued_by(older, location, "backlog", 1000)
    assert query("SELECT count(*) FROM {s}dead") == [(5,)]
    assert query("SELECT count(*) FROM {s}queue WHERE attempts > 0") == [(30,)]
    version = "SELECT value FROM {s}meta WHERE key = 'schema_version'"
    assert query(version) != [(str(upgraded_to),)]
    assert delivered(receiver) == {}

    # When this version drains it to a receiver that takes everything
    receiver.respond = None
    receiver.reject = None
    since = len(receiver.requests)
    started = time.monotonic()
    done = drain_cli(location, receiver.url)
    assert done.returncode == 0, done.stderr
    row.recover_s = time.monotonic() - started

    # Then the spool is upgraded, and each queued event arrived once, as enqueued
    assert query(version) == [(str(upgraded_to),)]
    first = delivered(receiver, since)
    assert first == {i: [body] for i, body in (retrying | backlog).items()}
    # ... and the dead letters are there to inspect, with why they died
    inspected = spooler_cmd("dlq", "inspect", "--json", "--db", location)
    assert inspected.returncode == 0, inspected.stderr
    dead = [json.loads(line) for line in inspected.stdout.splitlines()]
    assert {d["id"]: (d["reason"], d["status"], d["event"]) for d in dead} == {
        i: ("rejected", 400, body) for i, body in bad.items()
    }
    # ... and to replay: they arrive with their ids and bodies
    replayed = spooler_cmd("dlq", "replay", "--all", "--yes", "--db", location)
    assert replayed.returncode == 0, replayed.stderr
    since = len(receiver.requests)
    done = drain_cli(location, receiver.url)
    assert done.returncode == 0, done.stderr
    replay = delivered(receiver, since)
    assert replay == {i: [body] for i, body in bad.items()}
    row.tally(bad | retrying | backlog, arrivals(first, replay))
    assert query("SELECT count(*) FROM {s}queue UNION ALL SELECT count(*) FROM {s}dead") == [
        (0,),
        (0,),
    ]


def test_a_backlog_the_older_spooler_left_is_delivered_as_it_was_enqueued(
    older: OlderSpooler, tmp_path: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        f"25 (schema {older.schema_version})",
        f"upgrade of a spool file the real spooler of schema {older.schema_version} wrote:"
        " a backlog, events in retry, dead letters",
        "the older version, built from history, enqueues and drains (400s, 503s); this"
        " one drains, then replays the dead letters",
    )
    db = tmp_path / "spool.db"
    deliver_what_the_older_spooler_left(
        older, str(db), file_query(db), receiver, row, upgraded_to=SCHEMA_VERSION
    )


# (The PostgreSQL spools of schema 4 and 5 are of its versions 1 and 2; 6's is this one's.)
@pytest.mark.parametrize("version", [4, 5], ids=lambda version: f"schema{version}")
def test_a_backlog_the_older_spooler_left_in_postgresql_is_delivered_as_enqueued(
    version: int,
    older_spoolers: OlderSpoolers,
    postgres: PostgresServer,
    receiver: Receiver,
    scenario,
) -> None:
    older = older_spoolers.get(version)
    row = scenario(
        f"25 (PostgreSQL, schema {version})",
        f"upgrade of a PostgreSQL spool the real spooler of schema {version} wrote:"
        " a backlog, events in retry, dead letters",
        "as 25, on a PostgreSQL server",
    )
    postgres_schema = pytest.importorskip("spooler.store.postgres.schema")
    url, query = postgres_spool(postgres)
    deliver_what_the_older_spooler_left(
        older, url, query, receiver, row, upgraded_to=postgres_schema.SCHEMA_VERSION
    )


# -- an older drain killed mid-delivery, holding leases -----------------------------------


class StallingAnswers:
    """A receiver's answers (``Receiver.respond``): 200 to the first ``taken`` requests,
    then each request stalls until ``release``, and is answered 503."""

    def __init__(self, taken: int) -> None:
        self._taken = taken
        self._lock = threading.Lock()
        self.stalled = 0
        self._released = threading.Event()

    def __call__(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if self._taken > 0:
                self._taken -= 1
                return 200, {}, b'{"ok":true}'
            self.stalled += 1
        self._released.wait(60)
        return 503, {}, b'{"error":"stalled"}'

    def release(self) -> None:
        """Answer the stalled requests."""
        self._released.set()


def leased_events(db: Path, version: int) -> int:
    """How many events drains hold leases on: marked in the queue's rows before schema 6,
    counted in the rows of the leases table from 6 on."""
    if version < 6:
        return rows(db, "SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL")[0][0]
    return rows(db, "SELECT coalesce(sum(events), 0) FROM leases")[0][0]


def test_a_drain_killed_mid_delivery_by_the_older_spooler_loses_nothing(
    older: OlderSpooler, tmp_path: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        f"26 (schema {older.schema_version})",
        f"the real spooler of schema {older.schema_version}'s drain SIGKILLed mid-delivery,"
        " holding a lease, then an upgrade",
        "receiver stalls the older drain's 4th request; kill -9; this version drains",
    )
    db = tmp_path / "spool.db"
    enqueued = enqueued_by(older, str(db), "e", 2000)
    # Given an older drain that delivered 3 batches and holds the next one's lease
    answers = StallingAnswers(taken=3)
    receiver.respond = answers
    # (a request gives up after 4 s, well after the kill: the leases are still held then)
    args = ("--batch-size", "100", "--lease", "5s", "--timeout", "4s")
    drain = subprocess.Popen(
        older.command(*old_drain_args(str(db), receiver.url, *args)),
        stderr=subprocess.PIPE,
        text=True,
        **older.popen_args(),
    )
    try:
        assert wait_until(lambda: answers.stalled >= 1 or drain.poll() is not None, timeout=60)
        assert drain.poll() is None, drain.communicate()[1]
        assert leased_events(db, older.schema_version) >= 100
        # When it is killed with SIGKILL mid-delivery
        drain.send_signal(signal.SIGKILL)
    finally:
        drain.kill()
        drain.communicate()
        answers.release()
    first = delivered(receiver)
    assert 0 < len(first) < len(enqueued)

    # ... and this version drains the spool, once the older leases end
    receiver.respond = None
    since = len(receiver.requests)
    row.recover_with_drain(db, receiver.url)

    # Then every event arrived, with its id and body; those in flight maybe twice
    assert schema_version(db) == SCHEMA_VERSION
    second = delivered(receiver, since)
    row.tally(enqueued, arrivals(first, second))
    assert set(first) | set(second) == set(enqueued)
    for event_id, bodies in (first | second).items():
        assert all(body == enqueued[event_id] for body in bodies)
    assert rows(db, "SELECT count(*) FROM queue UNION ALL SELECT count(*) FROM dead") == [
        (0,),
        (0,),
    ]


# -- a rolling upgrade: older processes still running ------------------------------------


def upgrade_beside_an_older_drain(
    older: OlderSpooler, location: str, query: Query, receiver: Receiver, row: Scenario
) -> None:
    """An older drain keeps running while this version upgrades the spool at
    ``location`` and enqueues: it delivers those events too, or stops loudly; this
    version's drain then delivers whatever is left."""
    first = enqueued_by(older, location, "a", 500)
    # Given an older drain running, which delivered what the older code enqueued
    drain = subprocess.Popen(
        older.command(*old_drain_args(location, receiver.url, "--batch-size", "100")),
        stderr=subprocess.PIPE,
        text=True,
        **older.popen_args(),
    )
    version = "SELECT value FROM {s}meta WHERE key = 'schema_version'"
    before = query(version)
    try:
        assert receiver.wait_for(lambda r: len(delivered(r)) == len(first), timeout=60)
        # When this version opens the spool (upgrading it) and enqueues
        lines = "".join(json.dumps(event) + "\n" for event in events_of("b", 300))
        done = spooler_cmd("enqueue", "--db", location, input=lines)
        assert done.returncode == 0, done.stderr
        second = dict(zip(done.stdout.split(), events_of("b", 300), strict=True))
        assert query(version) != before
        # Then the older drain either delivers those events too, or stops with an error
        everything = first | second
        assert wait_until(
            lambda: len(delivered(receiver)) == len(everything) or drain.poll() is not None,
            timeout=60,
        )
    finally:
        drain.send_signal(signal.SIGTERM)
        _, log = drain.communicate(timeout=60)
    if older.schema_version < 6:
        # (4 and 5 kept leases in the queue's rows: their claim finds the columns gone)
        assert drain.returncode == 1
        assert "drain stopped" in log
        assert re.search(r'no such column: lease_owner|column "lease_\w+" does not exist', log)
    else:
        assert drain.returncode == 0, log
        assert delivered(receiver) == {i: [body] for i, body in everything.items()}
    # ... and this version's drain delivers whatever is left: nothing is lost
    started = time.monotonic()
    done = drain_cli(location, receiver.url)
    assert done.returncode == 0, done.stderr
    row.recover_s = time.monotonic() - started
    row.tally(everything, arrivals(delivered(receiver)))
    assert delivered(receiver) == {i: [body] for i, body in everything.items()}
    # ... and the limits count right: the empty spool takes 300 events under a limit of
    # 300, and not one more
    with Spool(location, max_events=300) as limited:
        limited.enqueue_many(events_of("c", 300))
        with pytest.raises(SpoolFullError):
            limited.enqueue({"kind": "c", "n": 300})


def test_an_older_drain_still_running_goes_on_or_stops_loudly_and_nothing_is_lost(
    older: OlderSpooler, tmp_path: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        f"27 (schema {older.schema_version})",
        f"a rolling upgrade: the real spooler of schema {older.schema_version}'s drain"
        " still running while this version upgrades the spool and enqueues",
        "this version's enqueue beside the older drain; then this version drains"
        + (" (the older drain stops: exit 1)" if older.schema_version < 6 else ""),
    )
    db = tmp_path / "spool.db"
    upgrade_beside_an_older_drain(older, str(db), file_query(db), receiver, row)
    assert schema_version(db) == SCHEMA_VERSION


@pytest.mark.parametrize("version", [4, 5], ids=lambda version: f"schema{version}")
def test_an_older_drain_on_postgresql_stops_loudly_at_the_upgrade_and_nothing_is_lost(
    version: int,
    older_spoolers: OlderSpoolers,
    postgres: PostgresServer,
    receiver: Receiver,
    scenario,
) -> None:
    older = older_spoolers.get(version)
    row = scenario(
        f"27 (PostgreSQL, schema {version})",
        f"a rolling upgrade: the real spooler of schema {version}'s drain still running"
        " while this version upgrades the PostgreSQL spool and enqueues",
        "as 27, on a PostgreSQL server (the older drain stops: exit 1)",
    )
    url, query = postgres_spool(postgres)
    upgrade_beside_an_older_drain(older, url, query, receiver, row)


# The older library as a long-running producer under a limit of 100 events: each line
# on stdin is a count of events to enqueue; it answers with their ids, or "full".
LIMITED_PRODUCER = """
import json, sys
from spooler import Spool
from spooler.errors import SpoolFullError
spool = Spool(sys.argv[1], max_events=100)
for line in sys.stdin:
    events = [{"kind": "p", "n": n} for n in range(int(line))]
    try:
        print(json.dumps(spool.enqueue_many(events)), flush=True)
    except SpoolFullError as error:
        print(json.dumps(f"full: {error}"), flush=True)
"""


def test_an_older_producer_still_running_counts_the_limits_right(
    older: OlderSpooler, tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "spool.db"
    # Given an older producer under a limit of 100 events, which enqueued 60
    with subprocess.Popen(
        older.python(LIMITED_PRODUCER, str(db)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **older.popen_args(),
    ) as producer:

        def enqueue(count: int) -> list[str] | str:
            """The ids of ``count`` events the older producer enqueued, or why not."""
            assert producer.stdin is not None and producer.stdout is not None
            producer.stdin.write(f"{count}\n")
            producer.stdin.flush()
            answer: list[str] | str = json.loads(producer.stdout.readline())
            return answer

        first = enqueue(60)
        assert isinstance(first, list) and len(first) == 60, first
        # When this version's drain upgrades the spool and delivers them
        done = drain_cli(db, receiver.url)
        assert done.returncode == 0, done.stderr
        assert schema_version(db) == SCHEMA_VERSION
        assert set(delivered(receiver)) == set(first)
        # Then the older producer, its spool empty, takes 60 more, and 40 after them
        for count in (60, 40):
            taken = enqueue(count)
            assert isinstance(taken, list) and len(taken) == count, taken
        # ... but not one more
        assert str(enqueue(1)).startswith("full: ")
