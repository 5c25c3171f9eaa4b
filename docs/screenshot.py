"""Make the README's screenshot of ``spooler web`` from a real run: ``make screenshot``.

In a temporary folder, two local receivers (``spooler.testing.Receiver``) stand in for
Amplitude and Segment, producers enqueue events for both at a steady rate in real time,
and the real ``spooler drain`` and ``spooler web`` run on the spool as subprocesses.
The producers start on a minute's boundary (so that no minute in the charts is a
partial one); a minute later amplitude's receiver answers 503, slowly, as a gateway
whose upstream is gone, for ``--outage`` minutes, then 200 again. All along, segment's
receiver answers 400 to a batch holding an order whose revenue is not a number, which
the drain bisects and dead-letters. A minute after the recovery, once the drain has
written that minute's history, Debian's headless Chromium (driven by its chromedriver,
as in tests/test_web_browser.py) saves the overview's last 15 minutes to
docs/dashboard-outage.png.

Nothing in the picture is made up: the charts are the history the drain recorded, a row
per destination and minute. About 5 minutes with the defaults; not part of ``make test``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from spooler import Spool
from spooler.testing import Receiver

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # Chromium as the browser tests start it
import chromium  # noqa: E402

SPOOLER = [sys.executable, "-m", "spooler_cli"]
FAILING = "amplitude"
RATES = {"amplitude": 5.0, "segment": 2.0}  # events a second
PATHS = {"amplitude": "/2/httpapi", "segment": "/v1/batch"}
ANSWER_DELAY = 2.0  # seconds the failing receiver takes to answer 503
BAD_ORDER_EVERY = 25  # one segment event in so many has a revenue segment's receiver refuses
# The retry schedule's longest wait: the default (300s) could keep the destination paused
# for minutes after its receiver is back, and the run is meant to show the recovery.
BACKOFF_CAP = "20s"
WIDTH = 1200  # the browser window's width: GitHub shows a README's images ~880px wide


def say(text: str) -> None:
    """Print a step of the run, with the time (UTC, as the charts label it)."""
    # (time.gmtime() alone reads a coarser clock, a few milliseconds behind time.time())
    print(time.strftime("%H:%M:%S", time.gmtime(time.time())), text, flush=True)


def event(destination: str, n: int) -> dict[str, Any]:
    """The ``n``-th event a producer enqueues for ``destination``."""
    if destination == "amplitude":
        return {
            "event_type": "Song Played",
            "user_id": f"user_{n % 97}",
            "event_properties": {"n": n},
        }
    revenue: float | str = "n/a" if n % BAD_ORDER_EVERY == BAD_ORDER_EVERY - 1 else 9.99
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user_{n % 89}",
        "properties": {"n": n, "revenue": revenue},
    }


def refuses(event: dict[str, Any]) -> bool:
    """Whether segment's receiver refuses the event (an order without a numeric revenue)."""
    return not isinstance(event.get("properties", {}).get("revenue"), (int, float))


