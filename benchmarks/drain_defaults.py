"""Issue 26, targets 1 and 2: the drain at its default settings against the raw SQLite
drain floor (read N rows by rowid, post them, delete them: no leases), and against the
best (batch size, concurrency) of a grid; and concurrency 4 against 1 when the receiver
answers after 20 ms. The receiver is Node's where node is installed (the table says
which), so that it is not what the drains wait for.

Beside them, the floor of spooler's own schema: its statements for a batch delivered
whole (read the claim's columns through the claim index, delete the batch, count it off
the totals) from raw sqlite3, with no lease and none of spooler's Python; at the default
batch size and at 2000, where the grid's best lies. It shows what the schema itself
costs against the raw floor, and so why the default batch stays where it is.

    python benchmarks/drain_defaults.py      # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import httpx
from common import EVENT, Row, at_least, context, interleaved, report, sized, workdir
from drain import raw_sqlite3
from loopback import fastest

import spooler
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.store.sqlite import SQLiteStore
from spooler.store.sqlite.schema import WAL_SIZE_LIMIT

# A second or two of draining: start-up does not dominate.
BACKLOG = sized(200_000, smoke=2_000)
FAR_BACKLOG = sized(50_000, smoke=1_000)
FAR_DELAY = 0.020
ROUNDS = sized(3, smoke=1)
BATCH_SIZES = (100, 500, 2000)
BIG_BATCH = 2000  # the grid's best batch size in every run so far
CONCURRENCIES = (1, 4, 16)


def filled(template: Path, count: int) -> Path:
    """A spool file holding ``count`` events, made once and copied for every drain."""
    if not template.exists():
        with spooler.Spool(template, durability="normal") as spool:
            for start in range(0, count, 50_000):
                spool.enqueue_many([EVENT] * min(50_000, count - start))
    return template


def drain(template: Path, url: str, count: int, **flags: int) -> float:
    """Events per second of ``Drain.run`` emptying a copy of ``template``, with the
    destination ``flags`` (none: the defaults), as `spooler drain` opens the file."""
    path = template.with_name("drain.db")
    for leftover in path.parent.glob("drain.db*"):
        leftover.unlink()
    shutil.copyfile(template, path)
    store = SQLiteStore(path, durability="normal")
    config = build_drain_config({}, destination_flags={"url": url, **flags})
    began = time.perf_counter()
    report = Drain(store, config).run(Mode.UNTIL_EMPTY)
    elapsed = time.perf_counter() - began
    store.close()
    assert report.delivered == count, report
    return count / elapsed


def schema_floor(template: Path, url: str, count: int, batch_size: int) -> float:
    """Events per second of spooler's statements for batches delivered whole, from raw
    sqlite3 on a copy of ``template``: read a batch's claim columns through the claim
    index, post it, then delete it and count it off the totals in one transaction. No
    lease is written or checked, and no Python of spooler's runs; the pragmas are the
    drain's (WAL, synchronous=NORMAL, its WAL size limit)."""
    path = template.with_name("floor.db")
    for leftover in path.parent.glob("floor.db*"):
        leftover.unlink()
    shutil.copyfile(template, path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    claim = (
        "SELECT id, event_id, body, attempts + 1, created_at, queued_at FROM queue"
        " WHERE destination = 'default' AND due_at <= ? ORDER BY due_at, id LIMIT ?"
    )
    with httpx.Client() as client:
        began = time.perf_counter()
        while batch := db.execute(claim, (time.time(), batch_size)).fetchall():
            body = "[" + ",".join([row[2] for row in batch]) + "]"
            client.post(
                url, content=body.encode(), headers={"Content-Type": "application/json"}
            ).raise_for_status()
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM queue WHERE id BETWEEN ? AND ?", (batch[0][0], batch[-1][0]))
            db.execute(
                "UPDATE totals SET events = events - ?, bytes = bytes - ?",
                (len(batch), len(body) - len(batch) - 1),
            )
            db.execute("COMMIT")
        elapsed = time.perf_counter() - began
    db.close()
    return count / elapsed


def measure(tmp: Path) -> list[Row]:
    defaults = build_drain_config({}, destination_flags={"url": "http://x"}).destinations
    batch, workers = defaults["default"].batch_size, defaults["default"].concurrency
    template = filled(tmp / "template.db", BACKLOG)
    grid = {(b, c): {"batch_size": b, "concurrency": c} for b in BATCH_SIZES for c in CONCURRENCIES}
    with fastest() as (url, receiver):
        contenders = {
            "default": lambda: drain(template, url, BACKLOG),
            "raw": lambda: raw_sqlite3(tmp / "raw.db", url, batch, count=BACKLOG),
            "raw big": lambda: raw_sqlite3(tmp / "raw.db", url, BIG_BATCH, count=BACKLOG),
            "schema": lambda: schema_floor(template, url, BACKLOG, batch),
            "schema big": lambda: schema_floor(template, url, BACKLOG, BIG_BATCH),
            **{
                f"{b}x{c}": lambda flags=flags: drain(template, url, BACKLOG, **flags)
                for (b, c), flags in grid.items()
            },
        }
        rates = interleaved(contenders, ROUNDS)
    far_template = filled(tmp / "far.db", FAR_BACKLOG)
    with fastest(FAR_DELAY) as (far_url, far_receiver):
        far = interleaved(
            {
                n: lambda n=n: drain(far_template, far_url, FAR_BACKLOG, concurrency=n)
                for n in (1, 4)
            },
            ROUNDS,
        )
    best = max((name for name in contenders if "x" in name), key=rates.__getitem__)
    rows = [
        at_least(
            f"26.1 drain {BACKLOG // 1000}k at defaults ({batch}x{workers}), {receiver}",
            rates["default"],
            rates["raw"],
            f"raw sqlite3 read, post, delete, {batch}/batch",
            0.5,
            "ev/s",
        ),
        at_least(
            f"26.2 defaults ({batch}x{workers}) against the grid's best, {receiver}",
            rates["default"],
            rates[best],
            f"best: {best} (batch x concurrency)",
            0.9,
            "ev/s",
        ),
        at_least(
            f"26.2 concurrency 4, receiver answering after {FAR_DELAY * 1000:.0f} ms"
            f" ({far_receiver})",
            far[4],
            far[1],
            "concurrency 1",
            3.0,
            "ev/s",
        ),
    ]
    rows += [
        context(
            f"26.1 spooler's schema from raw sqlite3, {size}/batch (claim index read, post,"
            " delete, totals; no lease, none of spooler's Python)",
            rates[f"schema{suffix}"],
            rates[f"raw{suffix}"],
            f"raw sqlite3 read, post, delete, {size}/batch",
            "ev/s",
        )
        for size, suffix in ((batch, ""), (BIG_BATCH, " big"))
    ]
    rows += [
        context(
            f"26.1 drain at defaults ({batch}x{workers}), {receiver}",
            rates["default"],
            rates["schema"],
            f"spooler's schema from raw sqlite3, {batch}/batch",
            "ev/s",
        ),
        context(
            f"26.1 the grid's {BIG_BATCH}x1, {receiver}",
            rates[f"{BIG_BATCH}x1"],
            rates["raw big"],
            f"raw sqlite3 read, post, delete, {BIG_BATCH}/batch",
            "ev/s",
        ),
    ]
    rows += [
        context(
            f"26.2 the grid: {name} (batch x concurrency)",
            rates[name],
            rates["default"],
            f"defaults ({batch}x{workers})",
            "ev/s",
        )
        for name in contenders
        if "x" in name
    ]
    return rows


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
