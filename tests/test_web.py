"""spooler web over HTTP: its pages, the actions and their confirmation, and what keeps it
safe (a GET changes nothing, the CSRF token, the token login, loopback names, escaping,
no secret in a page). The browser's view is tests/test_web_browser.py."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from helpers.cli import SPOOLER
from helpers.processes import free_port, wait_for_line
from helpers.spools import dead_count, drain_once, queued_count
from pg_server import PASSWORD, PostgresServer

from spooler import ConfigError, Spool
from spooler.config import WebConfig, build_web_config
from spooler.drain import Mode
from spooler.records import Counts, SpoolStatus
from spooler.testing import Receiver
from spooler.web import Dashboard
from spooler.web.app import NOTICE_FOR
from spooler.web.dead import PAGE_SIZE
from spooler.web.pages import IDLE_AFTER, overview_table
from spooler.web.snapshots import MAX_SHOWN_AGE, MIN_AGE, Snapshot

SCRIPT = "<script>window.pwned = 1</script>"
CONFIRMATION = re.compile(r'<form method="post" action="/actions/[\w-]+">(.*?)</form>')


class Served:
    """A dashboard of one spool, running in a thread, and a client for it."""

    def __init__(
        self, db: Path | str, config: WebConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.spool = Spool(db, create=False)
        self.dashboard = Dashboard(self.spool, config, clock=clock)
        ready = threading.Event()
        self.port = 0

        def started(port: int) -> None:
            self.port = port
            ready.set()

        self.thread = threading.Thread(target=self.dashboard.run, kwargs={"ready": started})
        self.thread.start()
        assert ready.wait(30)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)

    def csrf(self) -> str:
        """The CSRF token the overview's forms carry."""
        found = re.search(r'name="csrf" value="([^"]+)"', self.client.get("/").text)
        assert found
        return found[1]

    def confirm(self, action: str, asked: httpx.Response) -> httpx.Response:
        """Press the button of the confirmation ``asked`` shows: its form, as it is."""
        [form] = CONFIRMATION.findall(asked.text)
        fields: dict[str, list[str]] = {}
        for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', form):
            fields.setdefault(name, []).append(unescape(value))
        return self.client.post(f"/actions/{action}", data=fields)

    def close(self) -> None:
        self.client.close()
        self.dashboard.stop()
        self.thread.join(30)
        self.spool.close()


@pytest.fixture
def dead_spool(db: Path, receiver: Receiver) -> Path:
    """A spool with one delivered event and three dead letters (one carrying a script)."""
    receiver.reject = lambda event: bool(event.get("bad"))
    with Spool(db) as spool:
        spool.enqueue_many(
            [{"event": "ok"}, {"bad": True, "x": SCRIPT}, {"bad": True, "n": 2}, {"bad": True}]
        )
        drain_once(spool, receiver.url, batch_size=1, concurrency=1)
    assert dead_count(db) == 3
    return db


@pytest.fixture
def served(dead_spool: Path) -> Iterator[Served]:
    running = Served(dead_spool, WebConfig(port=0))
    yield running
    running.close()


