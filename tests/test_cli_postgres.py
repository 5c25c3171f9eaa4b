"""Every command on a PostgreSQL spool, run as a subprocess against the real server: the
URL given as ``--db``, ``SPOOLER_DB`` or the config's ``db`` (with ``${VAR}`` for the
password), and the password never in any output."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers.cli import SPOOLER, spooler_cmd
from helpers.processes import wait_until
from pg_server import PASSWORD, PostgresServer, drain_args

from spooler import Spool
from spooler.clients import Amplitude, Datalyr, PostHog, Segment
from spooler.records import Failure, iso_utc
from spooler.store import shown_location
from spooler.testing import Receiver

pytest.importorskip("psycopg")

BUSY = Failure(503, "busy")


@dataclass
class Story:
    """A spool on the server as a role that must give its password: three events queued
    for ``default``, one dead letter; and a receiver to drain to."""

    url: str
    queued: list[str]
    dead: str
    receiver: Receiver
    tmp_path: Path

    def spool(self) -> Spool:
        """The spool, opened through the library."""
        return Spool(self.url)

    def counts(self) -> tuple[int, int, int]:
        """Queued, held and dead events."""
        with self.spool() as spool:
            total = spool.status().total
        return total.queued, total.held, total.dead


@pytest.fixture
def story(postgres: PostgresServer, tmp_path: Path) -> Iterator[Story]:
    role = postgres.password_role()
    url = postgres.url(user=role, password=PASSWORD)
    with Spool(url) as spool, Receiver() as receiver:
        queued = spool.enqueue_many([{"n": n} for n in range(3)])
        dead = spool.dead_letters.add({"n": 3}, destination="default", reason="invalid", error="x")
        yield Story(url, queued, dead, receiver, tmp_path)


@dataclass(frozen=True)
class Case:
    """A command on the story's spool (``{url}``, ``{receiver}`` and ``{first}``, the
    first queued event's id, filled in), what it reads on stdin, the check of what it
    printed and did, and what to do to the spool before it runs."""

    args: tuple[str, ...]
    check: Callable[[Story, str], None]
    stdin: str | None = None
    prepare: Callable[[Story], None] | None = None


def _hold_first(story: Story) -> None:
    with story.spool() as spool:
        spool.hold([story.queued[0]])


def _fail_all(story: Story) -> None:
    """Every queued event waits an hour to be retried, as after a failed request."""
    with story.spool() as spool:
        now = time.time()
        batch = spool.store.claim("default", 9, "x", due_by=now, lease_until=now + 60)
        spool.store.settle(
            batch.lease, now=now, retry=[(e.rowid, now + 3600, BUSY) for e in batch.events]
        )


def _enqueued(story: Story, out: str) -> None:
    assert len(out.split()) == 2 and story.counts() == (5, 0, 1)


def _status(story: Story, out: str) -> None:
    document = json.loads(out)
    assert (document["queued"], document["dead"], document["due"]) == (3, 1, 3)


def _table(story: Story, out: str) -> None:
    assert "default" in out and "queued" in out


def _summary(story: Story, out: str) -> None:
    assert "invalid" in out and story.counts() == (3, 0, 1)


def _inspected(story: Story, out: str) -> None:
    [line] = out.splitlines()
    assert json.loads(line)["id"] == story.dead and json.loads(line)["event"] == {"n": 3}


def _replayed(story: Story, out: str) -> None:
    assert "1" in out and story.counts() == (4, 0, 0)


def _purged(story: Story, out: str) -> None:
    assert story.counts() == (3, 0, 0)


def _held(story: Story, out: str) -> None:
    assert out == "held 3 events\n" and story.counts() == (3, 3, 1)


def _released(story: Story, out: str) -> None:
    assert out == "released 1 event\n" and story.counts() == (3, 0, 1)


def _retried(story: Story, out: str) -> None:
    assert out.startswith("made 3 events due now")


def _expired(story: Story, out: str) -> None:
    assert out == "expired 3 events\n" and story.counts() == (0, 0, 4)


def _drained(story: Story, out: str) -> None:
    assert sorted(event["id"] for event in story.receiver.delivered) == sorted(story.queued)
    assert story.counts() == (0, 0, 1)


def _doctored(story: Story, out: str) -> None:
    checks = {line.split()[1]: line.split()[0] for line in out.splitlines()}
    assert checks == {
        "integrity": "ok",
        "schema": "ok",
        "server": "ok",
        "bloat": "ok",
        "leases": "ok",
        "bodies": "ok",
    }


CASES = {
    "enqueue": Case(("enqueue", "--db", "{url}", '{"n": 4}', '{"n": 5}'), _enqueued),
    "enqueue stdin": Case(("enqueue", "--db", "{url}"), _enqueued, stdin='{"n": 4}\n{"n": 5}\n'),
    "status": Case(("status", "--db", "{url}", "--json"), _status),
    "status table": Case(("--db", "{url}", "status"), _table),
    "dlq summary": Case(("dlq", "summary", "--db", "{url}"), _summary),
    "dlq inspect": Case(("dlq", "inspect", "--db", "{url}", "--json"), _inspected),
    "dlq replay": Case(("dlq", "replay", "--db", "{url}", "--all"), _replayed),
    "dlq purge": Case(("dlq", "purge", "--db", "{url}", "--all", "--yes"), _purged),
    "hold": Case(("hold", "--db", "{url}", "--all"), _held),
    "release": Case(
        ("release", "--db", "{url}", "-"), _released, stdin="{first}\n", prepare=_hold_first
    ),
    "retry-now": Case(("retry-now", "--db", "{url}", "--all"), _retried, prepare=_fail_all),
    "expire": Case(("expire", "--db", "{url}", "--all", "--yes"), _expired),
    "drain": Case(
        ("drain", "--db", "{url}", "--url", "{receiver}", "--id-field", "id", "--until-empty"),
        _drained,
    ),
    "doctor": Case(("doctor", "--db", "{url}"), _doctored),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_command_works_on_a_postgresql_spool(story: Story, name: str) -> None:
    case = CASES[name]
    if case.prepare:
        case.prepare(story)
    fields = {"{url}": story.url, "{receiver}": story.receiver.url, "{first}": story.queued[0]}

    def filled(text: str) -> str:
        for field, value in fields.items():
            text = text.replace(field, value)
        return text

    stdin = filled(case.stdin) if case.stdin else None
    result = spooler_cmd(*map(filled, case.args), input=stdin, cwd=story.tmp_path)
    assert result.returncode == 0, result.stderr
    case.check(story, result.stdout)
    assert not _leaks(result.stdout + result.stderr)
    assert list(story.tmp_path.iterdir()) == []  # no folder made of the URL


def _leaks(text: str) -> bool:
    """Whether ``text`` shows the password, in any form a URL carries it."""
    return any(form in text for form in (PASSWORD, quote(PASSWORD, safe=""), "s3cr"))


# -- where the URL comes from ------------------------------------------------------------

PASSWORD_VARIABLE = "SPOOLER_TEST_DB_PASSWORD"


def url_in_config(story: Story) -> Path:
    """A config file whose ``db`` is the story's URL, its password given as ``${VAR}``:
    the file holds no secret."""
    escaped = quote(PASSWORD, safe="")
    templated = story.url.replace(f":{escaped}@", f":${{{PASSWORD_VARIABLE}}}@")
    assert escaped not in templated
    config = story.tmp_path / "spooler.toml"
    config.write_text(f"db = '{templated}'\n")
    return config


@pytest.mark.parametrize("source", ["--db", "group --db", "SPOOLER_DB", "config"])
def test_the_url_is_taken_wherever_a_spool_path_goes(story: Story, source: str) -> None:
    config = url_in_config(story)
    env = {PASSWORD_VARIABLE: quote(PASSWORD, safe="")}
    if source == "SPOOLER_DB":
        env["SPOOLER_DB"] = story.url
    args = {
        "--db": ["status", "--json", "--db", story.url],
        "group --db": ["--db", story.url, "status", "--json"],
        "SPOOLER_DB": ["status", "--json"],
        "config": ["status", "--json", "--config", str(config)],
    }[source]
    result = spooler_cmd(*args, env=env, cwd=story.tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["queued"] == 3
    assert not _leaks(result.stdout + result.stderr)


def test_config_check_shows_the_url_without_its_password(story: Story) -> None:
    config = url_in_config(story)
    env = {PASSWORD_VARIABLE: quote(PASSWORD, safe="")}
    result = spooler_cmd("config", "check", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["db"] == shown_location(story.url)  # as every message shows it
    assert "@" in json.loads(result.stdout)["db"] and not _leaks(result.stdout + result.stderr)
    unset = spooler_cmd("config", "check", str(config))
    assert unset.returncode == 2
    assert f"db: environment variable {PASSWORD_VARIABLE} is not set" in unset.stderr


def test_the_clients_enqueue_and_a_configured_drain_delivers(story: Story) -> None:
    # Given the four clients enqueueing into the PostgreSQL spool
    with story.spool() as spool:
        spool.expire(everything=True)  # only the clients' events are left to deliver
        Datalyr(spool).track({"event": "signup", "userId": "u1"})
        Amplitude(spool).track(event_type="signup", user_id="user_1")
        Segment(spool).track(user_id="u1", event="Signed Up")
        PostHog(spool).capture(distinct_id="u1", event="signup")
    # When a drain runs with a config that defines their destinations
    config = url_in_config(story)
    with config.open("a") as file:
        for name in ("datalyr", "amplitude", "segment", "posthog"):
            file.write(f"[destinations.{name}]\ntype = 'http'\nurl = '{story.receiver.url}'\n")
    env = {PASSWORD_VARIABLE: quote(PASSWORD, safe="")}
    result = spooler_cmd("drain", "--config", str(config), "--until-empty", env=env)
    # Then every client's event is delivered, and the log shows no password
    assert result.returncode == 0, result.stderr
    assert len(story.receiver.delivered) == 4 and story.counts() == (0, 0, 4)
    assert not _leaks(result.stdout + result.stderr)


def test_the_drain_warns_of_a_new_spool_only_when_it_made_one(
    story: Story, postgres: PostgresServer
) -> None:
    args = ["--url", story.receiver.url, "--once"]
    existing = spooler_cmd("drain", "--db", story.url, *args)
    assert existing.returncode == 0, existing.stderr
    assert "no spool was at" not in existing.stderr
    fresh = postgres.url(user=postgres.password_role(), password=PASSWORD)
    made = spooler_cmd("drain", "--db", fresh, *args)
    assert made.returncode == 0, made.stderr
    assert (
        f"no spool was at {shown_location(fresh)}, so the drain created an empty one" in made.stderr
    )
    assert not _leaks(made.stderr)


def test_dlq_inspect_shows_a_dead_letter_s_time_alike_in_its_table_and_alone(
    story: Story, postgres: PostgresServer
) -> None:
    table = spooler_cmd("dlq", "inspect", "--db", story.url)
    alone = spooler_cmd("dlq", "inspect", "--db", story.url, story.dead)
    assert table.returncode == 0 and alone.returncode == 0, table.stderr + alone.stderr
    [row] = table.stdout.splitlines()[1:]
    shown = row.split()[5]  # id, destination, reason, status, attempts, dead_at, error
    assert f"dead_at:     {shown}" in alone.stdout.splitlines()
    # the time the server wrote (its clock is this host's)
    schema = story.url.rsplit("=", 1)[1]
    [(dead_at,)] = postgres.sql(f"SELECT dead_at FROM {schema}.dead")
    assert shown == iso_utc(float(dead_at))  # type: ignore[arg-type]


# -- a schema that holds no spool ----------------------------------------------------------

READING = (("status",), ("doctor",), ("dlq", "inspect"), ("dlq", "summary"))
CREATING = (("enqueue", "{}"), ("drain", "--url", "http://127.0.0.1:9/", "--once"))


def _tables(postgres: PostgresServer, schema: str) -> list[tuple[object, ...]]:
    return postgres.sql(f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'")


def test_every_command_refuses_a_schema_of_another_application_s_tables_alike(
    postgres: PostgresServer,
) -> None:
    # Given a schema where another application keeps a table named as one of a spool's
    jobs = f"jobs_{uuid.uuid4().hex[:8]}"
    postgres.sql(f"CREATE SCHEMA {jobs}; CREATE TABLE {jobs}.queue (id int, job text)")
    url = postgres.url(jobs)
    # When every command is pointed at it
    for args in (*READING, *CREATING):
        result = spooler_cmd(*args, "--db", url)
        # Then each refuses it with the same words
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.splitlines()[-1] == (
            f"spooler: error: {shown_location(url)}: schema {jobs} holds tables that are not a"
            " spooler spool; refusing to touch it (name another with ?schema=)"
        ), args
    # And the schema holds what it held
    assert _tables(postgres, jobs) == [("queue",)]
    postgres.sql(f"DROP SCHEMA {jobs} CASCADE")


def test_commands_that_create_nothing_leave_an_empty_or_missing_schema_as_it_is(
    postgres: PostgresServer,
) -> None:
    # Given a schema an administrator made for the spool, and a name of none
    made, missing = (f"{kind}_{uuid.uuid4().hex[:8]}" for kind in ("made", "missing"))
    postgres.sql(f"CREATE SCHEMA {made}")
    for schema, why in (
        (made, f"schema {made} holds no tables"),
        (missing, f"the database has no schema {missing}"),
    ):
        url = postgres.url(schema)
        # When the commands that create nothing are pointed at it
        for args in READING:
            result = spooler_cmd(*args, "--db", url)
            # Then each says there is no spool there, and why
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr == (
                f"spooler: error: no spool at {shown_location(url)} ({why}; a drain or an"
                " enqueue creates one; check --db / SPOOLER_DB)\n"
            ), args
    # And creates nothing
    assert _tables(postgres, made) == []
    assert postgres.sql(f"SELECT to_regnamespace('{missing}')") == [(None,)]
    # While an enqueue makes a spool in the schema made for it
    assert spooler_cmd("enqueue", "--db", postgres.url(made), "{}").returncode == 0
    assert ("queue",) in _tables(postgres, made)
    postgres.sql(f"DROP SCHEMA {made} CASCADE")


# -- drains that share a destination ------------------------------------------------------


class Logged:
    """A process whose stderr lines are collected as they come, by a thread of their own."""

    def __init__(self, args: list[str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen([*SPOOLER, *args], stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        """Whether a line so far holds ``text``."""
        return any(text in line for line in self.lines)

    def saying(self, text: str) -> list[str]:
        """The lines so far that hold ``text``."""
        return [line for line in self.lines if text in line]

    def ended(self, timeout: float) -> int | None:
        """Its exit code once it has ended, within ``timeout``; None if it runs on."""
        if not wait_until(lambda: self.process.poll() is not None, timeout=timeout):
            return None
        self._reader.join()
        assert self.process.stderr is not None
        self.process.stderr.close()
        return self.process.returncode

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops a drain; returns its exit code."""
        self.process.terminate()
        code = self.process.wait(timeout=60)
        self._reader.join()
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


