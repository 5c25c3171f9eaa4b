"""spooler's PostHog client + ``spooler drain`` against the official ``posthog`` 7.x:
the same calls, the same requests, field by field (see wire.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import posthog
import pytest
from wire import FIXED_IDS, Run, arrived, assert_same_wire, drain, spooler, views

from spooler import InvalidEventError, Spool
from spooler.clients import PostHog
from spooler.testing import Receiver

KEY = "phc_project_key_0123456789"
SDK_NAMES = frozenset({"posthog-python", posthog.VERSION, f"posthog-python/{posthog.VERSION}"})
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
Call = Callable[[Any], Any]
# Each call of posthog 7.x's capture and identity API, in its documented forms.
CALLS: list[Call] = [
    lambda c: c.capture(
        "user_signed_up",
        distinct_id="user_123",
        properties={"login_type": "email", "is_free_trial": "true", "n": [1, 2.5, None]},
    ),
    lambda c: c.capture(
        "$pageview",
        distinct_id="user_123",
        properties={"$current_url": "https://example.com"},
        groups={"company": "acme"},
    ),
    lambda c: c.capture("some-anon-event"),
    lambda c: c.capture("geolocated", distinct_id=42, disable_geoip=False),
    lambda c: c.capture("timed", distinct_id="user_123", timestamp=WHEN, uuid=FIXED_IDS[0]),
    lambda c: c.capture("timed_text", distinct_id="user_123", timestamp="2026-01-02T03:04:05Z"),
    lambda c: c.set(distinct_id="user_123", properties={"name": "Max Hedgehog"}),
    lambda c: c.set_once(distinct_id="user_123", properties={"initial_signup_date": "2024-01-01"}),
    lambda c: c.set(distinct_id="user_123", properties={}),
    lambda c: c.alias(previous_id="distinct_id", distinct_id="alias_id"),
    lambda c: c.alias("old_id", "new_id", uuid=FIXED_IDS[1]),
    lambda c: c.group_identify("company", "company_id_in_your_db", {"name": "Awesome Inc."}),
    lambda c: c.group_identify("company", "acme", {"plan": "pro"}, distinct_id="user_123"),
]


def official(receiver: Receiver, calls: list[Call], **options: Any) -> None:
    """Make ``calls`` with the SDK, then flush: one request (and its retries)."""
    client = posthog.Posthog(KEY, host=receiver.url, flush_interval=60, **options)
    try:
        for call in calls:
            call(client)
        client.flush()
    finally:
        client.shutdown()


def through_spooler(db: Path, calls: list[Call], **options: Any) -> list[Any]:
    """Make ``calls`` with spooler's client; what each returned."""
    with Spool(db) as spool:
        client = PostHog(spool, **options)
        return [call(client) for call in calls]


def test_every_call_sends_what_the_sdk_sends(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    with Receiver() as theirs, Receiver() as ours:
        # Given the same calls, made through the SDK and through spooler's client
        official(theirs, CALLS)
        through_spooler(db, CALLS)
        # When spooler's drain delivers them
        drain(db, "posthog", "posthog", KEY, ours.url + "/batch/")
    # Then the request is the SDK's, field by field ($geoip_disable, $is_server, the
    # alias's ids, $set, personless capture, system properties...)
    assert_same_wire(views(theirs), views(ours), run, SDK_NAMES)
    [event] = [e for e in json.loads(arrived(ours)[0].body)["batch"] if e["event"] == "geolocated"]
    assert event["properties"]["$lib"] == "spooler"


def test_a_historical_migration_client_sends_what_the_sdk_sends(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    with Receiver() as theirs, Receiver() as ours:
        # Given clients made for importing old data, as the SDK's docs say
        official(theirs, CALLS[:3], historical_migration=True)
        through_spooler(db, CALLS[:3], historical_migration=True)
        # When spooler's drain delivers the events of today
        drain(db, "posthog", "posthog", KEY, ours.url + "/batch/")
    # Then the request says historical_migration, as the SDK's does
    assert_same_wire(views(theirs), views(ours), run, SDK_NAMES)
    assert json.loads(arrived(ours)[0].body)["historical_migration"] is True


def test_the_uuid_stays_the_same_across_retries_and_replay(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    call: list[Call] = [lambda c: c.capture("purchase", distinct_id="user_123")]
    with Receiver() as theirs, Receiver() as ours:
        # Given a receiver that fails the first request with a 503
        theirs.fail_next(503)
        ours.fail_next(503)
        official(theirs, call)
        [event_id] = through_spooler(db, call)
        drain(db, "posthog", "posthog", KEY, ours.url + "/batch/")
        # Then the retry repeats the request, uuid and all, for both
        assert [r.status for r in arrived(ours)] == [r.status for r in arrived(theirs)]
        assert_same_wire(views(theirs), views(ours), run, SDK_NAMES)
        # And an event dead-lettered, then replayed, goes out with the same uuid
        ours.fail_next(400)
        drain_id = through_spooler(db, [lambda c: c.capture("refund", distinct_id="user_123")])
        drain(db, "posthog", "posthog", KEY, ours.url + "/batch/")
        spooler("dlq", "replay", "--db", str(db), "--all")
        drain(db, "posthog", "posthog", KEY, ours.url + "/batch/")
    uuids = [[e["uuid"] for e in json.loads(r.body)["batch"]] for r in arrived(ours)]
    assert uuids == [[event_id], [event_id], drain_id, drain_id]
    assert [r.status for r in arrived(ours)] == [503, 200, 400, 200]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.capture("e", distinct_id="u", send_feature_flags=True),
        lambda c: c.capture("e", distinct_id="u", flags=object()),
        lambda c: c.alias(None, "user_123"),
        lambda c: c.alias("anon_1", ""),
        lambda c: c.group_identify("", "acme"),
        lambda c: c.set(properties={"a": 1}),
        lambda c: c.capture("e", uuid="not-a-uuid"),
        lambda c: c.capture("e", timestamp="2026-01-02"),
    ],
)
def test_what_the_sdk_would_drop_or_alter_is_refused(tmp_path: Path, call: Call) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        with pytest.raises(InvalidEventError):
            call(PostHog(spool))
        assert spool.status().total.queued == 0


# The SDK's calls that send events (its "Capture", "Identify" and "Error Tracking" API).
SENDING_CALLS = (
    "capture",
    "capture_ai",
    "capture_exception",
    "set",
    "set_once",
    "alias",
    "group_identify",
)


def test_each_call_that_sends_is_provided_or_listed_as_a_difference() -> None:
    # Given the PostHog section's table of differences from the SDK
    docs = (Path(__file__).resolve().parents[2] / "docs" / "destinations.md").read_text()
    section = docs.split("## `posthog`", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)\(", section, re.M))
    # Then each SDK call that sends an event is spooler's client's, or a listed difference
    assert all(callable(getattr(posthog.Posthog, name)) for name in SENDING_CALLS)
    missing = [n for n in SENDING_CALLS if not hasattr(PostHog, n) and n not in listed]
    assert not missing, f"neither provided nor in docs/destinations.md: {missing}"
