"""spooler doctor: health checks, and corrupt events quarantined instead of sent."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.cli import drain_args, spooler_cmd
from helpers.spools import dead_rows, rows

from spooler import Spool, SpoolFullError
from spooler.doctor import diagnose
from spooler.testing import Receiver
from spooler_cli.main import cli


def test_a_healthy_spool(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"a": 1})
    result = CliRunner().invoke(cli, ["doctor", "--db", str(db)])
    assert result.exit_code == 0, result.output
    levels = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}
    assert levels == {
        "integrity": "ok",
        "schema": "ok",
        "wal": "ok",
        "files": "ok",
        "leases": "ok",
        "bodies": "ok",
        "disk": "ok",
    }


def test_the_operations_guides_example_is_a_healthy_spools_report(db: Path) -> None:
    # Given the example in docs/operations.md, and a real report of a spool file
    guide = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    example = guide.split("$ spooler doctor\n", 1)[1].split("```", 1)[0].splitlines()
    with Spool(db) as spool:
        spool.enqueue({"a": 1})
    report = CliRunner().invoke(cli, ["doctor", "--db", str(db)]).stdout.splitlines()
    # Then the example names the same checks, in the same order, and the current schema
    assert [line.split()[1] for line in example] == [line.split()[1] for line in report]
    [schema] = [line for line in report if line.split()[1] == "schema"]
    assert schema in example


def test_corrupt_bodies_are_quarantined_and_stale_leases_reported(db: Path) -> None:
    # Given a spool where someone edited bodies by hand, and a drain died holding a lease
    with Spool(db) as spool:
        good, broken, not_object = spool.enqueue_many([{"ok": 1}, {"b": 2}, {"c": 3}])
        spool.store.claim(
            "default", 1, "dead-drain", due_by=time.time(), lease_until=time.time() - 1
        )
    conn = sqlite3.connect(db)
    conn.execute("UPDATE queue SET body = '{\"b\": ' WHERE event_id = ?", (broken,))
    conn.execute("UPDATE queue SET body = '[3]' WHERE event_id = ?", (not_object,))
    conn.commit()
    conn.close()
    # When the operator runs the doctor
    result = CliRunner().invoke(cli, ["doctor", "--db", str(db)])
    # Then it exits 1, names what it found, and the corrupt events are dead letters
    assert result.exit_code == 1
    assert "problem  bodies     quarantined 2 events whose body is not a JSON object" in (
        result.stdout
    )
    assert "warning  leases     1 event leased by drains that stopped" in result.stdout
    assert rows(db, "SELECT event_id FROM queue") == [(good,)]
    assert sorted(dead_rows(db, "event_id", "reason")) == sorted(
        [(broken, "corrupt"), (not_object, "corrupt")]
    )
    # And the quarantined events can be looked at, as the doctor's message says, damaged
    # body and all
    detail = CliRunner().invoke(cli, ["dlq", "inspect", "--db", str(db), broken])
    assert detail.exit_code == 0, detail.output
    assert detail.stdout.endswith('event:\n(not valid JSON; as stored:)\n{"b":\n')
    listed = CliRunner().invoke(cli, ["dlq", "inspect", "--db", str(db), "--json"])
    assert listed.exit_code == 0, listed.output
    events = {d["id"]: d["event"] for d in map(json.loads, listed.stdout.splitlines())}
    assert events == {broken: '{"b": ', not_object: [3]}


def test_events_a_drain_still_holds_are_said_with_the_end_of_their_lease(db: Path) -> None:
    # Given a drain (running, or killed a moment ago) holding two events for a minute
    with Spool(db) as spool:
        spool.enqueue_many([{"n": 1}, {"n": 2}])
        now = time.time()
        spool.store.claim("default", 2, "host:12:ab", due_by=now, lease_until=now + 60)
    # When the operator runs the doctor
    result = CliRunner().invoke(cli, ["doctor", "--db", str(db)])
    # Then the leases are fine, and it says when the events go again at the latest
    assert result.exit_code == 0, result.output
    [leases] = [line for line in result.stdout.splitlines() if line.split()[1] == "leases"]
    said = re.fullmatch(
        r"ok +leases +no stale leases; 2 events leased by 1 running drain \(or stopped"
        r" without settling them\), the last lease ends in (\d+)s",
        leases,
    )
    assert said and 0 <= int(said[1]) <= 60


def test_a_lease_about_to_end_is_not_said_to_end_in_0s(db: Path) -> None:
    # Given a drain holding an event for 0.3 s more
    with Spool(db) as spool:
        spool.enqueue({"a": 1})
        now = time.time()
        spool.store.claim("default", 1, "host:12:ab", due_by=now, lease_until=now + 0.3)
        # When the doctor looks at that instant
        found = {f.check: f for f in diagnose(spool, now=now)}
    # Then the lease reads as the second it lasts at most, as a pause does, not "0s"
    assert found["leases"].detail.endswith("the last lease ends in 1s")


def test_a_destination_whose_requests_fail_is_a_warning_until_one_gets_through(
    db: Path, receiver: Receiver
) -> None:
    # Given an API that is down (503, come back in 2 minutes) and a cron drain's pass
    [spooler_cmd("enqueue", "--db", str(db), json.dumps({"n": n})) for n in range(3)]
    receiver.fail_next(503, headers={"Retry-After": "120"})
    drained = spooler_cmd(*drain_args(db, receiver.url, "--once"))
    assert drained.returncode == 0, drained.stderr
    # When the operator runs the doctor
    doctor = spooler_cmd("doctor", "--db", str(db))
    # Then the spool is healthy, but the doctor says that delivery is not
    assert doctor.returncode == 0, doctor.stderr
    [delivery] = [line for line in doctor.stdout.splitlines() if line.split()[1] == "delivery"]
    said = re.fullmatch(
        r"warning +delivery +default: its last request failed \(HTTP 503: "
        r'\{"error":"scripted failure"\}\), paused for (\d+)s more, 3 events queued'
        r" \(see spooler status\)",
        delivery,
    )
    assert said and int(said[1]) <= 120, delivery
    # And once the API answers again, the line is gone
    assert spooler_cmd("retry-now", "--db", str(db), "--all").returncode == 0
    drained = spooler_cmd(*drain_args(db, receiver.url, "--until-empty"))
    assert drained.returncode == 0 and len(receiver.delivered) == 3, drained.stderr
    doctor = spooler_cmd("doctor", "--db", str(db))
    assert doctor.returncode == 0 and "delivery" not in doctor.stdout, doctor.stdout


def test_a_pause_about_to_end_is_not_said_to_last_0s(db: Path) -> None:
    # Given a destination whose drain paused it, with 0.3 s of the pause left
    now = time.time()
    with Spool(db) as spool:
        spool.enqueue({"a": 1})
        spool.store.record_pause("default", failures=2, until=now + 0.3, url_digest="-")
        # When the doctor looks at that instant
        found = {f.check: f for f in diagnose(spool, now=now)}
    # Then the pause reads as the second it lasts at most, not "0s more" (and with no
    # error kept, none is shown)
    assert found["delivery"].detail == (
        "default: its last 2 requests failed, paused for 1s more, 1 event queued"
        " (see spooler status)"
    )


def test_a_failing_destination_with_nothing_queued_is_no_warning(spool_location: str) -> None:
    # Given two destinations whose last requests failed, their pauses over: each has an
    # event queued, waiting for a probe
    now = time.time()
    with Spool(spool_location) as spool:
        spool.enqueue({"n": 1}, destination="a")
        spool.enqueue({"n": 2}, destination="b")
        for name in ("a", "b"):
            spool.store.record_pause(name, failures=3, until=now - 1, url_digest="-")
        # When every event of b dies (an operator expired it), then every event of a
        assert spool.expire(destination="b") == 1
        found = {f.check: f for f in diagnose(spool, now=now)}
        assert spool.expire(destination="a") == 1
        none_left = {f.check: f for f in diagnose(spool, now=now)}
    # Then b, with nothing left to probe, no longer makes a warning of its own; a does
    # while its event waits
    assert (found["delivery"].level, found["delivery"].detail) == (
        "warning",
        "a: its last 3 requests failed, to be probed, 1 event queued; b: its last 3"
        " requests failed, but nothing is queued for it (see spooler status)",
    )
    # And with nothing queued for either, the line is ok
    assert (none_left["delivery"].level, none_left["delivery"].detail) == (
        "ok",
        "a: its last 3 requests failed, but nothing is queued for it; b: its last 3"
        " requests failed, but nothing is queued for it (see spooler status)",
    )


def test_a_spool_near_or_at_its_limits_is_reported(db: Path) -> None:
    def limits(spool: Spool) -> tuple[str, str]:
        found = {f.check: f for f in diagnose(spool, now=time.time())}
        return found["limits"].level, found["limits"].detail

    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(7)])
        checks = {f.check for f in diagnose(spool, now=time.time())}
        assert "limits" not in checks  # none set: nothing to say
    with Spool(db, max_events=10, max_bytes=1000) as spool:
        assert limits(spool) == ("ok", "7 of max_events=10 (70%), 49 of max_bytes=1000 (5%)")
        spool.dead_letters.add({"n": 7}, destination="default", reason="manual", error="x")
        level, detail = limits(spool)
        assert level == "warning" and detail.startswith("8 of max_events=10 (80%)")
        assert "purge dead ones" in detail
    with Spool(db, max_bytes=56) as spool:
        assert limits(spool)[0] == "problem"
    # A spool a few bytes short of max_bytes is full for events of its usual size (7
    # bytes here): enqueue refuses them, so it is a problem too, not a warning
    with Spool(db, max_bytes=60) as spool:
        level, detail = limits(spool)
        assert level == "problem", detail
        assert detail.startswith(
            "56 of max_bytes=60 (93%); an event of the average size (7 bytes) no longer fits;"
        )
        with pytest.raises(SpoolFullError):
            spool.enqueue({"n": 8})
    with Spool(db, max_bytes=63) as spool:  # room for one more of them
        assert limits(spool) == (
            "warning",
            "56 of max_bytes=63 (89%); enqueue fails at the limit: deliver events, purge dead"
            " ones (they count too), or raise it",
        )
    result = CliRunner().invoke(cli, ["doctor", "--db", str(db)])
    assert result.exit_code == 0 and "limits" not in result.stdout
    # The command line reads the limits from the config, and a full spool needs action
    config = db.parent / "spooler.toml"
    config.write_text(f"db = '{db}'\n[spool]\nmax_events = 8\n")
    result = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    assert result.exit_code == 1 and "problem  limits     8 of max_events=8 (100%)" in result.stdout


def test_a_spool_others_can_read_is_a_warning(db: Path) -> None:
    # Given a spool made readable by others (by an older spooler, or by hand)
    with Spool(db) as spool:
        spool.enqueue({"email": "someone@example.com"})
    db.chmod(0o644)
    # When the operator runs the doctor
    result = CliRunner().invoke(cli, ["doctor", "--db", str(db)])
    # Then it warns, naming the file and its mode, and says how to fix it
    assert result.exit_code == 0, result.output
    assert f"warning  files      readable by others, payloads included: {db} (0644)" in (
        result.stdout
    )
    assert "chmod o-rwx" in result.stdout
    db.chmod(0o640)  # a group may read it (file_mode = "0640"): not a warning
    result = CliRunner().invoke(cli, ["doctor", "--db", str(db)])
    assert "ok       files      not readable by others" in result.stdout


def test_low_disk_space_is_a_problem(spool: Spool) -> None:
    findings = {f.check: f for f in diagnose(spool, now=time.time(), min_free_bytes=2**62)}
    assert findings["disk"].level == "problem" and "under" in findings["disk"].detail


def test_events_for_a_destination_the_config_does_not_define_are_reported(
    db: Path, tmp_path: Path
) -> None:
    with Spool(db) as spool:
        spool.enqueue({"a": 1}, destination="collector")
        spool.enqueue_many([{"b": 2}, {"c": 3}], destination="colector")  # a typo
    config = tmp_path / "spooler.toml"
    config.write_text(f"db = '{db}'\n[destinations.collector]\nurl = 'http://127.0.0.1:9'\n")
    result = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    assert result.exit_code == 0, result.output  # a warning: nothing is lost, yet
    assert (
        "warning  routes     queued for destinations the config does not define: "
        "colector (2 events)"
    ) in result.stdout
    config.write_text(config.read_text() + "[destinations.colector]\nurl = 'http://127.0.0.1:9'\n")
    result = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    assert "ok       routes     every queued event is for a configured destination" in (
        result.stdout
    )