def test_running_drains_share_a_destination_s_pause(pg_url: str) -> None:
    # Given two drains of one PostgreSQL spool, and a receiver that fails the first
    # request it gets, asking for a minute's rest
    with Receiver() as receiver, Spool(pg_url) as spool:
        receiver.fail_next(503, headers={"Retry-After": "60"})
        args = ["drain", "--db", pg_url, "--url", receiver.url, "--concurrency", "1"]
        drains = [Logged([*args, "--poll-interval", "0.05"]) for _ in range(2)]
        try:
            assert wait_until(lambda: all(d.said("started") for d in drains), timeout=60)
            # When one of them sends an event and fails
            spool.enqueue({"n": 1})
            assert wait_until(lambda: len(receiver.requests) == 1, timeout=30)
            # Then the other takes up its pause, sends nothing meanwhile, and says so
            assert wait_until(
                lambda: any(d.said("in another drain; pausing it here too") for d in drains),
                timeout=30,
            )
            [failed] = [d for d in drains if d.said("pausing the destination for")]
            [follower] = [d for d in drains if d is not failed]
            assert not follower.said("pausing the destination for")
            spool.enqueue({"n": 2})
        finally:
            codes = [drain.stop() for drain in drains]
        assert codes == [0, 0]
        assert len(receiver.requests) == 1 and spool.status().total.queued == 2


