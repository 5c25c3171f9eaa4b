"""Target 4: drain a 50k backlog to a loopback receiver at default settings, against
Segment's analytics-python sending the same 50k events to the same receiver, and
against a bare httpx loop posting pre-built batches of the same size (the limit).

    python benchmarks/drain.py      # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import segment.analytics as segment_analytics
from common import EVENT, Row, at_least, interleaved, report, workdir
from loopback import Loopback

import spooler
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.events import encode_event
from spooler.store import Store

BACKLOG = 50_000
ROUNDS = 3


def spooler_drain(path: Path, url: str) -> float:
    path.unlink(missing_ok=True)
    with spooler.Spool(path) as spool:
        spool.enqueue_many([EVENT] * BACKLOG)
    # As `spooler drain` opens it: its own connection, at synchronous=NORMAL.
    store = Store(path, durability="normal")
    config = build_drain_config({}, destination_flags={"url": url})
    began = time.perf_counter()
    report = Drain(store, config).run(Mode.UNTIL_EMPTY)
    elapsed = time.perf_counter() - began
    store.close()
    assert report.delivered == BACKLOG, report
    return BACKLOG / elapsed


def analytics_python(url: str) -> float:
    client = segment_analytics.Client("key", host=url, max_queue_size=BACKLOG + 1)
    began = time.perf_counter()
    for _ in range(BACKLOG):
        client.track(user_id="u_12345", event="page_view", properties=EVENT["properties"])
    client.flush()
    elapsed = time.perf_counter() - began
    client.shutdown()
    return BACKLOG / elapsed


def bare_httpx(url: str, batch_size: int) -> float:
    text = encode_event(EVENT)
    body = ("[" + ",".join([text] * batch_size) + "]").encode()
    with httpx.Client() as client:
        began = time.perf_counter()
        for _ in range(BACKLOG // batch_size):
            client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            ).raise_for_status()
        return BACKLOG / (time.perf_counter() - began)


def measure(tmp: Path) -> list[Row]:
    batch_size = (
        build_drain_config({}, destination_flags={"url": "http://x"})
        .destinations["default"]
        .batch_size
    )
    with Loopback() as url:
        rates = interleaved(
            {
                "spooler": lambda: spooler_drain(tmp / "drain.db", url),
                "analytics-python": lambda: analytics_python(url),
                "httpx": lambda: bare_httpx(url, batch_size),
            },
            ROUNDS,
        )
    target = "4. drain 50k to loopback, defaults"
    return [
        at_least(
            target,
            rates["spooler"],
            rates["analytics-python"],
            "analytics-python send",
            1.5,
            "ev/s",
        ),
        at_least(
            target,
            rates["spooler"],
            rates["httpx"],
            f"bare httpx loop, {batch_size}/batch",
            0.5,
            "ev/s",
        ),
    ]


if __name__ == "__main__":
    with workdir() as tmp:
        report(measure(tmp))
