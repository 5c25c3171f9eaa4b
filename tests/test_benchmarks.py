"""The benchmarks of ``make bench`` (benchmarks/), each run whole at tiny sizes
(``SPOOLER_BENCH_SMOKE=1``) through run_all.py, as ``make bench`` runs them: a script an
API change broke fails here, not at the next full ``make bench``. Only that every script
runs and prints its rows is checked; the figures of a smoke run mean nothing."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


# -- where benchmarks/postgres.py puts its cluster --------------------------------------


@pytest.fixture
def shut_checkout() -> Iterator[tuple[Path, Path]]:
    """A folder of mode 0700, as ``mktemp -d`` makes (or /root), and a checkout in it:
    the user postgres, which the server runs as under root, cannot pass the folder."""
    if os.geteuid() != 0:
        pytest.skip("the server runs as the user postgres only when the tests run as root")
    if missing := missing_postgres():
        pytest.skip(missing)
    shut = Path(tempfile.mkdtemp())
    checkout = shut / "checkout"
    checkout.mkdir()
    try:
        yield shut, checkout
    finally:
        shutil.rmtree(shut)


def test_a_cluster_asked_for_where_postgres_cannot_reach_goes_elsewhere_on_that_disk(
    shut_checkout: tuple[Path, Path],
) -> None:
    from pg_server import PostgresServer

    # Given a checkout under a folder of mode 0700
    shut, checkout = shut_checkout
    # When make bench's benchmark asks for a cluster beside it
    server = PostgresServer(fsync=True, parent=str(checkout))
    try:
        # Then the cluster runs, on the same disk, where its user can reach it
        assert server.sql("SELECT 1") == [(1,)]
        assert os.stat(server.folder).st_dev == os.stat(checkout).st_dev
        assert not Path(server.folder).is_relative_to(shut)
    finally:
        server.close()


def test_a_cluster_with_no_folder_it_can_reach_on_that_disk_fails_at_once_saying_why(
    shut_checkout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pg_server

    # Given a checkout under a folder of mode 0700, and no open folder on its disk (the
    # only one offered is a tmpfs)
    shut, checkout = shut_checkout
    monkeypatch.setattr(pg_server, "_OPEN_FOLDERS", ("/dev/shm",))
    assert os.stat("/dev/shm").st_dev != os.stat(checkout).st_dev
    # When a cluster is asked for beside it, then it fails before initdb, saying why
    with pytest.raises(RuntimeError) as raised:
        pg_server.PostgresServer(fsync=True, parent=str(checkout))
    assert str(raised.value) == (
        "the PostgreSQL server runs as the user postgres (initdb refuses root), which"
        f" cannot pass {shut} (mode 700) to reach {checkout}, and none of /dev/shm is on"
        " the same disk and open to it: move the checkout under a folder the user"
        f" postgres can pass, or let it pass: chmod o+x {shut}"
    )
    assert list(checkout.iterdir()) == []
