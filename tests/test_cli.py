"""Every command through click's CliRunner, and the important paths as real subprocesses."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from helpers.cli import SPOOLER, drain_args, spooler_cmd
from helpers.processes import require_program, run_measuring_peak_rss
from helpers.spools import dead_count, dead_rows, queued_count, rows, spy_on_flushes

from spooler import Spool
from spooler.drain import CRASH_ENV
from spooler.records import Counts, DeadSelection, Failure, SpoolStatus, iso_utc
from spooler.service import JsonLogFormatter
from spooler.testing import Receiver
from spooler_cli.main import cli
from spooler_cli.render import status_table


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def queued_bodies(db: Path) -> list[str]:
    return [body for (body,) in rows(db, "SELECT body FROM queue ORDER BY id")]


def test_enqueue_arguments_prints_ids(db: Path) -> None:
    result = run("enqueue", "--db", str(db), '{"a": 1}', '{"b": 2}')
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 2
    assert rows(db, "SELECT event_id, body FROM queue ORDER BY id") == [
        (ids[0], '{"a":1}'),
        (ids[1], '{"b":2}'),
    ]


def test_enqueue_json_lines_from_stdin_skips_blank_lines(db: Path) -> None:
    result = run("enqueue", "--db", str(db), "-d", "amp", input='{"a":1}\n\n{"b":2}\n')
    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT destination, count(*) FROM queue GROUP BY 1") == [("amp", 2)]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (['{"ok":1}', "[1,2]"], None, "argument 2: expected a JSON object"),
        (
            [],
            '{"ok":1}\n{"ok":2}\nnot json\n',
            "line 3: not valid JSON: Expecting value at column 1",
        ),
        ([], '{"ok":1}\n{"b":\n', "line 2: not valid JSON: Expecting value at column 6"),
        ([], '{"a":NaN}\n', "line 1: not valid JSON"),
    ],
)
def test_enqueue_is_all_or_nothing_and_names_the_bad_input(
    db: Path, args: list[str], stdin: str | None, message: str
) -> None:
    Spool(db).close()
    result = run("enqueue", "--db", str(db), *args, input=stdin)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"spooler: error: {message}")
    assert result.stderr.rstrip().endswith("; nothing was enqueued")
    assert len(result.stderr.strip().splitlines()) == 1
    assert queued_bodies(db) == []


@pytest.mark.parametrize("command", [["enqueue"], ["dlq", "replay", "-"]])
@pytest.mark.parametrize("locale", ["strict", "surrogateescape"])
def test_stdin_that_is_not_utf8_names_the_line_whatever_the_locale(
    db: Path, command: list[str], locale: str
) -> None:
    # Under a UTF-8 locale Python decodes stdin strictly (it used to raise a traceback);
    # under the C locale it lets bad bytes through as surrogates.
    Spool(db).close()
    result = subprocess.run(
        [*SPOOLER, *command, "--db", str(db)],
        input=b'{"ok":1}\n{"a":"\xff\xfe"}\n',
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": f"utf-8:{locale}"},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith(
        "spooler: error: line 2: not valid UTF-8 (byte 0xff at 6)"
    )
    assert len(result.stderr.splitlines()) == 1
    assert queued_bodies(db) == []


def test_enqueue_of_a_large_file_takes_a_few_times_its_size_in_memory(
    tmp_path: Path, db: Path
) -> None:
    # Given a JSON Lines file of 200k events (~16 MiB), as a backfill would pipe in
    events = tmp_path / "events.jsonl"
    with events.open("w") as out:
        for n in range(200_000):
            event = {"event": "page_view", "userId": f"u{n}", "properties": {"n": n, "p": "/a"}}
            out.write(json.dumps(event) + "\n")
    size_mb = events.stat().st_size / 2**20

    def enqueue_peak_mb(stdin: Path) -> float:
        with stdin.open("rb") as lines:
            proc, peak_mb = run_measuring_peak_rss(
                [*SPOOLER, "enqueue", "--db", str(db)], stdin=lines, stdout=subprocess.DEVNULL
            )
        assert proc.returncode == 0, proc.stderr
        return peak_mb

    one = tmp_path / "one.jsonl"
    one.write_text("{}\n")
    baseline_mb = enqueue_peak_mb(one)
    # When `spooler enqueue` reads it from stdin
    peak_mb = enqueue_peak_mb(events)
    # Then every event is queued, and the process grew by a few times the file's size
    # (~3.5 here: the compact texts, the ids, the rows), not by the ~16 times that
    # holding every parsed object took
    assert queued_count(db) == 200_001
    grown = peak_mb - baseline_mb
    assert grown < 6 * size_mb, f"grew {grown:.0f} MiB for a {size_mb:.0f} MiB file"


def test_enqueue_oversized_event_names_the_line(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[spool]\nmax_event_bytes = 100\n")
    Spool(db).close()  # (a new spool file is not made for input that enqueues nothing)
    big = json.dumps({"pad": "x" * 200})
    result = run("enqueue", "--db", str(db), "--config", str(config), input='{"a":1}\n' + big)
    assert result.exit_code == 1
    assert (
        "line 2: event is 210 bytes serialised, over the 100-byte limit; nothing was"
        in result.stderr
    )
    assert queued_bodies(db) == []


def test_enqueue_to_a_full_spool_fails_and_keeps_the_spool(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[spool]\nmax_events = 2\n")
    assert run("enqueue", "--db", str(db), "--config", str(config), "{}", "{}").exit_code == 0
    result = run("enqueue", "--db", str(db), "--config", str(config), '{"late":1}')
    assert result.exit_code == 1 and "max_events=2" in result.stderr
    assert queued_bodies(db) == ["{}", "{}"]


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["nope"], None, 1, "spooler: error: argument 1: not valid JSON"),
        (['{"ok":1}', "[1]"], None, 1, "spooler: error: argument 2: expected a JSON object"),
        (['{"pad": "xxxxxxxx"}'], None, 1, "spooler: error: argument 1: event is 18 bytes"),
        ([], '{"ok":1}\nnope\n', 1, "spooler: error: line 2: not valid JSON"),
        ([], '{"ok":1}\n' + "x" * 41, 1, "spooler: error: line 2: longer than 40 bytes"),
        ([], "", 0, "spooler: no events given; nothing enqueued"),
        ([], "\n\n", 0, "spooler: no events given; nothing enqueued"),
        (["-d", "bad name!", "{}"], None, 2, "spooler: error: bad destination name 'bad name!'"),
        (["-d", "nope", "{}"], None, 2, "spooler: error: unknown destination 'nope'"),
    ],
    ids=[
        "bad-argument",
        "second-argument",
        "over-the-limit",
        "bad-line",
        "long-line",
        "no-input",
        "blank-lines",
        "bad-destination",
        "unknown-destination",
    ],
)
def test_enqueue_of_nothing_leaves_no_new_spool_behind(
    tmp_path: Path, args: list[str], stdin: str | None, code: int, message: str
) -> None:
    # Given a spool path that does not exist yet, in a folder that does not either
    folder = tmp_path / "spools"
    config = tmp_path / "spooler.toml"
    config.write_text(
        "[spool]\nmax_event_bytes = 10\n[destinations.amp]\nurl = 'http://127.0.0.1:9'\n"
    )
    # When `spooler enqueue` is given input that enqueues nothing (a -d in args wins)
    result = spooler_cmd(
        *("enqueue", "--db", str(folder / "new.db"), "--config", str(config), "-d", "amp"),
        *args,
        input=stdin,
    )
    # Then it says why, and neither the spool file nor its folder was made
    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith(message), result.stderr
    assert not folder.exists()


def test_enqueue_of_events_makes_the_spool_and_its_folder(tmp_path: Path) -> None:
    spool = tmp_path / "spools" / "new.db"
    result = spooler_cmd("enqueue", "--db", str(spool), "{}", '{"a":1}')
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 2
    assert queued_bodies(spool) == ["{}", '{"a":1}']


def test_unknown_destination_with_a_config(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[destinations.amp]\nurl = 'http://127.0.0.1:9'\n")
    result = run("enqueue", "--db", str(db), "--config", str(config), "-d", "nope", "{}")
    assert result.exit_code == 2
    assert "unknown destination 'nope'" in result.stderr and "amp" in result.stderr
    # Without -d, the events would be for 'default': the error says why, and what to do
    result = run("enqueue", "--db", str(db), "--config", str(config), "{}")
    assert result.exit_code == 2
    assert "unknown destination 'default' (no -d given)" in result.stderr
    assert "defines amp: name one with -d NAME" in result.stderr
    result = run("drain", "--db", str(db), "--config", str(config), "-d", "nope", "--once")
    assert result.exit_code == 2 and "unknown destination nope" in result.stderr


def test_db_from_environment_variable(db: Path) -> None:
    assert run("enqueue", "{}", env={"SPOOLER_DB": str(db)}).exit_code == 0
    assert queued_bodies(db) == ["{}"]


def test_corrupt_database_is_a_clear_error_without_traceback(db: Path) -> None:
    db.write_bytes(b"\x00garbage" * 1000)
    for args in (["enqueue", "{}"], ["status"], ["dlq", "inspect"]):
        result = run(*args, "--db", str(db))
        assert result.exit_code == 1
        assert result.stderr.startswith("spooler: error: ")
        assert "not a SQLite database" in result.stderr
        assert "Traceback" not in result.output
    assert db.read_bytes() == b"\x00garbage" * 1000


@pytest.mark.parametrize(
    "command", [["enqueue", "{}"], ["status"], ["drain", "--url", "-", "--once"]]
)
def test_a_folder_given_as_the_spool_is_named_as_one(tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "myapp"
    folder.mkdir()
    result = run(*command, "--db", f"{folder}/")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"spooler: error: {folder}/: a folder, not a spool file: give a file's path, such as"
        f" {folder}/spool.db"
    ), result.stderr
    assert list(folder.iterdir()) == []


def test_bad_config_is_a_usage_error_naming_the_key(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[destinations.a]\nurl = 'http://h'\nconcurrency = 0\n")
    result = run("drain", "--db", str(db), "--config", str(config), "--once")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "spooler: error: destinations.a.concurrency: must be between 1 and 64, got 0"
    )


def test_usage_errors_exit_2(db: Path) -> None:
    assert run("drain", "--db", str(db), "--max-age", "soon").exit_code == 2
    assert run("dlq", "replay", "--db", str(db)).exit_code == 2
    assert run("dlq", "purge", "--db", str(db), "--all", "some-id").exit_code == 2
    assert run("nonsense").exit_code == 2
    zero = run("drain", "--db", str(db), "--url", "http://127.0.0.1:9", "--batch-size", "0")
    assert zero.exit_code == 2 and "'--batch-size': 0 is not in the range" in zero.stderr


def test_drain_to_a_file_then_status(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert run("enqueue", "--db", str(db), '{"a":1}', '{"b":2}').exit_code == 0
    result = run("drain", "--db", str(db), "--url", f"file://{out}", "--until-empty")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"a": 1}, {"b": 2}]
    status = json.loads(run("status", "--db", str(db), "--json").stdout)
    assert status["queued"] == 0 and status["dead"] == 0
    assert "last_success_at" not in status  # only per destination, where it means something
    assert "paused_until" not in status
    default = status["destinations"]["default"]
    assert default["queued"] == 0 and default["last_error"] is None
    assert default["failed_in_a_row"] == 0 and default["paused_until"] is None
    assert default["last_success_at"].endswith("Z")


def test_the_drain_never_flushes_its_commits_while_producers_flush_each_one(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    flushed = spy_on_flushes(monkeypatch, db)
    out = tmp_path / "out"
    result = run("drain", "--db", str(db), "--url", f"file://{out}", "--once")
    assert result.exit_code == 0, result.output
    # The drain claimed and acked (committed twice), flushing nothing.
    assert out.read_text().count("\n") == 1 and queued_count(db) == 0
    assert flushed == []
    with Spool(db) as spool:  # a producer opened with the default durability
        assert flushed == []  # opening a spool that exists writes nothing to flush
        spool.enqueue({"n": 2})
        spool.enqueue_many([{"n": 3}, {"n": 4}])
        wal = os.stat(f"{db}-wal").st_ino
    assert flushed == [(wal, 1), (wal, 3)]


def test_status_counts_per_destination(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue_many([{}, {}], destination="amp")
        spool.enqueue({})
    status = json.loads(run("status", "--db", str(db), "--json").stdout)
    assert status["queued"] == 3 and status["due"] == 3 and status["leased"] == 0
    assert status["oldest_queued_age_s"] >= 0
    assert status["destinations"]["amp"]["queued"] == 2
    assert status["destinations"]["default"]["queued"] == 1
    table = run("status", "--db", str(db)).stdout
    assert table.splitlines()[0].split() == [
        "destination",
        "queued",
        "due",
        "leased",
        "retrying",
        "held",
        "dead",
        "oldest",
        "paused",
        "last_success",
        "last_error",
        "error",
    ]
    assert table.splitlines()[1].split()[:3] == ["amp", "2", "2"]


def test_status_says_when_each_drain_s_leases_end(db: Path) -> None:
    # Given two drains (running, or killed a moment ago) holding events under lease
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(3)])
        spool.enqueue({"n": 3}, destination="amp")
        now = time.time()
        spool.store.claim("default", 2, "web1:12:ab", due_by=now, lease_until=now + 30)
        spool.store.claim("amp", 1, "web2:34:cd", due_by=now, lease_until=now + 7200)
    # When the operator asks for the status
    result = run("status", "--db", str(db))
    assert result.exit_code == 0, result.output
    # Then a line per drain says what it holds, and until when
    first, second = result.stdout.splitlines()[-2:]
    until = time.strftime("%H:%M:%S UTC", time.gmtime(now + 30))
    said = re.fullmatch(
        rf"drain web1:12:ab holds 2 events of default under lease until {until} \(in (\d+)s\)",
        first,
    )
    assert said and 0 < int(said[1]) <= 30
    until = time.strftime("%H:%M:%S UTC", time.gmtime(now + 7200))
    assert second == f"drain web2:34:cd holds 1 event of amp under lease until {until} (in 2h)"
    # And --json has each lease, its end as an ISO time
    leases = json.loads(run("status", "--db", str(db), "--json").stdout)["leases"]
    assert leases == [
        {"drain": "web1:12:ab", "destination": "default", "events": 2, "until": iso_utc(now + 30)},
        {"drain": "web2:34:cd", "destination": "amp", "events": 1, "until": iso_utc(now + 7200)},
    ]


@pytest.fixture
def dead_spool(db: Path, receiver: Receiver) -> list[str]:
    """A spool whose events 1 and 3 were rejected by the receiver (ids in order)."""
    ids = run(
        "enqueue", "--db", str(db), *[json.dumps({"n": n, "bad": n % 2 == 1}) for n in range(4)]
    ).stdout.split()
    receiver.reject = lambda event: event["bad"]
    result = run(
        "drain",
        "--db",
        str(db),
        "--url",
        receiver.url,
        "--until-empty",
        "--backoff-base",
        "0.01",
        "--poll-interval",
        "0.05",
    )
    assert result.exit_code == 0, result.output
    return ids


def test_dlq_inspect_table_and_json(db: Path, dead_spool: list[str]) -> None:
    lines = run("dlq", "inspect", "--db", str(db), "--json").stdout.splitlines()
    dead = [json.loads(line) for line in lines]
    assert [d["id"] for d in dead] == [dead_spool[1], dead_spool[3]]
    first = dead[0]
    assert {k: first[k] for k in ("destination", "reason", "status", "attempts")} == {
        "destination": "default",
        "reason": "rejected",
        "status": 400,
        "attempts": 1,
    }
    assert first["event"] == {"n": 1, "bad": True}
    assert first["error"].startswith("HTTP 400: ")
    assert first["dead_at"].endswith("Z") and first["enqueued_at"] <= first["dead_at"]
    assert first["attempt_log"] == [
        {"at": first["dead_at"], "status": 400, "error": first["error"][:100]}
    ]
    table = run("dlq", "inspect", "--db", str(db), "--reason", "rejected").stdout.splitlines()
    assert len(table) == 3 and table[2].startswith(dead_spool[3])
    assert run("dlq", "inspect", "--db", str(db), "--reason", "max_age", "--json").stdout == ""
    missing = run("dlq", "inspect", "--db", str(db), "no-such-id")
    assert missing.exit_code == 1 and "not in the dead-letter table: no-such-id" in missing.stderr


def test_dlq_inspect_says_when_its_selection_leaves_every_dead_event_out(
    db: Path, dead_spool: list[str]
) -> None:
    # Given a spool whose dead events the API refused as malformed (400)
    # When the operator asks for those a wrong key killed (401), and for one by its id
    for selection in (["--status", "401"], [dead_spool[1], "--status", "401"]):
        shown = spooler_cmd("dlq", "inspect", "--db", str(db), *selection)
        # Then it says that none matches, not that the spool has no dead events
        assert shown.returncode == 0 and shown.stdout == "", shown.stderr
        assert shown.stderr == "no dead event matches\n", selection
    # And a spool that has none says so
    purged = spooler_cmd("dlq", "purge", "--db", str(db), "--all", "--yes")
    assert purged.stdout == "purged 2 events\n", purged.stderr
    shown = spooler_cmd("dlq", "inspect", "--db", str(db))
    assert shown.returncode == 0 and shown.stderr == "no dead events\n", shown.stderr


def test_dlq_inspect_id_shows_every_logged_attempt_and_the_payload(
    db: Path, receiver: Receiver
) -> None:
    [event_id] = run("enqueue", "--db", str(db), '{"n": 1, "name": "Zoë"}').stdout.split()
    receiver.fail_next(503, 429)
    receiver.reject = lambda event: True
    drained = run(
        "drain", "--db", str(db), "--url", receiver.url, "--until-empty", "--backoff-base", "0.01"
    )
    assert drained.exit_code == 0, drained.output
    shown = run("dlq", "inspect", "--db", str(db), event_id)
    assert shown.exit_code == 0, shown.output
    heading, attempts, payload = shown.stdout.split("\n\n")
    assert f"id:          {event_id}" in heading.splitlines()
    assert "reason:      rejected" in heading.splitlines()
    assert attempts.splitlines()[0] == "attempt log (latest 3 of 3):"
    assert [line.split()[1] for line in attempts.splitlines()[2:]] == ["503", "429", "400"]
    assert payload == 'event:\n{\n  "n": 1,\n  "name": "Zoë"\n}\n'


def test_dlq_inspect_id_says_which_logged_attempts_came_before_a_replay(
    db: Path, receiver: Receiver
) -> None:
    # Given an event the receiver refused, replayed, and refused again
    [event_id] = spooler_cmd("enqueue", "--db", str(db), '{"n": 1}').stdout.split()
    receiver.reject = lambda event: True
    drain = drain_args(db, receiver.url, "--until-empty")
    assert spooler_cmd(*drain).returncode == 0 and dead_count(db) == 1
    replayed = spooler_cmd("dlq", "replay", "--db", str(db), event_id)
    assert replayed.stdout == "replayed 1 event\n", replayed.stderr
    assert spooler_cmd(*drain).returncode == 0 and dead_count(db) == 1
    # When it is shown in full
    shown = spooler_cmd("dlq", "inspect", "--db", str(db), event_id)
    # Then the log keeps both refusals, and says that only the last came since the
    # replay (which reset the attempts): not "latest 2 of 1"
    assert shown.returncode == 0, shown.stderr
    heading, attempts, _payload = shown.stdout.split("\n\n")
    assert "attempts:    1" in heading.splitlines()
    assert attempts.splitlines()[0] == "attempt log (latest 2; 1 since the last replay):"
    assert [line.split()[1] for line in attempts.splitlines()[2:]] == ["400", "400"]


def test_dlq_replay_then_drain_delivers_with_the_same_id(
    db: Path, dead_spool: list[str], receiver: Receiver
) -> None:
    assert run("dlq", "replay", "--db", str(db), "--all", "--dry-run").stdout == (
        "would replay 2 events\n"
    )
    assert dead_count(db) == 2
    result = run("dlq", "replay", "--db", str(db), "--reason", "rejected")
    assert result.exit_code == 0 and result.stdout == "replayed 2 events\n"
    assert rows(db, "SELECT event_id, attempts FROM queue ORDER BY id") == [
        (dead_spool[1], 0),
        (dead_spool[3], 0),
    ]
    receiver.reject = None
    assert run(*drain_args(db, receiver.url + "/", "--until-empty")).exit_code == 0
    assert [e["id"] for e in receiver.delivered[-2:]] == [dead_spool[1], dead_spool[3]]


def test_after_a_key_rotation_dlq_replay_status_401_sends_back_only_what_the_key_killed(
    db: Path, receiver: Receiver
) -> None:
    # Given an API that refuses malformed events (400) and, once its key was rotated,
    # every request carrying the old one (401)
    keys = {"valid": "key-1"}

    def answer(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        sent = {name.lower(): value for name, value in headers.items()}
        if sent.get("authorization") != f"Bearer {keys['valid']}":
            return 401, {}, b'{"error": "invalid api key"}'
        if any(event.get("bad") for event in json.loads(body)):
            return 400, {}, b'{"error": "invalid event"}'
        return 200, {}, b"{}"

    receiver.respond = answer
    events = [json.dumps({"n": n, "bad": n % 3 == 0}) for n in range(6)]
    first = spooler_cmd("enqueue", "--db", str(db), *events[:3]).stdout.split()
    drained = spooler_cmd(*drain_args(db, receiver.url, "--until-empty", "--api-key", "key-1"))
    assert drained.returncode == 0, drained.stderr
    keys["valid"] = "key-2"
    second = spooler_cmd("enqueue", "--db", str(db), *events[3:]).stdout.split()
    drained = spooler_cmd(*drain_args(db, receiver.url, "--until-empty", "--api-key", "key-1"))
    assert drained.returncode == 0, drained.stderr
    summary = spooler_cmd("dlq", "summary", "--db", str(db), "--json").stdout.splitlines()
    assert sorted((g["status"], g["count"]) for g in map(json.loads, summary)) == [
        (400, 1),
        (401, 3),
    ]
    # When the operator replays what the old key killed (the drain now has the new key)
    dry = spooler_cmd("dlq", "replay", "--db", str(db), "--status", "401", "--dry-run")
    assert dry.stdout == "would replay 3 events\n", dry.stderr
    listed = spooler_cmd("dlq", "inspect", "--db", str(db), "--status", "401", "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == second
    replayed = spooler_cmd(
        "dlq", "replay", "--db", str(db), "--reason", "rejected", "--status", "401"
    )
    assert replayed.stdout == "replayed 3 events\n", replayed.stderr
    before = len(receiver.requests)
    drained = spooler_cmd(*drain_args(db, receiver.url, "--until-empty", "--api-key", "key-2"))
    assert drained.returncode == 0, drained.stderr
    # Then those events arrive with their ids; the malformed one dead before the
    # rotation is not sent again, and stays dead with the one the replay found out
    assert sorted(e["id"] for e in receiver.delivered) == sorted(
        [first[1], first[2], second[1], second[2]]
    )
    sent_again = {e["id"] for r in receiver.requests[before:] for e in r.events}
    assert sent_again == set(second)
    assert sorted(dead_rows(db, "event_id", "status")) == sorted(
        [(first[0], 400), (second[0], 400)]
    )


def test_dlq_replay_unknown_id_changes_nothing(db: Path, dead_spool: list[str]) -> None:
    result = run("dlq", "replay", "--db", str(db), dead_spool[1], "nope")
    assert result.exit_code == 1 and "nope" in result.stderr
    assert dead_count(db) == 2


def test_dlq_purge(db: Path, dead_spool: list[str]) -> None:
    assert run("dlq", "purge", "--db", str(db), "--older-than", "1h", "--yes").stdout == (
        "purged 0 events\n"
    )
    assert run("dlq", "purge", "--db", str(db), dead_spool[1], "--yes").stdout == (
        "purged 1 event\n"
    )
    assert dead_rows(db, "event_id") == [(dead_spool[3],)]
    assert run("dlq", "purge", "--db", str(db), "--all").stdout == "purged 1 event\n"
    assert dead_count(db) == 0


def test_dlq_purge_by_destination_reason_and_age(db: Path) -> None:
    # Given dead events of two destinations, dead for two reasons
    with Spool(db) as spool:
        add = spool.dead_letters.add
        gone = add({"n": 1}, destination="a", reason="rejected", error="HTTP 400")
        kept = [
            add({"n": 2}, destination="a", reason="invalid", error="HTTP 400"),
            add({"n": 3}, destination="b", reason="rejected", error="HTTP 400"),
        ]
    purge = ["dlq", "purge", "--db", str(db)]
    # When the filters are combined, only the events matching all of them go
    assert run(*purge, "-d", "a", "-r", "rejected", "--yes").stdout == "purged 1 event\n"
    assert sorted(dead_rows(db, "event_id")) == sorted((k,) for k in kept)
    assert gone not in run("dlq", "inspect", "--db", str(db)).stdout
    # And the ages select too, a dry run counting without deleting
    assert run(*purge, "--older-than", "1h", "--dry-run").stdout == "would purge 0 events\n"
    assert run(*purge, "--newer-than", "1h", "--dry-run").stdout == "would purge 2 events\n"
    assert dead_count(db) == 2
    mixed = run(*purge, "--all", "--reason", "invalid")
    assert mixed.exit_code == 2 and "--all cannot be combined" in mixed.stderr


def test_dlq_purge_deletes_no_more_than_its_question_counted(db: Path) -> None:
    # Given 2 dead letters of destination "zz"
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(2)], destination="zz")
        assert spool.expire(destination="zz") == 2
    # When the purge of "zz" asks on a terminal, and 3 more die before the answer
    controller, terminal = pty.openpty()
    purge = [*SPOOLER, "dlq", "purge", "--db", str(db), "-d", "zz"]
    proc = subprocess.Popen(purge, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    try:
        assert b"Delete 2 events for good?" in read_terminal(controller, until=b"for good?")
        with Spool(db) as spool:
            spool.enqueue_many([{"n": n} for n in range(3)], destination="zz")
            assert spool.expire(destination="zz") == 3
        os.write(controller, b"y\n")
        answered = read_terminal(controller)
    finally:
        os.close(controller)
    # Then it deleted the 2 it counted, and the 3 newer ones are left
    assert proc.wait(timeout=30) == 0
    assert b"purged 2 events" in answered
    assert dead_count(db) == 3


def read_terminal(controller: int, *, until: bytes | None = None) -> bytes:
    """What a command writes to its terminal, up to ``until`` (None: until it exits)."""
    shown = b""
    deadline = time.monotonic() + 30
    while until is None or until not in shown:
        assert time.monotonic() < deadline, f"the terminal showed only {shown!r}"
        if not select.select([controller], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    return shown


def test_a_drain_names_its_spool_and_says_when_it_had_to_create_it(tmp_path: Path) -> None:
    # Given a path where no producer has written (a typo, or a drain that starts first)
    path = tmp_path / "typo.db"
    drain = ("drain", "--db", str(path), "--url", "-", "--once")
    # When a drain starts there, it creates the spool and says so, naming the path
    first = spooler_cmd(*drain)
    assert first.returncode == 0, first.stderr
    assert f"WARNING no spool was at {path}, so the drain created an empty one" in first.stderr
    assert f"started (once) on {path} for default (-)" in first.stderr
    # And the next drain finds it, and says nothing more about it
    second = spooler_cmd(*drain)
    assert second.returncode == 0 and "WARNING" not in second.stderr
    assert f"started (once) on {path}" in second.stderr


def test_a_drain_says_which_events_a_killed_drain_still_holds_and_until_when(
    spool_location: str, receiver: Receiver
) -> None:
    # Given a drain killed -9 right after it claimed the three queued events: its lease
    # (60 s) runs on
    with Spool(spool_location) as spool:
        spool.enqueue_many([{"n": n} for n in range(3)])
    once = drain_args(spool_location, receiver.url, "--once")
    killed = subprocess.Popen(
        [*SPOOLER, *once], env={**os.environ, CRASH_ENV: "after_claim"}, stderr=subprocess.PIPE
    )
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    with Spool(spool_location) as spool:
        [leased] = spool.store.live_leases(now=time.time())
    # When a new drain starts
    result = spooler_cmd(*once)
    # Then it says how many events the killed drain holds, and when they go again
    assert result.returncode == 0, result.stderr
    said = re.search(
        r"WARNING 3 events are leased by (\S+) until (\d\d:\d\d:\d\d) UTC \(in (\d+)s\)"
        r" \(a drain that stopped without settling them, or one still running\):"
        r" to be sent again once the lease ends\n",
        result.stderr,
    )
    assert said, result.stderr
    owner, until, seconds = said.groups()
    assert owner == leased.owner and owner.split(":")[1] == str(killed.pid)
    assert until in {
        time.strftime("%H:%M:%S", time.gmtime(leased.until + shift)) for shift in (-1, 0, 1)
    }
    assert 0 <= int(seconds) <= 60
    # And it waits for the lease, rather than taking the events over
    assert receiver.requests == []


def test_subprocess_exit_codes_and_one_line_errors(db: Path, tmp_path: Path) -> None:
    ok = spooler_cmd("enqueue", "--db", str(db), '{"a":1}')
    assert ok.returncode == 0 and len(ok.stdout.split()) == 1
    bad = spooler_cmd("enqueue", "--db", str(db), "nope")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    debug = spooler_cmd("enqueue", "--db", str(db), "--debug", "nope")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    usage = spooler_cmd("drain", "--db", str(db), "--batch-size", "x")
    assert usage.returncode == 2
    assert spooler_cmd("--version").stdout.startswith("spooler, version ")


def fresh_python(code: str, *args: str) -> str:
    """What ``python -c CODE ARGS`` prints: a new interpreter, where nothing is imported yet."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_import_spooler_loads_neither_httpx_nor_click(db: Path) -> None:
    code = (
        "import sys, spooler, spooler.clients; s = spooler.Spool(sys.argv[1]);"
        "spooler.clients.Datalyr(s).track('u', 'e');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx','click')))"
    )
    assert fresh_python(code, str(db)).strip() == "[]"


