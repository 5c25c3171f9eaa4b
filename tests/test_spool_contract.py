"""What a ``Spool`` does on every backend (SQLite and PostgreSQL): events stored exactly as
they are encoded, all or nothing, within the limits; dead letters added by hand; a
closed spool. Read back through the public interface only: what is stored is what a
claim hands a drain. (The store's own contract is test_store_contract.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spooler import ConfigError, InvalidEventError, Spool, SpoolFullError, StoreError
from spooler.events import encode_event

# Events whose JSON text the database must split back out of the array exactly as
# encode_event writes it: escapes, non-ASCII (BMP and astral), numbers of every shape.
TRICKY_EVENTS = [
    {},
    {"s": 'quote " backslash \\ slash / tab \t newline \n nul \x00 del \x7f'},
    {"é": "ünïcødé \u2028 \u2029 😀 中文", "": ""},
    {"n": [0, -0.0, 1.5e-07, 1e16, 2**70, -(2**63), 3.141592653589793, True, False, None]},
    {"nested": {"a": [{"b": [[], {}]}], "},{": "],["}},
]


@pytest.fixture
def spool(spool_location: str) -> Iterator[Spool]:
    """A fresh spool on each backend."""
    with Spool(spool_location) as opened:
        yield opened


def stored(spool: Spool, destination: str = "default") -> list[tuple[str, str]]:
    """(event id, body) of each event queued for ``destination``, in enqueue order, as a
    claim hands them to a drain (the lease given back at once)."""
    now = time.time()
    batch = spool.store.claim(destination, 10_000, "reader", due_by=now, lease_until=now + 60)
    spool.store.release_leases("reader", now=now)
    return [(event.event_id, event.body) for event in batch.events] if batch else []


def fast_path_outcomes(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each call of the one-statement bulk insert returned (False: it fell back)."""
    taken: list[bool] = []
    fast = spool.store.insert_array

    def spy(*args: object, **kwargs: object) -> bool:
        taken.append(fast(*args, **kwargs))  # type: ignore[arg-type]
        return taken[-1]

    monkeypatch.setattr(spool.store, "insert_array", spy)
    return taken


# -- enqueue_many --------------------------------------------------------------------


def test_enqueue_many_stores_each_event_as_encode_event_writes_it(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = fast_path_outcomes(spool, monkeypatch)
    ids = spool.enqueue_many(TRICKY_EVENTS)
    assert taken == [True]  # the one-statement path, not the per-event fallback
    assert stored(spool) == [(i, encode_event(e)) for i, e in zip(ids, TRICKY_EVENTS, strict=True)]
    sizes = sum(len(encode_event(e).encode()) for e in TRICKY_EVENTS)
    assert spool.store.totals() == (len(TRICKY_EVENTS), sizes)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


# One spool for every example: each one's events are delivered before the next.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.dictionaries(st.text(), JSON_VALUES, max_size=5), min_size=1, max_size=8))
def test_enqueue_many_round_trips_any_json_objects(
    spool: Spool, events: list[dict[str, object]]
) -> None:
    ids = spool.enqueue_many(events)
    assert stored(spool) == [(i, encode_event(e)) for i, e in zip(ids, events, strict=True)]
    now = time.time()
    batch = spool.store.claim("default", 100, "me", due_by=now, lease_until=now + 60)
    assert spool.store.settle(
        batch.lease, now=now, delivered=[e.rowid for e in batch.events]
    ) == len(events)


def test_enqueue_many_checks_each_event_against_the_limit_not_the_whole_batch(
    spool_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Spool(spool_location) as spool:
        spool.enqueue({"big": "x" * 2000})  # stored before the limit was lowered
    with Spool(spool_location, max_event_bytes=1000) as spool:
        taken = fast_path_outcomes(spool, monkeypatch)
        under = [{"pad": "y" * 900}, {"pad": "z" * 900}, {"pad": "w" * 900}]
        spool.enqueue_many(under)  # 2.7 KB together, each under 1000 bytes
        assert taken == [True]
        with pytest.raises(InvalidEventError, match=r"event 1: .* over the 1000-byte limit"):
            spool.enqueue_many([{"n": 0}, {"pad": "v" * 1000}])
        assert taken == [True, False]
        assert spool.status().total.queued == 4


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"pad": "x" * 2000}, "over the 1000-byte limit"),
        ({"s": "\ud800"}, "not JSON-serialisable"),
        ({"f": float("inf")}, "not JSON-serialisable"),
        ({"f": float("nan")}, "not JSON-serialisable"),
        (["not", "a", "dict"], "must be a dict"),
    ],
)
def test_enqueue_many_names_the_bad_event_and_stores_none(
    spool_location: str, bad: object, message: str
) -> None:
    with Spool(spool_location, max_event_bytes=1000) as spool:
        [before] = spool.enqueue_many([{"before": 1}])
        with pytest.raises(InvalidEventError, match=f"event 2: .*{message}") as info:
            spool.enqueue_many([{"n": 0}, {"n": 1}, bad, {"n": 3}])  # type: ignore[list-item]
        assert info.value.index == 2
        assert stored(spool) == [(before, '{"before":1}')]
        assert spool.store.totals() == (1, 12)


