"""Target 10: the dashboard's pages load in under 200 ms with 1M queued and 200k dead
events, and a week of history for three destinations (``spooler web``, SQLite file).

Each page is asked for by a client that keeps its connection, as a browser does, after
one request that warms the page up; the rows give the 95th percentile of ROUNDS loads
(the counts of the overview and the dead-letter summary are read in the background,
see spooler/web/snapshots.py; their cost is given for context). The confirmation of a
replay of all 200k dead letters counts them with the replay's own dry run.

    python benchmarks/web.py      # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import EVENT, Row, at_most, context, free_port, report, sized, wait_for_port, workdir

from spooler import Spool
from spooler.history import HistoryPoint, minute_of

QUEUED = sized(1_000_000, smoke=2_000)
DEAD = sized(200_000, smoke=200)
ROUNDS = sized(40, smoke=2)  # two at least: a percentile needs them
LIMIT_MS = 200.0
CHUNK = sized(10_000, smoke=100)


def build(path: Path) -> None:
    """The spool: 1M queued for two destinations, 200k dead for a third, a week of history."""
    with Spool(path, durability="normal") as spool:
        for n in range(QUEUED // CHUNK):
            spool.enqueue_many([EVENT] * CHUNK, destination=("amplitude", "segment")[n % 2])
        for _ in range(DEAD // CHUNK):
            spool.enqueue_many([EVENT] * CHUNK, destination="webhook")
        spool.expire(destination="webhook")
        now = time.time()
        last = minute_of(now)
        points = [
            HistoryPoint(minute, name, 900, 10, 1, 12, 1.2, 0.3, 5000, 30.0)
            for minute in range(last - 7 * 86400, last + 60, 60)
            for name in ("amplitude", "segment", "webhook")
        ]
        spool.store.record_history(points, now=now, keep=8 * 86400)


def p95_ms(client: httpx.Client, path: str, *, data: dict[str, str] | None = None) -> float:
    """The 95th percentile of ROUNDS loads of ``path``, in milliseconds."""
    send = (lambda: client.post(path, data=data)) if data else (lambda: client.get(path))
    send().raise_for_status()  # warm
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        send().raise_for_status()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.quantiles(times, n=20)[-1]


def measure(tmp: Path) -> list[Row]:
    db = tmp / "web.db"
    build(db)
    with Spool(db, create=False) as spool:
        began = time.perf_counter()
        spool.status()
        count_ms = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        spool.dead_letters.summary()
        summary_ms = (time.perf_counter() - began) * 1000
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "spooler_cli", "web", "--db", str(db), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, web, "spooler web")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            first = client.get("/dead?destination=webhook").text
            keys = [int(k) for k in re.findall(r'data-key="(\d+)"', first)]
            [event_id] = re.findall(r'href="/dead/event/([\w-]+)"', first)[:1]
            [csrf] = re.findall(r'name="csrf" value="([^"]+)"', first)[:1]
            pages = {
                "overview, last hour": "/",
                "overview, last week": "/?range=week",
                "overview's table (refresh)": "/?part=table",
                "overview's charts, week (refresh)": "/?part=charts&range=week",
                "dead letters": "/dead",
                "dead letters of one destination and reason": (
                    "/dead?destination=webhook&reason=manual"
                ),
                "dead letters, a page halfway down": f"/dead?before={keys[0] - DEAD // 2}",
                "dead letters of a destination with none": "/dead?destination=amplitude",
                "one dead event": f"/dead/event/{event_id}",
            }
            rows = [
                at_most(f"10. web: {name}", p95_ms(client, path), LIMIT_MS, "limit", 1.0, "ms p95")
                for name, path in pages.items()
            ]
            confirm = p95_ms(
                client, "/actions/replay", data={"csrf": csrf, "destination": "webhook"}
            )
            rows.append(
                at_most(
                    "10. web: confirm a replay of all 200k (dry-run count)",
                    confirm,
                    LIMIT_MS,
                    "limit",
                    1.0,
                    "ms p95",
                )
            )
    finally:
        web.terminate()
        web.wait(timeout=60)
    rows.append(
        context(
            "10. web: counts of 1M queued (read in the background)",
            count_ms,
            summary_ms,
            "dead-letter summary of 200k",
            "ms",
        )
    )
    return rows


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
