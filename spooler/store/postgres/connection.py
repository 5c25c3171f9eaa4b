"""Connections of the PostgreSQL store: a small pool per process, and the retries that
carry an operation across a server restart.

A store operation takes a connection from the pool for its one transaction and gives
it back, so a drain's worker threads never share one. While the server cannot be
reached, an operation keeps trying for ``wait`` seconds (the URL's ``wait``, default
10), then fails with ``StoreUnreachableError``: docs/guarantees.md says why a producer
waits. The process logs such an outage once, when the first of its operations meets
it (what failed, until when it is retried), and once more when the server answers.
"""

from __future__ import annotations

import logging
import os
import re
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

from ...errors import StoreError, StoreUnreachableError
from ..postgres_url import Target

__all__ = ["Connections"]

T = TypeVar("T")

log = logging.getLogger("spooler.store")

DEFAULT_CONNECT_TIMEOUT = 5  # seconds, where the URL sets none: libpq's own is forever
# Errors after which the same operation may simply run again, as nothing of it was
# committed: the server went away (57P01-57P03: shut down, crashed, starting up) or a
# pooler lost it (class 08, which PgBouncer answers while the server restarts: "server
# login has been failing", "query_wait_timeout"), an outage; or the server chose this
# transaction to abort (a deadlock, a serialization failure), which is none.
_AWAY_STATES = ("57P01", "57P02", "57P03")
_AWAY_CLASSES = ("08",)
_ABORTED_STATES = ("40P01", "40001")
_LONGEST_PAUSE = 1.0  # seconds between tries while the server is away
# A host name that did not resolve, as psycopg (3.2 and later: it resolves names
# itself) or libpq (psycopg 3.1) says it: the name, and the resolver's reason.
_UNRESOLVED = re.compile(
    r"failed to resolve host '(?P<psycopg>[^']*)': (?:\[Errno -?\d+\] )?(?P<why>.*)"
    r'|could not translate host name "(?P<libpq>[^"]*)" to address: (?P<libpq_why>.*)'
)


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
        # Since when (time.monotonic()) the process's operations have found the server
        # away, as ``_went_away`` said; None while it answers. (Under ``_lock``.)
        self._away_since: float | None = None

    def run(self, operation: Callable[[psycopg.Connection], T]) -> T:
        """Run ``operation`` (one transaction) on a connection of the pool.

        While the server is unreachable (or chose the transaction to abort) it runs
        again on a new connection, for up to ``wait`` seconds, then leaves as
        ``StoreUnreachableError``; any other database error leaves as ``StoreError``.
        So an operation must be safe to repeat after its connection broke at commit:
        each checks its own lease or event ids.
        """
        deadline: float | None = None
        pause = 0.0
        refused = False
        failed = 0
        while True:
            conn: psycopg.Connection | None = None
            try:
                conn = self._take()
                try:
                    result = operation(conn)
                finally:
                    self._give_back(conn)
                if self._away_since is not None:  # read without the lock: a hint
                    self._answered()
                return result
            except psycopg.Error as exc:
                verdict = self._verdict(
                    exc, connecting=conn is None, lost=conn is not None and conn.broken
                )
                if verdict == "fail" or (verdict == "refused" and refused):
                    raise self._store_error(exc) from None
                # Refused twice in a row: the server is up and refuses us. (Through a
                # pooler, a connection it broke while the server restarted pings as
                # answering too, and what follows is the pooler's "retry" error.)
                refused = verdict == "refused"
                failed += 1
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.target.wait
                if now + pause > deadline:
                    if verdict == "aborted":
                        raise self._store_error(exc) from None
                    raise StoreUnreachableError(
                        f"{self.target.shown}: PostgreSQL could not be reached for "
                        f"{self.target.wait:g}s: {_cause(exc)}"
                    ) from None
                # An outage, unless a connection kept from earlier was all that broke
                # (a server process ended, a pooler restarted): the next try, on a new
                # connection, tells.
                if verdict == "away" and (conn is None or failed > 1):
                    self._went_away(exc, deadline - now)
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

    def _verdict(self, exc: psycopg.Error, *, connecting: bool, lost: bool) -> str:
        """``away``: the server (or a pooler's) cannot be reached, or the connection
        the operation ran on was ``lost``; ``aborted``: the server chose this
        transaction to abort; ``refused``: a connection failed, yet the server now
        accepts connections (it may just have finished starting: worth one more try,
        after which it is refusing us, over a password say); ``fail``: anything else.
        An operation runs again on all but ``fail``."""
        state = exc.sqlstate or ""
        if _says_away(exc):
            return "away"
        if lost:
            # Whatever psycopg made of it: PgBouncer in transaction mode answers a COMMIT
            # whose server connection ended with its error and then the connection's
            # end, two results, which psycopg raises as an InternalError ("received 2
            # results from command 'COMMIT'") with no SQL state.
            return "away"
        if state in _ABORTED_STATES:
            return "aborted"
        if state or not isinstance(exc, psycopg.OperationalError):
            return "fail"
        if not connecting:
            # An open connection broke: the server went away, or a pooler lost it
            # (which then answers pings itself).
            return "away"
        if _UNRESOLVED.search(_first_line(exc)):
            return "away"  # a ping would only ask the resolver again
        # No SQL state: the connection failed.
        ping = pq.PGconn.ping(self._ping_conninfo)
        if ping in (pq.Ping.NO_RESPONSE, pq.Ping.REJECT):
            return "away"
        return "refused" if ping == pq.Ping.OK else "fail"

    def _went_away(self, exc: psycopg.Error, left: float) -> None:
        """Say, once per outage, that the server cannot be reached, and until when the
        operation that found it out keeps trying (``left`` seconds from now)."""
        if left <= 0:
            return  # wait=0: the error the caller gets says it all
        with self._lock:
            if self._away_since is not None:
                return  # another operation said it
            self._away_since = time.monotonic()
        from ...records import utc_clock

        log.warning(
            "%s: PostgreSQL cannot be reached: %s; trying again for up to %gs (the URL's"
            " wait), until %s",
            self.target.shown,
            _cause(exc),
            self.target.wait,
            utc_clock(time.time() + left),
        )

    def _answered(self) -> None:
        """Say that the server answers again, after an outage ``_went_away`` said."""
        with self._lock:
            since, self._away_since = self._away_since, None
        if since is not None:  # else another operation said it
            log.info(
                "%s: PostgreSQL answers again (it could not be reached for %.1fs)",
                self.target.shown,
                time.monotonic() - since,
            )

    def _store_error(self, exc: psycopg.Error) -> StoreError:
        """The ``StoreError`` an operator reads for a database error on this spool."""
        hint = ""
        if exc.sqlstate == "42501":
            hint = " (see 'One queue for many hosts' in docs/operations.md for the grants)"
        return StoreError(f"{self.target.shown}: {_first_line(exc)}{hint}")


