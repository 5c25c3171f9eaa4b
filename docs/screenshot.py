"""Make the README's screenshot of ``spooler web`` from a real run: ``make screenshot``.

In a temporary folder, ``spooler demo --outage`` stages the outage the README's picture
shows (``spooler.testing.outage``): two local receivers stand in for Amplitude and
Segment, producers enqueue events for both at a steady rate in real time, and the real
drain delivers them; after a healthy minute amplitude's receiver answers 503, slowly, for
``--outage`` minutes, then 200 again, while segment's answers 400 to the bad orders,
which the drain dead-letters. The demo starts on a minute's boundary (so that no minute
in the charts is a partial one), and ``spooler web`` runs on its spool. A minute after
the recovery, once the drain has written that minute's history, Debian's headless
Chromium (driven by its chromedriver, as in tests/test_web_browser.py) saves the
overview's last 15 minutes to docs/dashboard-outage.png; then the demo is stopped with
SIGINT, as Ctrl-C would.

Nothing in the picture is made up: the charts are the history the drain recorded, a row
per destination and minute. About 5 minutes with the defaults; not part of ``make test``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from spooler.testing.outage import FAILING, RATES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # Chromium as the browser tests start it
import chromium  # noqa: E402

SPOOLER = [sys.executable, "-m", "spooler_cli"]
WIDTH = 1200  # the browser window's width: GitHub shows a README's images ~880px wide
# Traffic goes on after the recovery until the demo is stopped: longer than the picture takes.
AFTER = "10m"


def say(text: str) -> None:
    """Print a step of the run, with the time (UTC, as the charts label it)."""
    # (time.gmtime() alone reads a coarser clock, a few milliseconds behind time.time())
    print(time.strftime("%H:%M:%S", time.gmtime(time.time())), text, flush=True)


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


def screenshot(url: str, minute: str, profile: Path, out: Path) -> tuple[str, str]:
    """Save the overview once its charts hold ``minute`` ("12:04 UTC"); returns what
    ``shown`` read."""
    found = chromium.find()
    if found is None:
        raise SystemExit(f"screenshot: {chromium.MISSING}")
    driver = chromium.start(*found, profile=profile, width=WIDTH)
    try:
        driver.get(f"{url}?range=15m")

        def charted() -> tuple[str, str] | None:
            seen = shown(driver)
            return seen if minute in seen[1] else None

        queued, dot = wait_for(charted, 120, f"the chart of {minute}")
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
    """The run: ``spooler demo --outage`` (a healthy minute, ``FAILING``'s receiver down
    for ``outage`` minutes, the recovery) and ``spooler web``, then the screenshot a minute
    after the recovery."""
    demo_log, web_log = work / "demo.log", work / "web.log"
    with ExitStack() as stack:
        start = next_minute(time.time() + 1)
        say(f"spooler demo --outage {outage}m starts at {clock(start)}")
        sleep_until(start)
        # (run in the spool's folder: the dashboard shows the name it was given)
        demo = stack.enter_context(
            process(
                [*SPOOLER, "demo", "--db", "spool.db", "--outage", f"{outage}m", "--after", AFTER],
                demo_log,
            )
        )
        # The demo says how to watch it once its spool is there: first thing.
        wait_for(lambda: "spooler web --db spool.db" in demo_log.read_text(), 30, "the demo")
        stack.enter_context(process([*SPOOLER, "web", "--db", "spool.db", "--port", "0"], web_log))
        url = wait_for(
            lambda: re.search(r"dashboard on (http://\S+)", web_log.read_text()), 30, "spooler web"
        )[1]
        say(f"{url} running; {FAILING}'s receiver fails a minute into the demo")
        recovered = wait_for(
            lambda: re.search(
                r"^(\d\d:\d\d):\d\d .* answers 200 again", demo_log.read_text(), re.M
            ),
            outage * 60 + 120,
            f"{FAILING}'s recovery",
        )
        minute = f"{recovered[1]} UTC"  # as the charts label it
        say(f"{FAILING}'s receiver answers 200 again; waiting for the chart of {minute}")
        shot = work / out.name
        queued, dot = screenshot(url, minute, work / "chromium-profile", shot)
        demo.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops and sums up
        if demo.wait(timeout=60) != 0:
            raise SystemExit(f"screenshot: spooler demo exited {demo.returncode}")
        if not agree(queued, dot):
            raise SystemExit(
                f"screenshot: {FAILING} shows {queued} queued but its backlog chart ends at"
                f" {dot!r}: the picture would not add up, so it was not saved"
            )
        shutil.copyfile(shot, out)
        say(f"saved {out}: {FAILING} queued {queued}, its backlog chart ends at {dot!r}")
        print(demo_log.read_text(), end="", flush=True)


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