def test_enqueue_path_skips_the_slow_imports(db: Path) -> None:
    # Target 7 of docs/performance.md: these are what made `import spooler` slow.
    slow = ("dataclasses", "typing", "random", "email", "pathlib")
    code = (
        "import sys; before = set(sys.modules); import spooler;"
        "spooler.Spool(sys.argv[1]).enqueue({'event': 'e'});"
        f"print(sorted(m for m in set(sys.modules) - before if m in {slow!r}))"
    )
    assert fresh_python(code, str(db)).strip() == "[]"


def test_spooler_enqueue_loads_only_what_it_needs(db: Path) -> None:
    # A shell loop of `spooler enqueue` pays for every import at every call: the other
    # commands' modules, and the config parser when there is no config file, stay out.
    code = (
        "import sys; from spooler_cli.main import cli;"
        "cli(['enqueue', '--db', sys.argv[1], '{}'], standalone_mode=False);"
        "print(sorted(m for m in sys.modules if m.startswith(('spooler.', 'spooler_cli.'))))"
    )
    loaded = fresh_python(code, str(db)).split("\n", 1)[1].strip()  # after the event id
    assert loaded == str(
        sorted(
            [
                "spooler.errors",
                "spooler.events",
                "spooler.files",
                "spooler.group_commit",
                "spooler.spool",
                "spooler.store",
                "spooler.store.shared",
                "spooler.store.sqlite",
                "spooler.store.sqlite.base",
                "spooler.store.sqlite.drains",
                "spooler.store.sqlite.history",
                "spooler.store.sqlite.maintenance",
                "spooler.store.sqlite.operators",
                "spooler.store.sqlite.process_locks",
                "spooler.store.sqlite.producers",
                "spooler.store.sqlite.schema",
                "spooler.store.sqlite.sql",
                "spooler_cli.main",
                "spooler_cli.options",
            ]
        )
    )


