"""``spooler serve`` as users run it: each API's requests, what it stores, how it answers,
keys, limits, a full spool, and what ``spooler status`` and the metrics show."""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import gzip
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.cli import SPOOLER, spooler_cmd
from helpers.faults import fiu, switch
from helpers.processes import free_port, wait_until
from helpers.spools import rows
from relay import relay, write_config

from spooler import Spool
from spooler.events import OPTIONS_KEY
from spooler.serve.apis import MAX_EVENTS_PER_REQUEST
from spooler.serve.spool_refusals import SpoolRefusals
from spooler.serve.stats import IDLE_REPORT_INTERVAL, ServeStats
from spooler.serve.wrong_keys import WrongKeys
from spooler.testing import Receiver
from spooler_cli.render import service_line

KEYS = {
    "amplitude": "amp-0123456789abcdef",
    "segment": "seg-write-key-0123456789",
    "posthog": "phc_0123456789abcdef",
    "datalyr": "dk_0123456789abcdef",
}
TOKEN = "serve-token-0123456789"


def keyed_config(tmp_path: Path, **serve: Any) -> Path:
    """A config whose four API destinations have keys (so the relay checks them)."""
    tables = {
        api: {"type": api, "url": f"http://127.0.0.1:9/{api}", "api_key": key}
        for api, key in KEYS.items()
    }
    return write_config(tmp_path / "spooler.toml", tables, **serve)


