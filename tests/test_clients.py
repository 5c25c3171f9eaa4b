"""The durable drop-in clients: each builds its SDK's payload and commits it to the spool."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import segment.analytics as segment_sdk
from fakes import amplitude as fake_amplitude
from fakes import datalyr as fake_datalyr
from helpers.spools import dead_rows, drain_once, rows

from spooler import InvalidEventError, Spool, __version__
from spooler.clients import Amplitude, Datalyr, PostHog, Segment
from spooler.clients.posthog import system_context
from spooler.testing import Receiver

NOW = 1_767_323_045.678  # 2026-01-02T03:04:05.678Z
ANON = re.compile(r"anon_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def stored(db: Path) -> list[str]:
    return [body for (body,) in rows(db, "SELECT body FROM queue ORDER BY id")]


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# -- Datalyr -------------------------------------------------------------------------------


def test_datalyr_track_builds_the_sdks_payload_key_for_key(spool: Spool, db: Path) -> None:
    datalyr = Datalyr(spool, clock=lambda: NOW)
    datalyr.track("user_123", "Purchase Completed", {"amount": 99.99, "currency": "USD"})
    [body] = stored(db)
    payload = json.loads(body)
    anonymous_id = payload["anonymousId"]
    assert ANON.fullmatch(anonymous_id)
    assert body == compact(
        {
            "event": "Purchase Completed",
            "userId": "user_123",
            "anonymousId": anonymous_id,
            "properties": {"amount": 99.99, "currency": "USD", "anonymous_id": anonymous_id},
            "context": {"library": "spooler", "version": __version__, "source": "api"},
            "timestamp": "2026-01-02T03:04:05.678Z",
        }
    )


def test_datalyr_call_forms_and_special_events(spool: Spool, db: Path) -> None:
    datalyr = Datalyr(spool, clock=lambda: NOW)
    datalyr.track(
        {
            "event": "Signup",
            "userId": "u1",
            "anonymousId": "anon_browser",
            "properties": {"plan": "pro"},
        }
    )
    datalyr.track(None, "page_loaded", {"url": "/pricing"})
    datalyr.identify("u1", {"email": "jane@example.com"})
    datalyr.page("u1", "Pricing", {"url": "/pricing"})
    datalyr.alias("new_456", "old_123")
    datalyr.group("u1", "company_456", {"name": "Acme"})
    payloads = [json.loads(b) for b in stored(db)]
    assert payloads[0]["anonymousId"] == "anon_browser"
    assert payloads[0]["properties"] == {"plan": "pro", "anonymous_id": "anon_browser"}
    assert "userId" not in payloads[1]  # undefined in the SDK: not sent
    assert [p["event"] for p in payloads[2:]] == ["$identify", "$pageview", "$alias", "$group"]
    assert payloads[2]["properties"]["email"] == "jane@example.com"
    assert payloads[3]["properties"]["name"] == "Pricing"
    assert payloads[4]["userId"] == "new_456"
    assert payloads[4]["properties"] == {
        "new_user_id": "new_456",
        "previous_id": "old_123",
        "userId": "new_456",
        "previousId": "old_123",
        "anonymous_id": payloads[4]["anonymousId"],
    }
    assert payloads[5]["properties"]["groupId"] == "company_456"


def test_datalyr_anonymous_ids_and_the_one_time_warning(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    datalyr = Datalyr(spool)
    first, second = datalyr.get_anonymous_id(), datalyr.get_anonymous_id()
    assert ANON.fullmatch(first) and first != second
    caplog.set_level(logging.WARNING, "spooler.clients.datalyr")
    datalyr.track(None, "a")
    datalyr.track(None, "b")
    assert len([r for r in caplog.records if "anonymousId" in r.getMessage()]) == 1
    datalyr.flush()
    datalyr.close()


def test_datalyr_needs_an_event_name(spool: Spool, db: Path) -> None:
    with pytest.raises(InvalidEventError, match="event name"):
        Datalyr(spool).track({"userId": "u1"})
    assert stored(db) == []


def test_datalyr_end_to_end_the_receiver_gets_the_payload_as_built_with_its_event_id(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    receiver.respond = fake_datalyr("dk_test_key")
    event_id = Datalyr(spool, destination="default").track("user_123", "signup", {"plan": "pro"})
    [built] = stored(db)
    drain_once(spool, receiver.url, type="datalyr", api_key="dk_test_key")
    assert [json.loads(r.body) for r in receiver.requests] == [
        {"eventId": event_id, **json.loads(built)}
    ]


# -- Amplitude -----------------------------------------------------------------------------


def test_amplitude_track_and_log_event(spool: Spool, db: Path) -> None:
    client = Amplitude(spool, clock=lambda: NOW)
    client.track(
        event_type="Song Played",
        user_id="datamonster@gmail.com",
        event_properties={"keyString": "valueString", "keyInt": 11},
        ip="127.0.0.1",
    )
    client.log_event(
        {"event_type": "Node.js Event", "device_id": "device-1234", "time": 1700000000000}
    )
    assert [json.loads(b) for b in stored(db)] == [
        {
            "event_type": "Song Played",
            "user_id": "datamonster@gmail.com",
            "event_properties": {"keyString": "valueString", "keyInt": 11},
            "ip": "127.0.0.1",
            "library": f"spooler/{__version__}",
            "time": 1767323045678,
        },
        {
            "event_type": "Node.js Event",
            "device_id": "device-1234",
            "time": 1700000000000,
            "library": f"spooler/{__version__}",
        },
    ]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"user_id": "user_1234"}, "needs an event_type"),
        ({"event_type": "x"}, "needs a user_id or a device_id"),
        ({"event_type": "x", "user_id": ""}, "needs a user_id or a device_id"),
        ({"event_type": "x", "device_id": 12345}, "device_id must be a string"),
    ],
)
def test_amplitude_validation_enqueues_nothing(
    spool: Spool, db: Path, event: dict, message: str
) -> None:
    with pytest.raises(InvalidEventError, match=message):
        Amplitude(spool).log_event(event)
    assert stored(db) == []


def test_amplitude_short_ids_are_left_to_the_api_and_min_id_length_goes_with_the_event(
    spool: Spool, db: Path
) -> None:
    Amplitude(spool).log_event({"event_type": "x", "user_id": "abc"})
    Amplitude(spool, min_id_length=3).log_event({"event_type": "x", "user_id": "abc"})
    first, second = map(json.loads, stored(db))
    assert "$options" not in first and second["$options"] == {"min_id_length": 3}


def test_amplitude_middleware_runs_in_order_and_can_drop(spool: Spool, db: Path) -> None:
    client = Amplitude(spool)
    seen: list[str] = []

    def enrich(payload: dict, next_: Any) -> None:
        seen.append(f"enrich:{payload['extra']}")
        payload["event"]["event_properties"] = {"source": "cron"}
        next_(payload)

    def drop_tests(payload: dict, next_: Any) -> None:
        seen.append("filter")
        if payload["event"]["event_type"] != "test":
            next_(payload)

    client.add_event_middleware(enrich)
    client.add_event_middleware(drop_tests)
    kept = client.track(event_type="real", user_id="user_1234")
    dropped = client.log_event({"event_type": "test", "user_id": "user_1234"}, extra="x")
    assert kept and dropped is None
    assert seen == ["enrich:None", "filter", "enrich:x", "filter"]
    assert [json.loads(b)["event_properties"] for b in stored(db)] == [{"source": "cron"}]


def test_amplitude_opt_out(spool: Spool, db: Path) -> None:
    client = Amplitude(spool)
    client.opt_out = True
    assert client.track(event_type="x", user_id="user_1234") is None
    assert stored(db) == []


def test_amplitude_end_to_end_with_insert_id(spool: Spool, receiver: Receiver) -> None:
    receiver.respond = fake_amplitude("amp_key")
    event_id = Amplitude(spool, destination="default").track(
        event_type="Song Played", user_id="user_1234"
    )
    drain_once(spool, receiver.url, type="amplitude", api_key="amp_key")
    [event] = receiver.delivered
    assert event["insert_id"] == event_id and event["event_type"] == "Song Played"


# -- Segment -------------------------------------------------------------------------------

TIMESTAMP = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
SEGMENT_CALLS = [
    ("track", {"user_id": "u1", "event": "Signed Up", "properties": {"plan": "pro"}}),
    ("identify", {"anonymous_id": "a1", "traits": {"email": "x@example.com"}}),
    ("alias", {"previous_id": "a1", "user_id": "u1"}),
    ("group", {"user_id": "u1", "group_id": "g1", "traits": {"n": 1}}),
    ("page", {"user_id": "u1", "category": "Docs", "name": "Setup", "properties": {"u": "/"}}),
    ("screen", {"user_id": "u1", "name": "Home", "context": {"app": {"name": "x"}}}),
]


@pytest.mark.parametrize(("call", "kwargs"), SEGMENT_CALLS, ids=[c for c, _ in SEGMENT_CALLS])
def test_segment_messages_match_analytics_python(
    spool: Spool, db: Path, call: str, kwargs: dict
) -> None:
    sdk = segment_sdk.Client("write-key", send=False)
    try:
        _, reference = getattr(sdk, call)(timestamp=TIMESTAMP, **json.loads(json.dumps(kwargs)))
    finally:
        sdk.shutdown()
    del reference["messageId"]  # spooler sets it to the event id when it sends
    reference["context"]["library"] = {"name": "spooler", "version": __version__}
    getattr(Segment(spool), call)(timestamp=TIMESTAMP, **kwargs)
    assert stored(db) == [compact(reference)]


def test_segment_message_id_and_oversized_messages(spool: Spool, db: Path) -> None:
    client = Segment(spool)
    client.track(user_id="u1", event="e", message_id="own-id")
    dead_id = client.track(user_id="u1", event="big", properties={"pad": "x" * 40_000})
    assert json.loads(stored(db)[0])["messageId"] == "own-id"
    assert dead_rows(db, "event_id", "destination", "reason", "attempts") == [
        (dead_id, "segment", "too_large", 0)
    ]
    with pytest.raises(InvalidEventError, match="user_id or an anonymous_id"):
        client.track(event="e")


@pytest.mark.parametrize("value", [Decimal("9.99"), datetime(2026, 1, 2), {1, 2}])
@pytest.mark.parametrize(
    "call",
    [
        lambda spool, value: Datalyr(spool).track("u1", "e", {"v": value}),
        lambda spool, value: Amplitude(spool).track(
            event_type="e", user_id="user_1", event_properties={"v": value}
        ),
        lambda spool, value: PostHog(spool).capture("e", distinct_id="u1", properties={"v": value}),
        lambda spool, value: Segment(spool).track("u1", "e", {"v": value}),
        lambda spool, value: Segment(spool).identify("u1", {"v": value}),
    ],
    ids=["datalyr", "amplitude", "posthog", "segment-track", "segment-identify"],
)
def test_a_property_value_that_is_not_json_is_refused_at_the_call(
    spool: Spool, db: Path, call: Any, value: Any
) -> None:
    # Given a value the Python SDKs would convert (docs/destinations.md: not spooler)
    # When a client is given it, Then the call raises InvalidEventError (Segment's size
    # check let a bare TypeError out), and nothing is enqueued or dead-lettered.
    with pytest.raises(InvalidEventError, match="not JSON-serialisable"):
        call(spool, value)
    assert stored(db) == [] and dead_rows(db, "event_id") == []


# -- PostHog -------------------------------------------------------------------------------


def test_posthog_capture_builds_the_7x_message(spool: Spool, db: Path) -> None:
    client = PostHog(spool, clock=lambda: NOW)
    client.capture("$pageview", distinct_id="user_1", properties={"path": "/"})
    client.capture("anonymous")
    named, personless = [json.loads(b) for b in stored(db)]
    assert named == {
        "properties": {
            "path": "/",
            **system_context(),
            "$lib": "spooler",
            "$lib_version": __version__,
            "$geoip_disable": True,
            "$is_server": True,
        },
        "distinct_id": "user_1",
        "event": "$pageview",
        "timestamp": "2026-01-02T03:04:05.678000+00:00",
    }
    assert personless["properties"]["$process_person_profile"] is False
    assert re.fullmatch(r"[0-9a-f-]{36}", personless["distinct_id"])


# -- every client ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda s: Segment(s).track("user_1", "e", timestamp="2026-01-02"),
        lambda s: PostHog(s).capture("e", distinct_id="user_1", timestamp=1_767_323_045),
    ],
)
def test_a_timestamp_that_is_not_a_datetime_is_refused(spool: Spool, db: Path, call: Any) -> None:
    with pytest.raises(InvalidEventError, match=r"^timestamp must be a datetime, not (str|int)$"):
        call(spool)
    assert stored(db) == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: Datalyr(s).track("user_1", "e", "not a dict"), "properties"),
        (lambda s: Datalyr(s).track({"event": "e", "properties": ["a"]}), "properties"),
        (lambda s: Datalyr(s).page("user_1", "Home", "not a dict"), "properties"),
        (lambda s: Datalyr(s).group("user_1", "g_1", ["a"]), "traits"),
        (
            lambda s: Amplitude(s).track(event_type="e", user_id="user_1", event_properties="x"),
            "event_properties",
        ),
        (
            lambda s: Amplitude(s).log_event({"event_type": "e", "user_id": "user_1", "groups": 5}),
            "groups",
        ),
        (lambda s: Segment(s).track("user_1", "e", "not a dict"), "properties"),
        (lambda s: Segment(s).identify("user_1", ["a"]), "traits"),
        (lambda s: Segment(s).page("user_1", properties="x", context="y"), "properties"),
        (lambda s: Segment(s).track("user_1", "e", context="not a dict"), "context"),
        (lambda s: PostHog(s).capture("e", distinct_id="u", properties="x"), "properties"),
        (lambda s: PostHog(s).capture("e", distinct_id="user_1", groups="x"), "groups"),
        (lambda s: PostHog(s).set(distinct_id="user_1", properties=["a"]), "properties"),
    ],
)
def test_properties_that_are_not_a_dict_are_refused_and_nothing_is_enqueued(
    spool: Spool, db: Path, call: Any, field: str
) -> None:
    with pytest.raises(InvalidEventError, match=rf"^{field} must be a dict, not \w+$"):
        call(spool)
    assert stored(db) == []


def test_the_clients_import_no_sdk() -> None:
    # The Amplitude client takes amplitude-analytics's objects without importing it.
    code = (
        "import sys, spooler.clients, spooler.clients.analytics;"
        "print(sorted({'amplitude', 'posthog', 'segment'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
