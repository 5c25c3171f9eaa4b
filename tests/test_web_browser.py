"""spooler web in a real browser: Debian's Chromium, headless, driven by its chromedriver
(Selenium), against ``spooler web`` run as a subprocess on a spool a real drain filled.

The browser is never downloaded: without ``chromium`` and ``chromium-driver`` (which
``.ci/run`` installs) these tests skip and say so. The outage test saves the overview's
screenshot in its ``tmp_path`` (pytest keeps the last runs' folders); its chart history
is made up, so the README's picture comes from a real run instead: ``make screenshot``
(docs/screenshot.py).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromium
import pytest
from helpers.cli import SPOOLER, drain_command
from helpers.processes import free_port, wait_for_line, wait_until
from helpers.spools import drain_once

from spooler import Spool
from spooler.history import HistoryPoint, minute_of
from spooler.testing import Receiver

pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

SCRIPT = "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2>"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium, with a profile of its own, driven by Debian's chromedriver."""
    found = chromium.find()
    if found is None:
        pytest.skip(chromium.MISSING)
    driver = chromium.start(*found, profile=tmp_path / "chromium-profile")
    yield driver
    driver.quit()


class Web:
    """``spooler web`` on a spool, as a subprocess."""

    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*SPOOLER, "web", "--db", db.name, "--port", str(self.port)],
            cwd=db.parent,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        assert wait_for_line(self.process.stderr, "dashboard on http://")

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, stderr


@pytest.fixture
def drained(db: Path, receiver: Receiver) -> Path:
    """A spool a real drain ran on: delivered events, retries, and dead letters (one of
    them a script), with the history the drain wrote."""
    receiver.fail_next(503)
    receiver.reject = lambda event: bool(event.get("bad"))
    with Spool(db) as spool:
        spool.enqueue_many([{"event": "page_view", "n": n} for n in range(40)])
        spool.enqueue_many([{"event": "broken", "bad": True, "x": SCRIPT}])
        drain_once(spool, receiver.url, batch_size=10, concurrency=1)
    receiver.reject = None
    return db


@pytest.fixture
def web(drained: Path) -> Iterator[Web]:
    running = Web(drained)
    yield running
    running.close()


def follow(browser: Any, element: Any) -> None:
    """Click a link or a button, and wait until the page it leads to has replaced this one
    and has loaded (a click returns before the next page loads). Chromedriver may answer
    the look at the old page made mid-navigation with "unhandled inspector error": it is
    looked at again."""
    page = loaded_page(browser)
    element.click()
    wait = WebDriverWait(browser, 60, ignored_exceptions=(WebDriverException,))
    wait.until(expected_conditions.staleness_of(page))
    loaded_page(browser)


def loaded_page(browser: Any) -> Any:
    """The page's ``html`` element, once the page has loaded. Chromedriver may answer a
    lookup made while the page before is being replaced with "Node with given id does
    not belong to the document": such a lookup is made again."""
    wait = WebDriverWait(browser, 60, ignored_exceptions=(WebDriverException,))
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")
    return wait.until(lambda b: b.find_element(By.TAG_NAME, "html"))