def test_every_command_loads_under_its_own_name() -> None:
    with click.Context(cli) as ctx:
        names = cli.list_commands(ctx)
        assert {"drain", "dlq", "retry-now", "enqueue", "status"} <= set(names)
        assert [cli.get_command(ctx, name).name for name in names] == names


@pytest.mark.parametrize("suffix", ["", "-wal"])
def test_a_file_destination_that_is_the_spool_itself_is_refused(db: Path, suffix: str) -> None:
    with Spool(db) as spool:  # closed: its last checkpoint must not change the file later
        spool.enqueue({"n": 1})
    before = db.read_bytes()
    result = run("drain", "--db", str(db), "--url", f"file://{db}{suffix}", "--once")
    assert result.exit_code == 2
    assert f"url: file://{db}{suffix} is the spool itself" in result.stderr
    assert db.read_bytes() == before and queued_count(db) == 1


def test_the_demo_never_runs_on_an_existing_spool(db: Path) -> None:
    ids = Spool(db).enqueue_many([{"real": True}])
    result = spooler_cmd("demo", "--db", str(db))
    assert result.returncode == 2
    assert result.stderr == (
        f"spooler: error: --db {db} exists; the demo needs a new file (or no --db)\n"
    )
    assert [event_id for (event_id,) in rows(db, "SELECT event_id FROM queue")] == ids


