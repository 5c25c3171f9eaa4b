"""Run every benchmark and print one markdown table (also written to results.md).

python benchmarks/run_all.py                        # what `make bench` runs
python benchmarks/run_all.py drain.py disk.py       # some of them
SPOOLER_BENCH_SMOKE=1 python benchmarks/run_all.py  # all at tiny sizes (see common.py)

Only a full run at the real sizes writes results.md. A script fails when it exits with an
error or prints no row: its row says why, its error output follows on stderr, and the
exit status is 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common import HEADER, RULE, SMOKE, environment

HERE = Path(__file__).parent
SCRIPTS = [
    "enqueue_single.py",
    "enqueue_many.py",
    "enqueue_concurrent.py",
    "drain.py",
    "drain_defaults.py",
    "backlog.py",
    "import_time.py",
    "disk.py",
    "postgres.py",
    "serve.py",
    "serve_servers.py",
    "web.py",
]


def main(chosen: list[str]) -> int:
    unknown = sorted(set(chosen) - set(SCRIPTS))
    if unknown:
        print(
            f"no such benchmark: {', '.join(unknown)} (one of {', '.join(SCRIPTS)})",
            file=sys.stderr,
        )
        return 2
    lines = [f"# {environment()}", "", HEADER, RULE]
    print("\n".join(lines), flush=True)
    failed = []
    for script in chosen or SCRIPTS:
        done = subprocess.run(
            [sys.executable, str(HERE / script)],
            env={**os.environ, "SPOOLER_BENCH_ROWS_ONLY": "1"},
            capture_output=True,
            text=True,
        )
        rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
        if done.returncode != 0 or not rows:
            failed.append(script)
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            reason = f"exit status {done.returncode}: {why}" if done.returncode else "no row"
            rows.append(f"| {script} | failed: {reason} | | | | |")
            print(f"--- {script}'s error output:\n{done.stderr}", file=sys.stderr, flush=True)
        print("\n".join(rows), flush=True)
        lines += rows
    if not chosen and not SMOKE:
        (HERE / "results.md").write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
