"""spooler's Amplitude client + ``spooler drain`` against the official ``amplitude-analytics``
(Python) and ``@amplitude/node`` 1.10.2: the same calls, the same requests, field by field
(see wire.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from amplitude import Amplitude as Official
from amplitude import BaseEvent, Config, EventOptions, Identify, Revenue
from amplitude.constants import SDK_LIBRARY, SDK_VERSION
from amplitude.storage import InMemoryStorage, InMemoryStorageProvider
from node_sdks import node_package
from wire import (
    FIXED_IDS,
    Run,
    arrived,
    assert_same_wire,
    drain,
    run_node,
    spooler,
    views,
)

from spooler import ConfigError, InvalidEventError, Spool
from spooler.clients import Amplitude
from spooler.testing import Receiver

KEY = "amp_api_key_0123456789"
NODE_LIBRARY = "amplitude-node/1.10.2"
SDK_NAMES = frozenset({f"{SDK_LIBRARY}/{SDK_VERSION}", NODE_LIBRARY})
# urllib's and Node's own user agents say nothing about the SDK: not compared.
NOT_COMPARED = frozenset({"user-agent"})
Call = Callable[[Any], Any]
# Each call of amplitude-analytics's client, with its own objects.
CALLS: list[Call] = [
    lambda c: c.track(
        BaseEvent(
            "Song Played",
            user_id="user_1234",
            event_properties={"title": "Blue in Green", "plays": [1, 2.5, True]},
            user_properties={"tier": "gold"},
        )
    ),
    lambda c: c.track(BaseEvent("Short id", user_id="abc")),
    lambda c: c.track(
        BaseEvent(
            "Purchased",
            device_id="device-1234",
            time=1767323045678,
            insert_id=FIXED_IDS[0],
            location_lat=37.77,
            price=9.99,
            quantity=2,
            product_id="sku_1",
            revenue_type="sale",
            groups={"org": "acme"},
        )
    ),
    lambda c: c.identify(
        Identify().set("plan", "pro").set_once("first", "2024").add("logins", 1),
        EventOptions(user_id="user_1234", ip="10.0.0.1"),
    ),
    lambda c: c.identify(Identify().unset("temp"), EventOptions(device_id="device-1234"), {"a": 1}),
    lambda c: c.group_identify(
        "org", "acme", Identify().set("size", 50), EventOptions(user_id="user_1234"), {"src": "crm"}
    ),
    lambda c: c.group_identify("org", "beta", Identify().set("size", 5)),
    lambda c: c.revenue(
        Revenue(price=9.99, quantity=2, product_id="sku_1", properties={"coupon": "x"}),
        EventOptions(user_id="user_1234"),
    ),
    lambda c: c.set_group("org", "acme", EventOptions(user_id="user_1234")),
    lambda c: c.set_group("org", ["acme", "beta"], EventOptions(device_id="device-1234")),
]


def answer(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """Amplitude's 200, with the ``code`` both SDKs read (without it, they retry)."""
    events = json.loads(body)["events"]
    return 200, {}, json.dumps({"code": 200, "events_ingested": len(events)}).encode()


class KeptStorage(InMemoryStorageProvider):
    """The SDK's in-memory buffer, kept at hand to wake the SDK's sending thread when done:
    that thread is not a daemon, and would keep the process alive until its next flush."""

    def get_storage(self) -> InMemoryStorage:
        self.storage = super().get_storage()
        return self.storage

    def wake(self) -> None:
        with self.storage.lock:
            self.storage.lock.notify_all()


def official(receiver: Receiver, calls: list[Call], requests: int = 1, **config: Any) -> None:
    """Make ``calls`` with amplitude-analytics, flushing until ``requests`` were made."""
    buffer = KeptStorage()
    client = Official(
        KEY,
        Config(
            server_url=receiver.url + "/2/httpapi",
            flush_interval_millis=600_000,  # it sends when flushed: one request for all calls
            storage_provider=buffer,
            **config,
        ),
    )
    try:
        for call in calls:
            call(client)
        # It retries a failed request at a flush after it has read the answer: flush
        # until the requests expected were made.
        deadline = time.monotonic() + 30
        while len(receiver.requests) < requests:
            assert time.monotonic() < deadline, f"the SDK made {len(receiver.requests)} requests"
            client.flush()
            receiver.wait_for(lambda r: len(r.requests) >= requests, timeout=0.1)
    finally:
        client.shutdown()
        buffer.wake()


