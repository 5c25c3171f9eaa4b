"""Turning events into stored JSON text, and parsing command-line JSON."""

from __future__ import annotations

import json
import math
import time
import uuid

import pytest

from spooler import InvalidEventError
from spooler.events import encode_event, new_event_ids, parse_event


def test_encode_is_compact_json_that_round_trips() -> None:
    event = {"event": "signup", "props": {"plan": "pro", "n": [1, 2.5, None, True]}, "é": "ü"}
    text = encode_event(event)
    assert json.loads(text) == event
    assert " " not in text.replace("é", "")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([1, 2], "must be a dict"),
        ("text", "must be a dict"),
        ({"x": object()}, "not JSON-serialisable"),
        ({"x": math.nan}, "not JSON-serialisable"),
        ({"x": math.inf}, "not JSON-serialisable"),
        ({"x": {1, 2}}, "not JSON-serialisable"),
        ({"x": "\ud800"}, "not JSON-serialisable"),
    ],
)
def test_encode_rejects_what_is_not_a_json_object(event: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        encode_event(event)


def test_encode_enforces_the_size_limit_in_bytes() -> None:
    assert encode_event({"x": "a" * 10}, max_bytes=18)  # {"x":"aaaaaaaaaa"} is 18 bytes
    with pytest.raises(InvalidEventError, match="19 bytes serialised, over the 18-byte limit"):
        encode_event({"x": "a" * 11}, max_bytes=18)


def test_parse_event_accepts_objects_only() -> None:
    assert parse_event('{"a": 1}') == {"a": 1}
    for text, message in [
        ("[1]", "expected a JSON object"),
        ("{", "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
        ('{"a": Infinity}', "not valid JSON"),
    ]:
        with pytest.raises(InvalidEventError, match=message):
            parse_event(text)


def test_event_ids_are_unique_version_7_uuids_in_time_order() -> None:
    first = new_event_ids(10_000)
    later = new_event_ids(1)
    parsed = [uuid.UUID(i) for i in first + later]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert [str(u) for u in parsed] == first + later  # canonical lower-case form
    assert len(set(first + later)) == len(first) + 1
    # The first 48 bits are the Unix time in milliseconds.
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] / 1000 - time.time()) < 60