def stored(db: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every queued event: (destination, event), in enqueue order."""
    return [(d, json.loads(b)) for d, b in rows(db, "SELECT destination, body FROM queue")]


def spool_bytes(db: Path) -> bytes:
    return b"".join(path.read_bytes() for path in db.parent.glob(db.name + "*"))


def test_amplitude_stores_the_events_with_the_request_options(db: Path) -> None:
    with relay(db) as running:
        body = {
            "api_key": KEYS["amplitude"],
            "events": [
                {"event_type": "a", "user_id": "usr", "insert_id": "i-1", "time": 1700000000000},
                {"event_type": "b", "device_id": "dev"},
            ],
            "options": {"min_id_length": 3},
        }
        answer = httpx.post(running.url + "/2/httpapi", json=body)
        plain = httpx.post(
            running.url + "/batch",
            json={"api_key": "k", "events": [{"event_type": "c", "user_id": "user_1"}]},
        )
    # The answer the SDKs read "code" from, and the events as the destination sends them
    assert answer.status_code == 200
    assert answer.json()["code"] == 200 and answer.json()["events_ingested"] == 2
    assert plain.status_code == 200
    (_, first), (_, second), (destination, third) = stored(db)
    assert first == {
        "event_type": "a",
        "user_id": "usr",
        "insert_id": "i-1",
        "time": 1700000000000,
        OPTIONS_KEY: {"min_id_length": 3},
    }
    assert second["device_id"] == "dev" and isinstance(second["time"], int)  # the receipt time
    assert destination == "amplitude" and OPTIONS_KEY not in third
    assert KEYS["amplitude"].encode() not in spool_bytes(db)


def test_amplitude_refuses_the_requests_amplitude_refuses(db: Path) -> None:
    with relay(db) as running:
        missing = httpx.post(running.url + "/2/httpapi", json={"api_key": "k", "events": []})
        bad = httpx.post(
            running.url + "/2/httpapi",
            json={
                "api_key": "k",
                "events": [
                    {"event_type": "ok", "user_id": "user_1"},
                    {"user_id": "user_2"},
                    {"event_type": "short", "user_id": "u1"},
                ],
            },
        )
        not_json = httpx.post(running.url + "/2/httpapi", content=b"{oops")
        too_big = httpx.post(
            running.url + "/2/httpapi",
            json={"api_key": "k", "events": [{"event_type": "x" * 1_000_000, "user_id": "u"}]},
        )
    assert (missing.status_code, missing.json()["missing_field"]) == (400, "events")
    assert bad.status_code == 400
    assert bad.json()["events_with_missing_fields"] == {"event_type": [1], "user_id": [2]}
    assert bad.json()["events_with_invalid_id_lengths"] == {"user_id": [2]}
    assert (not_json.status_code, not_json.json()["code"]) == (400, 400)
    assert (too_big.status_code, too_big.json()) == (
        413,
        {"code": 413, "error": "Payload too large"},
    )
    assert stored(db) == []


MB = 1024 * 1024


@pytest.mark.parametrize(
    ("path", "limit", "status", "shape"),
    [
        ("/2/httpapi", 1_000_000, 413, {"code": 413, "error": "Payload too large"}),
        # Segment answers a body over its limits with its 400.
        ("/v1/batch", 500 * 1024, 400, {"success": False, "code": "invalid_request"}),
        ("/batch/", 20 * MB, 413, {"type": "validation_error", "code": "payload_too_large"}),
        ("/track", MB, 413, {"error": f"payload too large: the body is over {MB} bytes"}),
    ],
    ids=["amplitude", "segment", "posthog", "datalyr"],
)
def test_a_body_over_the_apis_limit_gets_its_answer_even_by_a_client_that_sends_it_all(
    db: Path, path: str, limit: int, status: int, shape: dict[str, Any]
) -> None:
    # Given a client that sends its whole body before it reads the answer (urllib sends
    # no "Expect: 100-continue"), and a body well over what the sockets buffer
    body = b'{"pad": "' + b"x" * (limit + 8 * MB) + b'"}'
    with relay(db) as running:
        request = urllib.request.Request(
            running.url + path, data=body, headers={"Content-Type": "application/json"}
        )
        # When it posts a body over the API's limit
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        # Then it reads the API's own answer (not a broken pipe or a reset), and the
        # relay takes the next request
        after = httpx.post(running.url + "/v1/events/x", json={"a": 1})
    answer = json.loads(refused.value.read())
    assert refused.value.code == status
    assert shape.items() <= answer.items()
    assert after.status_code == 200
    assert [event for _, event in stored(db)] == [{"a": 1}]


def test_a_request_of_more_events_than_the_limit_gets_413_and_stores_nothing(db: Path) -> None:
    # Given bodies well within their API's size limits, of more events than a request may
    # carry (tiny ones: 7 million "{}" fit in the generic endpoint's 20 MB, and held
    # the relay's event loop for most of a minute)
    over = MAX_EVENTS_PER_REQUEST + 1
    posthog = {"api_key": "k", "batch": [{"event": "e", "distinct_id": "u"}] * over}
    amplitude = {"api_key": "k", "events": [{"event_type": "e", "user_id": "user1"}] * over}
    segment = {"batch": [{"type": "track"}] * over}
    bodies = {
        "/v1/events/x": ("application/json", b"[" + b",".join([b"{}"] * over) + b"]"),
        "/v1/events/y": ("application/x-ndjson", b"{}\n" * over),
        "/batch/": ("application/json", json.dumps(posthog).encode()),
        "/batch": ("application/json", json.dumps(amplitude).encode()),
        "/v1/batch": ("application/json", json.dumps(segment).encode()),
    }
    with relay(db) as running, httpx.Client(timeout=30) as client:
        # When each is posted
        statuses = {
            path: client.post(running.url + path, content=body, headers={"Content-Type": kind})
            for path, (kind, body) in bodies.items()
        }
        # Then each gets its API's answer to a body too large (Segment's is its 400), and
        # a request of as many as the limit is taken
        at_limit = client.post(running.url + "/v1/events/x", json=[{}] * MAX_EVENTS_PER_REQUEST)
    too_large = {**dict.fromkeys(bodies, 413), "/v1/batch": 400}
    assert {path: r.status_code for path, r in statuses.items()} == too_large
    assert "more than" in statuses["/v1/batch"].json()["message"]
    assert at_limit.status_code == 200
    assert len(stored(db)) == MAX_EVENTS_PER_REQUEST


def test_segment_stores_messages_with_the_batch_context(db: Path) -> None:
    with relay(db) as running:
        auth = {"Authorization": "Basic " + base64.b64encode(b"wk:").decode()}
        batch = httpx.post(
            running.url + "/v1/batch",
            headers=auth,
            json={
                "batch": [
                    {
                        "type": "track",
                        "event": "e",
                        "userId": "u",
                        "messageId": "m-1",
                        "context": {"page": 1},
                        "timestamp": "2026-01-01T00:00:00Z",
                    },
                ],
                "context": {"library": {"name": "x"}},
                "sentAt": "2026-01-01T00:00:01Z",
            },
        )
        single = httpx.post(
            running.url + "/v1/identify",
            json={"userId": "u", "traits": {"plan": "pro"}, "writeKey": "wk"},
        )
    assert (batch.status_code, batch.json()) == (200, {"success": True})
    assert (single.status_code, single.json()) == (200, {"success": True})
    (_, message), (destination, identify) = stored(db)
    assert message == {
        "type": "track",
        "event": "e",
        "userId": "u",
        "messageId": "m-1",
        "context": {"library": {"name": "x"}, "page": 1},
        "timestamp": "2026-01-01T00:00:00Z",
    }
    assert destination == "segment"
    assert identify["type"] == "identify" and "writeKey" not in identify
    assert "timestamp" in identify  # the time it was received


def test_posthog_takes_batches_single_events_gzip_and_the_key_in_the_event(db: Path) -> None:
    with relay(db) as running:
        batch = httpx.post(
            running.url + "/batch/",
            json={
                "api_key": "phc_x",
                "batch": [{"event": "e", "distinct_id": "d", "uuid": "u-1", "properties": {}}],
                "historical_migration": False,
                "sent_at": "2026-01-01T00:00:00+00:00",
            },
        )
        packed = gzip.compress(
            json.dumps(
                {"event": "f", "distinct_id": "d", "properties": {"token": "phc_x"}, "offset": 1000}
            ).encode()
        )
        single = httpx.post(running.url + "/e/?compression=gzip-js", content=packed)
        header_gzip = httpx.post(
            running.url + "/i/v0/e/",
            content=gzip.compress(b'[{"event":"g","distinct_id":"d","api_key":"phc_x"}]'),
            headers={"Content-Encoding": "gzip"},
        )
        no_id = httpx.post(
            running.url + "/batch/", json={"api_key": "k", "batch": [{"event": "e"}]}
        )
    assert [r.status_code for r in (batch, single, header_gzip)] == [200, 200, 200]
    assert batch.json() == {"status": 1}
    assert (no_id.status_code, no_id.json()["type"]) == (400, "validation_error")
    events = [event for _, event in stored(db)]
    assert [e["event"] for e in events] == ["e", "f", "g"]
    assert events[0]["uuid"] == "u-1"
    assert "offset" not in events[1] and "timestamp" in events[1]
    assert b"phc_x" not in spool_bytes(db)


def test_datalyr_keeps_the_event_id_and_not_the_key(db: Path) -> None:
    with relay(db) as running:
        answer = httpx.post(
            running.url + "/track",
            headers={"X-API-Key": KEYS["datalyr"]},
            json={
                "event": "signup",
                "userId": "u",
                "eventId": "e-1",
                "timestamp": "2026-01-01T00:00:00.000Z",
            },
        )
        no_name = httpx.post(running.url + "/track", json={"userId": "u"})
    assert (answer.status_code, answer.json()) == (200, {"success": True})
    assert no_name.status_code == 400 and "error" in no_name.json()
    assert stored(db) == [
        (
            "datalyr",
            {
                "event": "signup",
                "userId": "u",
                "eventId": "e-1",
                "timestamp": "2026-01-01T00:00:00.000Z",
            },
        )
    ]
    assert KEYS["datalyr"].encode() not in spool_bytes(db)


def test_the_generic_endpoint_takes_objects_arrays_and_json_lines(db: Path) -> None:
    with relay(db) as running:
        one = httpx.post(running.url + "/v1/events/billing", json={"a": 1})
        many = httpx.post(running.url + "/v1/events/billing", json=[{"b": 2}, {"c": 3}])
        lines = httpx.post(
            running.url + "/v1/events/audit",
            content=b'{"d": 4}\n\n{"e": 5}\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        bad_line = httpx.post(
            running.url + "/v1/events/audit",
            content=b'{"f": 6}\n{oops\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        bad_name = httpx.post(running.url + "/v1/events/no%20such", json={"a": 1})
    assert [len(r.json()["ids"]) for r in (one, many, lines)] == [1, 2, 2]
    assert (bad_line.status_code, "line 2" in bad_line.json()["error"]) == (400, True)
    assert bad_name.status_code == 404
    assert stored(db) == [
        ("billing", {"a": 1}),
        ("billing", {"b": 2}),
        ("billing", {"c": 3}),
        ("audit", {"d": 4}),
        ("audit", {"e": 5}),
    ]
    ids = [i for r in (one, many, lines) for i in r.json()["ids"]]
    assert ids == [row[0] for row in rows(db, "SELECT event_id FROM queue ORDER BY id")]


@pytest.mark.parametrize(
    ("path", "request_args", "status", "shape"),
    [
        (
            "/2/httpapi",
            {"json": {"api_key": "wrong", "events": [{"event_type": "a", "user_id": "user_1"}]}},
            400,
            {"code": 400},
        ),
        (
            "/v1/track",
            {"json": {"event": "e", "userId": "u"}, "auth": ("wrong", "")},
            401,
            {"success": False},
        ),
        (
            "/batch/",
            {"json": {"api_key": "wrong", "batch": [{"event": "e", "distinct_id": "d"}]}},
            401,
            {"code": "invalid_api_key"},
        ),
        (
            "/track",
            {"json": {"event": "e"}, "headers": {"X-API-Key": "dk_wrong"}},
            401,
            {"error": "Invalid API key"},
        ),
        ("/track", {"json": {"event": "e"}}, 401, {"error": "Invalid API key"}),
        (
            "/v1/events/segment",
            {"json": {"a": 1}, "headers": {"Authorization": "Bearer x"}},
            401,
            {"error": "Invalid API key"},
        ),
    ],
)
def test_a_wrong_key_gets_the_apis_answer_and_stores_nothing(
    tmp_path: Path, db: Path, path: str, request_args: dict, status: int, shape: dict
) -> None:
    config = keyed_config(tmp_path)
    with relay(db, "--config", str(config)) as running:
        answer = httpx.post(running.url + path, **request_args)
    assert answer.status_code == status
    assert shape.items() <= answer.json().items()
    if path == "/2/httpapi":  # amplitude-analytics stops sending on exactly this
        assert answer.json()["error"].startswith("Invalid API key:")
    assert stored(db) == []


def test_wrong_keys_are_logged_as_warnings_without_one_line_per_request(
    tmp_path: Path, db: Path
) -> None:
    # Given a relay that checks keys, and an SDK with the wrong one that sends five times
    config = keyed_config(tmp_path)
    with relay(db, "--config", str(config)) as running:
        for _ in range(5):
            answer = httpx.post(
                running.url + "/v1/batch",
                json={"batch": [{"type": "track", "event": "e", "userId": "u"}]},
                auth=("seg-the-wrong-write-key", ""),
            )
            assert answer.status_code == 401
        assert running.stop() == 0
        assert running.process.stderr is not None
        log = running.process.stderr.read()
    # Then the first refusal is a warning naming the API and the path, the others are
    # counted into one line (here at the stop), and the key is in neither
    first, counted = re.findall(r" WARNING segment API: (.*)", log)
    assert first == (
        "refused a request to /v1/batch (HTTP 401): wrong or missing key (the key must be"
        " its destination's api_key, or serve.token); more refusals of it are logged at"
        " most once a minute"
    )
    assert re.fullmatch(
        r"refused 4 more requests for a wrong or missing key in the last \d+s"
        r" \(the last to /v1/batch, HTTP 401\)",
        counted,
    )
    assert "wrong-write-key" not in log


def test_wrong_keys_are_warned_of_at_most_once_a_minute_per_api() -> None:
    # Given a clock the test moves, and a log it reads
    now = [0.0]
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    log = logging.getLogger("test.wrong_keys")
    log.addHandler(Lines())
    wrong_keys = WrongKeys(log, clock=lambda: now[0])
    # When an SDK sends with the wrong key all minute long, and another API's SDK once
    wrong_keys.refused("posthog", "/batch/", 401)
    for second in range(1, 60):
        now[0] = second
        wrong_keys.refused("posthog", "/batch/", 401)
        wrong_keys.flush()
    wrong_keys.refused("amplitude", "/2/httpapi", 400)
    # Then each API's first refusal was logged at once, and nothing more within the minute
    assert [line.split(":")[0] for line in lines] == ["posthog API", "amplitude API"]
    # And a minute after the first, the count since
    now[0] = 60.0
    wrong_keys.flush()
    assert lines[2] == (
        "posthog API: refused 59 more requests for a wrong or missing key in the last 60s"
        " (the last to /batch/, HTTP 401)"
    )
    # And at the stop, whatever is counted, however recent
    now[0] = 61.0
    wrong_keys.refused("posthog", "/capture/", 401)
    wrong_keys.flush()
    assert len(lines) == 3
    wrong_keys.flush(stopping=True)
    assert lines[3:] == [
        "posthog API: refused 1 more request for a wrong or missing key in the last 1s"
        " (the last to /capture/, HTTP 401)"
    ]


def test_requests_the_spool_cannot_take_are_warned_of_at_most_once_a_minute() -> None:
    # Given a clock the test moves, and a log it reads
    now = [0.0]
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    log = logging.getLogger("test.spool_refusals")
    log.addHandler(Lines())
    refusals = SpoolRefusals(log, clock=lambda: now[0])
    # When SDKs send all minute long to a full spool
    refusals.refused("POST /batch/", "full")
    for second in range(1, 60):
        now[0] = second
        refusals.refused("POST /v1/batch", "full")
        refusals.flush()
    # Then the first was logged at once, and nothing more within the minute
    assert lines == [
        "POST /batch/: not stored, answered 503: full; more requests the spool cannot take"
        " are logged at most once a minute"
    ]
    # And a minute after the first, the count since, with the last one's reason
    now[0] = 60.0
    refusals.flush()
    assert lines[1:] == [
        "answered 503 to 59 more requests in the last 60s: the spool could not take their"
        " events (the last, POST /v1/batch: full)"
    ]
    # And a refusal after a quiet minute is logged at once; at the stop, nothing is left
    now[0] = 200.0
    refusals.refused("POST /track", "disk full")
    assert lines[2:] == [
        "answered 503 to 1 more request in the last 140s: the spool could not take their"
        " events (the last, POST /track: disk full)"
    ]
    refusals.flush(stopping=True)
    assert len(lines) == 3


def test_the_destination_key_or_the_token_is_taken(tmp_path: Path, db: Path) -> None:
    config = keyed_config(tmp_path, token=TOKEN)
    with relay(db, "--config", str(config)) as running:
        by_key = httpx.post(
            running.url + "/track", json={"event": "e"}, headers={"X-API-Key": KEYS["datalyr"]}
        )
        by_token = httpx.post(
            running.url + "/track", json={"event": "e"}, headers={"X-API-Key": TOKEN}
        )
        generic = httpx.post(
            running.url + "/v1/events/datalyr",
            json={"event": "e"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        unknown = httpx.post(
            running.url + "/v1/events/elsewhere",
            json={"a": 1},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert [r.status_code for r in (by_key, by_token, generic)] == [200, 200, 200]
    assert unknown.status_code == 404  # the config names its destinations
    assert len(stored(db)) == 3
    assert TOKEN.encode() not in spool_bytes(db)


def test_an_api_whose_destination_the_config_does_not_define_gets_404_and_stores_nothing(
    tmp_path: Path, db: Path
) -> None:
    # Given a config that defines an Amplitude destination only, with a token, and sends
    # Segment's events to a destination it does not define either
    config = write_config(
        tmp_path / "spooler.toml",
        {
            "amplitude": {
                "type": "amplitude",
                "url": "http://127.0.0.1:9/amplitude",
                "api_key": KEYS["amplitude"],
            }
        },
        token=TOKEN,
    )
    metrics_port = free_port()
    # When each API's SDK posts, with the token
    with relay(db, "--config", str(config), "--metrics-port", str(metrics_port)) as running:
        amplitude = httpx.post(
            running.url + "/2/httpapi",
            json={"api_key": TOKEN, "events": [{"event_type": "a", "user_id": "user_1"}]},
        )
        unrouted = [
            httpx.post(
                running.url + "/v1/batch",
                json={"batch": [{"type": "track", "event": "e", "userId": "u"}]},
                auth=(TOKEN, ""),
            ),
            httpx.post(
                running.url + "/batch/",
                json={"api_key": TOKEN, "batch": [{"event": "e", "distinct_id": "d"}]},
            ),
            httpx.post(running.url + "/track", json={"event": "e"}, headers={"X-API-Key": TOKEN}),
        ]
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    # Then Amplitude's is taken; the others get a 404 that names their destination and
    # how to route them, as the generic endpoint's for a destination not configured
    assert amplitude.status_code == 200
    assert [r.status_code for r in unrouted] == [404, 404, 404]
    assert [r.json()["error"] for r in unrouted] == [
        f"no destination {name!r} is configured for the {api} API: define"
        f" [destinations.{name}] with type = '{api}', or route the API to a configured one"
        f" with serve.destinations.{api} in [serve]"
        for api, name in (("segment", "segment"), ("posthog", "posthog"), ("datalyr", "datalyr"))
    ]
    # ...nothing of theirs waits in the spool for a drain that would never come
    assert [destination for destination, _ in stored(db)] == ["amplitude"]
    # ...and they are counted as refused, where a path no API serves is
    assert 'spooler_serve_requests_total{api="unrouted",status="404"} 3.0' in scraped
    assert 'spooler_serve_requests_total{api="amplitude",status="200"} 1.0' in scraped


def test_an_api_routed_to_a_destination_the_config_does_not_define_stops_the_start(
    tmp_path: Path, db: Path
) -> None:
    # Given a config that routes Segment's events to a destination it does not define
    config = write_config(
        tmp_path / "spooler.toml",
        {"amplitude": {"type": "amplitude", "api_key": KEYS["amplitude"]}},
        destinations={"segment": "seg_prod"},
    )
    # When the relay starts, then it refuses, naming the route and how to mend it
    refused = spooler_cmd("serve", "--db", str(db), "--config", str(config))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "spooler: error: serve.destinations.segment: no destination 'seg_prod' is"
        " defined: define [destinations.seg_prod] with type = 'segment', or route segment to"
        " one that is"
    ]
    assert not db.exists()


def test_each_apis_events_go_to_its_mapped_destination_and_its_drain_delivers_them(
    tmp_path: Path, db: Path, receiver: Receiver
) -> None:
    # Given a config whose Amplitude and Datalyr events go to destinations of their own
    # names ([serve] destinations), each with its own key and URL
    config = write_config(
        tmp_path / "spooler.toml",
        {
            "amp_prod": {
                "type": "amplitude",
                "url": receiver.url + "/amp_prod/2/httpapi",
                "api_key": KEYS["amplitude"],
            },
            "dl_eu": {
                "type": "datalyr",
                "url": receiver.url + "/dl_eu/track",
                "api_key": KEYS["datalyr"],
            },
        },
        destinations={"amplitude": "amp_prod", "datalyr": "dl_eu"},
    )
    # When each SDK's request reaches the relay, with the key of the mapped destination
    with relay(db, "--config", str(config)) as running:
        amplitude = httpx.post(
            running.url + "/2/httpapi",
            json={
                "api_key": KEYS["amplitude"],
                "events": [{"event_type": "a", "user_id": "user_1"}],
            },
        )
        datalyr = httpx.post(
            running.url + "/track",
            json={"event": "d", "userId": "u_2"},
            headers={"X-API-Key": KEYS["datalyr"]},
        )
    assert (amplitude.status_code, datalyr.status_code) == (200, 200)
    # Then each event waits under its mapped destination, and none under the API's name
    assert [(d, e.get("event_type") or e.get("event")) for d, e in stored(db)] == [
        ("amp_prod", "a"),
        ("dl_eu", "d"),
    ]
    # ...and a drain of that one destination delivers it, to that destination's URL
    done = spooler_cmd(
        *("drain", "--db", str(db), "--config", str(config), "-d", "amp_prod", "--until-empty"),
        *("--max-time", "60"),
    )
    assert done.returncode == 0, done.stderr
    assert [(r.path, [e["event_type"] for e in r.events]) for r in receiver.requests] == [
        ("/amp_prod/2/httpapi", ["a"])
    ]
    assert [d for d, _ in stored(db)] == ["dl_eu"]  # the other destination's drain is its own


def test_a_full_spool_answers_503_with_retry_after_and_stores_nothing(
    tmp_path: Path, db: Path
) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text("[spool]\nmax_events = 2\n")
    with relay(db, "--config", str(config)) as running:
        fits = httpx.post(running.url + "/v1/events/x", json=[{"a": 1}, {"a": 2}])
        full = [
            httpx.post(running.url + "/v1/events/x", json={"a": 3}),
            httpx.post(
                running.url + "/v1/batch",
                json={"batch": [{"type": "track", "event": "e", "userId": "u"}]},
            ),
            httpx.post(
                running.url + "/2/httpapi",
                json={"api_key": "k", "events": [{"event_type": "a", "user_id": "user_1"}]},
            ),
            httpx.post(
                running.url + "/batch/",
                json={"api_key": "k", "batch": [{"event": "e", "distinct_id": "d"}]},
            ),
            httpx.post(running.url + "/track", json={"event": "e"}),
        ]
        assert running.stop() == 0
        assert running.process.stderr is not None
        log = running.process.stderr.read()
    assert fits.status_code == 200
    assert [(r.status_code, r.headers.get("retry-after")) for r in full] == [(503, "10")] * 5
    assert full[2].json()["code"] == 503  # what the Amplitude SDKs read
    assert [event for _, event in stored(db)] == [{"a": 1}, {"a": 2}]
    # The log says so once, and counts the others into one line (here at the stop), not
    # a line per request: SDKs send them again and again while the spool is full
    full_spool = "the spool holds 2 events, queued or dead, and 1 more would pass max_events=2"
    first, counted = re.findall(r" WARNING (.*)", log)
    assert first == (
        f"POST /v1/events/x: not stored, answered 503: {full_spool}; nothing was enqueued;"
        " more requests the spool cannot take are logged at most once a minute"
    )
    assert re.fullmatch(
        r"answered 503 to 4 more requests in the last \d+s: the spool could not take their"
        rf" events \(the last, POST /track: {full_spool}; nothing was enqueued\)",
        counted,
    ), counted


def one_request_per_api(url: str) -> list[httpx.Response]:
    """One event to each API and to the generic endpoint; the five answers."""
    return [
        httpx.post(url + "/v1/events/x", json={"a": 3}),
        httpx.post(
            url + "/v1/batch", json={"batch": [{"type": "track", "event": "e", "userId": "u"}]}
        ),
        httpx.post(
            url + "/2/httpapi",
            json={"api_key": "k", "events": [{"event_type": "a", "user_id": "user_1"}]},
        ),
        httpx.post(
            url + "/batch/", json={"api_key": "k", "batch": [{"event": "e", "distinct_id": "d"}]}
        ),
        httpx.post(url + "/track", json={"event": "e"}),
    ]


@pytest.mark.parametrize(
    ("call", "error", "committed"),
    [
        ("posix/io/rw/pwrite", errno.EIO, False),
        ("posix/io/rw/pwrite", errno.ENOSPC, False),
        # What a running SQLite meets when its file system is remounted read-only.
        ("posix/io/rw/pwrite", errno.EROFS, False),
        # The flush after the commit fails: the events are in the spool, but not safe
        # from a power cut, so the SDK is not told they are stored: it sends them again.
        ("posix/io/sync/fdatasync", errno.EIO, True),
    ],
    ids=["io-error", "disk-full", "read-only", "flush-fails"],
)
def test_a_failing_spool_answers_503_and_stores_nothing_then_recovers(
    tmp_path: Path, db: Path, call: str, error: int, committed: bool
) -> None:
    # Given a relay under libfiu, which takes events
    run, control = fiu(tmp_path)
    with relay(db, under=run) as running:
        before = httpx.post(running.url + "/v1/events/x", json={"a": 1})
        # When the disk fails every write of the spool
        switch(control, running.process.pid, f"enable name={call},failinfo={error}")
        failing = one_request_per_api(running.url)
        switch(control, running.process.pid, f"disable name={call}")
        # ...and then recovers
        after = httpx.post(running.url + "/v1/events/x", json={"a": 2})
    # Then each request during the failure got the answer its SDK sends again on, and
    # stored nothing (but what was committed before its flush failed); the relay took
    # events again once the disk did
    assert [(r.status_code, r.headers.get("retry-after")) for r in failing] == [(503, "10")] * 5
    assert failing[2].json()["code"] == 503
    assert (before.status_code, after.status_code) == (200, 200)
    events = [event for _, event in stored(db)]
    assert (events[0], events[-1], len(events)) == ({"a": 1}, {"a": 2}, 2 + 5 * committed)
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_only_loopback_without_a_token(tmp_path: Path, db: Path) -> None:
    refused = spooler_cmd("serve", "--db", str(db), "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 2
    assert "token" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not db.exists()


def serve_start_log(tmp_path: Path, db: Path, *args: str) -> str:
    """What ``spooler serve ARGS`` logs until it listens; it is then stopped."""
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        command = ["serve", "--db", str(db), "--port", str(free_port()), *args]
        process = subprocess.Popen([*SPOOLER, *command], stderr=stderr, text=True)
    try:
        assert wait_until(lambda: "serving on" in log.read_text(), timeout=30), log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    return log.read_text()


def test_the_relay_says_where_each_apis_events_go_and_which_take_any_key(
    tmp_path: Path, db: Path
) -> None:
    # Given keys for the destinations of two of the four APIs, and no token
    keyed = {api: {"type": api, "api_key": KEYS[api]} for api in ("amplitude", "segment")}
    config = write_config(tmp_path / "spooler.toml", keyed)
    # When it starts, then it says where their events go, and that it refuses the others
    log = serve_start_log(tmp_path, db, "--config", str(config))
    assert (
        "INFO APIs to destinations: amplitude -> amplitude, segment -> segment; refused (404),"
        " their destination not configured: posthog -> posthog, datalyr -> datalyr\n"
    ) in log
    # ...and warns of no API taking any key: each one it serves has its key
    assert "no key to check" not in log
    # Given no config, when it starts, then it serves every API, each with any key
    log = serve_start_log(tmp_path, db)
    assert (
        "INFO APIs to destinations: amplitude -> amplitude, segment -> segment,"
        " posthog -> posthog, datalyr -> datalyr\n"
    ) in log
    assert (
        "WARNING no key to check requests against for amplitude, segment, posthog, datalyr"
        " (no api_key"
    ) in log


def test_status_and_metrics_show_requests_and_commit_latency(tmp_path: Path, db: Path) -> None:
    metrics_port = free_port()
    with relay(db, "--metrics-port", str(metrics_port)) as running:
        # Given concurrent requests (they share commits) and a refused one
        def post_some() -> None:
            with httpx.Client() as client:
                for n in range(20):
                    client.post(running.url + "/v1/events/x", json={"n": n})

        threads = [threading.Thread(target=post_some) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        httpx.post(running.url + "/track", content=b"not json")
        httpx.post(running.url + "/v1/no-such-api", json={"n": 1})  # an SDK's wrong path
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert running.stop() == 0  # SIGTERM: the last report is written, exit 0
    status = json.loads(spooler_cmd("status", "--db", str(db), "--json").stdout)
    (report,) = status["services"].values()
    assert report["requests_accepted"] == 100 and report["events_accepted"] == 100
    assert report["refused_by_status"] == {"400": 1, "404": 1}
    assert report["stopped"] is True
    assert 0 < report["commits"] <= 100
    assert report["commit_ms"]["p50"] > 0
    table = spooler_cmd("status", "--db", str(db)).stdout
    assert "100 requests accepted (100 events), 2 refused (400: 1, 404: 1)" in table
    assert 'spooler_serve_requests_total{api="events",status="200"} 100.0' in scraped
    assert 'spooler_serve_requests_total{api="datalyr",status="400"} 1.0' in scraped
    assert 'spooler_serve_requests_total{api="unrouted",status="404"} 1.0' in scraped
    assert "spooler_serve_commit_seconds_count" in scraped


def test_the_relays_counts_read_in_the_singular_for_one() -> None:
    # Given a relay that accepted one request of one event
    stats = ServeStats("127.0.0.1:8420", clock=lambda: 1000.0)
    stats.accept("datalyr", "default", 1)
    # Then its log line and `spooler status`'s line say so
    assert stats.summary().startswith("1 request accepted (1 event), 0 refused; ")
    line = service_line("127.0.0.1:8420", json.loads(stats.report()), now=1000.0)
    assert "1 request accepted (1 event), 0 refused" in line


def test_an_idle_relay_reports_once_a_minute() -> None:
    # Given a relay's counters, on a clock the test moves
    now = [1000.0]
    stats = ServeStats("127.0.0.1:8420", clock=lambda: now[0])
    # Then a report is due at its start and after a change, not while nothing changes...
    assert stats.due_report() is not None
    assert stats.due_report() is None
    stats.accept("events", "default", 1)
    assert stats.due_report() is not None
    now[0] += IDLE_REPORT_INTERVAL - 1
    assert stats.due_report() is None
    # ...until a minute has passed: the report then says the relay still runs
    now[0] += 1
    report = stats.due_report()
    assert report is not None and json.loads(report)["updated_at"] == now[0]
    assert json.loads(report)["idle_report_s"] == IDLE_REPORT_INTERVAL


def test_status_tells_a_running_relay_from_a_stopped_and_a_silent_one(db: Path) -> None:
    # Given three relays' last reports: one a moment ago, one stopped two minutes ago,
    # and one five minutes ago that said nothing since (killed with SIGKILL, say)
    def report(address: str, age: float, *, stopped: bool = False) -> None:
        stats = ServeStats(address, clock=lambda: time.time() - age)
        stats.accept("events", "default", 1)
        with Spool(db) as spool:
            spool.store.record_service(address, stats.report(stopped=stopped))

    report("127.0.0.1:8420", 5)
    report("127.0.0.1:8421", 120, stopped=True)
    report("127.0.0.1:8422", 300)
    # When the operator asks for the status
    result = spooler_cmd("status", "--db", str(db))
    assert result.returncode == 0, result.stderr
    running, stopped, silent = result.stdout.splitlines()[-3:]
    # Then each line says which it is
    assert re.match(r"serve 127.0.0.1:8420 \(pid \d+, up \d+s, last report \d+s ago\): ", running)
    assert re.match(r"serve 127.0.0.1:8421 \(pid \d+, stopped 2m ago\): ", stopped)
    assert re.match(
        r"serve 127.0.0.1:8422 \(pid \d+, no report for 5m, though it reports every 60s:"
        r" killed, or cannot write to the spool\): 1 request accepted",
        silent,
    )


def test_sigterm_answers_the_requests_in_progress_and_exits_0(db: Path) -> None:
    with relay(db) as running, httpx.Client() as client:
        assert client.post(running.url + "/v1/events/x", json={"a": 1}).status_code == 200
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0
    assert len(stored(db)) == 1


# Runs the command after it with an open-file limit of 64, soft and hard, as `ulimit -n 64`
# as a user would (a hard limit the relay cannot raise).
_OPEN_FILES_64 = (
    sys.executable,
    "-c",
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64));"
    " os.execvp(sys.argv[1], sys.argv[1:])",
)


def test_connections_past_the_open_file_limit_get_503_not_a_reset(db: Path) -> None:
    # Given a relay whose open-file limit has no room for max_connections (1024)
    answers: collections.Counter[str] = collections.Counter()
    with relay(db, under=_OPEN_FILES_64) as running, contextlib.ExitStack() as held:
        port = int(running.url.rsplit(":", 1)[1])
        # When clients keep connections open past that room, one after another
        for _ in range(60):
            conn = held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            answers[_status_line(conn)] += 1
    # Then each is answered: 200 while there is room, then the 503 of too many
    # connections, rather than a reset or a close without an answer (accept's EMFILE)
    assert set(answers) == {"HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable"}, answers


def _status_line(conn: socket.socket) -> str:
    """The status line of the answer on ``conn``, or what came instead."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return "closed without an answer"
            data += chunk
    except ConnectionResetError:
        return "reset"
    return data.split(b"\r\n", 1)[0].decode("latin-1")