# -- a server that goes away -------------------------------------------------------------


def test_a_drain_says_once_that_the_server_restarted(
    own_postgres: PostgresServer, receiver: Receiver
) -> None:
    # Given a drain of a PostgreSQL spool that has delivered what was queued
    url = own_postgres.url() + "&wait=120"
    with Spool(url) as spool:
        spool.enqueue_many([{"n": n} for n in range(50)])
    drain = Logged(drain_args(url, receiver.url, until_empty=False))
    try:
        assert wait_until(lambda: len(receiver.delivered) == 50, timeout=60)
        # When the server stops, and starts again once the drain has found it away,
        # and events are queued once it is back
        own_postgres.stop()
        assert wait_until(lambda: drain.said("PostgreSQL cannot be reached"), timeout=30), (
            drain.lines
        )
        own_postgres.start()
        with Spool(url) as spool:
            spool.enqueue_many([{"n": n} for n in range(50, 100)])
        # Then the drain delivers them too, without a pause of its own
        assert wait_until(lambda: len(receiver.delivered) >= 100, timeout=60), drain.lines
    finally:
        code = drain.stop()
    # And its log says once that the server could not be reached, and once that it
    # answers again: no line of psycopg's ("error ignored terminating
    # <psycopg.Pipeline [BAD]>"), no error
    assert code == 0, drain.lines
    assert len(drain.saying("PostgreSQL cannot be reached")) == 1, drain.lines
    assert len(drain.saying("PostgreSQL answers again")) == 1, drain.lines
    assert not drain.saying("error ignored"), drain.lines
    assert not drain.saying(" ERROR "), drain.lines


