"""Turning events into stored JSON text, and parsing command-line JSON."""

from __future__ import annotations

import json
import math

import pytest

from spooler import InvalidEventError
from spooler.events import encode_event, parse_event


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
