"""The benchmarks of ``make bench`` (benchmarks/), each run whole at tiny sizes
(``SPOOLER_BENCH_SMOKE=1``) through run_all.py, as ``make bench`` runs them: a script an
API change broke fails here, not at the next full ``make bench``. Only that every script
runs and prints its rows is checked; the figures of a smoke run mean nothing."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pg_server import missing_postgres

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RUN_ALL = BENCHMARKS / "run_all.py"
# What the scripts import or run; not benchmarks of their own.
HELPERS = {"common.py", "loopback.py", "loadgen.py", "run_all.py"}
HEADER_LINES = 4  # the environment, a blank line, the table's header and its rule
CELLS = 6  # target, spooler, baseline, ratio, goal, met
RATIO = re.compile(r"\d[\d,]*\.\d\dx")


def listed_scripts() -> list[str]:
    """run_all.py's SCRIPTS, read from its source (importing it would put benchmarks/ and
    its modules on this process's path)."""
    for node in ast.parse(RUN_ALL.read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "SCRIPTS":
            return list(ast.literal_eval(node.value))
    raise AssertionError("run_all.py has no SCRIPTS list")


SCRIPTS = listed_scripts()


def test_run_all_runs_every_benchmark() -> None:
    # A script left out of run_all.py is missing from make bench's table and from the runs below.
    scripts = {path.name for path in BENCHMARKS.glob("*.py")} - HELPERS
    assert sorted(scripts) == sorted(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_at_smoke_size(script: str) -> None:
    if script == "postgres.py" and (missing := missing_postgres()):
        pytest.skip(f"postgres.py starts a PostgreSQL server: {missing}")
    results = BENCHMARKS / "results.md"
    before = results.stat().st_mtime_ns if results.exists() else None

    done = subprocess.run(
        [sys.executable, str(RUN_ALL), script],
        env={**os.environ, "SPOOLER_BENCH_SMOKE": "1"},
        capture_output=True,
        text=True,
        timeout=600,  # a benchmark that hangs fails; none takes more than seconds here
    )

    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    rows = done.stdout.splitlines()[HEADER_LINES:]
    assert rows, f"{script} printed no row:\n{done.stdout}"
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == CELLS, row
        assert cells[0] and cells[1], row
        assert RATIO.fullmatch(cells[3]), row
    # A smoke run never overwrites make bench's table.
    assert (results.stat().st_mtime_ns if results.exists() else None) == before