def _says_away(exc: object) -> bool:
    """Whether ``exc`` (an error, or anything else) is the server's (or a pooler's) word
    that it went away."""
    state = getattr(exc, "sqlstate", None) or ""
    return state in _AWAY_STATES or state[:2] in _AWAY_CLASSES


class _LostPipelines(logging.Filter):
    """Drops psycopg's "error ignored terminating <psycopg.Pipeline [BAD]>: the connection
    is lost", for the pipelines of ``_pipelined`` alone (in the thread that runs one).

    psycopg logs it when a pipeline left on an error cannot sync its connection, which
    on a connection the server dropped is always: a server restart put 2-6 of those in
    a drain's log. Yet the error that lost the connection still leaves the block, and
    ``Connections.run`` says what happened once, in its own words (and nothing if the
    next try, on a new connection, got through). So a record is dropped only if it is
    that message, logged while this thread runs a block of ``_pipelined`` whose
    connection is lost, or whose sync failed on the word that the server went away
    (PgBouncer's "server conn crashed?", SQLSTATE 08P01, comes before the connection's
    end); any other (a pipeline that failed on a connection still up, another
    program's) passes.
    """

    _MESSAGE = "error ignored terminating %r: %s"  # psycopg's Pipeline.__exit__

    def __init__(self) -> None:
        super().__init__()
        self._running = threading.local()  # .conn: the connection of this thread's block

    @contextmanager
    def around(self, conn: psycopg.Connection) -> Iterator[None]:
        """Mark the block as one running a pipeline on ``conn``."""
        self._running.conn = conn
        try:
            yield
        finally:
            self._running.conn = None

    def filter(self, record: logging.LogRecord) -> bool:
        """False for psycopg's line about a pipeline of ours whose connection is lost."""
        conn = getattr(self._running, "conn", None)
        if conn is None or record.msg != self._MESSAGE:
            return True
        sync_error = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        return not (conn.broken or _says_away(sync_error))


# psycopg's logger is the process's: the filter is installed once, on import.
_LOST_PIPELINES = _LostPipelines()
logging.getLogger("psycopg").addFilter(_LOST_PIPELINES)


@contextmanager
def _pipelined(conn: psycopg.Connection, *, synchronous: bool) -> Iterator[None]:
    # BEGIN, the statements and COMMIT go out together (a pipeline): one round trip
    # unless a statement's result is read before the end. SET LOCAL, not a setting of
    # the session: a pooler may hand the session to someone else.
    with _LOST_PIPELINES.around(conn), conn.pipeline(), conn.transaction():
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


def _cause(exc: BaseException) -> str:
    """Why the server could not be reached, for an operator: the error's first line, or
    the host name that does not resolve (a typo in the URL, or a resolver not ready)."""
    unresolved = _UNRESOLVED.search(_first_line(exc))
    if not unresolved:
        return _first_line(exc)
    host = unresolved["psycopg"] or unresolved["libpq"]
    why = (unresolved["why"] or unresolved["libpq_why"] or "").strip()
    return f"its host name {host!r} does not resolve ({why}): check the URL's host"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
