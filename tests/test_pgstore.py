"""What only the PostgreSQL store does: URLs and passwords, schemas, the database's clock,
waiting for a server that went away, and fork safety. (What both backends do is in
test_store_contract.py.)"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.cli import SPOOLER
from helpers.processes import free_port, require_program, wait_until
from pg_server import PASSWORD, PgBouncer, PostgresServer, drain_args, missing_postgres

import spooler.store.postgres.maintenance as postgres_maintenance
from spooler import ConfigError, Spool, SpoolFullError, StoreError
from spooler.doctor import diagnose
from spooler.history import HistoryPoint, minute_of
from spooler.records import QueueSelection
from spooler.testing import Receiver

psycopg = pytest.importorskip("psycopg")

from spooler.store.postgres import SCHEMA_VERSION  # noqa: E402 (needs psycopg)
from spooler.store.postgres.connection import Connections, _pipelined  # noqa: E402
from spooler.store.postgres_url import parse_url  # noqa: E402

SECRET = PASSWORD


@pytest.fixture
def password_role(postgres: PostgresServer) -> str:
    """The role that must give its password (``SECRET``), allowed to create a schema."""
    return postgres.password_role()


# -- the URL and its password ---------------------------------------------------------


def test_the_password_comes_from_the_url_and_is_never_shown(
    postgres: PostgresServer, password_role: str
) -> None:
    url = postgres.url(user=password_role, password=SECRET)
    with Spool(url) as spool:
        spool.enqueue({"e": 1})
        shown = f"{spool.path} {spool.store!r} {spool.status().to_dict()}"
    assert "s3cr" not in shown and "p%40ss" not in shown
    assert spool.path.startswith(f"postgresql://{password_role}@")


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE"])
def test_the_password_comes_from_libpq_s_environment(
    postgres: PostgresServer,
    password_role: str,
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url = postgres.url(user=password_role)
    with pytest.raises(StoreError, match="no password supplied"):
        Spool(url)
    if source == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", SECRET)
    else:
        passfile = tmp_path / "pgpass"
        escaped = SECRET.replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"*:*:*:{password_role}:{escaped}\n")
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    with Spool(url) as spool:
        assert spool.enqueue({"e": 1})


def test_a_refused_password_fails_at_once_without_showing_it(
    postgres: PostgresServer, password_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spooler.store.postgres import connection

    def no_waiting(seconds: float) -> None:
        raise AssertionError("a server that refuses the password is not waited for")

    monkeypatch.setattr(connection.time, "sleep", no_waiting)
    wrong = "wr0ng-s3cr3t"
    with pytest.raises(StoreError, match="password authentication failed") as info:
        Spool(postgres.url(user=password_role, password=wrong) + "&wait=600")
    assert wrong not in str(info.value)


def test_bad_spooler_parameters_are_config_errors(postgres: PostgresServer) -> None:
    with pytest.raises(ConfigError, match="schema must be a plain SQL name"):
        Spool(postgres.url(schema='x"; DROP TABLE y; --'))
    with pytest.raises(ConfigError, match="wait must be a number of seconds"):
        Spool(postgres.url() + "&wait=soon")


def test_psycopg_is_imported_only_for_a_database_url(pg_url: str, tmp_path: Path) -> None:
    code = (
        "import sys, spooler; spooler.Spool(sys.argv[1]).enqueue({'e': 1});"
        "print('psycopg' in sys.modules)"
    )
    for location, loaded in ((str(tmp_path / "spool.db"), "False"), (pg_url, "True")):
        done = subprocess.run(
            [sys.executable, "-c", code, location], capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == loaded


# -- the schema ---------------------------------------------------------------------


def test_the_schema_is_named_by_the_url_and_spools_in_one_database_are_apart(
    postgres: PostgresServer,
) -> None:
    base = postgres.admin_url()
    with Spool(base) as default, Spool(base + "?schema=other_app") as other:
        default.enqueue({"e": 1})
        assert other.status().total.queued == 0
        assert default.store.schema_version() == SCHEMA_VERSION
    assert postgres.sql("SELECT count(*) FROM spooler.queue") == [(1,)]
    assert postgres.sql("SELECT count(*) FROM other_app.queue") == [(0,)]
    postgres.sql("DROP SCHEMA spooler CASCADE")


def test_a_schema_of_other_tables_is_left_untouched(postgres: PostgresServer) -> None:
    postgres.sql("CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int)")
    with pytest.raises(StoreError, match="not a spooler spool; refusing"):
        Spool(postgres.url(schema="billing"))
    assert postgres.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'billing'") == [
        ("invoices",)
    ]


def test_a_newer_or_missing_schema_is_refused(postgres: PostgresServer) -> None:
    url = postgres.url()
    with pytest.raises(StoreError, match="no spool at"):
        Spool(url, create=False)
    Spool(url).close()
    schema = url.rsplit("=", 1)[1]
    postgres.sql(f"UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this spooler understands"):
        Spool(url)


def test_a_dead_letter_s_times_read_the_same_in_every_listing(postgres: PostgresServer) -> None:
    # Given a dead letter, written on the server's clock, which is this host's
    url = postgres.url()
    schema = url.rsplit("=", 1)[1]
    with Spool(url) as spool:
        dead_id = spool.dead_letters.add({"n": 1}, destination="d", reason="invalid", error="x")
        # When it is read again and again: in listings, alone, in the dashboard's pages
        reads = [next(spool.dead_letters.inspect()) for _ in range(3)]
        reads.append(next(spool.dead_letters.inspect([dead_id])))
        reads += [spool.dead_letters.page().events[0][1] for _ in range(3)]
    # Then every read gives the times the server wrote (each read measures the clocks'
    # offset anew, a fraction of a millisecond apart: moved by it exactly, no two agreed)
    [written] = postgres.sql(f"SELECT created_at, dead_at FROM {schema}.dead")
    assert {(event.created_at, event.dead_at) for event in reads} == {written}


def test_a_version_2_spool_keeps_its_leases_until_they_end(postgres: PostgresServer) -> None:
    # Given a spool of version 2 (with the history), where a drain leased an event in
    # its row (its attempt counted), and another event waits its turn
    url = postgres.url()
    with Spool(url) as spool:
        leased, waiting = spool.enqueue_many([{"n": 1}, {"n": 2}])
    schema = url.rsplit("=", 1)[1]
    postgres.sql(
        f"DROP TABLE {schema}.leases;"
        f" ALTER TABLE {schema}.queue ADD COLUMN lease_owner text, ADD COLUMN lease_until float8;"
        f" UPDATE {schema}.queue SET lease_owner = 'old', attempts = 1,"
        f" lease_until = extract(epoch FROM now()) + 60 WHERE event_id = '{leased}';"
        f" UPDATE {schema}.meta SET value = '2' WHERE key = 'schema_version'"
    )
    # When this version opens it (two hosts at once)
    with Spool(url) as first, Spool(url) as second:
        assert first.store.schema_version() == second.store.schema_version() == 3
        # Then the leased event waits for its old lease to end, and counts that attempt
        now = time.time()
        claim = first.store.claim("default", 9, "new", due_by=now, lease_until=now + 60)
        assert [e.event_id for e in claim.events] == [waiting]
        first.store.settle(claim.lease, now=now, delivered=[claim.events[0].rowid])
        later = first.store.claim("default", 9, "new", due_by=now + 61, lease_until=now + 120)
        assert [(e.event_id, e.attempts) for e in later.events] == [(leased, 2)]
    assert postgres.sql(
        "SELECT count(*) FROM information_schema.columns"
        f" WHERE table_schema = '{schema}' AND column_name LIKE 'lease%'"
    ) == [(0,)]


def test_a_version_1_spool_is_upgraded_in_place_and_keeps_its_events(
    postgres: PostgresServer,
) -> None:
    # Given a spool as version 1 made it: no history, no index of dead letters by
    # destination, leases in the queue's rows
    url = postgres.url()
    with Spool(url) as spool:
        event_id = spool.enqueue({"kept": 1})
    schema = url.rsplit("=", 1)[1]
    postgres.sql(f"DROP TABLE {schema}.history")
    postgres.sql(f"DROP INDEX {schema}.dead_by_destination")
    postgres.sql(
        f"DROP TABLE {schema}.leases;"
        f" ALTER TABLE {schema}.queue ADD COLUMN lease_owner text, ADD COLUMN lease_until float8"
    )
    postgres.sql(f"UPDATE {schema}.meta SET value = '1' WHERE key = 'schema_version'")
    # When it is opened, it is upgraded, and keeps its events and a history from then on
    with Spool(url) as spool:
        assert spool.store.schema_version() == SCHEMA_VERSION == 3
        claim = spool.store.claim("default", 1, "me", due_by=9e9, lease_until=9e9 + 60)
        [event] = claim.events
        assert event.event_id == event_id
        now = time.time()
        spool.store.record_history([HistoryPoint(minute_of(now), "d", retried=2)], now=now, keep=60)
        assert spool.store.history(since=now, now=now) == [
            HistoryPoint(minute_of(now), "d", retried=2)
        ]


def test_an_empty_schema_an_administrator_made_is_used(postgres: PostgresServer) -> None:
    postgres.sql("CREATE SCHEMA made_for_spooler")
    with Spool(postgres.url(schema="made_for_spooler")) as spool:
        spool.enqueue({"e": 1})
        assert spool.status().total.queued == 1


def test_hosts_that_start_at_once_on_a_new_schema_all_use_the_spool_one_creates(
    pg_url: str,
) -> None:
    # Given eight producers that open one new spool at the same instant
    start = threading.Barrier(8)
    created: list[bool] = []
    errors: list[BaseException] = []

    def open_spool() -> None:
        start.wait(30)
        try:
            with Spool(pg_url) as spool:
                spool.enqueue({"e": 1})
                created.append(spool.store.created)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_spool) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then one of them created it, and none took it for another application's tables
    assert errors == []
    assert sorted(created) == [False] * 7 + [True]
    with Spool(pg_url) as spool:
        assert spool.status().total.queued == 8


# -- one clock for every host --------------------------------------------------------


def test_leases_run_on_the_database_s_clock(pg_url: str) -> None:
    # Given a host whose clock is an hour slow, and one whose clock is right
    slow = Spool(pg_url, clock=lambda: time.time() - 3600)
    right = Spool(pg_url)
    right.enqueue({"e": 1})
    # When the slow host's drain leases the event for 60 seconds of its own clock
    now = slow.store._clock()
    [event] = slow.store.claim("default", 10, "slow", due_by=now, lease_until=now + 60).events
    # Then the lease holds for every host, and every host sees its own times
    later = time.time()
    assert right.store.claim("default", 10, "right", due_by=later, lease_until=later + 60) is None
    assert abs(event.queued_at - now) < 5
    assert abs(right.store.next_due_at("default") - (later + 60)) < 5
    assert abs(slow.status().destinations["default"].oldest_queued_at - now) < 5
    assert slow.store.shift_schedule(3600, now=now) == 0  # nothing to undo
    slow.close()
    right.close()


# -- retried operations --------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
def test_an_insert_run_again_stores_each_event_once(pg_url: str, count: int) -> None:
    # What happens when an enqueue's connection broke at commit and it is sent again
    # (one event: a plain INSERT that the unique index refuses; several: ON CONFLICT).
    with Spool(pg_url) as spool:
        rows = [("a" * 36, "default", "{}"), ("b" * 36, "default", "{}")][:count]
        spool.store.insert(rows, now=time.time())
        spool.store.insert(rows, now=time.time())
        assert spool.status().total.queued == count
        assert spool.store.totals() == (count, 2 * count)


def test_enqueues_on_new_connections_leave_no_error_in_the_server_s_log(
    postgres: PostgresServer, pg_url: str
) -> None:
    # Given a spool, and the end of the server's log
    Spool(pg_url).close()
    start = os.path.getsize(postgres.log)
    # When producers enqueue, each on a connection of its own (as each `spooler enqueue`)
    for _ in range(3):
        with Spool(pg_url) as spool:
            spool.enqueue({"e": 1})
            spool.enqueue({"e": 2})
    # Then the events are there, and the server logged no error for them
    with Spool(pg_url) as spool:
        assert spool.status().total.queued == 6
    with open(postgres.log, encoding="utf-8", errors="replace") as file:
        file.seek(start)
        logged = file.read()
    assert "ERROR" not in logged, logged


def test_a_stopped_server_with_no_wait_is_a_store_error_at_once(
    own_postgres: PostgresServer,
) -> None:
    with Spool(own_postgres.url() + "&wait=0") as spool:
        spool.enqueue({"e": 1})
        own_postgres.stop()
        with pytest.raises(StoreError, match="could not be reached for 0s"):
            spool.enqueue({"e": 2})
        own_postgres.start()
        spool.enqueue({"e": 3})  # the broken connection is replaced
        assert spool.status().total.queued == 2


_OPEN_A_SPOOL = """
import sys
from spooler import Spool, StoreError
from spooler.store.postgres import connection
connection.DEFAULT_CONNECT_TIMEOUT = 2  # libpq's shortest: a quicker test
try:
    Spool(sys.argv[1])