def unavailable(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """The failing receiver's answer: 503, slowly."""
    time.sleep(ANSWER_DELAY)
    return 503, {}, b'{"error":"upstream unavailable"}'


@contextmanager
def producer(db: Path, destination: str) -> Iterator[None]:
    """A thread enqueueing ``RATES[destination]`` events a second, one at a time."""
    stop = threading.Event()

    def produce() -> None:
        with Spool(db) as spool:
            start, n = time.monotonic(), 0
            while not stop.wait(max(start + n / RATES[destination] - time.monotonic(), 0.0)):
                spool.enqueue(event(destination, n), destination=destination)
                n += 1

    thread = threading.Thread(target=produce, name=f"produce-{destination}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def process(command: list[Any], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in ``log``'s folder, its output in ``log``, stopped (SIGTERM) at the
    end."""
    with log.open("wb") as out:
        child = subprocess.Popen(command, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            child.terminate()
            child.wait(timeout=60)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot: gave up waiting for {what}")
        time.sleep(0.5)
    return result


def sleep_until(when: float) -> None:
    """Wait until the Unix time ``when`` (a sleep may end a little early)."""
    while (left := when - time.time()) > 0:
        time.sleep(left)


def next_minute(after: float) -> int:
    """The first minute boundary at or after ``after``."""
    return -int(-after // 60) * 60


def clock(t: float) -> str:
    """``t`` as the charts' dots label it."""
    return time.strftime("%H:%M UTC", time.gmtime(t))


def shown(driver: Any) -> tuple[str, str]:
    """The failing destination's queued count in the overview's table, and the last dot of
    its backlog chart ("amplitude 12:04 UTC: 0 events"), read from a fresh page."""
    driver.refresh()
    # One script: the page's own refresh may swap a part out between two of Selenium's calls.
    queued, dot = driver.execute_script(
        f"const row = document.querySelector('tr[data-destination=\"{FAILING}\"]');"
        'const dot = document.querySelector(\'svg[data-metric="backlog"]'
        f' g.series[data-destination="{FAILING}"] circle title\');'
        "return [row ? row.cells[1].textContent : '', dot ? dot.textContent : ''];"
    )
    return queued, dot


def screenshot(url: str, minute: int, profile: Path, out: Path) -> tuple[str, str]:
    """Save the overview once its charts hold ``minute``; returns what ``shown`` read."""
    found = chromium.find()
    if found is None:
        raise SystemExit(f"screenshot: {chromium.MISSING}")
    driver = chromium.start(*found, profile=profile, width=WIDTH)
    try:
        driver.get(f"{url}?range=15m")

        def charted() -> tuple[str, str] | None:
            seen = shown(driver)
            return seen if clock(minute) in seen[1] else None

        queued, dot = wait_for(charted, 120, f"the chart of {clock(minute)}")
        height = driver.execute_script("return document.body.scrollHeight")
        # (the window's frame takes its share of the height, even headless)
        driver.set_window_size(WIDTH, height + 140)
        if not driver.save_screenshot(str(out)):
            raise SystemExit("screenshot: chromium saved no screenshot")
        return queued, dot
    finally:
        driver.quit()


def agree(queued: str, dot: str) -> bool:
    """Whether the overview's queued count and the backlog chart's last point (counted at
    that minute's end, seconds earlier) tell the same story: within ten seconds of
    ``FAILING``'s traffic of each other."""
    backlog = re.search(r": ([\d.]+) events$", dot)
    if backlog is None or not queued.strip().isdigit():
        return False
    return abs(int(queued) - float(backlog[1])) <= 10 * RATES[FAILING]


def run(work: Path, outage: int, out: Path) -> None:
    """The run: a healthy minute, ``FAILING``'s receiver down for ``outage`` minutes, a
    minute of recovery, then the screenshot."""
    db = work / "spool.db"
    with Spool(db):  # made before the processes that open it start
        pass
    with ExitStack() as stack:
        receivers = {name: stack.enter_context(Receiver()) for name in RATES}
        receivers["segment"].reject = refuses
        config = work / "spooler.toml"
        config.write_text(
            "".join(
                f'[destinations.{name}]\ntype = "{name}"\napi_key = "demo-{name}-key"\n'
                f'url = "{receiver.url}{PATHS[name]}"\nbackoff_cap = "{BACKOFF_CAP}"\n'
                for name, receiver in receivers.items()
            )
        )
        # (run in the spool's folder: the dashboard shows the name it was given)
        spooler = [*SPOOLER, "--db", db.name, "--config", config.name]
        stack.enter_context(process([*spooler, "drain"], work / "drain.log"))
        stack.enter_context(process([*spooler, "web", "--port", "0"], work / "web.log"))
        url = wait_for(
            lambda: re.search(r"dashboard on (http://\S+)", (work / "web.log").read_text()),
            30,
            "spooler web",
        )[1]
        start = next_minute(time.time() + 1)
        down_at = start + 60
        up_at = down_at + outage * 60
        say(f"spooler drain and {url} running; producers start at {clock(start)}")
        sleep_until(start)
        for name in RATES:
            stack.enter_context(producer(db, name))
        say(f"producers enqueueing; {FAILING}'s receiver fails at {clock(down_at)}")
        sleep_until(down_at)
        receivers[FAILING].respond = unavailable
        say(f"{FAILING}'s receiver answers 503 from now on")
        sleep_until(up_at)
        receivers[FAILING].respond = None
        say(f"{FAILING}'s receiver answers 200 again")
        sleep_until(up_at + 60)
        shot = work / out.name
        queued, dot = screenshot(url, up_at, work / "chromium-profile", shot)
        if not agree(queued, dot):
            raise SystemExit(
                f"screenshot: {FAILING} shows {queued} queued but its backlog chart ends at"
                f" {dot!r}: the picture would not add up, so it was not saved"
            )
        shutil.copyfile(shot, out)
        refused = {
            name: sum(r.status >= 300 for r in receiver.requests)
            for name, receiver in receivers.items()
        }
        say(f"saved {out}: {FAILING} queued {queued}, its backlog chart ends at {dot!r}")
        say(f"requests refused (503, 400) per receiver: {refused}")


def main() -> None:
    """Parse the command line and make the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=int, default=2, help="minutes of outage (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-outage.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spooler-screenshot-") as tmp:
        work = Path(tmp)
        try:
            run(work, args.outage, args.out.resolve())
        except BaseException:
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise


if __name__ == "__main__":
    main()