def test_every_page_answers_with_its_headers(served: Served) -> None:
    for path in ("/", "/?range=day", "/?range=week", "/dead", "/dead?reason=rejected"):
        page = served.client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    for part in ("/?part=table", "/?part=charts", "/dead?part=summary", "/dead?part=list"):
        fragment = served.client.get(part).text
        assert "<html" not in fragment and fragment.startswith("<"), part
    [event_id] = re.findall(r"/dead/event/([\w-]+)\"", served.client.get("/dead?limit=1").text)[:1]
    assert event_id in served.client.get(f"/dead/event/{event_id}").text
    assert served.client.get("/dead/event/no-such-id").status_code == 404
    assert (
        served.client.get("/static/dashboard.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert served.client.get("/nowhere").status_code == 404


def test_a_payload_is_shown_as_text(served: Served) -> None:
    pages = [served.client.get("/dead").text]
    for event_id in re.findall(r'href="/dead/event/([\w-]+)"', pages[0]):
        pages.append(served.client.get(f"/dead/event/{event_id}").text)
    assert any("&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page for page in pages)
    assert not any("<script>window" in page for page in pages)


def test_a_get_changes_nothing(served: Served, dead_spool: Path) -> None:
    for path in ("/actions/replay", "/actions/purge?all=1", "/actions/hold?all=1"):
        assert served.client.get(path).status_code == 405
    assert dead_count(dead_spool) == 3


def test_an_action_needs_the_token_of_the_page_and_its_origin(
    served: Served, dead_spool: Path
) -> None:
    csrf = served.csrf()
    form = {"all": "1", "confirmed": "1", "back": "/dead"}
    assert served.client.post("/actions/purge", data=form).status_code == 403
    assert served.client.post("/actions/purge", data={**form, "csrf": "x" * 43}).status_code == 403
    other = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    refused = served.client.post("/actions/purge", data={**form, "csrf": csrf}, headers=other)
    assert refused.status_code == 403
    assert dead_count(dead_spool) == 3


def test_an_action_asks_first_with_its_count_then_runs_the_library_call(
    served: Served, dead_spool: Path
) -> None:
    csrf = served.csrf()
    form = {"csrf": csrf, "destination": "default", "reason": "rejected", "back": "/dead"}
    # First the question, with how many events it will touch: nothing has moved
    asked = served.client.post("/actions/replay", data=form)
    assert asked.status_code == 200
    assert 'data-count="3"' in asked.text and "move 3 events back to the queue" in asked.text
    assert dead_count(dead_spool) == 3
    # Then, confirmed, it runs, and the page it goes back to says what it did
    done = served.confirm("replay", asked)
    assert done.status_code == 303
    assert notice_of(done) == ("/dead", "replay", 3)
    assert (dead_count(dead_spool), queued_count(dead_spool)) == (0, 3)
    assert "Replayed 3 events to the queue." in served.client.get(done.headers["location"]).text
    # Queue actions too: hold all, confirmed with the count of what it parks
    asked = served.client.post("/actions/hold", data={"csrf": csrf, "all": "1"})
    assert 'data-count="3"' in asked.text
    assert served.confirm("hold", asked).status_code == 303
    assert (
        'data-count="3"'
        in served.client.post(
            "/actions/release", data={"csrf": csrf, "destination": "default"}
        ).text
    )
    # A selection that names nothing is refused, as on the command line
    refused = served.client.post("/actions/purge", data={"csrf": csrf, "confirmed": "1"})
    assert refused.status_code == 400 and "no events picked" in refused.text


def test_retry_now_from_the_page_makes_waiting_events_due(db: Path, receiver: Receiver) -> None:
    # Given two events waiting out the hour a 503's Retry-After asked for
    receiver.fail_next(503, headers={"Retry-After": "3600"})
    with Spool(db) as spool:
        spool.enqueue_many([{"n": 1}, {"n": 2}])
        drain_once(
            spool, receiver.url, mode=Mode.ONCE, retry={"backoff_base": 3600, "backoff_cap": 3600}
        )
        assert spool.status().total.retrying == 2 and spool.status().total.due == 0
    running = Served(db, WebConfig(port=0))
    try:
        form = {"csrf": running.csrf(), "destination": "default"}
        # When retry-now is asked for, it says how many it will make due; confirmed, it does
        asked = running.client.post("/actions/retry-now", data=form)
        assert 'data-count="2"' in asked.text and "end the pause" in asked.text
        done = running.confirm("retry-now", asked)
        assert notice_of(done) == ("/", "retry-now", 2)
    finally:
        running.close()
    with Spool(db) as spool:
        assert spool.status().total.due == 2


def test_the_dashboard_of_a_postgresql_spool(postgres: PostgresServer, receiver: Receiver) -> None:
    # Given a PostgreSQL spool, reached with a password, that a drain delivered from and
    # dead-lettered one event of
    pg_url = postgres.url(user=postgres.password_role(), password=PASSWORD)
    receiver.reject = lambda event: bool(event.get("bad"))
    with Spool(pg_url) as spool:
        spool.enqueue_many([{"n": 1}, {"n": 2}, {"bad": True, "x": SCRIPT}])
        drain_once(spool, receiver.url, batch_size=1, concurrency=1)
    running = Served(pg_url, WebConfig(port=0))
    try:
        # Then its pages show the delivery in the charts, and the dead letter
        overview = running.client.get("/").text
        assert re.search(r'data-metric="delivered" data-total="[0-9.e-]+"', overview)
        assert 'data-metric="delivered" data-total="0"' not in overview
        dead = running.client.get("/dead?destination=default&reason=rejected").text
        assert "Matching: 1 event." in dead
        [event_id] = re.findall(r'href="/dead/event/([\w-]+)"', dead)
        assert "&lt;script&gt;" in running.client.get(f"/dead/event/{event_id}").text
        assert PASSWORD not in overview and quote(PASSWORD, safe="") not in overview
        assert "spooler_pw@" in overview  # the spool's URL, without its password
        # and a replay from it moves the event back
        asked = running.client.post("/actions/replay", data={"csrf": running.csrf(), "all": "1"})
        assert running.confirm("replay", asked).status_code == 303
        assert dead_count(pg_url) == 0 and queued_count(pg_url) == 1
    finally:
        running.close()


ROW = re.compile(r'<tr data-key="(\d+)"><td><input type="checkbox" name="id" value="([\w-]+)"')


def notice_of(done: httpx.Response) -> tuple[str, str, int]:
    """Where an action went back to, and what it says it did: (path, action, count)."""
    address = urlsplit(done.headers["location"])
    query = parse_qs(address.query)
    return address.path, query["done"][0], int(query["count"][0])


def list_page(served: Served, address: str) -> tuple[list[tuple[int, str]], dict[str, str]]:
    """A page of the dead-letter list: its rows (key, event id), and its links by ``rel``
    (``next``: older, ``prev``: newer)."""
    text = served.client.get(address).text
    links = re.findall(r'<a href="([^"]+)" rel="(next|prev)">', text)
    return [(int(k), e) for k, e in ROW.findall(text)], {r: unescape(h) for h, r in links}


@pytest.mark.parametrize("count", [120, 2 * PAGE_SIZE])
def test_the_dead_letters_are_paged_by_key_older_and_newer(db: Path, count: int) -> None:
    # Given dead letters of destination "a" (and 5 of "b", filtered out)
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(count)], destination="a")
        spool.enqueue_many([{"n": n} for n in range(5)], destination="b")
        assert spool.expire(everything=True) == count + 5
    running = Served(db, WebConfig(port=0))
    try:
        # When the list of "a" is followed page by page, older and older
        pages, links = [], []
        address: str | None = "/dead?destination=a"
        while address is not None and len(pages) < 5:  # 3 expected
            rows, rel = list_page(running, address)
            pages.append(rows)
            links.append(rel)
            address = rel.get("next")
        # Then each page holds at most PAGE_SIZE rows, newest first, and together they
        # hold each of "a"'s dead letters once
        # hold each of "a"'s dead letters once; the last has no "older" (not even when
        # it is full)
        sizes = [PAGE_SIZE, PAGE_SIZE, count - 2 * PAGE_SIZE]
        assert [len(rows) for rows in pages] == [size for size in sizes if size]
        keys = [key for rows in pages for key, _ in rows]
        assert keys == sorted(keys, reverse=True) and len(set(keys)) == count
        assert sorted(e for rows in pages for _, e in rows) == sorted(ids)
        assert "next" not in links[-1]
        # ...each link keeps the filter and names the key it pages from...
        assert links[0] == {"next": f"/dead?destination=a&before={pages[0][-1][0]}"}
        assert links[1]["prev"] == f"/dead?destination=a&after={pages[1][0][0]}"
        # ...and "newer" leads back page by page, to the newest, which has no "newer"
        assert list_page(running, links[-1]["prev"])[0] == pages[-2]
        newest, rel = list_page(running, links[1]["prev"])
        assert newest == pages[0] and "prev" not in rel
    finally:
        running.close()


def test_the_overview_asks_for_a_drain_when_due_events_wait_unsent(
    db: Path, receiver: Receiver
) -> None:
    # Given events enqueued 10 minutes ago: of "idle", never sent; of "default", some
    # delivered just now, one left due; and a fresh event of "fresh"
    with Spool(db, clock=lambda: time.time() - 10 * IDLE_AFTER) as spool:
        spool.enqueue({"n": 1}, destination="idle")
        spool.enqueue({"n": 2})
        drain_once(spool, receiver.url)
        spool.enqueue({"n": 3})
    with Spool(db) as spool:
        spool.enqueue({"n": 4}, destination="fresh")
    running = Served(db, WebConfig(port=0))
    try:
        overview = running.client.get("/").text
    finally:
        running.close()
    # Then the overview names "idle" alone, asking whether a drain runs
    [alert] = re.findall(r'<p class="alert" role="alert">No delivery attempt: (.*?)</p>', overview)
    assert alert.startswith("idle for 10m") and "is <code>spooler drain</code> running" in alert
    assert "default" not in alert and "fresh" not in alert


def test_a_failing_destination_says_what_to_do_and_its_pause_rounds_up() -> None:
    now = 1000.0
    paused = Counts(queued=1, failed_in_a_row=3, paused_until=now + 0.4, last_error_at=now)
    table = overview_table(SpoolStatus(paused, {"api": paused}, now), 0.0, "csrf")
    cells = re.findall(r"<td>([^<]*)</td>", table)
    assert "1s" in cells and "0s" not in cells
    # and the failing destination is named, with what to do about it
    [alert] = re.findall(r'<p class="alert" role="alert">(Failing: .*?)</p>', table)
    assert alert.startswith("Failing: api.") and "Retry now probes at once" in alert


def test_a_summary_row_lists_and_replays_its_status_alone(db: Path, receiver: Receiver) -> None:
    # Given dead letters of one destination and reason, 2 of a 400 and 3 of a 422
    receiver.reject = lambda event: True
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(2)])
        drain_once(spool, receiver.url, batch_size=1, concurrency=1)
        receiver.reject_status = 422
        spool.enqueue_many([{"n": n} for n in range(3)])
        drain_once(spool, receiver.url, batch_size=1, concurrency=1)
    running = Served(db, WebConfig(port=0))
    try:
        # When the operator follows the summary's row of the 422s
        summary = running.client.get("/dead").text
        [row] = re.findall(r'<td>422</td><td><a href="([^"]+)">3</a>', summary)
        listed = running.client.get(unescape(row).removesuffix("#list")).text
        # Then the list holds those 3 alone, and its "Replay all" replays them alone
        assert "Matching: 3 events." in listed
        assert re.findall(r"<td>(4\d\d)</td><td>1</td>", listed) == ["422"] * 3
        [form] = re.findall(
            r'<form method="post" action="/actions/replay" class="inline">(.*?)</form>', listed
        )
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))
        asked = running.client.post("/actions/replay", data=fields)
        assert 'data-count="3"' in asked.text and "status 422" in asked.text
        running.confirm("replay", asked)
        statuses = [event.status for event in running.spool.dead_letters.inspect()]
    finally:
        running.close()
    assert (statuses, queued_count(db)) == ([400, 400], 3)


