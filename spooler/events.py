"""Turning caller-supplied events into the JSON text the spool stores."""

from __future__ import annotations

import json
import os
import re
import time

from .errors import ConfigError, InvalidEventError

# typing.TYPE_CHECKING without importing typing (its cost: benchmarks/import_time.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = [
    "DEFAULT_DESTINATION",
    "DEFAULT_MAX_EVENT_BYTES",
    "EVENT_ID_CHARS",
    "OPTIONS_KEY",
    "check_destination_name",
    "encode_event",
    "encode_event_array",
    "encode_events",
    "events_phrase",
    "new_event_id",
    "new_event_id_block",
    "new_event_ids",
    "parse_event",
    "split_event_ids",
    "utf8_size",
]

#: The destination of an event enqueued without one, and of a drain's flags without -d.
DEFAULT_DESTINATION = "default"
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024

# One encoder for every event: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# The bulk path's encoder skips the check for circular references (~10% of its time):
# a cycle still fails, as a RecursionError, and the events are then encoded one by one
# with _ENCODER, which names the event and the fault.
_ARRAY_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
)
# encode_event's own fast path: the C encoder JSONEncoder.encode builds for every call
# (json.encoder.c_make_encoder, undocumented: where it is missing, _ENCODER does it all),
# built once, with _ENCODER's settings but without its check for cycles, which needs a
# fresh memo per call. The same text, ~4 us less per durable enqueue right after its
# flush, where all Python runs cold (docs/performance.md, target 1). A cycle fails as a
# RecursionError, and _ENCODER then names it.
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = _make_c_encoder and _make_c_encoder(
    None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
)
EVENT_ID_CHARS = 36  # an event id: a UUID string
#: The reserved key of a stored event that holds the request options the API takes per
#: request, kept with each event by the client that set them (Amplitude's
#: ``{"min_id_length": 3}``, PostHog's ``{"historical_migration": true}``). The
#: destination takes it out of the event it sends, and sends events whose options differ
#: in separate requests.
OPTIONS_KEY = "$options"
# Byte -> the same byte with its low nibble made an RFC 9562 variant digit (8, 9, a, b).
_VARIANT_NIBBLE = bytes((b & 0xF0) | 0x08 | (b & 0x03) for b in range(256))
# Hex digit -> the RFC 9562 variant digit (8, 9, a, b) with the same low two bits.
_VARIANT_DIGIT = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}
# Where in an id the random digits go ("tttttttt-tttt-7rrr-vrrr-rrrrrrrrrrrr"), in the
# order _random_digits gives them, the variant digit v fourth.
_RANDOM_DIGIT_POSITIONS = (15, 16, 17, *range(19, 23), *range(24, 36))


def new_event_ids(count: int) -> list[str]:
    """``count`` fresh event ids: version 7 UUID strings (RFC 9562).

    Time-ordered, so they sort by enqueue time and land at the right edge of the
    dead-letter table's unique index instead of on a random page; and built from one
    ``os.urandom`` call, about 7x faster per id than ``str(uuid.uuid4())`` in a batch.
    74 random bits per id keep them unique across processes.
    """
    head = _id_head()
    digits = _random_digits(count)
    return [
        f"{head}{digits[i : i + 3]}-{digits[i + 3 : i + 7]}-{digits[i + 7 : i + 19]}"
        for i in range(0, 20 * count, 20)
    ]


def new_event_id() -> str:
    """One fresh event id, as ``new_event_ids`` makes them: for one event, about twice as
    fast as a list of one."""
    digits = os.urandom(10).hex()  # 20 digits, 19 used, the 4th made a variant digit
    return f"{_id_head()}{digits[:3]}-{_VARIANT_DIGIT[digits[3]]}{digits[4:7]}-{digits[7:19]}"


def new_event_id_block(count: int) -> bytes:
    """``count`` fresh event ids, as ``new_event_ids`` makes them, in one ASCII block of
    ``EVENT_ID_CHARS`` bytes per id: for bulk inserts, which pass SQLite the block.

    Built with one slice assignment per digit position across all ids, instead of a
    string format per id: about 3x faster for a large batch, slower for a few ids.
    """
    block = bytearray(f"{_id_head()}xxx-xxxx-xxxxxxxxxxxx".encode("ascii") * count)
    digits = _random_digits(count).encode("ascii")
    for digit, position in enumerate(_RANDOM_DIGIT_POSITIONS):
        block[position::EVENT_ID_CHARS] = digits[digit::20]
    return bytes(block)


