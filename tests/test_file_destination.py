"""The ``file`` destination when the disk fails it: nothing lost, no damaged lines, no hang.

Each test runs ``spooler drain`` as a real process against a real failure: ``/dev/full``
(every write fails with ENOSPC), a file size limit (``RLIMIT_FSIZE``: a write is cut
short, then fails with EFBIG) and a file left ending mid-line, as a drain killed
mid-write leaves it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from helpers.cli import drain_args, drain_command, spooler_cmd

from spooler import Spool

# Runs a command with a file size limit (argv[1] bytes). Python ignores SIGXFSZ, so a
# write past the limit is cut short and the next one fails with EFBIG.
WITH_SIZE_LIMIT = (
    "import os, resource, sys;"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2);"
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_a_full_disk_leaves_the_events_queued_and_the_drain_ends(db: Path, tmp_path: Path) -> None:
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(3)])
    # Given a file destination whose every write fails (ENOSPC)
    failed = spooler_cmd(*drain_args(db, "file:///dev/full", "--once"))
    # Then the drain ends (a failed write must not make closing the file fail and
    # leave the drain waiting forever), and the events wait for a retry, with the reason
    assert failed.returncode == 0, failed.stderr
    assert "cannot write /dev/full: No space left on device" in failed.stderr
    status = json.loads(spooler_cmd("status", "--db", str(db), "--json").stdout)
    assert (status["queued"], status["retrying"]) == (3, 3)
    # And once there is room, each event is written exactly once.
    out = tmp_path / "events.jsonl"
    drained = spooler_cmd(*drain_args(db, f"file://{out}", "--until-empty"))
    assert drained.returncode == 0, drained.stderr
    assert [json.loads(line)["id"] for line in lines(out)] == ids


def test_a_write_cut_short_is_taken_back_and_retried_whole(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    # (2 MB of it, so that the limit stays far above what the spool's own files need)
    earlier = "".join(json.dumps({"earlier": n, "pad": "x" * 80}) + "\n" for n in range(20000))
    out.write_text(earlier)
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n, "pad": "x" * 100} for n in range(20)])
    # Given a file that may grow by only 1000 bytes: the batch (~3 KB) is cut short
    limit = len(earlier) + 1000
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            WITH_SIZE_LIMIT,
            str(limit),
            *drain_command(db, f"file://{out}", "--once"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then the part that was written is taken back: the file is as it was
    assert result.returncode == 0, result.stderr
    assert "File too large" in result.stderr
    assert out.read_text() == earlier
    # And the retry writes every event once, each on a whole line of its own.
    drained = spooler_cmd(*drain_args(db, f"file://{out}", "--until-empty"))
    assert drained.returncode == 0, drained.stderr
    assert lines(out)[:20000] == earlier.splitlines()
    assert [json.loads(line)["id"] for line in lines(out)[20000:]] == ids


def test_a_line_cut_off_by_a_crash_does_not_swallow_the_next_event(
    db: Path, tmp_path: Path
) -> None:
    # Given a file that ends mid-line, as a drain killed mid-write leaves it
    out = tmp_path / "events.jsonl"
    out.write_text('{"n": 0}\n{"id": "0193", "n"')
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(1, 4)])
    # When a drain appends to it
    drained = spooler_cmd(*drain_args(db, f"file://{out}", "--until-empty"))
    assert drained.returncode == 0, drained.stderr
    # Then the damaged line stays alone, and every event after it is a whole line.
    assert lines(out)[:2] == ['{"n": 0}', '{"id": "0193", "n"']
    assert [json.loads(line)["id"] for line in lines(out)[2:]] == ids


def test_a_named_pipe_gets_each_event_once(db: Path, tmp_path: Path) -> None:
    # Given a named pipe with a reader (a pipe has no fsync and cannot be cut back)
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(fifo.read_text().splitlines()))
    reader.start()
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(5)])
    # When a drain delivers to it
    drained = spooler_cmd(*drain_args(db, f"file://{fifo}", "--until-empty"))
    # Then every event arrives once, and the drain empties the queue
    reader.join(timeout=30)
    assert drained.returncode == 0, drained.stderr
    assert [json.loads(line)["id"] for line in received] == ids