def test_a_confirmed_purge_of_picked_dead_letters_deletes_those_only(
    served: Served, dead_spool: Path
) -> None:
    # Given the dead letters' list, and two of its events picked
    rows, _ = list_page(served, "/dead")
    picked = [event_id for _, event_id in rows[:2]]
    form = {"csrf": served.csrf(), "id": picked, "back": "/dead"}
    # When the purge is asked for, it says how many it will delete, and deletes none yet
    asked = served.client.post("/actions/purge", data=form)
    assert 'data-count="2"' in asked.text and "delete 2 events for good" in asked.text
    assert dead_count(dead_spool) == 3
    # Then, confirmed, it deletes exactly those, and the list shows the one left
    done = served.confirm("purge", asked)
    assert done.status_code == 303
    assert notice_of(done) == ("/dead", "purge", 2)
    assert dead_count(dead_spool) == 1
    with Spool(dead_spool) as spool:
        [left] = spool.dead_letters.inspect()
    assert left.event_id not in picked
    assert [e for _, e in list_page(served, "/dead")[0]] == [left.event_id]


def test_a_confirmed_release_makes_held_events_due(db: Path) -> None:
    # Given held events of two destinations
    with Spool(db) as spool:
        spool.enqueue_many([{"n": 1}, {"n": 2}], destination="a")
        spool.enqueue({"n": 3}, destination="b")
        assert spool.hold(everything=True) == 3
    running = Served(db, WebConfig(port=0))
    try:
        form = {"csrf": running.csrf(), "destination": "a", "back": "/"}
        # When the release of destination "a" is asked for, then confirmed
        asked = running.client.post("/actions/release", data=form)
        assert 'data-count="2"' in asked.text and "make 2 events due at once" in asked.text
        assert running.spool.status().total.held == 3
        done = running.confirm("release", asked)
        assert done.status_code == 303
        assert notice_of(done) == ("/", "release", 2)
    finally:
        running.close()
    # Then "a"'s events are due, and "b"'s still held
    with Spool(db) as spool:
        status = spool.status()
    assert (status.destinations["a"].held, status.destinations["a"].due) == (0, 2)
    assert (status.destinations["b"].held, status.destinations["b"].due) == (1, 0)