def test_a_drain_whose_server_stays_away_stops_once_at_the_end_of_its_wait(
    own_postgres: PostgresServer, receiver: Receiver
) -> None:
    # Given a drain that waits up to 15 s for its server, with requests in flight (the
    # receiver holds them) for every event queued
    wait = 15
    url = own_postgres.url() + f"&wait={wait}"
    with Spool(url) as spool:
        queued = spool.enqueue_many([{"n": n} for n in range(50)])
    arrived, answer = threading.Event(), threading.Event()

    def hold(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        arrived.set()
        answer.wait(120)
        return 200, {}, b"{}"

    receiver.respond = hold
    drain = Logged(drain_args(url, receiver.url, until_empty=False))
    try:
        assert arrived.wait(60), drain.lines
        # When the server stops for longer than that
        own_postgres.stop()
        # Then the drain stops at the end of its wait, not another wait later (as when
        # it waited out its requests in flight, then gave its leases back: 2 x 15 s),
        # with one error line that says what failed, for how long, and what to do
        code = drain.ended(timeout=wait + 10)
    finally:
        if drain.process.poll() is None:
            drain.stop()
        answer.set()
    assert code == 1, drain.lines
    assert len(drain.saying("PostgreSQL cannot be reached")) == 1, drain.lines
    [error] = drain.saying(" ERROR ")
    assert f"PostgreSQL could not be reached for {wait}s" in error, drain.lines
    assert "Nothing is lost" in error and "start the drain again" in error, error
    assert not drain.saying("could not read the pauses"), drain.lines
    assert drain.lines[-1].startswith("spooler: error: "), drain.lines
    # And nothing is lost: once the server is back every event is still queued, and
    # the next drain delivers them all (once the leases of the first have run out)
    own_postgres.start()
    with Spool(url) as spool:
        assert spool.status().total.queued == len(queued)
    receiver.respond = None
    done = spooler_cmd(*drain_args(url, receiver.url, until_empty=True), timeout=120)
    assert done.returncode == 0, done.stderr
    assert {event["id"] for event in receiver.delivered} >= set(queued)
    with Spool(url) as spool:
        assert spool.status().total.queued == 0


def test_a_host_name_that_does_not_resolve_is_said_at_once(receiver: Receiver) -> None:
    # Given a spool URL whose host name does not resolve (a typo; or a resolver not
    # ready yet, at a container's start: so the drain waits as for a server away)
    host = "spooler-no-such-host.invalid"
    url = f"postgresql://spooler@{host}/events?wait=600"
    drain = Logged(drain_args(url, receiver.url, until_empty=False))
    try:
        # When a drain starts on it, then at once (long before its 600 s wait), one
        # line says what is wrong, and until when the drain waits for it
        assert wait_until(lambda: drain.said("cannot be reached"), timeout=60), drain.lines
        [line] = drain.saying("cannot be reached")
        assert f"its host name '{host}' does not resolve" in line, line
        assert "trying again for up to 600s" in line and " UTC" in line, line
    finally:
        drain.stop()
    # And a drain that gives up names that cause in its error
    failed = spooler_cmd(*drain_args(url.replace("600", "1"), receiver.url, until_empty=True))
    assert failed.returncode == 1, failed.stderr
    assert (
        f"PostgreSQL could not be reached for 1s: its host name '{host}' does not resolve"
        in failed.stderr.splitlines()[-1]
    ), failed.stderr
