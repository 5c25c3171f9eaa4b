"""The command line as shell scripts and cron jobs meet it: stdin closed (``<&-``), ids
that cannot be written (a full disk, a reader gone), a spool behind a folder the user may
not enter, a drain's stdout on a disk that fills up. Each runs the CLI as a real
process."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import SPOOLER
from helpers.processes import wait_until
from helpers.spools import queued_count

from spooler import Spool


def run_with_stdout(db: Path, stdout: int, *events: str) -> subprocess.CompletedProcess[str]:
    """``spooler enqueue`` of ``events`` into ``db``, its stdout the descriptor ``stdout``."""
    return subprocess.run(
        [*SPOOLER, "enqueue", "--db", str(db), *events],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
    )


def test_stdin_closed_is_one_usage_line_and_makes_no_spool(db: Path) -> None:
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *SPOOLER, "enqueue", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("spooler: error: stdin is closed, so there is nothing to read")
    assert not db.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_ids_that_cannot_be_written_are_an_error_that_says_the_events_were_enqueued(
    db: Path,
) -> None:
    with open("/dev/full", "w") as full:
        result = run_with_stdout(db, full.fileno(), '{"a": 1}', '{"a": 2}')
    assert result.returncode == 1
    assert result.stderr == (
        "spooler: error: 2 events enqueued, but their ids could not be written to stdout:"
        " No space left on device\n"
    )
    assert queued_count(db) == 2


def test_a_reader_gone_before_the_ids_is_told_the_event_was_enqueued(db: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `spooler enqueue ... | head -0`
    try:
        result = run_with_stdout(db, write_end, '{"a": 1}')
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == (
        "spooler: error: 1 event enqueued, but its id could not be written to stdout: Broken pipe\n"
    )
    assert queued_count(db) == 1


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="POSIX users")
def test_a_spool_behind_a_folder_the_user_may_not_enter_is_not_called_missing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    db = folder / "spool.db"
    subprocess.run([*SPOOLER, "enqueue", "--db", str(db), "{}"], check=True, capture_output=True)
    # Root enters any folder: as root, the child looks as user nobody (after its imports,
    # the error's included: a checkout under a private folder, as mktemp -d makes, is
    # unreadable to nobody, where an installed spooler is not).
    root = os.geteuid() == 0
    script = (
        "import os, sys; from spooler import Spool, StoreError\n"
        "import spooler.store.sqlite.errors\n"
        f"{'os.setgid(65534); os.setuid(65534)' if root else ''}\n"
        "try:\n    Spool(sys.argv[1], create=False)\n"
        "except StoreError as exc:\n    print(exc)\n"
    )
    if not root:
        folder.chmod(0)
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=60
        )
    finally:
        folder.chmod(0o700)
    assert result.stdout.startswith(f"cannot reach {db}: Permission denied (as user "), result
    assert "no spool" not in result.stdout


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="Linux's prlimit")
def test_stdout_to_a_file_that_fills_up_and_recovers_holds_every_event_once(
    db: Path, tmp_path: Path
) -> None:
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n, "pad": "p" * 200} for n in range(300)])
    out, err = tmp_path / "events.jsonl", tmp_path / "drain.err"
    # A line the output starts with, larger than the spool's files: the size limit below
    # stops the output's writes past 20 KB more, not the spool's.
    out.write_text(json.dumps({"before": "b" * 2_000_000}) + "\n")
    limit = out.stat().st_size + 20_000

    def small_files() -> None:  # the file is "full" past the limit: writes fail, EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    command = [*SPOOLER, "drain", "--db", str(db), "--url", "-", "--until-empty"]
    with open(out, "ab") as stdout, open(err, "wb") as stderr:
        drain = subprocess.Popen(
            [*command, "--batch-size", "50", "--backoff-base", "0.05", "--backoff-cap", "0.2"],
            stdout=stdout,
            stderr=stderr,
            preexec_fn=small_files,
        )
        try:
            assert wait_until(lambda: "cannot write stdout" in err.read_text(), timeout=60)
            resource.prlimit(drain.pid, resource.RLIMIT_FSIZE, (-1, -1))  # room again
            assert drain.wait(timeout=60) == 0, err.read_text()
        finally:
            drain.kill()
    lines = out.read_bytes().splitlines()[1:]
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(300))
