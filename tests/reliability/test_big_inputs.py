"""Scenarios 16 and 17: inputs far larger than the limits: a 200 MiB line on the stdin
of `spooler enqueue`, and `spooler dlq inspect` over a large dead-letter table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import SPOOLER, rows, run_measuring_peak_rss

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
        "16",
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
    _, written = writer.communicate(timeout=60)
    # Then it refuses the line, as soon as it passes 4x the event limit, and before the
    # writer could finish it: its memory is bounded by that limit, not by the line
    limit = 4 * DEFAULT_MAX_EVENT_BYTES
    assert enqueue.returncode == 1
    assert f"line 1: longer than {limit} bytes; nothing was enqueued" in enqueue.stderr
    assert int(written) < LINE_MIB
    assert peak_mib < limit / 2**20 + 100, f"peak RSS {peak_mib:.0f} MiB"
    row.injection += f"; refused after {written} MiB, peak RSS {peak_mib:.0f} MiB"
    # ...and the spool is as it was.
    assert rows(db, "SELECT event_id FROM queue") == [(kept,)]
    row.tally([kept], [kept])  # nothing delivered here: the event is still queued
