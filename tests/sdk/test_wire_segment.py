"""spooler's Segment client, in the SDK's module-level style, + ``spooler drain`` against
the official ``segment-analytics-python``: the same calls, the same requests, field by
field (see wire.py)."""

from __future__ import annotations

import atexit
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import segment.analytics as sdk
from segment.analytics.version import VERSION
from wire import FIXED_IDS, Run, arrived, assert_same_wire, drain, spooler, views

import spooler.clients.analytics as analytics
from spooler import ConfigError, Spool, __version__
from spooler.clients import Segment
from spooler.testing import Receiver

KEY = "seg_write_key_0123456789"
SDK_NAMES = frozenset({"analytics-python", VERSION, f"analytics-python/{VERSION}"})
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
Call = Callable[[ModuleType], Any]
# Each call of the SDK's README, through the module (``analytics.track(...)``).
CALLS: list[Call] = [
    lambda a: a.track("user_1", "Signed Up", {"plan": "pro", "n": [1, 2.5, None, True]}),
    lambda a: a.track(anonymous_id="anon_1", event="Viewed", timestamp=WHEN),
    lambda a: a.identify("user_1", {"email": "x@example.com"}, context={"ip": "10.0.0.1"}),
    lambda a: a.alias("anon_1", "user_1"),
    lambda a: a.group("user_1", "group_1", {"name": "Acme"}),
    lambda a: a.page("user_1", "Docs", "Setup", {"url": "/setup"}),
    lambda a: a.screen("user_1", name="Home", context={"app": {"name": "x"}}),
    lambda a: a.track("user_1", "Own id", message_id=FIXED_IDS[0], integrations={"All": False}),
]


@pytest.fixture
def official_module(receiver: Receiver) -> Iterator[Callable[[int], ModuleType]]:
    """``segment.analytics`` set up as its README says, sending to ``receiver``, one
    request per ``size`` messages (else it sends whatever half a second gathered)."""

    def setup(size: int) -> ModuleType:
        sdk.write_key, sdk.host = KEY, receiver.url
        sdk.default_client = sdk.Client(
            KEY, host=receiver.url, upload_size=size, upload_interval=60
        )
        return sdk

    yield setup
    client = sdk.default_client
    sdk.flush()
    # Its consumer thread waits out upload_interval for a next batch that never comes:
    # stop it without waiting (a daemon thread), and not at exit either.
    for consumer in client.consumers:
        consumer.pause()
    atexit.unregister(client.join)
    sdk.default_client = None


@pytest.fixture
def spooler_module(tmp_path: Path) -> Iterator[ModuleType]:
    """``spooler.clients.analytics`` set up as the README says."""
    analytics.spool = str(tmp_path / "spool.db")
    yield analytics
    analytics.shutdown()
    analytics.spool = None


def test_every_call_sends_what_the_sdk_sends(
    receiver: Receiver,
    official_module: Callable[[int], ModuleType],
    spooler_module: ModuleType,
    tmp_path: Path,
) -> None:
    run = Run()
    # Given the same calls, made through the SDK's module and through spooler's
    theirs = official_module(len(CALLS))
    for call in CALLS:
        call(theirs)
        call(spooler_module)
    theirs.flush()
    spooler_module.shutdown()
    # When spooler's drain delivers them
    with Receiver() as ours:
        drain(tmp_path / "spool.db", "segment", "segment", KEY, ours.url + "/v1/batch")
    # Then the request is the SDK's, field by field (writeKey, context.library...)
    assert_same_wire(views(receiver), views(ours), run, SDK_NAMES)
    assert json.loads(arrived(ours)[0].body)["batch"][0]["context"]["library"] == {
        "name": "spooler",
        "version": __version__,
    }


def test_the_message_id_stays_the_same_across_retries_and_replay(
    receiver: Receiver,
    official_module: Callable[[int], ModuleType],
    spooler_module: ModuleType,
    tmp_path: Path,
) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    call = CALLS[0]
    # Given a receiver that fails the first request with a 503
    receiver.fail_next(503)
    theirs = official_module(1)
    call(theirs)
    theirs.flush()
    with Receiver() as ours:
        ours.fail_next(503)
        call(spooler_module)
        drain(db, "segment", "segment", KEY, ours.url + "/v1/batch")
        # Then the retry repeats the batch, messageId and all, with X-Retry-Count: 1
        assert [r.status for r in arrived(ours)] == [r.status for r in arrived(receiver)]
        assert arrived(ours)[1].headers["X-Retry-Count"] == "1"
        assert_same_wire(views(receiver), views(ours), run, SDK_NAMES)
        # And a message dead-lettered, then replayed, goes out with the same messageId
        ours.fail_next(400)
        event_id = spooler_module.track("user_1", "Refunded")
        drain(db, "segment", "segment", KEY, ours.url + "/v1/batch")
        spooler("dlq", "replay", "--db", str(db), "--all")
        drain(db, "segment", "segment", KEY, ours.url + "/v1/batch")
    rejected, replayed = arrived(ours)[2:]
    assert [rejected.status, replayed.status] == [400, 200]
    assert "X-Retry-Count" not in replayed.headers  # a replay starts its attempts afresh
    ids = [[m["messageId"] for m in json.loads(r.body)["batch"]] for r in (rejected, replayed)]
    assert ids == [[event_id], [event_id]]


def test_the_module_needs_its_spool_and_lends_an_open_one(db: Path) -> None:
    analytics.spool = None
    with pytest.raises(ConfigError, match=r"analytics\.spool"):
        analytics.track("user_1", "e")
    with Spool(db) as spool:
        analytics.spool = spool
        try:
            analytics.track("user_1", "e")
            assert isinstance(analytics.default_client, Segment)
            analytics.flush()
            analytics.join()
            analytics.shutdown()  # the spool is the caller's: left open
            assert spool.status().total.queued == 1
        finally:
            analytics.spool = None
