"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, started with
``initdb`` and ``pg_ctl`` in a temporary folder, listening on a Unix socket only.

The server runs as the ``postgres`` user when the tests run as root (initdb refuses
root), as the current user otherwise; as ``postgres``, in a folder that user can reach
(``_reachable_by_postgres``). ``fsync`` is off unless asked for: the tests stop
and crash the server, never the machine, and the operating system keeps what was
written either way. (The benchmarks start one too, with fsync on, and so do the
power-loss scenarios, with the data directory on a LazyFS mount.)
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "PASSWORD",
    "PASSWORD_ROLE",
    "PgBouncer",
    "PostgresServer",
    "adopting_orphans",
    "drain_args",
    "missing_postgres",
]

# A role that must give its password (every other role is trusted on the socket), and
# the password, with characters a URL must escape.
PASSWORD_ROLE = "spooler_pw"
PASSWORD = "s3cr:t/p@ss w0rd"
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def _bindir() -> str | None:
    """The folder of initdb and pg_ctl: the newest Debian version, else pg_config's."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(path.split("/")[4]),
    )
    if found:
        return os.path.dirname(found[-1])
    if shutil.which("pg_config"):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def missing_postgres() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None if they can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "needs psycopg (pip install -e '.[test]')"
    if _bindir() is None:
        return (
            "needs PostgreSQL's initdb and pg_ctl (Debian package postgresql; .ci/run installs it)"
        )
    return None


class PostgresServer:
    """One PostgreSQL cluster in its own temporary folder; ``url()`` connects to it."""

    def __init__(
        self,
        *,
        fsync: bool = False,
        parent: str | None = None,
        data: str | None = None,
        initdb: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """A new cluster in a temporary folder under ``parent``, its data directory
        ``data`` if given (a folder that does not exist yet), made with the extra
        ``initdb`` options and started with ``settings`` (``postgresql.conf`` names) on
        top of the tests' own."""
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError(missing_postgres())
        self._bindir = bindir
        self._fsync = fsync
        self._settings = dict(settings or {})
        self._running = False
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            parent = _reachable_by_postgres(parent)
        self.folder = tempfile.mkdtemp(prefix="spooler-pg-", dir=parent)
        self.data = data or os.path.join(self.folder, "data")
        self.log = os.path.join(self.folder, "server.log")
        # Made here, not by initdb: on a FUSE mount a new folder belongs to the file
        # system's process, and the server refuses a data directory not its user's.
        os.mkdir(self.data, 0o700)
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
            shutil.chown(self.data, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            # With fsync on, the cluster itself must be on the disk before a power cut.
            *([] if fsync else ["--no-sync"]),
            "-E",
            "UTF8",
            "--locale=C",
            *initdb,
        )
        hba = os.path.join(self.data, "pg_hba.conf")
        with open(hba, encoding="utf-8") as file:
            rules = file.read()
        with open(hba, "w", encoding="utf-8") as file:  # the first matching line counts
            file.write(f"local all {PASSWORD_ROLE} scram-sha-256\n{rules}")
        self.start()

    def _run(self, program: str, *args: str) -> None:
        command = [os.path.join(self._bindir, program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as file:
                return file.read()[-2000:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server (on the socket in ``folder``, with no TCP listener)."""
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": self.folder,
            "fsync": "on" if self._fsync else "off",
            "max_connections": "200",
            **self._settings,
        }
        options = " ".join(f"-c {name}='{value}'" for name, value in settings.items())
        self._running = True  # or starting: close() stops what a failed start left
        self._run(
            "pg_ctl", "start", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends sessions cleanly, ``immediate`` is a crash."""
        self._run("pg_ctl", "stop", "-D", self.data, "-m", mode, "-w", "-t", "60")
        self._running = False

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started, as a power cut stops them:
        no shutdown of any kind, no last write. Only inside ``adopting_orphans()``: a
        killed postmaster nobody reaps keeps its process id, which its lock file names,
        and the server then refuses to start again."""
        if not self._running:
            return
        self._running = False
        try:
            with open(os.path.join(self.data, "postmaster.pid"), encoding="utf-8") as file:
                postmaster = int(file.readline())
        except FileNotFoundError:
            return  # it never started
        if _parent(postmaster) != os.getpid():  # a stale lock file: not ours to kill
            raise RuntimeError(
                f"the postmaster ({postmaster}) is not a child of this process: start and"
                " kill() the server inside adopting_orphans()"
            )
        os.kill(postmaster, signal.SIGSTOP)  # so that it starts no process while we look
        server = [postmaster, *(pid for pid in _processes() if _parent(pid) == postmaster)]
        for pid in server:
            os.kill(pid, signal.SIGKILL)
        # The postmaster first: its children become ours once it has ended.
        for pid in server:
            os.waitpid(pid, 0)

    def url(self, schema: str | None = None, *, user: str = "postgres", password: str = "") -> str:
        """A ``postgresql://`` URL of the database ``postgres``, in a fresh schema unless
        one is named."""
        schema = schema or f"t_{uuid.uuid4().hex[:12]}"
        secret = f":{quote(password, safe='')}" if password else ""
        return f"postgresql://{user}{secret}@{quote(self.folder, safe='')}/postgres?schema={schema}"

    def admin_url(self) -> str:
        """A plain libpq URL as the superuser, for the tests' own SQL."""
        return f"postgresql://postgres@{quote(self.folder, safe='')}/postgres"

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        """Run one statement as the superuser (a test's own look into the database)."""
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def password_role(self) -> str:
        """``PASSWORD_ROLE``, which must give ``PASSWORD``, allowed to create a schema."""
        self.sql(
            f"DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN; EXCEPTION WHEN duplicate_object"
            " THEN NULL; END $$"
        )
        self.sql(f"ALTER ROLE {PASSWORD_ROLE} PASSWORD '{PASSWORD}'")
        self.sql(f"GRANT CREATE ON DATABASE postgres TO {PASSWORD_ROLE}")
        return PASSWORD_ROLE

    def close(self) -> None:
        """Stop the server if it runs, and remove its folder."""
        if self._running:
            with contextlib.suppress(RuntimeError):  # it ended without us
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


# Folders often on the disk that holds a checkout, and open to every user: where a
# cluster goes when the postgres user cannot reach the folder asked for.
_OPEN_FOLDERS = ("/var/tmp", "/tmp")


def _reachable_by_postgres(parent: str | None) -> str | None:
    """``parent`` (None: the temporary folder) if the postgres user, which the server runs
    as, can pass into it; else a folder on the same disk that it can (the cluster's
    fsyncs still reach that disk); else ``RuntimeError`` saying what to do. (A folder of
    mode 0700 on the way shuts it out: a checkout under /root, or under ``mktemp -d``.)"""
    wanted = parent or tempfile.gettempdir()
    if _postgres_can_pass(wanted):
        return parent
    blocked = next(
        folder
        for folder in [*reversed(Path(wanted).parents), Path(wanted)]
        if not _postgres_can_pass(folder)
    )
    device = os.stat(wanted).st_dev
    for folder in _OPEN_FOLDERS:
        if (
            os.path.isdir(folder)
            and os.stat(folder).st_dev == device
            and _postgres_can_pass(folder)
        ):
            return folder
    raise RuntimeError(
        f"the PostgreSQL server runs as the user postgres (initdb refuses root), which"
        f" cannot pass {blocked} (mode {os.stat(blocked).st_mode & 0o777:o}) to reach"
        f" {wanted}, and none of {', '.join(_OPEN_FOLDERS)} is on the same disk and open"
        f" to it: move the checkout under a folder the user postgres can pass, or let it"
        f" pass: chmod o+x {blocked}"
    )


def _postgres_can_pass(folder: str | Path) -> bool:
    """Whether the postgres user can pass into ``folder`` (and every folder on the way)."""
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", folder],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return done.returncode == 0


def _processes() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _parent(pid: int) -> int | None:
    """The parent of process ``pid``, or None if it has ended."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as file:
            stat = file.read()
    except OSError:
        return None
    # The name, in parentheses, may hold spaces and parentheses itself.
    return int(stat[stat.rindex(")") + 2 :].split()[1])


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process the reaper of its descendants' orphans (Linux's child
    subreaper): a server started by pg_ctl, and the processes of a killed postmaster,
    become its children, which ``PostgresServer.kill`` reaps. (Here PID 1 reaps no
    one.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


class PgBouncer:
    """PgBouncer in transaction mode in front of ``server``, on a Unix socket of its own
    (Debian package pgbouncer); ``url()`` connects through it."""

    PORT = 6432

    def __init__(self, server: PostgresServer) -> None:
        self.folder = tempfile.mkdtemp(prefix="spooler-bouncer-")
        files = {
            "pgbouncer.ini": (
                f"[databases]\npostgres = host={server.folder} port=5432 user=postgres\n"
                f"[pgbouncer]\nlisten_addr =\nlisten_port = {self.PORT}\n"
                f"unix_socket_dir = {self.folder}\nauth_type = trust\n"
                f"auth_file = {self.folder}/users.txt\npool_mode = transaction\n"
                # Fewer server connections than clients: sessions change hands.
                "default_pool_size = 2\nmax_client_conn = 100\n"
                f"logfile = {self.folder}/pgbouncer.log\n"
            ),
            "users.txt": '"postgres" ""\n',
        }
        for name, text in files.items():
            with open(os.path.join(self.folder, name), "w", encoding="utf-8") as file:
                file.write(text)
        command = ["pgbouncer", os.path.join(self.folder, "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            for name in [".", *files]:
                shutil.chown(os.path.join(self.folder, name), "postgres", "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        self._process = subprocess.Popen(command)
        socket = os.path.join(self.folder, f".s.PGSQL.{self.PORT}")
        deadline = time.monotonic() + 30
        while not os.path.exists(socket):
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"pgbouncer did not start: {self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.folder, "pgbouncer.log"), encoding="utf-8") as file:
                return file.read()[-2000:]
        except OSError:
            return ""

    def url(self, schema: str) -> str:
        """A spool URL through the pooler, in ``schema``."""
        where = f"{quote(self.folder, safe='')}:{self.PORT}"
        return f"postgresql://postgres@{where}/postgres?schema={schema}"

    def close(self) -> None:
        """Stop PgBouncer and remove its folder."""
        self._process.terminate()
        self._process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def drain_args(url: str, receiver: str, *, until_empty: bool) -> list[str]:
    """The arguments of ``spooler drain`` on the spool ``url``, delivering to ``receiver``
    (ids in ``id``) in small batches, with a short lease; a daemon unless
    ``until_empty``, for 2 minutes at most."""
    return [
        *("drain", "--db", url, "--url", receiver, "--id-field", "id"),
        *("--batch-size", "20", "--timeout", "2", "--lease", "5", "--poll-interval", "0.05"),
        *("--max-time", "120", *(["--until-empty"] if until_empty else [])),
    ]
