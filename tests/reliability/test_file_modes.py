"""Scenario 24: a spool and a file:// output made from scratch under the usual umask
022, by the command line as a service runs it: nothing spooler creates is readable by
others (issue 23: event payloads are often personal data)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from helpers.cli import spooler_cmd, start_drain

EVENTS = 20


def modes_under(top: Path) -> dict[str, str]:
    """The mode of every file and folder under ``top``, by path relative to it."""
    modes = {}
    for folder, subfolders, names in os.walk(top):
        for name in subfolders + names:
            path = Path(folder, name)
            modes[str(path.relative_to(top))] = oct(path.stat().st_mode & 0o777)
    return modes


def delivered_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()] if out.exists() else []


def test_a_new_spool_and_file_output_are_private_under_umask_022(tmp_path: Path, scenario) -> None:
    row = scenario(
        "24",
        "a new spool (its -wal and -shm) and a file:// output, with the folders for both,"
        " made under umask 022",
        "`spooler enqueue` and a `spooler drain` daemon started with umask 022, each into"
        " folders that do not exist; modes read while the drain holds the spool open: files"
        " must be 0600, folders 0700",
    )
    db = tmp_path / "spool" / "app" / "spool.db"
    out = tmp_path / "out" / "daily" / "events.jsonl"
    # Given a producer that makes a new spool under missing folders, with umask 022
    enqueued = spooler_cmd(
        "enqueue", "--db", str(db), *(json.dumps({"n": n}) for n in range(EVENTS)), umask=0o022
    )
    assert enqueued.returncode == 0, enqueued.stderr
    ids = enqueued.stdout.split()
    # When a drain daemon, also under umask 022, delivers them to a new file:// output
    drain = start_drain(db, f"file://{out}", "--poll-interval", "0.05", umask=0o022)
    try:
        deadline = time.monotonic() + 60
        while len(delivered_ids(out)) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        # Then, with the spool open (so its -wal and -shm exist), nothing is open to others
        modes = modes_under(tmp_path)
    finally:
        drain.send_signal(signal.SIGTERM)
        assert drain.wait(timeout=60) == 0
    assert modes == {
        "spool": "0o700",
        "spool/app": "0o700",
        "spool/app/spool.db": "0o600",
        "spool/app/spool.db-wal": "0o600",
        "spool/app/spool.db-shm": "0o600",
        "out": "0o700",
        "out/daily": "0o700",
        "out/daily/events.jsonl": "0o600",
    }
    # ...and every event was delivered
    row.tally(ids, delivered_ids(out))
    assert row.lost == 0 and row.duplicated == 0