def test_a_confirmed_action_acts_on_no_more_than_it_counted(db: Path) -> None:
    # Given 2 dead letters of destination "zz", and 2 events queued for "h"
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(2)], destination="zz")
        assert spool.expire(destination="zz") == 2
        spool.enqueue_many([{"n": n} for n in range(2)], destination="h")
    running = Served(db, WebConfig(port=0))
    try:
        csrf = running.csrf()
        # When the purge of all of "zz" is asked for, it counts 2
        form = {"csrf": csrf, "destination": "zz", "back": "/dead"}
        asked = running.client.post("/actions/purge", data=form)
        assert 'data-count="2"' in asked.text and "delete 2 events for good" in asked.text
        # and 3 more events of "zz" die before it is confirmed
        running.spool.enqueue_many([{"n": n} for n in range(3)], destination="zz")
        assert running.spool.expire(destination="zz") == 3
        done = running.confirm("purge", asked)
        # Then it deleted the 2 it counted, and says so; the 3 newer ones are left
        assert notice_of(done) == ("/dead", "purge", 2)
        assert dead_count(db) == 3
        # The same for a replay (3 counted, 1 more dies), and a hold (2 counted, 3 more queued)
        asked = running.client.post("/actions/replay", data=form)
        assert 'data-count="3"' in asked.text
        running.spool.enqueue({"n": 9}, destination="zz")
        assert running.spool.expire(destination="zz") == 1
        assert notice_of(running.confirm("replay", asked)) == ("/dead", "replay", 3)
        assert dead_count(db) == 1
        asked = running.client.post("/actions/hold", data={"csrf": csrf, "destination": "h"})
        assert 'data-count="2"' in asked.text
        running.spool.enqueue_many([{"n": n} for n in range(3)], destination="h")
        assert notice_of(running.confirm("hold", asked)) == ("/", "hold", 2)
        assert running.spool.status().destinations["h"].held == 2
        # A form that says it is confirmed but carries no count's key is asked again
        unbounded = {"csrf": csrf, "destination": "h", "confirmed": "1"}
        again = running.client.post("/actions/release", data=unbounded)
        assert again.status_code == 200 and 'data-count="2"' in again.text
        assert running.spool.status().destinations["h"].held == 2
    finally:
        running.close()