# -- enqueue_json ----------------------------------------------------------------------


def test_enqueue_json_stores_each_text_as_enqueue_would_store_its_object(spool: Spool) -> None:
    texts = (json.dumps(event, indent=2) for event in TRICKY_EVENTS)  # a generator, spaced out
    ids = spool.enqueue_json(texts, destination="amp")
    assert stored(spool, "amp") == [
        (i, encode_event(e)) for i, e in zip(ids, TRICKY_EVENTS, strict=True)
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (json.dumps({"pad": "x" * 2000}), "over the 1000-byte limit"),
        ('{"a": NaN}', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"a": ', "not valid JSON: Expecting value"),
        ({"a": 1}, r"a JSON text \(str\), not dict: enqueue_many takes dicts"),
        (None, r"a JSON text \(str\), not NoneType"),
    ],
)
def test_enqueue_json_names_the_bad_text_and_stores_none(
    spool_location: str, bad: object, message: str
) -> None:
    read: list[object] = []

    def texts() -> Iterator[object]:
        for text in ['{"n": 0}', '{"n": 1}', bad, '{"n": 3}']:
            read.append(text)
            yield text

    with Spool(spool_location, max_event_bytes=1000) as spool:
        before = spool.enqueue({"before": 1})
        with pytest.raises(InvalidEventError, match=f"event 2: .*{message}") as info:
            spool.enqueue_json(texts())
        assert info.value.index == 2 and read[-1] == bad  # it stopped at the bad text
        assert stored(spool) == [(before, '{"before":1}')]


# -- limits ----------------------------------------------------------------------------


def test_limits_raise_spool_full_and_keep_earlier_events(spool_location: str) -> None:
    with Spool(spool_location, max_events=3, max_bytes=10_000) as spool:
        ids = spool.enqueue_many([{"n": 1}, {"n": 2}])
        with pytest.raises(SpoolFullError, match="max_events=3"):
            spool.enqueue_many([{"n": 3}, {"n": 4}])
        ids.append(spool.enqueue({"n": 3}))  # exactly at the limit
        with pytest.raises(SpoolFullError, match="holds 3 events, queued or dead, and 1 more"):
            spool.enqueue({"n": 4})
        assert stored(spool) == [(i, f'{{"n":{n}}}') for n, i in enumerate(ids, 1)]
    with (
        Spool(spool_location, max_bytes=30) as spool,
        pytest.raises(SpoolFullError, match="take 21 bytes, and 30 more would pass max_bytes=30"),
    ):
        spool.enqueue({"pad": "x" * 20})


def test_dead_events_count_toward_the_limit_until_purged(spool_location: str) -> None:
    with Spool(spool_location, max_events=2) as spool:
        first = spool.enqueue({"n": 1})
        spool.dead_letters.add({"n": 0}, destination="default", reason="manual", error="x")
        with pytest.raises(SpoolFullError, match="queued or dead"):
            spool.enqueue({"n": 2})
        assert spool.dead_letters.purge(everything=True) == 1
        second = spool.enqueue({"n": 2})
        assert stored(spool) == [(first, '{"n":1}'), (second, '{"n":2}')]


# -- dead letters and closing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "reason", "message"),
    [("bad name", "invalid", "bad destination name 'bad name'"), ("d", "", "needs a reason")],
)
def test_adding_a_dead_letter_checks_its_destination_and_reason(
    spool: Spool, destination: str, reason: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        spool.dead_letters.add({"n": 1}, destination=destination, reason=reason, error="x")
    assert spool.status().total.dead == 0


def test_a_closed_spool_says_so(spool_location: str) -> None:
    with Spool(spool_location) as spool:
        spool.enqueue({"n": 1})
    for use in (lambda: spool.enqueue({"n": 2}), spool.status, lambda: spool.enqueue_many([{}])):
        with pytest.raises(StoreError, match=r": this spool was closed$"):
            use()
    spool.close()  # closing twice is harmless
    with Spool(spool_location) as again:
        assert again.status().total.queued == 1
