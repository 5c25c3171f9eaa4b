"""spooler's Datalyr client + ``spooler drain`` against the official ``@datalyr/api`` 1.3.0:
the same calls, the same requests, field by field (see wire.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from node_sdks import datalyr_sdk, require_node
from wire import (
    Run,
    arrived,
    assert_same_wire,
    drain,
    run_node,
    spooler,
    views,
)

from spooler import InvalidEventError, Spool, __version__
from spooler.clients import Datalyr
from spooler.testing import Receiver

KEY = "dk_test_0123456789"
SDK_NAMES = frozenset({"@datalyr/api", "1.3.0", "@datalyr/api/1.3.0"})
# Every call of the SDK's README, in each of its forms; and the calls it refuses.
CALLS: list[list[Any]] = [
    ["track", "user_123", "Purchase Completed", {"amount": 99.99, "currency": "USD"}],
    [
        "track",
        {
            "event": "Signup",
            "userId": "user_123",
            "anonymousId": "anon_browser",
            "properties": {"plan": "pro", "nested": {"a": [1, 2.5, True, None]}},
        },
    ],
    ["track", {"event": "Options without ids"}],
    ["track", None, "page_loaded", {"url": "/pricing"}],
    ["track", "", "empty_user_id"],
    ["identify", "user_123", {"email": "jane@example.com", "name": "Jane Doe"}],
    ["identify", "user_123", {"plan": "premium"}, "anon_session"],
    ["page", "user_123", "Pricing", {"url": "https://example.com/pricing"}],
    ["page", "user_123"],
    ["alias", "new_user_456"],
    ["alias", "new_user_456", "old_user_123"],
    ["alias", "new_user_456", None, "anon_session"],
    ["group", "user_123", "company_456", {"name": "Acme Corp", "employees": 50}],
    ["group", None, "company_456"],
    ["identify", None],
    ["identify", ""],
    ["alias", None],
    ["group", "user_123", None],
    ["track", "user_123", ""],
]


def official(receiver: Receiver, calls: list[list[Any]]) -> list[str]:
    """Make ``calls`` with the SDK; what each call did (``ok`` or its error)."""
    spec = {"sdk": str(datalyr_sdk()), "apiKey": KEY, "host": receiver.url + "/track"}
    lines = run_node("datalyr.js", {**spec, "calls": calls})
    return ["ok" if json.loads(line).get("ok") else "error" for line in lines]


def through_spooler(db: Path, calls: list[list[Any]]) -> list[str]:
    """Make ``calls`` with spooler's client; what each call did (``ok`` or its error)."""
    outcomes = []
    with Spool(db) as spool:
        client = Datalyr(spool)
        for method, *args in calls:
            try:
                getattr(client, method)(*args)
                outcomes.append("ok")
            except InvalidEventError:
                outcomes.append("error")
    return outcomes


@pytest.fixture(autouse=True)
def _sdk() -> None:
    require_node()  # the Datalyr SDK comes from the reference folder
    datalyr_sdk()


def test_every_call_sends_what_the_sdk_sends(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    with Receiver() as theirs, Receiver() as ours:
        # Given the same calls, made through the SDK and through spooler's client
        assert official(theirs, CALLS) == through_spooler(db, CALLS)
        # When spooler's drain delivers them, one request at a time, in order
        drain(db, "datalyr", "datalyr", KEY, ours.url + "/track", concurrency=1)
    # Then each request is the SDK's, field by field (X-API-Key, eventId, $alias...)
    assert_same_wire(views(theirs), views(ours), run, SDK_NAMES)
    assert arrived(ours)[0].headers["User-Agent"] == f"spooler/{__version__}"


def test_the_event_id_stays_the_same_across_retries_and_replay(tmp_path: Path) -> None:
    run = Run()
    db = tmp_path / "spool.db"
    call = [["track", "user_123", "Purchase Completed", {"amount": 5}]]
    with Receiver() as theirs, Receiver() as ours:
        # Given a receiver that fails the first request with a 503
        theirs.fail_next(503)
        ours.fail_next(503)
        official(theirs, call)
        through_spooler(db, call)
        drain(db, "datalyr", "datalyr", KEY, ours.url + "/track")
        # Then the retry repeats the request, eventId and all, for both
        assert [r.status for r in arrived(theirs)] == [503, 200]
        assert [r.status for r in arrived(ours)] == [503, 200]
        assert_same_wire(views(theirs), views(ours), run, SDK_NAMES)
        first, retry = (json.loads(r.body)["eventId"] for r in arrived(ours))
        assert first == retry
        # And an event dead-lettered, then replayed, goes out with the same eventId
        ours.fail_next(400)
        with Spool(db) as spool:
            event_id = Datalyr(spool).track("user_123", "Refunded")
        drain(db, "datalyr", "datalyr", KEY, ours.url + "/track")
        spooler("dlq", "replay", "--db", str(db), "--all")
        drain(db, "datalyr", "datalyr", KEY, ours.url + "/track")
    rejected, replayed = (json.loads(r.body)["eventId"] for r in arrived(ours)[2:])
    assert [r.status for r in arrived(ours)[2:]] == [400, 200]
    assert rejected == replayed == event_id