def test_the_notice_of_an_action_cannot_be_forged_by_a_link(dead_spool: Path) -> None:
    now = [time.time()]
    running = Served(dead_spool, WebConfig(port=0), clock=lambda: now[0])
    try:
        # A link that claims an action shows no notice, signed by nobody or by a guess
        for forged in ("/?done=purge&count=99999", "/?done=purge&count=99999&at=1&sig=00"):
            assert "Deleted" not in running.client.get(forged).text
        # The page an action goes back to says what it did
        form = {"csrf": running.csrf(), "id": list_page(running, "/dead")[0][0][1]}
        asked = running.client.post("/actions/purge", data=form)
        back = running.confirm("purge", asked).headers["location"]
        assert "Deleted 1 event for good." in running.client.get(back).text
        # but not with another count, nor once that address is opened again later
        assert "Deleted" not in running.client.get(back.replace("count=1", "count=9")).text
        now[0] += NOTICE_FOR + 1
        assert "Deleted" not in running.client.get(back).text
    finally:
        running.close()


def test_a_request_for_another_host_name_is_refused(served: Served) -> None:
    # A page elsewhere can point a name of its own at 127.0.0.1 (DNS rebinding)
    assert served.client.get("/", headers={"Host": "evil.example"}).status_code == 403
    assert served.client.get("/", headers={"Host": f"localhost:{served.port}"}).status_code == 200


