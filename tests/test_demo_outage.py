"""``spooler demo --outage``: a receiver's outage staged in real time on a spool that is
kept, and ``spooler web`` showing it. Run here for seconds (``--outage 3s``); the history
is a row per minute, so the run's story is read from the spool: what the drain recorded,
the dead letters, each destination's last error and success."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from helpers.cli import SPOOLER, spooler_cmd
from helpers.processes import free_port, wait_for_line, wait_until
from helpers.spools import rows

from spooler import Spool

# (destination, enqueued, delivered, dead) rows of the demo's summary
SUMMARY_ROW = re.compile(r"^ +(amplitude|segment) +(\d+) +(\d+) +(\d+) ", re.M)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A short outage staged on a new spool: the spool, and what the demo printed."""
    db = tmp_path_factory.mktemp("outage") / "demo.db"
    result = spooler_cmd("demo", "--outage", "3s", "--before", "1s", "--db", str(db), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return db, result.stdout


def test_the_outage_demo_fails_a_receiver_then_drains_its_backlog(demo: tuple[Path, str]) -> None:
    db, out = demo
    # It says first how to watch it
    assert out.splitlines()[0].endswith(f"spooler web --db {db}")
    summary = {name: tuple(map(int, counts)) for name, *counts in SUMMARY_ROW.findall(out)}
    assert set(summary) == {"amplitude", "segment"}, out
    # amplitude's receiver answered 503, then 200 once it was back: the drain delivered after
    # its last failure
    assert re.search(r"^ +amplitude .* \d+ x 503$", out, re.M), out
    with Spool(db, create=False) as spool:
        status = spool.status().destinations
        dead = {d.event_id: d for d in spool.dead_letters.inspect()}
    amplitude = status["amplitude"]
    assert amplitude.last_error is not None and amplitude.last_error.startswith("HTTP 503")
    assert amplitude.last_error_at is not None and amplitude.last_success_at is not None
    assert amplitude.last_success_at > amplitude.last_error_at
    # segment's receiver refused its bad orders: dead letters, with the receiver's reason
    assert dead and {(d.destination, d.reason, d.status) for d in dead.values()} == {
        ("segment", "rejected", 400)
    }
    assert all('"revenue":"n/a"' in d.body for d in dead.values())
    # Every event enqueued was delivered or dead-lettered: the queue is empty, and the
    # history the drain wrote (a row per destination and minute) counts them all
    assert status["amplitude"].queued == status["segment"].queued == 0
    history = {
        name: (delivered, retried, dead_count)
        for name, delivered, retried, dead_count in rows(
            db,
            "SELECT destination, sum(delivered), sum(retried), sum(dead) FROM history"
            " GROUP BY destination",
        )
    }
    enqueued = {name: counts[0] for name, counts in summary.items()}
    assert history["amplitude"][0] == enqueued["amplitude"]
    assert history["amplitude"][1] > 0  # its events retried through the outage
    assert history["segment"] == (enqueued["segment"] - len(dead), 0, len(dead))
    # and the demo, counting what its receivers accepted, says the same
    assert summary["amplitude"] == (enqueued["amplitude"], enqueued["amplitude"], 0)
    assert summary["segment"] == (enqueued["segment"], history["segment"][0], len(dead))
    assert "Nothing was lost" in out


def test_spooler_web_charts_the_outage_demo(demo: tuple[Path, str]) -> None:
    db, _ = demo
    minutes = rows(db, "SELECT DISTINCT minute FROM history ORDER BY minute")
    retried, dead = rows(db, "SELECT sum(retried), sum(dead) FROM history")[0]
    # Given spooler web on the demo's spool, as the demo says to start it
    port = free_port()
    web = subprocess.Popen(
        [*SPOOLER, "web", "--db", str(db), "--port", str(port)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert web.stderr is not None
        assert wait_for_line(web.stderr, f"dashboard on http://127.0.0.1:{port}/")
        # When the overview of the last 15 minutes is asked for
        page = httpx.get(f"http://127.0.0.1:{port}/?range=15m", timeout=30).text
    finally:
        web.send_signal(signal.SIGINT)
        _, stderr = web.communicate(timeout=30)
    assert web.returncode == 0, stderr
    # Then its charts draw the run's history: both destinations, up to its last minute, with
    # the retries of the outage and the dead letters
    last = time.strftime("%H:%M UTC", time.gmtime(minutes[-1][0]))
    for name in ("amplitude", "segment"):
        assert f'<g class="series" data-destination="{name}">' in page
        assert re.search(rf"<title>{name} {last}: \d+ events</title>", page), name
    assert f'data-metric="retried" data-total="{retried}"' in page
    assert f'data-metric="dead" data-total="{dead}"' in page
    assert retried > 0 and dead > 0


def test_ctrl_c_stops_the_outage_demo_and_keeps_its_spool(tmp_path: Path) -> None:
    # Given the outage demo, its receiver down for a minute
    db = tmp_path / "demo.db"
    demo = subprocess.Popen(
        [*SPOOLER, "demo", "--outage", "1m", "--before", "0s", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    assert wait_for_line(demo.stdout, "answers 503")
    # (and a 503 already answered: a drain stopped before its first request has no
    # history to keep)
    assert wait_until(
        lambda: rows(db, "SELECT count(*) FROM destination_state WHERE last_status = 503")[0][0],
        timeout=30,
    )
    # When Ctrl-C comes during the outage
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=60)
    # Then it stops, sums up what is still queued, and leaves the spool for spooler web
    assert demo.returncode == 0, err
    still = re.search(r"Stopped early: (\d+) events? still queued", out)
    assert still, out
    assert "Nothing was lost" not in out
    with Spool(db, create=False) as spool:
        assert spool.status().total.queued == int(still[1])
    assert rows(db, "SELECT count(*) FROM history")[0][0] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--after", "3s"), "--before and --after go with --outage"),
        (("--outage", "0s"), "Invalid value for '--outage': an outage lasts more than 0s"),
        (("--outage", "soon"), "Invalid value for '--outage': expected a duration like 90s"),
    ],
)
def test_the_outage_demos_options_are_checked(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = spooler_cmd("demo", "--db", str(tmp_path / "demo.db"), *args)
    assert result.returncode == 2 and result.stderr.startswith(f"spooler: error: {message}")
    assert not (tmp_path / "demo.db").exists()


def test_the_outage_demo_never_runs_on_an_existing_spool(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"real": True}], destination="amplitude")
    result = spooler_cmd("demo", "--outage", "3s", "--db", str(db))
    assert result.returncode == 2
    assert "the demo needs a new file" in result.stderr and not result.stdout
    assert [event_id for (event_id,) in rows(db, "SELECT event_id FROM queue")] == ids
