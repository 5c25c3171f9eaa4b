"""Run every benchmark and print one markdown table (also written to results.md).

python benchmarks/run_all.py        # what `make bench` runs
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common import HEADER, RULE, environment

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


def main() -> int:
    lines = [f"# {environment()}", "", HEADER, RULE]
    print("\n".join(lines), flush=True)
    failed = []
    for script in SCRIPTS:
        done = subprocess.run(
            [sys.executable, str(HERE / script)],
            env={**os.environ, "SPOOLER_BENCH_ROWS_ONLY": "1"},
            capture_output=True,
            text=True,
        )
        rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
        if done.returncode != 0:
            failed.append(script)
            rows.append(f"| {script} | failed: {done.stderr.strip().splitlines()[-1]} | | | | |")
        print("\n".join(rows), flush=True)
        lines += rows
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
