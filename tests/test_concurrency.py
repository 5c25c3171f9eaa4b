"""Many producer processes and threads, and several drains, on one spool at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from conftest import rows, start_drain

from spooler import Spool
from spooler.receiver import Receiver

PRODUCER = """
import sys
from spooler import Spool
with Spool(sys.argv[1]) as spool:
    for n in range(int(sys.argv[2])):
        if n % 4 == 0:
            ids = spool.enqueue_many([{"p": sys.argv[3], "n": n, "k": k} for k in range(3)])
        else:
            ids = [spool.enqueue({"p": sys.argv[3], "n": n})]
        print("\\n".join(ids), flush=True)
"""


def test_producers_and_drains_at_once_lose_nothing_and_never_lock(
    db: Path, receiver: Receiver
) -> None:
    # Given a spool that exists, and three drains already running as daemons
    Spool(db).close()
    drains = [
        start_drain(
            db,
            receiver.url,
            "--batch-size",
            "25",
            "--poll-interval",
            "0.05",
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    # When eight producer processes enqueue at full speed meanwhile
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(db), "150", str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(8)
    ]
    returned: set[str] = set()
    for producer in producers:
        out, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
        returned.update(out.split())
    assert len(returned) == 8 * (150 + 2 * 38)  # every 4th call enqueues 3
    # Then the drains deliver every event, and nobody saw "database is locked"
    assert receiver.wait_for(lambda r: {e["id"] for e in r.delivered} >= returned, timeout=120)
    for drain in drains:
        drain.terminate()
        _, err = drain.communicate(timeout=30)
        assert drain.returncode == 0, err
        assert "locked" not in err and "ERROR" not in err
    assert rows(db, "SELECT count(*) FROM queue") == [(0,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_threads_share_one_spool(spool: Spool, db: Path) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []

    def produce() -> None:
        try:
            for n in range(100):
                ids.append(spool.enqueue({"n": n}))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 800
    assert rows(db, "SELECT count(*) FROM queue") == [(800,)]