def test_demo_tells_the_whole_story() -> None:
    result = spooler_cmd("demo", timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in (
        "will be retried",
        "splitting it to find the events at fault",
        "dead-lettered event",
        "rejected",
        "replayed 1 event\n",
        "The receiver got 8 events",
    ):
        assert needle in out, needle


def test_db_in_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    target = tmp_path / "from-config.db"
    config.write_text(f"db = '{target}'\n")
    assert run("enqueue", "--config", str(config), "{}").exit_code == 0
    assert queued_bodies(target) == ["{}"]
    assert sqlite3.connect(target).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_receivers_text_cannot_forge_log_lines_or_send_terminal_escapes(
    db: Path, receiver: Receiver
) -> None:
    ids = Spool(db).enqueue_many([{"n": 1}])
    forged = b"oops\n2026-11-24 03:00:00,000 INFO default: delivered 9 events\x1b[2J"
    receiver.respond = lambda body, headers: (400, {}, forged)
    drained = spooler_cmd("drain", "--db", str(db), "--url", receiver.url, "--once")
    status = spooler_cmd("status", "--db", str(db))
    detail = spooler_cmd("dlq", "inspect", "--db", str(db), ids[0])
    for output in (drained.stderr, status.stdout, detail.stdout):
        assert "\x1b" not in output, output
    assert "\\x1b[2J" in drained.stderr and "\\x1b[2J" in detail.stdout  # shown escaped
    assert not any(line.startswith("2026-11-24 03:00:00") for line in drained.stderr.splitlines())
    # The spool keeps the receiver's answer as it came.
    assert "\x1b[2J" in dead_rows(db, "error")[0][0]


def test_a_relative_db_in_a_config_file_is_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "spooler.toml"
    config.write_text("db = 'data/spool.db'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # as a service runs, from another directory
    assert run("enqueue", "--config", str(config), "{}").exit_code == 0
    assert queued_bodies(tmp_path / "etc" / "data" / "spool.db") == ["{}"]
    assert list(elsewhere.iterdir()) == []
    shown = json.loads(run("config", "check", str(config)).stdout)
    assert shown["db"] == str(tmp_path / "etc" / "data" / "spool.db")


def test_operator_commands_refuse_a_missing_spool(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for args in (
        ["status"],
        ["dlq", "inspect"],
        ["dlq", "replay", "--all"],
        ["dlq", "purge", "--all", "--yes"],
    ):
        result = run(*args, "--db", str(missing))
        assert result.exit_code == 1 and result.stderr == (
            f"spooler: error: no spool at {missing} (no such file; a drain or an enqueue"
            " creates one; check --db / SPOOLER_DB)\n"
        )
    assert not missing.exists()


# Commands that only read or change what a spool holds (create=False), and commands
# that may create a spool where there is none.
OPERATOR_COMMANDS = (
    ("status",),
    ("doctor",),
    ("dlq", "inspect"),
    ("dlq", "summary"),
    ("dlq", "purge", "--all", "--yes"),
    ("hold", "--all"),
)
CREATING_COMMANDS = (("enqueue", "{}"), ("drain", "--url", "http://127.0.0.1:9/", "--once"))


@pytest.mark.parametrize(
    "table", ["queue (id INTEGER PRIMARY KEY, job TEXT)", "meta (name TEXT, data TEXT)"]
)
def test_every_command_refuses_another_application_s_database_in_the_same_words(
    tmp_path: Path, table: str
) -> None:
    # Given another application's SQLite file, whose table has the name of one of a spool's
    db = tmp_path / "jobs.db"
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE {table}")
    conn.close()
    before = db.read_bytes()
    # When every command is pointed at it
    for args in (*OPERATOR_COMMANDS, *CREATING_COMMANDS):
        result = run(*args, "--db", str(db))
        # Then each refuses it, with the same words
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.splitlines()[-1] == (
            f"spooler: error: {db} is a SQLite database but not a spooler spool;"
            " refusing to touch it"
        ), args
    # And leaves it as it was, with no -wal or -shm beside it
    assert db.read_bytes() == before and list(tmp_path.iterdir()) == [db]


def _spooler_id_only(db: Path) -> None:
    """A file spooler began (its application_id) but made no table in: a creation cut short."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 0x53504C52")
    conn.close()


@pytest.mark.parametrize(
    ("make", "why"),
    [(Path.touch, "the file is empty"), (_spooler_id_only, "it has no tables yet")],
    ids=["empty", "begun"],
)
def test_commands_that_create_nothing_leave_a_file_without_a_spool_as_it_is(
    tmp_path: Path, make, why: str
) -> None:
    # Given a file that holds no spool yet, but may become one
    db = tmp_path / "spool.db"
    make(db)
    before = db.read_bytes()
    # When the operator commands are pointed at it
    for args in OPERATOR_COMMANDS:
        result = run(*args, "--db", str(db))
        # Then each says there is no spool there, and why, and creates none
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == (
            f"spooler: error: no spool at {db} ({why}; a drain or an enqueue creates one;"
            " check --db / SPOOLER_DB)\n"
        ), args
    assert db.read_bytes() == before and list(tmp_path.iterdir()) == [db]
    # While an enqueue makes it a spool
    assert run("enqueue", "--db", str(db), "{}").exit_code == 0
    assert queued_bodies(db) == ["{}"]


def test_drain_flags_from_environment_variables(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert run("enqueue", "--db", str(db), '{"a":1}').exit_code == 0
    env = {
        "SPOOLER_DB": str(db),
        "SPOOLER_DRAIN_URL": f"file://{out}",
        "SPOOLER_DRAIN_ID_FIELD": "id",
    }
    assert run("drain", "--until-empty", env=env).exit_code == 0
    [line] = out.read_text().splitlines()
    assert json.loads(line)["a"] == 1 and len(json.loads(line)["id"]) == 36


def test_drain_headers_from_the_environment_one_per_line(db: Path) -> None:
    assert run("enqueue", "--db", str(db), '{"a":1}').exit_code == 0
    with Receiver() as receiver:
        env = {
            "SPOOLER_DRAIN_URL": receiver.url,
            "SPOOLER_DRAIN_HEADER": "X-Source: cron\nX-Team: core",
        }
        result = run("drain", "--db", str(db), "--until-empty", env=env)
        assert result.exit_code == 0, result.output
        [request] = receiver.requests
    assert (request.headers["X-Source"], request.headers["X-Team"]) == ("cron", "core")


def test_a_destination_flag_from_the_environment_is_named_when_refused(
    db: Path, tmp_path: Path
) -> None:
    # Given a config that defines only "amp", and a batch size set in a unit's
    # environment file, for destination "default" (no -d)
    assert run("enqueue", "--db", str(db), "-d", "amp", '{"a":1}').exit_code == 0
    config = tmp_path / "spooler.toml"
    with Receiver() as receiver:
        config.write_text(f'[destinations.amp]\nurl = "{receiver.url}"\n')
        env = {"SPOOLER_DRAIN_BATCH_SIZE": "100"}
        result = run("drain", "--db", str(db), "--config", str(config), "--once", env=env)
        # Then the error says which flag, for which destination, the way out, and
        # which variable set it; nothing was sent
        assert result.exit_code == 2
        assert "--batch-size is for destination 'default'" in result.stderr
        assert "(it has amp); give -d NAME" in result.stderr
        assert "--batch-size is set by SPOOLER_DRAIN_BATCH_SIZE in the environment" in (
            result.stderr
        )
        assert receiver.requests == [] and queued_bodies(db) == ['{"a":1}']
        # And the way out it names works
        result = run(
            "drain", "--db", str(db), "--config", str(config), "-d", "amp", "--once", env=env
        )
        assert result.exit_code == 0, result.output
        assert len(receiver.requests) == 1 and queued_bodies(db) == []


def test_dlq_summary_groups_counts_ages_and_the_usual_error(db: Path) -> None:
    # Given dead events of two kinds, some of them old
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(5)])
        claim = spool.store.claim("default", 5, "me", due_by=2e9, lease_until=2e9)
        now = time.time()
        failures = [
            (400, "HTTP 400: bad"),
            (400, "HTTP 400: bad"),
            (400, "HTTP 400: odd"),
            (503, "HTTP 503: down"),
            (503, "HTTP 503: down"),
        ]
        for age, event, (status, error) in zip(
            [60, 60, 7200, 60, 9 * 86400], claim.events, failures, strict=True
        ):
            reason = "rejected" if status == 400 else "max_attempts"
            spool.store.settle(
                claim.lease, now=now - age, dead=[(event.rowid, reason, Failure(status, error))]
            )
    # When an operator asks for the summary
    groups = [
        json.loads(line)
        for line in run("dlq", "summary", "--db", str(db), "--json").stdout.splitlines()
    ]
    # Then each destination x reason x status is one row, largest first
    assert groups == [
        {
            "destination": "default",
            "reason": "rejected",
            "status": 400,
            "count": 3,
            "by_age": {"<1h": 2, "1h-1d": 1, "1d-7d": 0, ">7d": 0},
            "top_error": "HTTP 400: bad",
        },
        {
            "destination": "default",
            "reason": "max_attempts",
            "status": 503,
            "count": 2,
            "by_age": {"<1h": 1, "1h-1d": 0, "1d-7d": 0, ">7d": 1},
            "top_error": "HTTP 503: down",
        },
    ]
    table = run("dlq", "summary", "--db", str(db)).stdout.splitlines()
    assert table[0].split()[:4] == ["destination", "reason", "status", "count"]
    assert table[1].split()[:4] == ["default", "rejected", "400", "3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[destinations.a]\nurl = 'http://h'\nbatchsize = 5\n",
            "destinations.a.batchsize: unknown key (did you mean 'batch_size'?)",
        ),
        ("[spool]\ndurabilty = 'full'\n", "spool.durabilty: unknown key (did you mean"),
    ],
)
def test_config_check_refuses_bad_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text(text)
    result = run("config", "check", "--config", str(config))
    assert result.exit_code == 2 and message in result.stderr


def test_config_check_without_a_file_says_every_way_to_give_one() -> None:
    result = run("config", "check", env={"SPOOLER_CONFIG": ""})
    assert result.exit_code == 2
    assert result.stderr == (
        "spooler: error: no config file to check: give one as FILE, --config FILE or"
        " SPOOLER_CONFIG; see 'spooler config check --help'\n"
    )


def test_config_check_prints_every_problem_on_a_line_of_its_own(tmp_path: Path) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text("[spool]\nmax_events = 0\n[destinations.a]\nurl = 'ftp://h'\n")
    result = run("config", "check", str(config))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "spooler: error: spool.max_events: must be at least 1, got 0",
        "spooler: error: destinations.a.url: http destinations need an http:// or "
        "https:// URL, got 'ftp://h'",
    ]


def test_config_check_names_the_apis_the_relay_refuses(tmp_path: Path) -> None:
    # Given a relay's config that defines a destination for Amplitude's events only
    config = tmp_path / "spooler.toml"
    config.write_text(
        "[serve]\nport = 8421\n"
        "[destinations.amplitude]\ntype = 'amplitude'\napi_key = 'amp-0123456789'\n"
    )
    # When it is checked, then it names the other APIs, whose requests get 404
    result = run("config", "check", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["serve"]["refused_apis"] == ["segment", "posthog", "datalyr"]
    # ...and none where the file defines no destination: the relay takes any
    config.write_text("[serve]\nport = 8421\n")
    assert json.loads(run("config", "check", str(config)).stdout)["serve"]["refused_apis"] == []


def test_retry_now_clears_the_backoff_of_waiting_events(db: Path) -> None:
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(3)])
        claim = spool.store.claim("default", 3, "me", due_by=time.time(), lease_until=2e9)
        later = time.time() + 3600
        spool.store.settle(
            claim.lease,
            now=time.time(),
            retry=[(e.rowid, later, Failure(503, "x")) for e in claim.events[:2]],
        )
    # The third event is in flight (leased): retry-now leaves it alone.
    result = run("retry-now", "--db", str(db), "--all")
    assert result.exit_code == 0 and result.stdout == "made 2 events due now\n"
    due = {eid: due_at for eid, due_at in rows(db, "SELECT event_id, due_at FROM queue")}
    assert due[ids[0]] < later and due[ids[1]] < later
    with Spool(db) as spool:
        assert spool.status().total.leased == 1
    missing = run("retry-now", "--db", str(db), "nope")
    assert missing.exit_code == 1 and "not in the queue: nope" in missing.stderr


def test_expire_moves_events_to_the_dlq_as_manual(db: Path) -> None:
    with Spool(db) as spool:
        keep, gone = spool.enqueue_many([{"n": 1}, {"n": 2}])
        spool.enqueue({"n": 3}, destination="other")
    assert run("expire", "--db", str(db), gone).stdout == "expired 1 event\n"
    assert run("expire", "--db", str(db), "-d", "other", "--yes").stdout == "expired 1 event\n"
    assert rows(db, "SELECT event_id FROM queue") == [(keep,)]
    dead = json.loads(run("dlq", "inspect", "--db", str(db), gone, "--json").stdout)
    assert (dead["reason"], dead["error"]) == ("manual", "expired by an operator")
    nothing = run("expire", "--db", str(db))
    assert nothing.exit_code == 2 and "say which queued events" in nothing.stderr
    # and they can come back
    assert run("dlq", "replay", "--db", str(db), "--reason", "manual").stdout == (
        "replayed 2 events\n"
    )


def dead_spool_of(db: Path, ages: list[float]) -> list[str]:
    """A spool whose dead-letter table holds one event per age (seconds since death)."""
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(len(ages))])
        claim = spool.store.claim("default", len(ages), "me", due_by=2e9, lease_until=2e9)
        for age, event in zip(ages, claim.events, strict=True):
            spool.store.settle(
                claim.lease,
                now=time.time() - age,
                dead=[(event.rowid, "rejected", Failure(400, "no"))],
            )
    return ids


def test_dlq_replay_by_age_limit_and_to_another_destination(db: Path) -> None:
    ids = dead_spool_of(db, [10, 20, 7200, 9000])
    assert (
        run(
            "dlq",
            "replay",
            "--db",
            str(db),
            "--older-than",
            "1h",
            "--limit",
            "1",
            "--to",
            "archive",
        ).stdout
        == "replayed 1 event\n"
    )
    assert rows(db, "SELECT event_id, destination, attempts FROM queue") == [(ids[2], "archive", 0)]
    assert run("dlq", "replay", "--db", str(db), "--newer-than", "1m").stdout == (
        "replayed 2 events\n"
    )
    assert {eid for (eid,) in dead_rows(db, "event_id")} == {ids[3]}
    bad = run("dlq", "replay", "--db", str(db), "--all", "--to", "no way")
    assert bad.exit_code == 2 and "bad destination name" in bad.stderr


def test_dlq_replay_ids_from_stdin(db: Path) -> None:
    ids = dead_spool_of(db, [1, 2, 3])
    result = run("dlq", "replay", "--db", str(db), "-", input=f"{ids[0]}\n\n{ids[2]}\n")
    assert result.stdout == "replayed 2 events\n"
    assert {eid for (eid,) in rows(db, "SELECT event_id FROM queue")} == {ids[0], ids[2]}


def test_every_command_that_takes_ids_reads_them_from_stdin(db: Path) -> None:
    dead = dead_spool_of(db, [1, 2, 3])
    with Spool(db) as spool:
        queued = spool.enqueue_many([{"n": n} for n in range(3)])
    purged = run("dlq", "purge", "--db", str(db), "-", "--yes", input=f"{dead[0]}\n{dead[2]}\n")
    assert purged.stdout == "purged 2 events\n"
    assert dead_rows(db, "event_id") == [(dead[1],)]
    shown = run("dlq", "inspect", "--db", str(db), "-", "--json", input=f"{dead[1]}\n")
    assert json.loads(shown.stdout)["id"] == dead[1]
    held = run("hold", "--db", str(db), "-", input=f"{queued[1]}\n")
    assert held.stdout == "held 1 event\n"
    assert run("release", "--db", str(db), "-", input=f"{queued[1]}\n").stdout == (
        "released 1 event\n"
    )
    unknown = run("expire", "--db", str(db), "-", input="nope\n")
    assert unknown.exit_code == 1 and "not in the queue: nope" in unknown.stderr


def test_a_large_replay_is_chunked_into_transactions(db: Path) -> None:
    dead_spool_of(db, [1.0] * 25)
    with Spool(db) as spool:
        store = spool.store
        selection = DeadSelection(everything=True)
        assert store.replay(selection, now=time.time(), chunk=10, dry_run=True) == 25
        commits = []
        with spool.store._connection() as conn:
            conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        assert store.replay(selection, now=time.time(), chunk=10) == 25
    assert len(commits) == 1 + 3  # the read that checks the selection, then 10 + 10 + 5
    assert queued_count(db) == 25
    assert dead_count(db) == 0


def test_status_rounds_what_is_left_of_a_pause_up() -> None:
    # Given a destination paused for 0.3 s more (Counts as the spool reports them)
    now = 1_767_323_045.0
    paused = Counts(queued=1, retrying=1, failed_in_a_row=2, paused_until=now + 0.3)
    status = SpoolStatus(total=paused, destinations={"default": paused}, now=now)
    # When status shows it, Then its pause reads 1s, as doctor's and the dashboard's
    # do: "0s" said the pause had ended while no drain would send yet
    row = status_table(status).splitlines()[1].split()
    assert row[0] == "default" and row[8] == "1s"


def test_status_shows_each_destinations_last_error_and_pause(db: Path, receiver: Receiver) -> None:
    assert run("enqueue", "--db", str(db), "{}").exit_code == 0
    receiver.fail_next(503, headers={"Retry-After": "600"})
    assert run("drain", "--db", str(db), "--url", receiver.url, "--once").exit_code == 0
    default = json.loads(run("status", "--db", str(db), "--json").stdout)["destinations"]["default"]
    assert default["last_error"] == 'HTTP 503: {"error":"scripted failure"}'
    assert default["last_error_at"].endswith("Z") and default["last_success_at"] is None
    assert default["failed_in_a_row"] == 1 and default["paused_until"].endswith("Z")
    row = run("status", "--db", str(db)).stdout.splitlines()[1]
    assert "ago" in row and "HTTP 503" in row
    assert row.split()[8] in ("9m", "10m")  # paused: what is left of the 600 s
    # retry-now ends the pause: the next drain probes at once
    assert run("retry-now", "--db", str(db), "--all").exit_code == 0
    default = json.loads(run("status", "--db", str(db), "--json").stdout)["destinations"]["default"]
    assert default["failed_in_a_row"] == 1 and default["paused_until"] is None
    assert run("status", "--db", str(db)).stdout.splitlines()[1].split()[8] == "-"


def test_status_watch_refreshes_until_interrupted(db: Path) -> None:
    Spool(db).close()
    proc = subprocess.Popen(
        [*SPOOLER, "status", "--db", str(db), "--watch", "0.1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    headers = 0
    for line in proc.stdout:  # synchronise on its output: two refreshes
        headers += "destination" in line
        if headers == 2:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert headers == 2 and proc.returncode == 0


def test_drain_logs_json_lines_when_asked(db: Path, receiver: Receiver) -> None:
    assert spooler_cmd("enqueue", "--db", str(db), "{}", "{}").returncode == 0
    result = spooler_cmd(
        "drain", "--db", str(db), "--url", receiver.url, "--until-empty", "--log-format", "json"
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert {line["level"] for line in lines} == {"INFO"}
    delivered = [line for line in lines if "delivered 2 events" in line["message"]]
    assert len(delivered) == 1
    assert delivered[0]["message"].startswith("default: delivered 2 events (HTTP 200) in ")
    # A line about one destination names it in a field of its own; the drain's own do not.
    assert delivered[0]["destination"] == "default"
    others = [line["message"] for line in lines if "destination" not in line]
    assert len(others) == 2 and all(message.startswith("drain ") for message in others)
    assert all(line["time"].endswith("Z") and line["logger"] == "spooler.drain" for line in lines)


def test_json_log_lines_keep_the_traceback() -> None:
    try:
        raise OSError("disk I/O error")
    except OSError:
        record = logging.LogRecord(
            "spooler.drain", logging.ERROR, __file__, 1, "stopped", None, sys.exc_info()
        )
    line = json.loads(JsonLogFormatter().format(record))
    assert line["message"] == "stopped" and "destination" not in line
    assert line["traceback"].startswith("Traceback (most recent call last)")
    assert line["traceback"].endswith("OSError: disk I/O error")


def test_shell_completion_as_documented(tmp_path: Path) -> None:
    script = spooler_cmd(env={"_SPOOLER_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_spooler_completion()" in script.stdout
    words = spooler_cmd(
        env={"_SPOOLER_COMPLETE": "bash_complete", "COMP_WORDS": "spooler dl", "COMP_CWORD": "1"}
    )
    assert words.stdout.split() == ["plain,dlq"]


def test_hold_parks_events_until_release(db: Path, receiver: Receiver) -> None:
    # Given a spool where the operator holds one destination's events
    with Spool(db) as spool:
        parked = spool.enqueue_many([{"n": 1}, {"n": 2}], destination="flaky")
        spool.enqueue({"n": 3})
    assert run("hold", "--db", str(db), "-d", "flaky").stdout == "held 2 events\n"
    status = json.loads(run("status", "--db", str(db), "--json").stdout)
    assert status["held"] == 2 and status["destinations"]["flaky"]["due"] == 0
    # When drains run, even --until-empty, and the clock and retry-now try to move them
    for dest in ("default", "flaky"):
        result = run(
            "drain",
            "--db",
            str(db),
            "--url",
            receiver.url,
            "-d",
            dest,
            "--until-empty",
            "--max-time",
            "20",
            "--config",
            str(_two_destinations(db.parent, receiver.url)),
        )
        assert result.exit_code == 0, result.output
    with Spool(db) as spool:
        assert spool.store.shift_schedule(86400, now=time.time()) == 0
    assert run("retry-now", "--db", str(db), "--all").stdout == (
        "made no event due: none selected was waiting for a retry (already due, held, or"
        " being delivered)\n"
    )
    # Then only the unheld event was sent; the held ones wait, still queued
    assert [e["n"] for e in receiver.delivered] == [3]
    assert {eid for (eid,) in rows(db, "SELECT event_id FROM queue")} == set(parked)
    # And once released, they go
    assert run("release", "--db", str(db), parked[0]).stdout == "released 1 event\n"
    assert run("release", "--db", str(db), "--all").stdout == "released 1 event\n"
    assert (
        run(
            "drain",
            "--db",
            str(db),
            "--until-empty",
            "--config",
            str(_two_destinations(db.parent, receiver.url)),
        ).exit_code
        == 0
    )
    assert sorted(e["n"] for e in receiver.delivered) == [1, 2, 3]


def _two_destinations(folder: Path, url: str) -> Path:
    config = folder / "two.toml"
    config.write_text(
        f"[destinations.default]\nurl = '{url}'\n[destinations.flaky]\nurl = '{url}'\n"
    )
    return config


def run_on_a_terminal(command: list[str]) -> tuple[int, bytes]:
    """Run ``command`` with its stdout and stderr on a pseudo-terminal: its exit status,
    and everything it wrote there."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    try:
        shown = read_terminal(controller)
    finally:
        os.close(controller)
    return proc.wait(timeout=30), shown


def test_drain_shows_progress_on_a_terminal_and_plain_logs_otherwise(
    db: Path, receiver: Receiver
) -> None:
    assert spooler_cmd("enqueue", "--db", str(db), *["{}"] * 10).returncode == 0
    command = [
        *SPOOLER,
        "drain",
        "--db",
        str(db),
        "--url",
        receiver.url,
        "--batch-size",
        "2",
        "--until-empty",
    ]
    # On a terminal (a pseudo-terminal here): a progress bar, no per-batch lines
    returncode, shown = run_on_a_terminal(command)
    assert returncode == 0
    assert b"draining" in shown and b"10/10" in shown and b"0 retries, 0 dead" in shown
    assert b"delivered 2 events" not in shown
    # Not on a terminal: the plain log lines, no bar
    assert spooler_cmd("enqueue", "--db", str(db), "{}").returncode == 0
    plain = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert "delivered 1 event" in plain.stderr and "draining" not in plain.stderr


def test_a_drain_to_stdout_on_a_terminal_shows_no_progress_bar_among_the_events(
    db: Path,
) -> None:
    # Given events, and a drain that writes them to its stdout (--url -), a terminal
    assert spooler_cmd("enqueue", "--db", str(db), *['{"n":1}', '{"n":2}']).returncode == 0
    command = [*SPOOLER, "drain", "--db", str(db), "--url", "-", "--until-empty"]
    # When it runs until empty there (stderr too, where a bar would be drawn)
    returncode, shown = run_on_a_terminal(command)
    # Then each event is a line of its own, with no bar drawn into them, and the log
    # says what was delivered instead
    assert returncode == 0
    lines = re.split(rb"[\r\n]+", shown)
    assert b'{"n":1}' in lines and b'{"n":2}' in lines, shown
    assert b"draining" not in shown and b"delivered 2 events" in shown


def test_an_event_out_of_attempts_is_named_in_the_log(db: Path, receiver: Receiver) -> None:
    # Given one event, and a receiver that is down
    [event_id] = Spool(db).enqueue_many([{"n": 1}])
    receiver.fail_next(503)
    # When a drain that gives an event one attempt runs until empty
    result = spooler_cmd(
        *("drain", "--db", str(db), "--url", receiver.url, "--until-empty"),
        *("--max-attempts", "1"),
    )
    # Then its log names the event it dead-lettered, for spooler dlq inspect ID
    assert result.returncode == 0, result.stderr
    assert f"dead-lettered event {event_id} (max_attempts): HTTP 503" in result.stderr
    assert dead_count(db) == 1


def test_a_warning_under_the_progress_bar_takes_a_line_of_its_own(
    db: Path, receiver: Receiver
) -> None:
    # Given events of which the receiver rejects one, so the drain warns of a dead letter
    events = [json.dumps({"n": n, "bad": n == 3}) for n in range(10)]
    assert spooler_cmd("enqueue", "--db", str(db), *events).returncode == 0
    receiver.reject = lambda event: bool(event.get("bad"))
    # When a drain runs until empty on a terminal, where it shows a progress bar
    command = [*SPOOLER, "drain", "--db", str(db), "--url", receiver.url, "--until-empty"]
    returncode, shown = run_on_a_terminal(command)
    # Then the warning is a line of its own, not carried on from the end of the bar's
    # line, and the bar is there again after it, to the end
    assert returncode == 0
    lines = re.split(rb"[\r\n]", shown)
    warnings = [line for line in lines if b"WARNING" in line]
    assert warnings and all(b"draining" not in line for line in warnings), warnings
    assert b"dead-lettered event" in warnings[-1]
    assert b"10/10" in shown.rsplit(b"dead-lettered event", 1)[1]


def test_runbook_moving_the_spool_with_sqlite3_backup_keeps_every_event(
    tmp_path: Path, receiver: Receiver
) -> None:
    require_program("sqlite3", "sqlite3")
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    spool = Spool(old)  # stays open, as a producer would be, so the events sit in the WAL
    queued = spool.enqueue_many([{"n": n} for n in range(5)])
    dead = spool.dead_letters.add({"n": "bad"}, destination="default", reason="invalid", error="x")
    assert (old.parent / "old.db-wal").stat().st_size > 0
    # The runbook's command, exactly as documented in docs/operations.md.
    backup = subprocess.run(
        ["sqlite3", str(old), f".backup {new}"], capture_output=True, text=True, timeout=60
    )
    spool.close()
    assert backup.returncode == 0, backup.stderr

    assert [
        event_id for (event_id,) in rows(new, "SELECT event_id FROM queue ORDER BY id")
    ] == queued
    status = json.loads(spooler_cmd("status", "--db", str(new), "--json").stdout)
    assert (status["queued"], status["dead"]) == (5, 1)
    assert spooler_cmd("doctor", "--db", str(new)).returncode == 0
    drained = spooler_cmd("drain", "--db", str(new), "--url", receiver.url, "--until-empty")
    assert drained.returncode == 0, drained.stderr
    assert [e["n"] for e in receiver.delivered] == list(range(5))
    assert (
        json.loads(spooler_cmd("dlq", "inspect", "--db", str(new), "--json").stdout)["id"] == dead
    )
    assert queued_count(new) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5x", "expected a duration like 90s, 15m, 12h, 3d, got '5x'"),
        ("-1h", "expected a duration like 90s, 15m, 12h, 3d, got '-1h'"),
    ],
)
def test_a_bad_duration_flag_is_named_once(db: Path, value: str, message: str) -> None:
    result = run("dlq", "purge", "--db", str(db), "--older-than", value, "--yes")
    assert result.exit_code == 2
    assert f"Invalid value for '--older-than': {message}" in result.stderr
