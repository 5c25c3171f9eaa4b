"""datalyr, segment and posthog destinations against fakes of their APIs on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import amplitude, datalyr, posthog, segment
from helpers.cli import spooler_cmd
from helpers.spools import dead_rows, drain_once

from spooler import ConfigError, Spool
from spooler.config import build_drain_config
from spooler.destinations import destination_types
from spooler.events import OPTIONS_KEY
from spooler.testing import Receiver

DATALYR_KEY = "dk_live_0123456789"
SEGMENT_KEY = "seg_write_key_0123456789"
POSTHOG_KEY = "phc_project_key_0123456789"
AMPLITUDE_KEY = "amp_api_key_0123456789"
# An event's own time, as the clients and the relay store it.
WHEN = "2026-01-02T03:04:05.678Z"


def bodies(receiver: Receiver) -> list[dict]:
    return [json.loads(r.body) for r in receiver.requests]


# -- every type --------------------------------------------------------------------------

ENQUEUED = 1767323045.678  # 2026-01-02T03:04:05.678Z


@pytest.mark.parametrize(
    ("kind", "key", "fake", "event", "field", "own", "enqueued"),
    [
        (
            "amplitude",
            AMPLITUDE_KEY,
            amplitude,
            {"event_type": "e", "user_id": "user_1"},
            "time",
            1577836800000,
            1767323045678,
        ),
        (
            "segment",
            SEGMENT_KEY,
            segment,
            {"type": "track", "event": "e", "userId": "u"},
            "timestamp",
            "2020-01-01T00:00:00.000Z",
            WHEN,
        ),
        (
            "posthog",
            POSTHOG_KEY,
            posthog,
            {"event": "e", "distinct_id": "u", "properties": {"n": 1}},
            "timestamp",
            "2020-01-01T00:00:00.000Z",
            WHEN,
        ),
        (
            "datalyr",
            DATALYR_KEY,
            datalyr,
            {"event": "e", "userId": "u"},
            "timestamp",
            "2020-01-01T00:00:00.000Z",
            WHEN,
        ),
    ],
)
def test_an_event_without_a_time_is_dated_when_enqueued_not_when_delivered(
    db: Path,
    receiver: Receiver,
    kind: str,
    key: str,
    fake: Callable[[str], Any],
    event: dict[str, Any],
    field: str,
    own: object,
    enqueued: object,
) -> None:
    receiver.respond = fake(key)
    # Given an event enqueued without a time (Spool.enqueue, spooler enqueue, the relay's
    # /v1/events/NAME), long before the drain runs, and one with a time of its own
    with Spool(db, clock=lambda: ENQUEUED) as then:
        then.enqueue_many([event, {**event, field: own}])
    # When the drain delivers them (its max_age longer than they waited: past it, they
    # would die unsent)
    with Spool(db) as spool:
        drain_once(
            spool, receiver.url, type=kind, api_key=key, retry={"max_age": 100 * 365 * 86400}
        )
    # Then the API is told when the first was enqueued (it would date it on arrival),
    # in its own form, and the other keeps its time
    assert sorted([e[field] for e in receiver.delivered], key=str) == sorted(
        [enqueued, own], key=str
    )


# -- datalyr -------------------------------------------------------------------------------


def test_datalyr_posts_each_event_alone_with_its_event_id_and_the_key_in_x_api_key(
    spool: Spool, receiver: Receiver
) -> None:
    receiver.respond = datalyr(DATALYR_KEY)
    events = [
        {"event": "signup", "userId": f"u{n}", "properties": {"n": n}, "timestamp": WHEN}
        for n in range(3)
    ]
    ids = spool.enqueue_many([*events[:2], {**events[2], "eventId": "own-id"}])
    report = drain_once(spool, receiver.url + "/track", type="datalyr", api_key=DATALYR_KEY)
    assert sorted(bodies(receiver), key=lambda b: b["properties"]["n"]) == [
        {"eventId": ids[0], **events[0]},
        {"eventId": ids[1], **events[1]},
        {**events[2], "eventId": "own-id"},
    ]
    assert {r.headers["X-API-Key"] for r in receiver.requests} == {DATALYR_KEY}
    assert not any({"Authorization", "Idempotency-Key"} & set(r.headers) for r in receiver.requests)
    assert report.delivered == 3


def test_datalyr_4xx_is_permanent_and_5xx_is_retried(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    receiver.respond = datalyr(DATALYR_KEY)
    spool.enqueue_many([{"event": "ok"}, {"no_event_name": True}])
    receiver.fail_next(502)
    drain_once(spool, receiver.url, type="datalyr", api_key=DATALYR_KEY, concurrency=1)
    assert [e["event"] for e in receiver.delivered] == ["ok"]
    assert dead_rows(db, "reason", "status") == [("rejected", 400)]


@pytest.mark.parametrize("kind", [kind for kind in destination_types() if kind != "file"])
def test_a_url_that_is_not_http_is_refused_in_words_that_fit_every_type(kind: str) -> None:
    # "a"/"an" before a type name read "an datalyr destination": the message has none.
    flags = {"type": kind, "url": "ftp://h/in", "api_key": "dk_x"}
    with pytest.raises(ConfigError) as err:
        build_drain_config({}, destination_flags=flags)
    assert err.value.problems == (
        f"destinations.default.url: {kind} destinations need an http:// or https:// URL,"
        " got 'ftp://h/in'",
    )


def test_datalyr_config() -> None:
    config = build_drain_config({}, destination_flags={"type": "datalyr", "api_key": "dk_x"})
    datalyr_config = config.destinations["default"]
    assert datalyr_config.url == "https://ingest.datalyr.com/track"
    assert (datalyr_config.batch_size, datalyr_config.concurrency) == (1, 10)
    assert datalyr_config.auth_header == "X-API-Key"
    with pytest.raises(ConfigError, match="api_key: Datalyr API keys start with 'dk_'"):
        build_drain_config({}, destination_flags={"type": "datalyr", "api_key": "sk_x"})
    with pytest.raises(ConfigError, match="datalyr accepts at most 1 event per request, got 5"):
        build_drain_config(
            {}, destination_flags={"type": "datalyr", "api_key": "dk_x", "batch_size": 5}
        )


# -- segment -------------------------------------------------------------------------------


def track(n: int, **extra: object) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Signed Up",
        "userId": f"user_{n}",
        "timestamp": WHEN,
        "n": n,
        **extra,
    }


def test_segment_batch_shape_auth_and_message_id(spool: Spool, receiver: Receiver) -> None:
    receiver.respond = segment(SEGMENT_KEY)
    ids = spool.enqueue_many([track(0), track(1, messageId="own-id")])
    drain_once(spool, receiver.url + "/v1/batch", type="segment", api_key=SEGMENT_KEY)
    [request] = receiver.requests
    body = json.loads(request.body)
    assert body["batch"] == [{"messageId": ids[0], **track(0)}, track(1, messageId="own-id")]
    assert body["sentAt"].endswith("+00:00") and request.path == "/v1/batch"
    assert body["writeKey"] == SEGMENT_KEY
    expected = base64.b64encode(f"{SEGMENT_KEY}:".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


def test_segment_sent_at_is_made_again_on_every_attempt(spool: Spool, receiver: Receiver) -> None:
    receiver.respond = segment(SEGMENT_KEY)
    spool.enqueue(track(0))
    receiver.fail_next(503)
    drain_once(
        spool,
        receiver.url,
        type="segment",
        api_key=SEGMENT_KEY,
        retry={"backoff_base": 0.05, "backoff_cap": 0.05},
    )
    first, second = bodies(receiver)
    assert first["batch"][0]["messageId"] == second["batch"][0]["messageId"]
    assert first["sentAt"] < second["sentAt"]
    assert [r.headers.get("X-Retry-Count") for r in receiver.requests] == [None, "1"]


def test_segment_limits(spool: Spool, receiver: Receiver, db: Path) -> None:
    receiver.respond = segment(SEGMENT_KEY)
    ids = spool.enqueue_many(
        [track(n, pad="x" * 30_000) for n in range(20)] + [track(99, pad="y" * 40_000)]
    )
    drain_once(spool, receiver.url, type="segment", api_key=SEGMENT_KEY)
    assert all(len(r.body) <= 500 * 1024 for r in receiver.requests)
    assert sorted(e["n"] for e in receiver.delivered) == list(range(20))
    # The 40 KB message died without being sent: Segment takes at most 32 KB.
    assert dead_rows(db, "event_id", "reason", "status") == [(ids[20], "too_large", None)]
    assert all(b'"n":99' not in r.body for r in receiver.requests)


# -- posthog -------------------------------------------------------------------------------


def capture(n: int, **extra: object) -> dict[str, object]:
    return {
        "event": "$pageview",
        "distinct_id": f"user_{n}",
        "properties": {"n": n},
        "timestamp": WHEN,
        **extra,
    }


def test_posthog_batch_shape_uuid_and_sent_at(spool: Spool, receiver: Receiver) -> None:
    receiver.respond = posthog(POSTHOG_KEY)
    ids = spool.enqueue_many([capture(0), capture(1)])
    receiver.fail_next(500)
    drain_once(
        spool,
        receiver.url + "/batch/",
        type="posthog",
        api_key=POSTHOG_KEY,
        retry={"backoff_base": 0.05, "backoff_cap": 0.05},
    )
    # The batch failed; the probe after it and the request after that carry it again
    first, *again = bodies(receiver)
    assert first["batch"] == [{"uuid": ids[0], **capture(0)}, {"uuid": ids[1], **capture(1)}]
    assert [event for body in again for event in body["batch"]] == first["batch"]
    assert all(first["sent_at"] < body["sent_at"] for body in again)
    assert all(body["api_key"] == POSTHOG_KEY for body in [first, *again])
    assert all("Authorization" not in request.headers for request in receiver.requests)
    assert all(body["historical_migration"] is False for body in [first, *again])


def test_posthog_marks_an_old_backlog_historical(db: Path, receiver: Receiver) -> None:
    receiver.respond = posthog(POSTHOG_KEY)
    with Spool(db, clock=lambda: time.time() - 7200) as old:
        old.enqueue(capture(0))
    with Spool(db) as spool:
        drain_once(spool, receiver.url, type="posthog", api_key=POSTHOG_KEY, historical_after=3600)
        spool.enqueue(capture(1))
        drain_once(spool, receiver.url, type="posthog", api_key=POSTHOG_KEY, historical_after=3600)
    assert [b["historical_migration"] for b in bodies(receiver)] == [True, False]


def test_posthog_events_marked_historical_go_in_historical_requests_of_their_own(
    spool: Spool, receiver: Receiver
) -> None:
    receiver.respond = posthog(POSTHOG_KEY)
    # Given events of one batch, some marked historical (PostHog(historical_migration=True),
    # or an SDK's request to the relay that said so), some not
    marked = {OPTIONS_KEY: {"historical_migration": True}}
    ids = spool.enqueue_many([capture(0, **marked), capture(1), capture(2, **marked)])
    # When the drain delivers them
    drain_once(spool, receiver.url + "/batch/", type="posthog", api_key=POSTHOG_KEY)
    # Then each request's flag is its events', and the mark itself is not sent
    sent = sorted(bodies(receiver), key=lambda body: len(body["batch"]))
    assert [(b["historical_migration"], b["batch"]) for b in sent] == [
        (False, [{"uuid": ids[1], **capture(1)}]),
        (True, [{"uuid": ids[0], **capture(0)}, {"uuid": ids[2], **capture(2)}]),
    ]


@pytest.mark.parametrize(
    ("kind", "key", "fake", "event"),
    [
        ("datalyr", DATALYR_KEY, datalyr, {"event": "signup", "userId": "u1"}),
        ("segment", SEGMENT_KEY, segment, track(1)),
        ("posthog", POSTHOG_KEY, posthog, capture(1)),
    ],
)
def test_through_the_command_line_as_documented(
    db: Path, receiver: Receiver, tmp_path: Path, kind: str, key: str, fake, event: dict
) -> None:
    receiver.respond = fake(key)
    variable = f"{kind.upper()}_KEY"
    config = tmp_path / "spooler.toml"
    config.write_text(
        f'[destinations.{kind}]\ntype = "{kind}"\napi_key = "${{{variable}}}"\n'
        f'url = "{receiver.url}/"\n'
    )
    env = {"SPOOLER_DB": str(db), "SPOOLER_CONFIG": str(config), variable: key}
    enqueued = spooler_cmd("enqueue", "-d", kind, json.dumps(event), env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    drained = spooler_cmd("drain", "--until-empty", env=env)
    assert drained.returncode == 0, drained.stderr
    assert [r.status for r in receiver.requests] == [200]
    assert key not in drained.stderr
