"""Turning events into stored JSON text, and parsing command-line JSON."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable

import pytest

from spooler import InvalidEventError
from spooler.events import (
    encode_event,
    encode_event_array,
    new_event_id,
    new_event_id_block,
    new_event_ids,
    parse_event,
    split_event_ids,
)


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


def test_encode_names_a_cycle_and_refuses_nesting_too_deep() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = [cyclic]
    with pytest.raises(InvalidEventError, match="Circular reference detected"):
        encode_event(cyclic)
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"x": deep}
    with pytest.raises(InvalidEventError, match="not JSON-serialisable: maximum recursion"):
        encode_event(deep)
    # and the encoder is as good as new afterwards
    assert encode_event({"after": [1, {"a": None}]}) == '{"after":[1,{"a":null}]}'


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
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to parse"),
    ]:
        with pytest.raises(InvalidEventError, match=message):
            parse_event(text)


@pytest.mark.parametrize(
    "make_ids",
    [
        new_event_ids,
        lambda count: split_event_ids(new_event_id_block(count)),
        lambda count: [new_event_id() for _ in range(count)],
    ],
    ids=["one by one", "as a block", "one at a time"],
)
def test_event_ids_are_unique_version_7_uuids_in_time_order(
    make_ids: Callable[[int], list[str]],
) -> None:
    first = make_ids(10_000)
    later = make_ids(1)
    parsed = [uuid.UUID(i) for i in first + later]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert [str(u) for u in parsed] == first + later  # canonical lower-case form
    assert len(set(first + later)) == len(first) + 1
    # The first 48 bits are the Unix time in milliseconds.
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] / 1000 - time.time()) < 60
    # Every random digit is random: each of the 19 takes many values across the ids.
    digits = [i[15:18] + i[19:23] + i[24:] for i in first]
    assert all(len({d[k] for d in digits}) >= 4 for k in range(19))


def test_an_id_block_is_the_ids_end_to_end() -> None:
    block = new_event_id_block(3)
    assert len(block) == 3 * 36 and block.isascii()
    assert b"".join(i.encode() for i in split_event_ids(block)) == block


def test_the_bulk_encoder_refuses_what_encode_event_refuses() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    for bad in [cyclic, {"f": math.nan}, {"s": {1, 2}}, ["not a dict"]]:
        assert encode_event_array([{"ok": 1}, bad]) is None
    assert encode_event_array([{"a": 1}, {"b": "é"}]) == ('[{"a":1},{"b":"é"}]', 17)