def assert_same_requests(theirs: Receiver, ours: Receiver, run: Run) -> None:
    """``assert_same_wire`` for what two receivers got, user agents aside."""
    official, mine = (
        views(theirs, ignore_headers=NOT_COMPARED),
        views(ours, ignore_headers=NOT_COMPARED),
    )
    assert_same_wire(official, mine, run, SDK_NAMES)


def through_spooler(db: Path, calls: list[Call], **options: Any) -> list[Any]:
    """Make ``calls`` with spooler's client; what each returned."""
    with Spool(db) as spool:
        client = Amplitude(spool, **options)
        return [call(client) for call in calls]


def test_every_python_sdk_call_sends_what_the_sdk_sends(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    with Receiver() as theirs, Receiver() as ours:
        theirs.respond = answer
        # Given the same calls with the SDK's own objects, through the SDK and spooler
        official(theirs, CALLS)
        through_spooler(db, CALLS)
        # When spooler's drain delivers them
        drain(db, "amplitude", "amplitude", KEY, ours.url + "/2/httpapi")
    # Then the request is the SDK's, field by field (the short id too: left to the API)
    assert_same_requests(theirs, ours, run)


def test_min_id_length_reaches_the_request(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    calls = CALLS[:2]
    with Receiver() as theirs, Receiver() as ours:
        theirs.respond = answer
        official(theirs, calls, min_id_length=3)
        through_spooler(db, calls, min_id_length=3)
        drain(db, "amplitude", "amplitude", KEY, ours.url + "/2/httpapi")
    assert_same_requests(theirs, ours, run)
    assert json.loads(arrived(ours)[0].body)["options"] == {"min_id_length": 3}


def test_the_insert_id_stays_the_same_across_retries_and_replay(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    calls = CALLS[:1]
    with Receiver() as theirs, Receiver() as ours:
        theirs.respond = answer
        # Given a receiver that fails the first request with a 503
        theirs.fail_next(503)
        ours.fail_next(503)
        official(theirs, calls, requests=2)
        [event_id] = through_spooler(db, calls)
        drain(db, "amplitude", "amplitude", KEY, ours.url + "/2/httpapi")
        # Then the retry repeats the request, insert_id and all, for both
        assert [r.status for r in arrived(ours)] == [r.status for r in arrived(theirs)]
        assert_same_requests(theirs, ours, run)
        # And an event dead-lettered, then replayed, goes out with the same insert_id
        ours.fail_next(400)
        [refund_id] = through_spooler(db, CALLS[7:8])
        drain(db, "amplitude", "amplitude", KEY, ours.url + "/2/httpapi")
        spooler("dlq", "replay", "--db", str(db), "--all")
        drain(db, "amplitude", "amplitude", KEY, ours.url + "/2/httpapi")
    ids = [[e["insert_id"] for e in json.loads(r.body)["events"]] for r in arrived(ours)]
    assert ids == [[event_id], [event_id], [refund_id], [refund_id]]
    assert [r.status for r in arrived(ours)] == [503, 200, 400, 200]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.track(BaseEvent("no ids")),
        lambda c: c.track({"user_id": "user_1234"}),
        lambda c: c.track({"event_type": "e", "user_id": 1234}),
        lambda c: c.track("Song Played"),
        lambda c: c.identify(Identify(), EventOptions(user_id="user_1234")),
        lambda c: c.revenue(Revenue(price=9), EventOptions(user_id="user_1234")),
        lambda c: c.track({"event_type": "e", "user_id": "user_1234", "$options": 3}),
    ],
)
def test_what_the_sdk_would_drop_is_refused(tmp_path: Path, call: Call) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        with pytest.raises(InvalidEventError):
            call(Amplitude(spool))
        assert spool.status().total.queued == 0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5"])
def test_min_id_length_must_be_a_positive_integer(db: Path, bad: Any) -> None:
    with Spool(db) as spool, pytest.raises(ConfigError, match="min_id_length"):
        Amplitude(spool, min_id_length=bad)


# -- @amplitude/node ------------------------------------------------------------------------

NODE_EVENTS = [
    {
        "event_type": "Node.js Event",
        "user_id": "datamonster@gmail.com",
        "location_lat": 37.77,
        "location_lng": -122.39,
        "ip": "127.0.0.1",
        "event_properties": {"keyString": "valueString", "keyInt": 11, "keyBool": True},
    },
    {"event_type": "short", "user_id": "abc"},
    {"event_type": "timed", "device_id": "device-1234", "time": 1767323045678},
    {"event_type": "test", "user_id": "user_1234"},
]


def enrich(payload: dict, next_: Callable[[dict], None]) -> None:
    """tests/sdk/node/amplitude.js's ``enrich``, for spooler's client."""
    event = payload["event"]
    event["event_properties"] = {**event.get("event_properties", {}), "source": payload["extra"]}
    next_(payload)


def drop_tests(payload: dict, next_: Callable[[dict], None]) -> None:
    """tests/sdk/node/amplitude.js's ``dropTests``, for spooler's client."""
    if payload["event"]["event_type"] != "test":
        next_(payload)


def spooler_additions(official: dict, ours: dict, run: Run) -> dict:
    """``ours`` less the two fields spooler adds on purpose to what @amplitude/node sends
    (docs/destinations.md): ``insert_id`` (the event id) and ``time`` (when logged)."""
    for theirs, mine in zip(official["body"]["events"], ours["body"]["events"], strict=True):
        assert "insert_id" not in theirs and len(mine.pop("insert_id")) == 36
        if "time" not in theirs:
            assert run.now(mine.pop("time") / 1000)
    return ours


@pytest.fixture
def node_sdk() -> None:
    node_package("@amplitude/node")


@pytest.mark.usefixtures("node_sdk")
def test_log_event_and_middleware_send_what_the_node_sdk_sends(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    with Receiver() as theirs, Receiver() as ours:
        theirs.respond = answer
        # Given logEvent calls (one dropped by a middleware), through the SDK and spooler
        spec = {
            "options": {"serverUrl": theirs.url + "/2/httpapi"},
            "middleware": ["enrich", "dropTests"],
            "calls": [["logEvent", event, "cron"] for event in NODE_EVENTS],
        }
        run_node("amplitude.js", {"apiKey": KEY, "clients": [spec]})
        with Spool(db) as spool:
            client = Amplitude(spool).add_event_middleware(enrich).add_event_middleware(drop_tests)
            for event in NODE_EVENTS:
                client.log_event(event, "cron")
        drain(db, "amplitude", "amplitude", KEY, ours.url + "/2/httpapi")
    # Then the request is the SDK's, field by field, but for spooler's own additions
    official_views = views(theirs, ignore_headers=NOT_COMPARED)
    our_views = views(ours, ignore_headers=NOT_COMPARED)
    assert len(our_views) == len(official_views) == 1
    spooler_additions(official_views[0], our_views[0], run)
    assert_same_wire(official_views, our_views, run, SDK_NAMES)


@pytest.mark.usefixtures("node_sdk")
def test_events_with_different_options_never_share_a_request(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    loose, strict = NODE_EVENTS[1], NODE_EVENTS[0]
    with Receiver() as theirs, Receiver() as ours:
        theirs.respond = answer
        # Given two SDK instances, one with minIdLength 3: one request each
        url = theirs.url + "/2/httpapi"
        clients = [
            {"options": {"serverUrl": url, "minIdLength": 3}, "calls": [["logEvent", loose]] * 2},
            {"options": {"serverUrl": url}, "calls": [["logEvent", strict]]},
        ]
        run_node("amplitude.js", {"apiKey": KEY, "clients": clients})
        # And the same with spooler's clients, their events interleaved in one spool
        with Spool(db) as spool:
            three, default = Amplitude(spool, min_id_length=3), Amplitude(spool)
            for client, event in [(three, loose), (default, strict), (three, loose)]:
                client.log_event(event)
        # When one drain sends them all (one claimed batch)
        drain(db, "amplitude", "amplitude", KEY, ours.url + "/2/httpapi")
    # Then each set of options has a request of its own, with those options
    official_views = views(theirs, ignore_headers=NOT_COMPARED)
    our_views = views(ours, ignore_headers=NOT_COMPARED)
    for theirs_view, ours_view in zip(official_views, our_views, strict=True):
        spooler_additions(theirs_view, ours_view, run)
    assert_same_wire(official_views, our_views, run, SDK_NAMES)
    assert [v["body"].get("options") for v in our_views] == [{"min_id_length": 3}, None]