def split_event_ids(block: bytes) -> list[str]:
    """The ids of a ``new_event_id_block``, one string each."""
    text = block.decode("ascii")
    return [text[i : i + EVENT_ID_CHARS] for i in range(0, len(text), EVENT_ID_CHARS)]


def _id_head() -> str:
    """The part every id made now shares: the Unix time in ms and the version digit."""
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    return f"{stamp[:8]}-{stamp[8:]}-7"


def _random_digits(count: int) -> str:
    """20 random hex digits per id (19 used), the 4th of each made a variant digit."""
    noise = bytearray(os.urandom(10 * count))
    noise[1::10] = noise[1::10].translate(_VARIANT_NIBBLE)
    return noise.hex()


def utf8_size(text: str) -> int:
    """Bytes ``text`` takes as UTF-8, without encoding it when it is plain ASCII."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def encode_event(event: Any, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> str:
    """Return ``event`` as compact JSON text, or raise ``InvalidEventError``.

    The text is what gets stored and, later, sent verbatim: the drain builds request
    bodies by joining these texts instead of parsing and re-serialising each event.
    """
    if not isinstance(event, dict):
        raise InvalidEventError(
            f"an event must be a dict (a JSON object), not {type(event).__name__}"
        )
    try:
        try:
            text = "".join(_C_ENCODER(event, 0)) if _C_ENCODER else _ENCODER.encode(event)
        except RecursionError:  # a cycle, or nesting too deep: _ENCODER says which
            text = _ENCODER.encode(event)
        size = utf8_size(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEventError(f"event is not JSON-serialisable: {exc}") from None
    if size > max_bytes:
        raise InvalidEventError(
            f"event is {size} bytes serialised, over the {max_bytes}-byte limit"
        )
    return text


def encode_event_array(events: list[Any]) -> tuple[str, int] | None:
    """All of ``events`` as one JSON array text, and the bytes its events take.

    One call of the C encoder instead of one per event: the fast path of
    ``enqueue_many``, where SQLite splits the array back into one text per event, the
    same text ``encode_event`` makes (a test checks this). ``None`` if an event would
    fail ``encode_event``; the caller encodes one by one to say which. The size check
    against the per-event limit is left to the caller.
    """
    if not all(isinstance(event, dict) for event in events):
        return None
    try:
        text = _ARRAY_ENCODER.encode(events)
        size = utf8_size(text)
    except (TypeError, ValueError, RecursionError):
        return None
    # The array is "[" + the events joined by "," + "]": the events alone are the rest.
    return text, size - len(events) - 1


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_event(text: str) -> dict[str, Any]:
    """Parse one JSON object from text (a command-line argument or a JSON Lines line).

    Raises ``InvalidEventError`` for malformed JSON, NaN/Infinity, or a non-object.
    """
    if not isinstance(text, str):
        hint = ": enqueue_many takes dicts" if isinstance(text, dict) else ""
        raise InvalidEventError(f"expected a JSON text (str), not {type(text).__name__}{hint}")
    text = text.strip()
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        where = (
            f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} column {exc.colno}"
        )
        raise InvalidEventError(f"not valid JSON: {exc.msg} at {where}") from None
    except ValueError as exc:
        raise InvalidEventError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEventError("nested too deeply to parse") from None
    if not isinstance(value, dict):
        raise InvalidEventError(f"expected a JSON object, got {type(value).__name__}")
    return value


def encode_events(
    events: Iterable[Any], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES, texts: bool = False
) -> list[str]:
    """Each event as ``encode_event`` stores it; on the first bad one,
    ``InvalidEventError`` with its ``index``. With ``texts``, the events are JSON object
    texts, each read by ``parse_event`` first.

    Only the compact texts are kept, not the parsed objects: a large input (a JSON
    Lines backfill) takes about its own size in memory.
    """
    encoded = []
    for index, event in enumerate(events):
        try:
            encoded.append(
                encode_event(parse_event(event) if texts else event, max_bytes=max_bytes)
            )
        except InvalidEventError as exc:
            raise InvalidEventError(f"event {index}: {exc}", index=index) from None
    return encoded


def events_phrase(count: int) -> str:
    """``"1 event"``, ``"3 events"``: for messages that count events."""
    return f"{count} event" if count == 1 else f"{count} events"


_DESTINATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_destination_name(name: str) -> str:
    """Return ``name`` if it is a valid destination name, else raise ``ConfigError``."""
    if not isinstance(name, str) or not _DESTINATION_NAME.fullmatch(name):
        raise ConfigError(
            f"bad destination name {name!r}: use letters, digits, '_', '.', '-' (at most 128)"
        )
    return name