def no_errors(browser: Any) -> None:
    """The page logged no error (a script or a style the policy refused would)."""
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def test_each_page_loads_and_the_charts_show_the_drain_run(browser: Any, web: Web) -> None:
    # The overview: the destination's row, and charts drawn from the drain's history
    browser.get(web.url + "/")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-destination="default"]')
    assert row.find_elements(By.TAG_NAME, "td")[5].text == "1"  # dead
    delivered = browser.find_element(By.CSS_SELECTOR, 'svg[data-metric="delivered"]')
    assert float(delivered.get_attribute("data-total")) > 0
    # (one minute of history: a line of one point, and its dot)
    assert delivered.find_element(By.TAG_NAME, "polyline").get_attribute("points")
    assert delivered.find_element(By.CSS_SELECTOR, "g.series circle").is_displayed()
    assert (
        float(
            browser.find_element(By.CSS_SELECTOR, 'svg[data-metric="retried"]').get_attribute(
                "data-total"
            )
        )
        > 0
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 7
    no_errors(browser)
    for span in ("15m", "day", "week"):
        follow(browser, browser.find_element(By.LINK_TEXT, span))
        assert browser.current_url.endswith(f"/?range={span}")
        assert browser.find_element(By.CSS_SELECTOR, 'svg[data-metric="delivered"]')
    # The dead letters: the summary, the list, one event in full
    follow(browser, browser.find_element(By.LINK_TEXT, "Dead letters"))
    summary = browser.find_element(By.CSS_SELECTOR, "table.summary tbody tr")
    assert summary.text.startswith("default rejected 400 1")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "table.dead a"))
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Dead event ")
    log = browser.find_element(By.XPATH, "//h2[.='Attempt log']/following-sibling::table")
    assert "HTTP 400" in log.text
    no_errors(browser)


def test_a_script_in_a_payload_shows_as_text_and_does_not_run(browser: Any, web: Web) -> None:
    browser.get(web.url + "/dead")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "table.dead a"))
    payload = browser.find_element(By.CSS_SELECTOR, "pre.payload").text
    assert "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2>" in payload
    assert browser.execute_script("return window.pwned") is None
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []


def test_a_dead_letter_replayed_from_the_page_is_delivered(
    browser: Any, drained: Path, web: Web, receiver: Receiver
) -> None:
    # Given a drain running, and the dead letter's receiver fixed
    drain = subprocess.Popen(
        drain_command(drained, receiver.url, "--poll-interval", "0.1"),
        stderr=subprocess.DEVNULL,
    )
    try:
        # and the overview open in a tab, showing the dead letter
        browser.get(web.url + "/")
        overview = browser.current_window_handle
        assert _dead_shown(browser) == "1"
        browser.execute_script("window.notReloaded = true")
        # When the operator, in another tab, finds the dead letters of that destination
        # and reason
        browser.switch_to.new_window("tab")
        browser.get(web.url + "/dead")
        follow(browser, browser.find_element(By.CSS_SELECTOR, "table.summary a"))
        assert "destination=default" in browser.current_url
        assert "reason=rejected" in browser.current_url
        # and replays them, confirming the count
        follow(
            browser,
            browser.find_element(
                By.XPATH, "//button[starts-with(., 'Replay all 1 (destination default, reason')]"
            ),
        )
        question = browser.find_element(By.CSS_SELECTOR, "p.confirm")
        assert question.get_attribute("data-count") == "1"
        assert "move 1 event back to the queue" in question.text
        follow(browser, browser.find_element(By.CSS_SELECTOR, "button[data-confirm]"))
        # Then the page says so, and the drain delivers it
        assert (
            "Replayed 1 event to the queue." in browser.find_element(By.CLASS_NAME, "notice").text
        )
        assert receiver.wait_for(
            lambda r: any(event.get("bad") for event in r.delivered), timeout=30
        )
        # and the overview, left open, shows it without a reload
        browser.switch_to.window(overview)
        assert wait_until(lambda: _dead_shown(browser) == "0", timeout=30)
        assert browser.execute_script("return window.notReloaded") is True
    finally:
        drain.terminate()
        drain.wait(timeout=30)


def _dead_shown(browser: Any) -> str:
    # Read in one script: the refresh may swap the row out between two of Selenium's calls.
    return str(
        browser.execute_script(
            "return document.querySelector('tr[data-destination=\"default\"]').cells[6].textContent"
        )
    )