except StoreError as exc:
    print(exc)
"""


def test_a_server_that_accepts_and_never_answers_fails_after_the_timeouts() -> None:
    # Given a "server" that takes connections into its backlog and never answers them
    # (as a postmaster shutting down does, until its last child is gone), and a URL
    # that sets no connect_timeout
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        url = f"postgresql://spooler@127.0.0.1:{port}/events?wait=0"
        # When a spool is opened there (in a process of its own: one that waits for
        # ever is killed at the deadline, and the test fails)
        opened = subprocess.run(
            [sys.executable, "-c", _OPEN_A_SPOOL, url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    # Then it gave up after its connections' and its check's timeouts, saying why
    assert "could not be reached for 0s" in opened.stdout, opened


def _sockets_to(port: int) -> int:
    """How many TCP connections this process holds to ``port`` (IPv4)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since it was listed
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                mine.add(target[len("socket:[") : -1])
    with open("/proc/net/tcp", encoding="ascii") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    # Columns: sl, local address, remote address (hex ip:port), ..., inode (the 10th).
    return sum(1 for row in rows if int(row[2].split(":")[1], 16) == port and row[9] in mine)


def test_a_connect_that_timed_out_leaves_no_socket_for_a_server_shutdown_to_wait_for() -> None:
    # Given a server on TCP (where libpq first asks for SSL and waits for the answer)
    # whose postmaster is busy (stopped here): new connections wait in its backlog
    why = missing_postgres()
    if why:
        pytest.skip(why)
    port = free_port()
    settings = {"listen_addresses": "127.0.0.1", "port": str(port)}
    # A process still waiting for a startup packet at the end keeps the server up this long.
    settings["authentication_timeout"] = "600s"
    server = PostgresServer(settings=settings)
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres?wait=0&connect_timeout=2"
        Spool(url).close()
        pid_file = os.path.join(server.data, "postmaster.pid")
        with open(pid_file, encoding="ascii") as file:
            postmaster = int(file.readline())
        os.kill(postmaster, signal.SIGSTOP)
        try:
            # When a spool's connection attempt times out there (its error kept, as a
            # caller may keep it: then the garbage collector cannot end it either)
            with pytest.raises(StoreError, match="connection timeout expired") as failed:
                Spool(url)
            # Then this process holds no socket to the server
            assert _sockets_to(port) == 0, failed.value
        finally:
            # And a fast shutdown that meets the connection in the backlog (a process
            # that answers SSL, then waits for the startup packet) ends, before
            # authentication_timeout: the deadline only guards against a hang
            os.kill(postmaster, signal.SIGINT)
            os.kill(postmaster, signal.SIGCONT)
        assert wait_until(lambda: not os.path.exists(pid_file), timeout=60)
    finally:
        server.close()