def test_a_token_is_asked_for_and_opens_a_session(dead_spool: Path) -> None:
    running = Served(dead_spool, WebConfig(port=0, token="s3cret-token"))
    try:
        client = running.client
        assert client.get("/").headers["location"] == "/login"
        assert client.get("/dead?part=list").status_code == 303
        # The login page says nothing of the spool: not its path, nor its file's name
        for login in (client.get("/login"), client.post("/login", data={"token": "wrong"})):
            assert dead_spool.name not in login.text and 'class="spool"></span>' in login.text
        assert client.post("/actions/purge", data={"all": "1"}).status_code == 403
        assert client.post("/login", data={"token": "wrong"}).status_code == 403
        logged_in = client.post("/login", data={"token": "s3cret-token"})
        assert logged_in.status_code == 303
        cookie = logged_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "s3cret-token" not in cookie
        page = client.get("/")  # the client keeps the cookie
        assert page.status_code == 200 and "s3cret-token" not in page.text
        bearer = httpx.get(running.url + "/dead", headers={"Authorization": "Bearer s3cret-token"})
        assert bearer.status_code == 200
    finally:
        running.close()


def test_a_count_too_old_to_be_shown_is_waited_for() -> None:
    # Given counts read in the background, on a clock the test moves
    now = [1000.0]
    readings = iter(range(1, 100))
    snapshot = Snapshot(lambda: next(readings), clock=lambda: now[0])
    assert snapshot.get().value == 1
    # While pages are looked at, a page shows the last count at once, and renews it
    # in the background
    now[0] += MIN_AGE + 1
    shown = snapshot.get()
    assert shown.value == 1 and shown.age() == MIN_AGE + 1
    deadline = time.monotonic() + 30
    while snapshot.get().value == 1:  # the renewal, on the clock standing still
        assert time.monotonic() < deadline, "the count was not renewed"
        threading.Event().wait(0.01)
    # But after no page was looked at for a while (an operator opens the dashboard
    # during an outage), the page waits for a new count instead of showing an old one
    # as the present
    now[0] += MAX_SHOWN_AGE + 1
    fresh = snapshot.get()
    assert fresh.value >= 2 and fresh.age() == 0


def test_listening_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="set a token"):
        build_web_config({"web": {"host": "0.0.0.0"}})
    assert build_web_config({}, flags={"host": "0.0.0.0", "token": "t"}).host == "0.0.0.0"
    assert build_web_config({"web": {"token": "${T}"}}, env={"T": "x"}).token == "x"


def test_listening_beyond_loopback_warns_of_plain_http(
    dead_spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        with caplog.at_level("INFO", logger="spooler.web"):
            Served(dead_spool, WebConfig(host=host, port=0, token="t0ken")).close()
        assert any("dashboard on" in r.getMessage() for r in caplog.records)
        plain = [r for r in caplog.records if "plain HTTP" in r.getMessage()]
        assert [r.levelname for r in plain] == (["WARNING"] if warned else []), host


def test_no_secret_reaches_a_page(db: Path, receiver: Receiver) -> None:
    # Given drains with a password in their URL, or an API key, whose receiver fails
    receiver.fail_next(*[503] * 20)
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(3)])
        retry = {"max_attempts": 2}
        with_password = receiver.url.replace("http://", "http://user:pa55word@")
        drain_once(spool, with_password + "/v1?key=qu3rysecret", retry=retry, batch_size=1)
        spool.dead_letters.replay(everything=True)
        drain_once(spool, receiver.url, api_key="sk_live_k3y", retry=retry, batch_size=1)
    running = Served(db, WebConfig(port=0))
    try:
        pages = [running.client.get(p).text for p in ("/", "/dead", "/?range=week")]
        pages += [
            running.client.get(f"/dead/event/{event_id}").text
            for event_id in re.findall(r'href="/dead/event/([\w-]+)"', pages[1])
        ]
    finally:
        running.close()
    assert len(pages) > 3
    for secret in ("sk_live_k3y", "pa55word", "qu3rysecret"):
        assert not any(secret in page for page in pages), secret


# SIGHUP too: its terminal closing (the signal's default kills it: exit -1)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_spooler_web_runs_from_the_command_line(dead_spool: Path, stop: signal.Signals) -> None:
    port = free_port()
    web = subprocess.Popen(
        [*SPOOLER, "web", "--db", str(dead_spool), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert web.stderr is not None
        assert wait_for_line(web.stderr, f"dashboard on http://127.0.0.1:{port}/")
        assert "Dead letters" in httpx.get(f"http://127.0.0.1:{port}/dead").text
    finally:
        web.send_signal(stop)
        _, stderr = web.communicate(timeout=30)
    assert web.returncode == 0, stderr
    missing = subprocess.run(
        [*SPOOLER, "web", "--db", str(dead_spool) + ".nope"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "no spool at" in missing.stderr
