"""Run the reliability scenarios and print the table of docs/reliability.md.

    python tests/reliability/report.py        # or: make reliability
    python tests/reliability/report.py -k file_modes   # some scenarios: pytest's -k

Each scenario test fills in one row (events at risk, lost, duplicated, time to
recover) through the ``scenario`` fixture; this script collects the rows of one run.
The power-loss scenarios (tests/reliability/test_power_loss*.py: a spool file, and a
PostgreSQL server's data directory, on LazyFS) get a table of their own: how many power
cuts, events acknowledged, lost and delivered twice.
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


def collect(pytest_args: list[str]) -> list[dict]:
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
                *pytest_args,
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
    rows = sorted(collect(sys.argv[1:]), key=order)
    power_cuts = [r for r in rows if r.get("rounds") is not None]
    faults = [r for r in rows if r.get("rounds") is None]
    by_design = sum(r["lost"] for r in rows if r.get("expected_loss"))
    print(
        f"Run of {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}: {len(rows)} scenarios, "
        f"{sum(r['lost'] for r in rows if not r.get('expected_loss'))} events lost"
        + (
            f' (and {by_design} at durability="normal" or synchronous_commit=off, as documented)'
            if by_design
            else ""
        )
        + ".\n"
    )
    print(
        "| # | fault | how it is injected | events at risk | lost | duplicated | time to recover |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for r in faults:
        recover = "-" if r["recover_s"] is None else f"{r['recover_s']:.1f} s"
        print(
            f"| {r['number']} | {r['fault']} | {r['injection']} | {r['at_risk']} | "
            f"{r['lost']} | {r['duplicated']} | {recover} |"
        )
    print("\nPower loss, on LazyFS:\n")
    if not power_cuts:
        print("(skipped in this run: LazyFS or FUSE is not available; see pytest -ra)")
        return
    print("| # | power cut during | how | rounds | acknowledged | lost | duplicates |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in power_cuts:
        print(
            f"| {r['number']} | {r['fault']} | {r['injection']} | {r['rounds']} | "
            f"{r['at_risk']} | {r['lost']} | {r['duplicated']} |"
        )


if __name__ == "__main__":
    main()
