"""Shared fixtures and hooks: a spool path, a live receiver on 127.0.0.1, the reliability
campaign's report rows, and PostgreSQL servers. The helpers the tests import are in
tests/helpers/."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers.reliability import REPORT_ENV, Scenario
from pg_server import PostgresServer, missing_postgres

from spooler import Spool
from spooler.testing import Receiver


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A path for a fresh spool file."""
    return tmp_path / "spool.db"


@pytest.fixture
def spool(db: Path) -> Iterator[Spool]:
    """An open spool on a fresh file."""
    with Spool(db) as opened:
        yield opened


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A recording HTTP receiver on 127.0.0.1."""
    with Receiver() as live:
        yield live


# -- the reliability campaign -------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/reliability/ carries the ``reliability`` marker."""
    for item in items:
        if "reliability" in item.path.parts:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Callable[[str, str, str], Scenario]]:
    """Start a report row; it is appended to $SPOOLER_RELIABILITY_REPORT when that is set."""
    started: list[Scenario] = []

    def start(number: str, fault: str, injection: str) -> Scenario:
        row = Scenario(number, fault, injection, test=request.node.name)
        started.append(row)
        return row

    yield start
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as report:
            for row in started:
                report.write(json.dumps(asdict(row)) + "\n")


# -- PostgreSQL ------------------------------------------------------------------------


def _postgres_server() -> Iterator[PostgresServer]:
    why = missing_postgres()
    if why:
        pytest.skip(why)
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (skips, saying why, where there is none)."""
    yield from _postgres_server()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, to stop, crash and start."""
    yield from _postgres_server()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a fresh spool on the session's PostgreSQL: a schema of its own."""
    return postgres.url()


@pytest.fixture(params=["sqlite", "postgres"])
def spool_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh spool goes on each backend: a file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "spool.db")
    return str(request.getfixturevalue("pg_url"))