class LoopingProducer:
    """A thread that enqueues into ``spool`` until ``stop()``: the ids it was given
    (``acknowledged``), and the error that ended it, if one did (``errors``)."""

    def __init__(self, spool: Spool) -> None:
        self.acknowledged: list[str] = []
        self.errors: list[BaseException] = []
        self._spool = spool
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                self.acknowledged.append(self._spool.enqueue({"n": len(self.acknowledged)}))
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_producers_wait_while_the_server_restarts(own_postgres: PostgresServer) -> None:
    # Given a producer enqueueing in a loop
    spool = Spool(own_postgres.url() + "&wait=120")
    producer = LoopingProducer(spool)
    acknowledged = producer.acknowledged
    assert wait_until(lambda: len(acknowledged) >= 20)
    # When the server stops, and starts again
    own_postgres.stop("immediate")
    during = len(acknowledged)
    own_postgres.start()
    assert wait_until(lambda: len(acknowledged) >= during + 20, timeout=60)
    producer.stop()
    # Then the producer waited instead of failing, and every enqueue it was told of is there
    assert producer.errors == []
    count = own_postgres.sql(f"SELECT count(*) FROM {spool.store.schema}.queue")[0][0]
    assert count >= len(acknowledged)
    spool.close()


def test_a_connection_the_server_dropped_is_replaced_without_a_warning(
    postgres: PostgresServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a spool whose writes are pipelined (a drain's: durability "normal"), with
    # a connection of its pool that the server then ends (a server process killed, an
    # administrator's pg_terminate_backend) while it is idle
    name = f"dropped_{os.getpid()}"
    with Spool(f"{pg_url}&application_name={name}", durability="normal") as spool:
        spool.enqueue_many([{"n": 1}, {"n": 2}])
        [[ended]] = postgres.sql(
            f"SELECT count(pg_terminate_backend(pid, 30000)) FROM pg_stat_activity"
            f" WHERE application_name = '{name}'"
        )
        assert ended == 1  # and gone: pg_terminate_backend waited for it
        # When the spool writes on it again
        caplog.set_level(logging.INFO)
        spool.enqueue_many([{"n": 3}, {"n": 4}])
        # Then the write went through on a new connection, and nothing was logged:
        # neither psycopg's "error ignored terminating <psycopg.Pipeline [BAD]>" nor an
        # outage, as the next try reached the server at once
        assert spool.status().total.queued == 4
    assert [record.getMessage() for record in caplog.records] == []


def test_a_pipeline_whose_server_connection_pgbouncer_lost_leaves_no_psycopg_line(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given pipelined transactions of the store's through PgBouncer, whose server
    # connection ends mid-statement (a server restart, pg_terminate_backend): PgBouncer
    # says "server conn crashed?" (SQLSTATE 08P01) before it ends the client's
    # connection, so psycopg's sync at the block's end may fail on a connection not yet
    # marked broken. (It did in 2 of 3 tries here: five make its absence no accident.)
    require_program("pgbouncer", "pgbouncer")
    bouncer = PgBouncer(postgres)
    caplog.set_level(logging.INFO)
    try:
        for _ in range(5):
            with psycopg.connect(postgres_url_of(bouncer), autocommit=True) as conn:
                with (
                    pytest.raises(psycopg.OperationalError) as raised,
                    _pipelined(conn, synchronous=False),
                ):
                    [(server_process,)] = conn.execute("SELECT pg_backend_pid()").fetchall()
                    ending = threading.Timer(
                        0.3,
                        postgres.sql,
                        [f"SELECT pg_terminate_backend({server_process}, 30000)"],
                    )
                    ending.start()
                    conn.execute("SELECT pg_sleep(30)").fetchall()
                ending.join()
                # When the block leaves on the server's word that it went away
                assert raised.value.sqlstate == "57P01"
        # Then psycopg's "error ignored terminating <psycopg.Pipeline [ACTIVE,
        # pipeline=ABORTED]>: server conn crashed?" is left out, as on a server itself
        assert [r.getMessage() for r in caplog.records if r.name == "psycopg"] == []
    finally:
        bouncer.close()


def postgres_url_of(bouncer: PgBouncer) -> str:
    """A plain libpq URL through ``bouncer`` (no spooler parameters)."""
    return bouncer.url("unused").split("?")[0]


def test_psycopg_still_tells_of_a_pipeline_error_on_a_connection_that_is_up(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a pipelined transaction of the store's, on a connection that stays up, whose
    # statement fails while the block leaves on another error
    with psycopg.connect(postgres.admin_url(), autocommit=True) as conn:
        with pytest.raises(RuntimeError), _pipelined(conn, synchronous=False):
            conn.execute("SELECT 1/0")
            raise RuntimeError("the block's own error")
        # Then psycopg's line about the statement's error, which nothing else reports,
        # still shows
        [record] = caplog.records
        assert record.name == "psycopg" and "division by zero" in record.getMessage()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable


def test_a_forked_child_opens_its_own_connections(pg_url: str) -> None:
    spool = Spool(pg_url)
    spool.enqueue({"who": "parent"})
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's exit code is the assertion
        try:
            spool.enqueue({"who": "child"})
        finally:
            os._exit(0 if spool.status().total.queued == 2 else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    spool.enqueue({"who": "parent again"})  # the parent's connection was left alone
    assert spool.status().total.queued == 3
    assert spool.hold(everything=True) == 3
    assert spool.release(everything=True) == 3
    spool.close()


def test_selections_name_events_by_id(pg_url: str) -> None:
    with Spool(pg_url) as spool:
        first, second = spool.enqueue_many([{"n": 1}, {"n": 2}])
        assert spool.store.hold(QueueSelection(ids=(second,)), now=time.time()) == 1
        assert spool.status().total.held == 1
        assert spool.expire([first]) == 1
        assert [d.event_id for d in spool.dead_letters.inspect()] == [first]


# -- poolers -------------------------------------------------------------------------

PRODUCE = (
    "import sys; from spooler import Spool\n"
    "with Spool(sys.argv[1]) as spool:\n"
    "    for n in range(200): spool.enqueue({'n': n})"
)


def test_producers_and_drains_through_pgbouncer_in_transaction_mode(
    postgres: PostgresServer, receiver: Receiver
) -> None:
    # Each store operation is one transaction that leaves nothing in the session, so a
    # pooler may hand every transaction to another server connection. Only the
    # statements psycopg prepares on the server cannot follow (PgBouncer < 1.21).
    require_program("pgbouncer", "pgbouncer")
    bouncer = PgBouncer(postgres)
    try:
        url = bouncer.url("bounced") + "&prepared_statements=off"
        Spool(url).close()
        producers = [subprocess.Popen([sys.executable, "-c", PRODUCE, url]) for _ in range(3)]
        drains = [
            subprocess.Popen(
                [*SPOOLER, *drain_args(url, receiver.url, until_empty=True)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        assert [p.wait(timeout=120) for p in producers] == [0, 0, 0]
        for drain in drains:
            _, errors = drain.communicate(timeout=180)
            assert drain.returncode == 0, errors[-2000:]
        last = subprocess.run(
            [*SPOOLER, *drain_args(url, receiver.url, until_empty=True)],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert last.returncode == 0, last.stderr[-2000:]
        ids = [event["id"] for event in receiver.delivered]
        assert len(ids) == 600 and len(set(ids)) == 600
    finally:
        bouncer.close()


def test_producers_and_a_drain_through_pgbouncer_wait_while_the_server_restarts(
    own_postgres: PostgresServer, receiver: Receiver
) -> None:
    # PgBouncer stays up while the server restarts, and answers for it with errors of
    # its own (SQLSTATE 08P01: "server login has been failing"): a pause, not an error.
    require_program("pgbouncer", "pgbouncer")
    bouncer = PgBouncer(own_postgres)
    drain = None
    url = bouncer.url("bounced") + "&prepared_statements=off&wait=120"
    spool = Spool(url)
    try:
        # Given a producer enqueueing in a loop and a drain, both through PgBouncer
        drain = subprocess.Popen(
            [*SPOOLER, *drain_args(url, receiver.url, until_empty=False)],
            stderr=subprocess.PIPE,
            text=True,
        )
        producer = LoopingProducer(spool)
        acknowledged = producer.acknowledged
        assert wait_until(lambda: len(receiver.delivered) >= 20, timeout=60)
        # When the server stops, and starts again
        own_postgres.stop()
        during = len(acknowledged)
        own_postgres.start()
        assert wait_until(lambda: len(acknowledged) >= during + 20, timeout=120)
        producer.stop()
        # Then the producer waited instead of failing, and the drain, still running,
        # delivers every event the producer was told of
        assert producer.errors == []
        assert wait_until(
            lambda: (
                {e["id"] for e in receiver.delivered} >= set(acknowledged)
                or drain.poll() is not None
            ),
            timeout=120,
        )
        assert drain.poll() is None, drain.communicate()[1][-2000:]
    finally:
        spool.close()
        if drain is not None and drain.poll() is None:
            drain.terminate()
            drain.communicate(timeout=60)
        bouncer.close()


def test_a_transaction_whose_server_connection_pgbouncer_lost_runs_again(
    postgres: PostgresServer,
) -> None:
    # A server restart (pg_ctl restart -m fast) or an administrator's
    # pg_terminate_backend ends the server connection PgBouncer had lent a transaction
    # of the store's (a drain's claim or its read of when to claim next, say). PgBouncer
    # answers the COMMIT with its error, then ends the client's connection: two
    # results, which psycopg raises as InternalError("received 2 results from command
    # 'COMMIT'"), with no SQL state. A drain stopped on it (exit 1) in a chaos soak.
    require_program("pgbouncer", "pgbouncer")
    bouncer = PgBouncer(postgres)
    connections = Connections(
        parse_url(bouncer.url("lost") + "&prepared_statements=off"), synchronous=True
    )
    tries: list[int] = []

    def transaction(conn: psycopg.Connection) -> int:
        with conn.transaction():
            [(server_process,)] = conn.execute("SELECT pg_backend_pid()").fetchall()
            tries.append(server_process)
            if len(tries) == 1:  # the server connection ends before the COMMIT
                postgres.sql(f"SELECT pg_terminate_backend({server_process}, 30000)")
        return len(tries)

    try:
        # When the transaction's COMMIT meets the lost connection
        # Then it runs again, on a new connection, as after any connection lost
        assert connections.run(transaction) == 2
    finally:
        connections.close()
        bouncer.close()


# -- spooler doctor -------------------------------------------------------------------


def findings(spool: Spool) -> dict[str, tuple[str, str]]:
    """``spooler doctor``'s findings on ``spool``, by check: (level, detail)."""
    return {f.check: (f.level, f.detail) for f in diagnose(spool, now=time.time())}


def test_doctor_checks_the_server_not_files(pg_url: str) -> None:
    with Spool(pg_url) as spool:
        spool.enqueue({"e": 1})
        found = findings(spool)
    assert set(found) == {"integrity", "schema", "server", "bloat", "leases", "bodies"}
    assert found["server"][0] == "ok" and found["server"][1].startswith("PostgreSQL 15")
    assert found["schema"] == ("ok", f"version {SCHEMA_VERSION}")


def test_doctor_warns_of_dead_rows_autovacuum_left(postgres: PostgresServer, pg_url: str) -> None:
    # Given a queue whose table autovacuum may not clean, and 12,000 events gone from it
    with Spool(pg_url) as spool:
        schema = spool.store.schema
        postgres.sql(f"ALTER TABLE {schema}.queue SET (autovacuum_enabled = false)")
        for _ in range(3):
            spool.enqueue_many([{"n": n} for n in range(4000)])
        assert spool.expire(everything=True) == 12_000
        # When the doctor looks (the statistics trail the deletes by a second or so)
        assert wait_until(lambda: findings(spool)["bloat"][0] == "warning", timeout=30)
        # Then it says how many rows are dead, and where to read what to do
        detail = findings(spool)["bloat"][1]
        assert "queue 12,000 of 12,000 rows dead" in detail and "Table bloat" in detail
        postgres.sql(f"VACUUM {schema}.queue")
        assert wait_until(lambda: findings(spool)["bloat"][0] == "ok", timeout=30)


def test_doctor_warns_of_a_long_held_transaction(
    postgres: PostgresServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_maintenance, "LONG_TRANSACTION", 0.0)
    with Spool(pg_url) as spool, psycopg.connect(postgres.admin_url()) as other:
        assert findings(spool)["bloat"][0] == "ok"
        other.execute("SELECT 1")  # psycopg began a transaction, and leaves it open
        level, detail = findings(spool)["bloat"]
        assert level == "warning" and "a transaction in this database has been open" in detail


# -- totals and limits ----------------------------------------------------------------


def test_totals_are_kept_from_the_first_limit_on_and_miss_no_event(
    postgres: PostgresServer, pg_url: str
) -> None:
    # Given producers that set no limit: the totals cost their inserts nothing
    spool = Spool(pg_url)
    schema = spool.store.schema
    spool.enqueue_many([{"n": n} for n in range(10)])
    spool.enqueue({"n": 10})
    assert postgres.sql(f"SELECT sum(events)::int FROM {schema}.totals") == [(0,)]
    assert spool.store.totals() == (11, 11 * len('{"n":1}') + 1)  # counted row by row
    # When a producer with a limit starts, while others enqueue and a drain delivers
    stop, errors = threading.Event(), []

    def busy(work: Callable[[], object]) -> None:
        try:
            while not stop.is_set():
                work()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def deliver() -> None:
        now = time.time()
        batch = spool.store.claim("default", 5, "drain", due_by=now, lease_until=now + 60)
        if batch:
            spool.store.settle(batch.lease, now=now, delivered=[e.rowid for e in batch.events])

    threads = [
        threading.Thread(target=busy, args=(work,))
        for work in (
            lambda: spool.enqueue({"n": 1}),
            lambda: spool.enqueue_many([{"n": 2}, {"n": 3}]),
            deliver,
        )
    ]
    for thread in threads:
        thread.start()
    with Spool(pg_url, max_events=10**9) as limited:
        limited.enqueue({"limited": True})
        before = spool.store.totals()[0]
        assert wait_until(lambda: spool.status().total.queued > before + 20, timeout=30)
    stop.set()
    for thread in threads:
        thread.join()
    # Then the totals kept match a count of every row: no event went uncounted
    assert errors == []
    kept = postgres.sql(f"SELECT sum(events)::int, sum(bytes)::int FROM {schema}.totals")
    counted = postgres.sql(
        f"SELECT (SELECT count(*) FROM {schema}.queue)::int + (SELECT count(*) FROM"
        f" {schema}.dead)::int, (SELECT coalesce(sum(octet_length(body)), 0) FROM"
        f" {schema}.queue)::int"
    )
    assert kept == counted and spool.store.totals() == counted[0]
    spool.close()


def test_a_producer_without_limits_counts_its_events_once_another_sets_one(pg_url: str) -> None:
    # Given a producer that sets no limit and has enqueued: no totals are kept yet
    free = Spool(pg_url)
    free.enqueue({"n": 0})
    # When a producer with a limit starts, and the first one enqueues again
    with Spool(pg_url, max_events=5) as limited:
        limited.enqueue({"limited": True})
        for n in range(1, 4):
            free.enqueue({"n": n})
        # Then its events are stored, and count against the other's limit
        assert free.status().total.queued == 5
        assert limited.store.totals() == (5, 4 * len('{"n":0}') + len('{"limited":true}'))
        with pytest.raises(SpoolFullError):
            limited.enqueue({"limited": True})
    free.close()


def test_a_role_that_may_not_insert_is_told_which_grants_to_read(
    postgres: PostgresServer, pg_url: str
) -> None:
    Spool(pg_url).close()
    schema = pg_url.rsplit("=", 1)[1]
    postgres.sql(
        "DO $$ BEGIN CREATE ROLE spooler_reader LOGIN; EXCEPTION WHEN duplicate_object"
        f" THEN NULL; END $$; GRANT USAGE ON SCHEMA {schema} TO spooler_reader;"
        f" GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO spooler_reader"
    )
    with Spool(pg_url.replace("postgres@", "spooler_reader@")) as spool:
        for enqueue in (lambda: spool.enqueue({"e": 1}), lambda: spool.enqueue_many([{}, {}])):
            with pytest.raises(StoreError, match=": permission denied for table ") as info:
                enqueue()
            assert "'One queue for many hosts' in docs/operations.md" in str(info.value)
        assert spool.status().total.queued == 0
