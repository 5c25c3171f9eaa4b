"""Run the reliability scenarios and print the table of docs/reliability.md.

    python tests/reliability/report.py        # or: make reliability

Each scenario test fills in one row (events at risk, lost, duplicated, time to
recover) through the ``scenario`` fixture; this script collects the rows of one run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collect() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rows.jsonl"
        env = {**os.environ, "SPOOLER_RELIABILITY_REPORT": str(report)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "reliability",
                "-q",
                "-p",
                "no:cacheprovider",
                str(ROOT / "tests"),
            ],
            env=env,
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            sys.exit(f"the reliability suite failed (exit {result.returncode}); no table")
        return [json.loads(line) for line in report.read_text().splitlines()]


def order(row: dict) -> tuple[int, str]:
    number = re.match(r"\d+", row["number"])
    return (int(number[0]) if number else 99, row["number"])


def main() -> None:
    rows = sorted(collect(), key=order)
    print(
        f"Run of {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}: {len(rows)} scenarios, "
        f"{sum(r['lost'] for r in rows)} events lost.\n"
    )
    print(
        "| # | fault | how it is injected | events at risk | lost | duplicated | time to recover |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        recover = "-" if r["recover_s"] is None else f"{r['recover_s']:.1f} s"
        print(
            f"| {r['number']} | {r['fault']} | {r['injection']} | {r['at_risk']} | "
            f"{r['lost']} | {r['duplicated']} | {recover} |"
        )


if __name__ == "__main__":
    main()
