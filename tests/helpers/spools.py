"""Spools in the tests: a drain run in the test's process, a backlog, and reading what a
spool holds (its public status, or plain sqlite3 as an operator would)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import spooler.store.sqlite.base as sqlite_base
from spooler import Spool
from spooler.config import build_drain_config
from spooler.drain import Drain, DrainReport, Mode

FAST_RETRY = {"backoff_base": 0.01, "backoff_cap": 0.05}


def drain_once(
    spool: Spool,
    url: str,
    *,
    mode: Mode = Mode.UNTIL_EMPTY,
    max_time: float = 30,
    retry: dict[str, Any] | None = None,
    **destination: Any,
) -> DrainReport:
    """Drain ``spool`` to ``url`` with fast retries; extra keywords configure the destination."""
    config = build_drain_config(
        {},
        destination_flags={"url": url, **destination},
        retry_flags={**FAST_RETRY, **(retry or {})},
        drain_flags={"poll_interval": 0.05},
    )
    return Drain(spool.store, config).run(mode, max_time=max_time)


def enqueue_backlog(spool: Spool, *, pad: int) -> list[str]:
    """Enqueue a backlog of 20,000 events padded with ``pad`` characters each, in
    twenty transactions; return their ids."""
    return [
        event_id
        for chunk in range(20)
        for event_id in spool.enqueue_many(
            [{"c": chunk, "n": n, "pad": "x" * pad} for n in range(1000)]
        )
    ]


def queued_count(location: Path | str) -> int:
    """How many events the spool at ``location`` holds queued (its public status)."""
    with Spool(location, create=False) as spool:
        return spool.status().total.queued


def leased_count(location: Path | str) -> int:
    """How many events drains hold under live leases in the spool at ``location`` (its
    public status)."""
    with Spool(location, create=False) as spool:
        return spool.status().total.leased


def dead_count(location: Path | str) -> int:
    """How many events the spool at ``location`` holds dead (its public status)."""
    with Spool(location, create=False) as spool:
        return spool.status().total.dead


def dead_rows(location: Path | str, *fields: str) -> list[tuple[Any, ...]]:
    """The named fields of each dead event of the spool at ``location``, oldest first, as
    ``spooler dlq inspect`` reads them (``event_id``, ``reason``, ``status``, ...)."""
    with Spool(location, create=False) as spool:
        return [tuple(getattr(d, f) for f in fields) for d in spool.dead_letters.inspect()]


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a read-only query on a spool file with plain sqlite3 (what an operator would
    do): for what only a SQLite file has, or no public interface shows."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def spy_on_flushes(monkeypatch: pytest.MonkeyPatch, db: Path) -> list[tuple[int, int]]:
    """Record each flush to disk as (inode flushed, events committed at that moment)."""
    flushes: list[tuple[int, int]] = []
    flush = sqlite_base._flush_to_disk

    def spy(fd: int) -> None:
        queued = rows(db, "SELECT count(*) FROM queue")[0][0] if db.exists() else 0
        flushes.append((os.fstat(fd).st_ino, queued))
        flush(fd)

    monkeypatch.setattr(sqlite_base, "_flush_to_disk", spy)
    return flushes
