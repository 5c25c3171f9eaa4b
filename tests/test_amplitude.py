"""The amplitude destination against a fake of Amplitude's HTTP V2 API on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from fakes import amplitude
from helpers.cli import spooler_cmd
from helpers.spools import dead_rows, drain_once, queued_count, rows

from spooler import ConfigError, Spool
from spooler.config import build_drain_config
from spooler.drain import Mode
from spooler.testing import Receiver

KEY = "amp_key_0123456789abcdef"


@pytest.fixture
def amp(receiver: Receiver) -> Receiver:
    receiver.respond = amplitude(KEY)
    return receiver


def track(n: int, **extra: object) -> dict[str, object]:
    """An event with its time, as the clients and the relay store them."""
    return {
        "event_type": "Song Played",
        "user_id": f"user_{n:04d}",
        "time": 1767323045678,
        "n": n,
        **extra,
    }


def deliver(spool: Spool, receiver: Receiver, **options: object):
    return drain_once(
        spool, receiver.url + "/2/httpapi", type="amplitude", api_key=KEY, concurrency=1, **options
    )


def test_a_clean_batch(spool: Spool, amp: Receiver) -> None:
    ids = spool.enqueue_many([track(0), track(1)])
    report = deliver(spool, amp, min_id_length=3)
    [request] = amp.requests
    body = json.loads(request.body)
    assert body == {
        "api_key": KEY,
        "events": [{"insert_id": ids[0], **track(0)}, {"insert_id": ids[1], **track(1)}],
        "options": {"min_id_length": 3},
    }
    assert request.path == "/2/httpapi" and "Authorization" not in request.headers
    assert report.delivered == 2 and request.status == 200


def test_each_events_own_options_override_the_destinations_in_requests_of_their_own(
    spool: Spool, amp: Receiver, db: Path
) -> None:
    # Given events enqueued with their own options (as the Amplitude client keeps them),
    # interleaved with events without, and one whose options are not an object
    ids = spool.enqueue_many(
        [
            track(0, user_id="abc", **{"$options": {"min_id_length": 3}}),
            track(1),
            track(2, user_id="xyz", **{"$options": {"min_id_length": 3}}),
            track(3, **{"$options": 3}),
        ]
    )
    # When one drain pass sends them, with the destination's own min_id_length 4
    deliver(spool, amp, min_id_length=4)
    # Then each set of options went in a request of its own, the options out of the events
    sent = [json.loads(r.body) for r in amp.requests]
    assert [(b.get("options"), [e["n"] for e in b["events"]]) for b in sent] == [
        ({"min_id_length": 3}, [0, 2]),
        ({"min_id_length": 4}, [1]),
    ]
    assert not any("$options" in e for b in sent for e in b["events"])
    assert rows(db, "SELECT event_id, reason, status FROM dead") == [(ids[3], "invalid", None)]


def test_an_events_own_insert_id_is_kept(spool: Spool, amp: Receiver) -> None:
    spool.enqueue(track(0, insert_id="order-88231"))
    deliver(spool, amp)
    assert [e["insert_id"] for e in amp.delivered] == ["order-88231"]


def test_a_400_naming_two_events_dead_letters_exactly_those(
    spool: Spool, amp: Receiver, db: Path
) -> None:
    events = [track(n) for n in range(6)]
    del events[1]["event_type"]
    events[4]["user_id"] = "u4"  # shorter than min_id_length 5
    ids = spool.enqueue_many(events)
    report = deliver(spool, amp)
    assert [r.status for r in amp.requests] == [400, 200]
    assert sorted(e["n"] for e in amp.delivered) == [0, 2, 3, 5]  # each once
    assert dead_rows(db, "event_id", "reason", "status", "error") == [
        (ids[1], "invalid", 400, "Amplitude 400: missing event_type"),
        (ids[4], "invalid", 400, "Amplitude 400: invalid id length user_id"),
    ]
    assert report.dead == 2 and queued_count(db) == 0


def test_a_400_naming_no_event_is_bisected_before_anything_dies(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    receiver.respond = lambda body, headers: (  # every request: 400, no index
        400,
        {},
        b'{"code":400,"error":"Request could not be parsed"}',
    )
    spool.enqueue_many([track(n) for n in range(4)])
    deliver(spool, receiver)
    assert len(receiver.requests) == 1 + 2 + 4  # the batch, its halves, each event
    assert Counter(dead_rows(db, "reason")) == {("rejected",): 4}


def test_a_wrong_api_key_kills_the_batch_without_bisecting_it(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    receiver.respond = amplitude("a-different-key")  # 400 "Invalid API key"
    spool.enqueue_many([track(n) for n in range(4)])
    deliver(spool, receiver)
    assert len(receiver.requests) == 1
    assert dead_rows(db, "reason", "status") == [("rejected", 400)] * 4


def test_413_splits_down_to_a_single_event_that_is_too_large(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    receiver.respond = amplitude(KEY, max_bytes=600)
    ids = spool.enqueue_many([track(n) for n in range(6)] + [track(9, pad="x" * 700)])
    deliver(spool, receiver)
    assert sorted(e["n"] for e in receiver.delivered) == list(range(6))
    assert dead_rows(db, "event_id", "reason", "status") == [(ids[6], "too_large", 413)]


def test_a_request_over_1_mb_is_split_before_it_is_sent(
    spool: Spool, amp: Receiver, db: Path
) -> None:
    ids = spool.enqueue_many(
        [track(0, pad="x" * 600_000), track(1, pad="y" * 600_000), track(2, pad="z" * 999_990)]
    )
    deliver(spool, amp)
    assert all(len(r.body) < 1_000_000 for r in amp.requests)
    assert sorted(e["n"] for e in amp.delivered) == [0, 1]
    # The lone event too big for any request dies without ever being sent.
    assert dead_rows(db, "event_id", "reason", "status") == [(ids[2], "too_large", None)]


@pytest.mark.parametrize(("header", "low", "high"), [(None, 30, 31), ("2", 2, 3)])
def test_429_waits_30_s_unless_retry_after_says_otherwise(
    spool: Spool, amp: Receiver, db: Path, header: str | None, low: float, high: float
) -> None:
    spool.enqueue(track(0))
    amp.fail_next(429, headers={"Retry-After": header} if header else {})
    before = time.time()
    deliver(spool, amp, mode=Mode.ONCE)
    [(due_at, status)] = rows(db, "SELECT due_at, last_status FROM queue")
    assert status == 429 and before + low <= due_at <= time.time() + high


def test_insert_id_is_the_event_id_across_retries_and_replay(spool: Spool, amp: Receiver) -> None:
    [event_id] = spool.enqueue_many([track(0)])
    amp.fail_next(503)
    deliver(spool, amp)
    spool.enqueue(track(1, user_id="u1"))  # dies as invalid...
    deliver(spool, amp)
    assert spool.dead_letters.replay(everything=True) == 1
    deliver(spool, amp, min_id_length=2)  # ...and is delivered after replay
    sent = [e["insert_id"] for r in amp.requests for e in json.loads(r.body)["events"]]
    assert sent[:2] == [event_id, event_id]  # the 503 attempt and its retry
    assert sent[2] == sent[3]  # the invalid event, then the same event after replay


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"type": "amplitude"}, "api_key: the amplitude destination needs its API key"),
        ({"type": "amplitude", "api_key": "k", "batch_size": 2001}, "at most 2000 events"),
        ({"url": "http://h", "min_id_length": 3}, "min_id_length: only for amplitude"),
    ],
)
def test_amplitude_config_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_drain_config({}, destination_flags=flags)


def test_the_default_url_is_amplitudes() -> None:
    config = build_drain_config({}, destination_flags={"type": "amplitude", "api_key": "k"})
    assert config.destinations["default"].url == "https://api2.amplitude.com/2/httpapi"


def test_through_the_command_line_as_documented(db: Path, amp: Receiver, tmp_path: Path) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text(
        "[destinations.amplitude]\n"
        'type = "amplitude"\n'
        'api_key = "${AMPLITUDE_API_KEY}"\n'
        f'url = "{amp.url}/2/httpapi"\n'
    )
    env = {"SPOOLER_DB": str(db), "SPOOLER_CONFIG": str(config), "AMPLITUDE_API_KEY": KEY}
    started = int(time.time() * 1000)
    enqueued = spooler_cmd(
        "enqueue",
        "-d",
        "amplitude",
        '{"event_type": "Song Played", "user_id": "user_1234"}',
        env=env,
    )
    assert enqueued.returncode == 0, enqueued.stderr
    drained = spooler_cmd("drain", "--until-empty", env=env)
    assert drained.returncode == 0, drained.stderr
    [event] = amp.delivered
    # Dated when it was enqueued: Amplitude would date an event without a time on arrival
    assert started <= event.pop("time") <= int(time.time() * 1000)
    assert event == {
        "insert_id": enqueued.stdout.strip(),
        "event_type": "Song Played",
        "user_id": "user_1234",
    }
    assert KEY not in drained.stderr


@pytest.mark.parametrize("answer", [b"{}", b"", b'{"code": "weird"}', b"<html>ok</html>"])
def test_any_200_is_a_success_whatever_its_body(
    spool: Spool, receiver: Receiver, db: Path, answer: bytes
) -> None:
    receiver.respond = lambda body, headers: (200, {}, answer)
    spool.enqueue(track(0))
    report = deliver(spool, receiver)
    assert report.delivered == 1 and queued_count(db) == 0
