"""Connections of the PostgreSQL store: a small pool per process, and the retries that
carry an operation across a server restart.

A store operation takes a connection from the pool for its one transaction and gives
it back, so a drain's worker threads never share one. While the server cannot be
reached, an operation keeps trying for ``wait`` seconds (the URL's ``wait``, default
10), then fails with ``StoreError``: docs/guarantees.md says why a producer waits.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn, PGresult

from ...errors import StoreError
from ..postgres_url import Target

__all__ = ["Connections"]

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 5  # seconds, where the URL sets none: libpq's own is forever
# Errors after which the same operation may simply run again: the server went away
# (57P01-57P03: shut down, crashed, starting up), a pooler lost it (class 08, which
# PgBouncer answers while the server restarts: "server login has been failing",
# "query_wait_timeout"), or it chose this transaction to abort (a deadlock, a
# serialization failure); in each case nothing of it was committed.
_RETRY_STATES = ("57P01", "57P02", "57P03", "40P01", "40001")
_RETRY_CLASSES = ("08",)
_LONGEST_PAUSE = 1.0  # seconds between tries while the server is away


class Connections:
    """The store's connections in this process, and ``run``, which retries operations."""

    def __init__(self, target: Target, *, synchronous: bool) -> None:
        self.target = target
        self.synchronous = synchronous
        self._options = psycopg.conninfo.conninfo_to_dict(target.conninfo)
        # What a ping connects to: the URL, with the connections' own connect_timeout.
        # Without one, libpq waits for ever for a server that accepted the connection
        # and never answers (a postmaster shutting down holds it in its backlog until a
        # client of ours, whose failed connection the ping keeps open, gives up: 60 s).
        ping_options = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT, **self._options}
        self._ping_conninfo = psycopg.conninfo.make_conninfo("", **ping_options).encode()
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection] = []
        self._pid = os.getpid()
        self._inherited: list[psycopg.Connection] = []
        self._closed = False
        # The statements ``execute_direct`` prepared on each connection: preparing first,
        # rather than trying and preparing on "does not exist", keeps that error out of
        # the server's log, where every new connection (each `spooler enqueue`) put one.
        self._prepared: weakref.WeakKeyDictionary[psycopg.Connection, set[bytes]] = (
            weakref.WeakKeyDictionary()
        )

    def run(self, operation: Callable[[psycopg.Connection], T]) -> T:
        """Run ``operation`` (one transaction) on a connection of the pool.

        While the server is unreachable (or chose the transaction to abort) it runs
        again on a new connection, for up to ``wait`` seconds; any other database error
        leaves as ``StoreError``. So an operation must be safe to repeat after its
        connection broke at commit: each checks its own lease or event ids.
        """
        deadline: float | None = None
        pause = 0.0
        refused = False
        while True:
            conn: psycopg.Connection | None = None
            try:
                conn = self._take()
                try:
                    return operation(conn)
                finally:
                    self._give_back(conn)
            except psycopg.Error as exc:
                verdict = self._verdict(exc, connecting=conn is None)
                if verdict == "fail" or (verdict == "refused" and refused):
                    raise self._store_error(exc) from None
                # Refused twice in a row: the server is up and refuses us. (Through a
                # pooler, a connection it broke while the server restarted pings as
                # answering too, and what follows is the pooler's "retry" error.)
                refused = verdict == "refused"
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.target.wait
                if now + pause > deadline:
                    raise StoreError(
                        f"{self.target.shown}: PostgreSQL could not be reached for "
                        f"{self.target.wait:g}s: {_first_line(exc)}"
                    ) from None
                if pause:
                    time.sleep(pause)
                pause = min(max(pause * 2, 0.05), _LONGEST_PAUSE)

    def execute_direct(
        self, conn: psycopg.Connection, name: bytes, statement: bytes, params: list[str]
    ) -> int:
        """Run one statement that returns no rows (``$1``, ``$2``... its text parameters)
        straight through libpq (``Connection.pgconn``), prepared on the server as
        ``name`` the first time a connection runs it; without prepared statements (a
        pooler), sent whole each time. Its own transaction, at full durability. Returns
        how many rows it inserted, updated or deleted.

        For the statement every enqueue runs: psycopg's cursor costs a producer as much
        CPU again as this (docs/performance.md, target 8).
        """
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        values = [value.encode(encoding) for value in params]
        if not self.target.prepared_statements:
            result = pgconn.exec_params(statement, values)
        else:
            prepared = self._prepared.setdefault(conn, set())
            if name not in prepared:
                _prepare(pgconn, name, statement)
                prepared.add(name)
            result = pgconn.exec_prepared(name, values)
            if result.status == pq.ExecStatus.FATAL_ERROR and _sqlstate(result) == "26000":
                # Not prepared on this session after all (a pooler changed it).
                _prepare(pgconn, name, statement)
                result = pgconn.exec_prepared(name, values)
        _raise_for(pgconn, result)
        return result.command_tuples or 0

    def writing(
        self, conn: psycopg.Connection, *, one_statement: bool = False
    ) -> AbstractContextManager[object]:
        """The block's statements as one transaction that commits at the durability asked
        (with ``durability="normal"`` a commit does not wait for the disk). A block of
        ``one_statement`` needs no BEGIN: the statement is its own transaction."""
        if self.synchronous and one_statement:
            return nullcontext()
        return _pipelined(conn, synchronous=self.synchronous)

    @staticmethod
    @contextmanager
    def snapshot(conn: psycopg.Connection) -> Iterator[None]:
        """The block's reads as one read-only transaction that sees one instant."""
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def close(self) -> None:
        """Close this process's idle connections; no operation runs afterwards."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for conn in idle:
                conn.close()

    def _take(self) -> psycopg.Connection:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self.target.shown}: this spool was closed")
            if self._pid != os.getpid():
                # A connection must never be used on both sides of a fork(). The
                # parent's are kept, unused, so that nothing here ends their sessions.
                self._inherited += self._idle
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        defaults: dict[str, Any] = {
            key: value
            for key, value in (
                ("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                ("application_name", "spooler"),
            )
            if key not in self._options
        }
        try:
            return psycopg.connect(
                self.target.conninfo,
                autocommit=True,
                # psycopg prepares a statement on the server once it has run it 5 times.
                prepare_threshold=5 if self.target.prepared_statements else None,
                **defaults,
            )
        except psycopg.Error as exc:
            # An attempt that timed out leaves its libpq connection, socket open, in the
            # frame of psycopg's connect() that the error's traceback holds, in a cycle
            # only the garbage collector ends. Meanwhile a server going down that took
            # that socket late keeps a process for it until authentication_timeout
            # (60 s), and pg_ctl stop waits for it. Clearing the frames closes it now.
            traceback.clear_frames(exc.__traceback__)
            raise

    def _give_back(self, conn: psycopg.Connection) -> None:
        # pgconn's, not conn.info's: the same state, without a new object per operation.
        usable = not conn.broken and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        with self._lock:
            if usable and not self._closed and self._pid == os.getpid():
                self._idle.append(conn)
                return
            if conn.broken:
                # The server went away: the other idle connections are as dead.
                stale, self._idle = self._idle, []
            else:
                stale = []
        for each in [conn, *stale]:
            each.close()

    def _verdict(self, exc: psycopg.Error, *, connecting: bool) -> str:
        """``retry``: the server is away, or chose this transaction to abort; ``refused``:
        a connection failed, yet the server now accepts connections (it may just have
        finished starting: worth one more try, after which it is refusing us, over a
        password say); ``fail``: anything else."""
        if exc.sqlstate in _RETRY_STATES or (exc.sqlstate or "")[:2] in _RETRY_CLASSES:
            return "retry"
        if exc.sqlstate is not None or not isinstance(exc, psycopg.OperationalError):
            return "fail"
        if not connecting:
            # An open connection broke: the server went away, or a pooler lost it
            # (which then answers pings itself).
            return "retry"
        # No SQL state: the connection failed.
        ping = pq.PGconn.ping(self._ping_conninfo)
        if ping in (pq.Ping.NO_RESPONSE, pq.Ping.REJECT):
            return "retry"
        return "refused" if ping == pq.Ping.OK else "fail"

    def _store_error(self, exc: psycopg.Error) -> StoreError:
        """The ``StoreError`` an operator reads for a database error on this spool."""
        hint = ""
        if exc.sqlstate == "42501":
            hint = " (see 'One queue for many hosts' in docs/operations.md for the grants)"
        return StoreError(f"{self.target.shown}: {_first_line(exc)}{hint}")


@contextmanager
def _pipelined(conn: psycopg.Connection, *, synchronous: bool) -> Iterator[None]:
    # BEGIN, the statements and COMMIT go out together (a pipeline): one round trip
    # unless a statement's result is read before the end. SET LOCAL, not a setting of
    # the session: a pooler may hand the session to someone else.
    with conn.pipeline(), conn.transaction():
        if not synchronous:
            conn.execute("SET LOCAL synchronous_commit TO off")
        yield


def _prepare(pgconn: PGconn, name: bytes, statement: bytes) -> None:
    """Prepare ``statement`` as ``name`` on the session, unless it already is there (a
    pooler's server session, prepared by another client)."""
    result = pgconn.prepare(name, statement)
    if result.status == pq.ExecStatus.FATAL_ERROR and _sqlstate(result) == "42P05":
        return
    _raise_for(pgconn, result)


def _sqlstate(result: PGresult) -> str | None:
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    return state.decode() if state else None


def _raise_for(pgconn: PGconn, result: PGresult) -> None:
    """Raise the psycopg error a failed libpq result stands for, as psycopg's cursor
    would: the class of its SQL state, or ``OperationalError`` when the connection
    failed (no SQL state)."""
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return
    primary = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
    message = (primary or pgconn.error_message).decode(errors="replace").strip()
    state = _sqlstate(result)
    if state is None:
        raise psycopg.OperationalError(message)
    try:
        error = psycopg.errors.lookup(state)
    except KeyError:
        error = psycopg.DatabaseError
    raise error(message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