def test_the_overview_during_an_outage(browser: Any, tmp_path: Path) -> None:
    # Given an hour of synthetic history, written into the spool in the drain's shape:
    # healthy, then the receiver of "amplitude" fails from twenty minutes ago on, and its
    # backlog grows (an hour of real time is too long for a test)
    db = tmp_path / "spool.db"
    now = time.time()
    with Spool(db) as spool:
        spool.store.record_history(_an_outage(now), now=now, keep=7 * 86400)
        spool.enqueue_many(
            [{"event": "page_view", "n": n} for n in range(300)], destination="amplitude"
        )
        spool.enqueue_many([{"event": "signup", "n": n} for n in range(20)], destination="segment")
    # and the demo's receiver failing now, while a drain runs
    with Receiver() as failing, Receiver() as healthy:
        failing.respond = lambda body, headers: (503, {}, b'{"error":"upstream unavailable"}')
        config = tmp_path / "spooler.toml"
        config.write_text(
            f'[destinations.amplitude]\nurl = "{failing.url}/2/httpapi"\n'
            f'[destinations.segment]\nurl = "{healthy.url}/v1/batch"\n'
        )
        drain = subprocess.Popen(
            [*SPOOLER, "drain", "--db", str(db), "--config", str(config), "--backoff-base", "5"],
            stderr=subprocess.DEVNULL,
        )
        web = Web(db)
        try:
            assert failing.wait_for(lambda r: len(r.requests) >= 1, timeout=30)
            assert healthy.wait_for(lambda r: len(r.delivered) == 20, timeout=30)
            # When the operator looks at the overview
            browser.get(web.url + "/")

            def shows_the_outage() -> bool:
                # The pause is written when the request fails, the batch's error when the
                # batch is settled a moment later: a look in between shows only the pause.
                browser.refresh()
                alert = browser.find_elements(By.CSS_SELECTOR, "p.alert")
                row = browser.find_element(By.CSS_SELECTOR, 'tr[data-destination="amplitude"]')
                return bool(alert) and "amplitude" in alert[0].text and "503" in row.text

            # Then it shows which destination fails, why, and its backlog and retries growing
            assert wait_until(shows_the_outage, timeout=30)
            row = browser.find_element(By.CSS_SELECTOR, 'tr[data-destination="amplitude"]')
            assert "failing" in row.get_attribute("class")
            backlog = browser.find_element(By.CSS_SELECTOR, 'svg[data-metric="backlog"]')
            assert float(backlog.get_attribute("data-max")) >= 4000
            no_errors(browser)
            height = browser.execute_script("return document.body.scrollHeight")
            # (the window's frame takes its share of the height, even headless)
            browser.set_window_size(1400, min(height + 200, 2400))
            shot = tmp_path / "dashboard-outage.png"
            assert browser.save_screenshot(str(shot))
            assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
        finally:
            web.close()
            drain.send_signal(signal.SIGTERM)
            drain.wait(timeout=60)


def _an_outage(now: float) -> list[HistoryPoint]:
    """An hour of two destinations' minutes, made up: steady traffic, then amplitude's
    receiver down for the last twenty minutes (no deliveries, retries, slow requests, a
    growing backlog)."""
    points = []
    backlog = 40
    last = minute_of(now) - 60
    for minute in range(last - 59 * 60, last + 60, 60):
        down = minute > last - 20 * 60
        wave = 30 * ((minute // 60) % 7)
        arrived = 240 + wave
        delivered = 0 if down else arrived
        backlog = backlog + arrived - delivered
        points.append(
            HistoryPoint(
                minute,
                "amplitude",
                delivered=delivered,
                retried=180 + wave if down else 0,
                requests=30 if down else 4,
                latency_sum=30 * 9.5 if down else 4 * 0.12,
                latency_max=10.0 if down else 0.2,
                backlog=backlog,
                oldest_age=(minute - (last - 20 * 60)) if down else 3.0,
            )
        )
        points.append(
            HistoryPoint(
                minute,
                "segment",
                delivered=90 + wave // 2,
                requests=2,
                latency_sum=0.16,
                latency_max=0.1,
                backlog=5,
                oldest_age=1.0,
            )
        )
    return points
