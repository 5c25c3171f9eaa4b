"""Scenarios 21 and 22: inputs far larger than the limits: a 200 MiB line on the stdin
of `spooler enqueue`, and `spooler dlq inspect` over a large dead-letter table."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers.cli import SPOOLER
from helpers.processes import run_measuring_peak_rss
from helpers.spools import rows

from spooler import Spool
from spooler.events import DEFAULT_MAX_EVENT_BYTES

LINE_MIB = 200
# Writes one JSON line of LINE_MIB MiB to stdout, a MiB at a time, as long as the reader
# takes it; then reports on stderr how many MiB went out.
ENDLESS_LINE = f"""
import sys
out, written = sys.stdout.buffer, 0
try:
    out.write(b'{{"pad": "')
    for _ in range({LINE_MIB}):
        out.write(b"x" * (1 << 20))
        written += 1
    out.write(b'"}}\\n')
    out.flush()
except BrokenPipeError:
    pass
print(written, file=sys.stderr)
"""


def test_an_endless_line_on_stdin_is_refused_with_bounded_memory(db: Path, scenario) -> None:
    row = scenario(
        "21",
        f"a {LINE_MIB} MiB line on the stdin of `spooler enqueue`",
        "a writer process streams one JSON line a MiB at a time into the pipe",
    )
    # Given a spool holding an event, and a producer piping in a line far over the limit
    with Spool(db) as spool:
        kept = spool.enqueue({"before": True})
    writer = subprocess.Popen(
        [sys.executable, "-c", ENDLESS_LINE], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # When `spooler enqueue` reads it
    assert writer.stdout is not None
    with writer.stdout:
        enqueue, peak_mib = run_measuring_peak_rss(
            [*SPOOLER, "enqueue", "--db", str(db)], stdin=writer.stdout, stdout=subprocess.PIPE
        )
    written = int(writer.communicate(timeout=60)[1])
    # Then it refuses the line, as soon as it passes 4x the event limit, and before the
    # writer could finish it: its memory is bounded by that limit, not by the line
    limit = 4 * DEFAULT_MAX_EVENT_BYTES
    assert enqueue.returncode == 1
    assert f"line 1: longer than {limit} bytes; nothing was enqueued" in enqueue.stderr
    assert written < LINE_MIB
    assert peak_mib < limit / 2**20 + 100, f"peak RSS {peak_mib:.0f} MiB"
    row.injection += f"; refused after {written} MiB, peak RSS {peak_mib:.0f} MiB"
    # ...and the spool is as it was.
    assert rows(db, "SELECT event_id FROM queue") == [(kept,)]
    row.tally([kept], [kept])  # nothing delivered here: the event is still queued


def fill_dead_letters(db: Path, count: int) -> None:
    """A spool whose dead-letter table holds ``count`` events, each with an error and an
    attempt log as a drain leaves them (written with SQL: a drain would take minutes)."""
    Spool(db).close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO dead (event_id, destination, body, created_at, attempts, reason,"
            " status, error, dead_at, attempt_log)"
            " SELECT printf('01900000-0000-7000-8000-%012d', i), 'default',"
            " json_object('event', 'signup', 'n', i, 'pad', hex(randomblob(100))), 1.7e9, 20,"
            " 'max_attempts', 503, 'HTTP 503: ' || hex(randomblob(60)), 1.7e9 + i,"
            " json_array(json_array(1.7e9, 503, 'HTTP 503: upstream unavailable'))"
            " FROM n",
            (count,),
        )
    conn.close()


def inspect_peak_mib(db: Path, *args: str) -> float:
    """The peak RSS of `spooler dlq inspect` over the whole table, its output discarded."""
    proc, peak = run_measuring_peak_rss(
        [*SPOOLER, "dlq", "inspect", "--db", str(db), *args], stdout=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr
    return peak


def test_dlq_inspect_memory_stays_flat_in_the_size_of_the_table(tmp_path: Path, scenario) -> None:
    row = scenario(
        "22",
        "`spooler dlq inspect` (table and --json) over 200,000 dead events",
        "dead-letter tables of 20,000 and 200,000 events, written with SQL",
    )
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    fill_dead_letters(small, 20_000)
    fill_dead_letters(large, 200_000)
    growth = {}
    for form in ((), ("--json",)):
        # When the operator lists ten times as many dead events
        peaks = [inspect_peak_mib(db, *form) for db in (small, large)]
        # Then memory stays where it was (each listing reads a page at a time); the old
        # listing held them all: ~1.6 KB (table) and ~0.9 KB (--json) per dead event.
        growth[form] = peaks[1] - peaks[0]
        assert growth[form] < 10, f"{' '.join(form) or 'table'}: {peaks} MiB"
        row.injection += f"; {'--json' if form else 'table'} peak RSS {peaks[1]:.0f} MiB"
    # ...and every dead event is listed, once.
    listed = subprocess.run(
        [*SPOOLER, "dlq", "inspect", "--db", str(large), "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ids = [json.loads(line)["id"] for line in listed]
    assert len(ids) == len(set(ids)) == 200_000
    row.recover_s = None
