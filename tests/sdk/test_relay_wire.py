"""The official SDKs pointed at ``spooler serve``, then ``spooler drain``, against
the same SDKs pointed straight at the API: the same calls, the same requests, field by
field (see wire.py), but for what the drain says of itself (its User-Agent).

Each SDK makes the calls of its wire test (test_wire_*.py) twice: once to a receiver
standing in for the API, once to a real relay process (the destination configured as
the README shows it), whose spool the drain then delivers to another receiver.
"""

from __future__ import annotations

import atexit
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import posthog
import pytest
import segment.analytics as segment_sdk
from amplitude import Amplitude as OfficialAmplitude
from amplitude import Config
from helpers.processes import wait_until
from helpers.spools import rows
from node_sdks import require_node
from relay import relay, write_config
from test_wire_amplitude import CALLS as AMPLITUDE_CALLS
from test_wire_amplitude import KEY as AMPLITUDE_KEY
from test_wire_amplitude import NOT_COMPARED as AMPLITUDE_NOT_COMPARED
from test_wire_amplitude import SDK_NAMES as AMPLITUDE_NAMES
from test_wire_amplitude import KeptStorage, answer
from test_wire_datalyr import CALLS as DATALYR_CALLS
from test_wire_datalyr import KEY as DATALYR_KEY
from test_wire_datalyr import SDK_NAMES as DATALYR_NAMES
from test_wire_datalyr import official as datalyr_official
from test_wire_posthog import CALLS as POSTHOG_CALLS
from test_wire_posthog import KEY as POSTHOG_KEY
from test_wire_posthog import SDK_NAMES as POSTHOG_NAMES
from test_wire_segment import CALLS as SEGMENT_CALLS
from test_wire_segment import KEY as SEGMENT_KEY
from test_wire_segment import SDK_NAMES as SEGMENT_NAMES
from wire import SPOOLER_NAMES, Run, arrived, assert_same_wire, drain, views

from spooler.testing import Receiver

Call = Callable[[Any], Any]
PATHS = {
    "amplitude": "/2/httpapi",
    "datalyr": "/track",
    "posthog": "/batch/",
    "segment": "/v1/batch",
}


def relayed(
    tmp_path: Path,
    ours: Receiver,
    api: str,
    key: str,
    send: Callable[[str, Callable[[], bool]], None],
    events: int,
    **settings: Any,
) -> None:
    """``send(relay_url, stored)`` through a real ``spooler serve`` whose destination
    ``api`` has ``key`` (``stored()``: whether its spool holds ``events`` events); then
    ``spooler drain`` delivers them to ``ours`` (``settings``: more of the destination's
    keys)."""
    db = tmp_path / "spool.db"
    table = {"type": api, "url": ours.url + PATHS[api], "api_key": key}
    config = write_config(tmp_path / "relay.toml", {api: table})
    with relay(db, "--config", str(config)) as running:
        send(running.url, lambda: len(rows(db, "SELECT id FROM queue")) >= events)
    drain(db, api, api, key, ours.url + PATHS[api], **settings)


def amplitude_analytics(url: str, calls: list[Call], sent: Callable[[], bool]) -> None:
    """``calls`` with amplitude-analytics sending to ``url``, flushed until ``sent()``."""
    buffer = KeptStorage()
    client = OfficialAmplitude(
        AMPLITUDE_KEY,
        Config(
            server_url=url + "/2/httpapi", flush_interval_millis=600_000, storage_provider=buffer
        ),
    )
    try:
        for call in calls:
            call(client)

        def flushed() -> bool:
            client.flush()  # it sends from a thread of its own: until what it sent arrived
            return sent()

        assert wait_until(flushed, timeout=30)
    finally:
        client.shutdown()
        buffer.wake()


def test_amplitude_analytics_through_the_relay_sends_what_it_sends_to_amplitude(
    tmp_path: Path,
) -> None:
    run = Run()
    # Given every call of the wire test but its short user id (Amplitude refuses it: so
    # does the relay, and the SDK drops it), group identifies without a user id included
    calls = [call for index, call in enumerate(AMPLITUDE_CALLS) if index != 1]
    with Receiver() as theirs, Receiver() as ours:
        theirs.respond = answer
        amplitude_analytics(theirs.url, calls, lambda: bool(theirs.requests))
        # When the SDK sends them to the relay instead, and the drain delivers them
        relayed(
            tmp_path,
            ours,
            "amplitude",
            AMPLITUDE_KEY,
            lambda url, stored: amplitude_analytics(url, calls, stored),
            len(theirs.delivered),
        )
    # Then Amplitude gets the SDK's request, field by field (its insert_ids and times)
    assert_same_wire(
        views(theirs, ignore_headers=AMPLITUDE_NOT_COMPARED),
        views(ours, ignore_headers=AMPLITUDE_NOT_COMPARED),
        run,
        AMPLITUDE_NAMES,
        AMPLITUDE_NAMES | SPOOLER_NAMES,
    )


def posthog_python(url: str, calls: list[Call], sent: Callable[[], bool], **options: Any) -> None:
    """``calls`` with posthog-python (``options``: its own) sending to ``url``, flushed:
    ``sent()`` must hold."""
    client = posthog.Posthog(POSTHOG_KEY, host=url, flush_interval=60, **options)
    try:
        for call in calls:
            call(client)
        client.flush()
        assert wait_until(sent)
    finally:
        client.shutdown()


def test_a_historical_migration_through_the_relay_stays_one(tmp_path: Path) -> None:
    run = Run()
    calls = POSTHOG_CALLS[:3]
    # Given a posthog-python client made for importing old data, sending to PostHog
    with Receiver() as theirs, Receiver() as ours:
        posthog_python(theirs.url, calls, lambda: bool(theirs.requests), historical_migration=True)
        # When it sends to the relay instead, and the drain delivers the events
        relayed(
            tmp_path,
            ours,
            "posthog",
            POSTHOG_KEY,
            lambda url, stored: posthog_python(url, calls, stored, historical_migration=True),
            len(theirs.delivered),
        )
    # Then PostHog is told the request is a historical migration, as the SDK tells it
    assert_same_wire(views(theirs), views(ours), run, POSTHOG_NAMES, POSTHOG_NAMES | SPOOLER_NAMES)
    assert json.loads(arrived(ours)[0].body)["historical_migration"] is True


def analytics_python(url: str, calls: list[Call], sent: Callable[[], bool]) -> None:
    """``calls`` with a segment-analytics-python client sending to ``url`` in one
    request, flushed: ``sent()`` must hold."""
    client = segment_sdk.Client(SEGMENT_KEY, host=url, upload_size=len(calls), upload_interval=60)
    try:
        for call in calls:
            call(client)
        client.flush()
        assert wait_until(sent)
    finally:
        # Its consumer thread waits out upload_interval for a next batch that never
        # comes: stop it without waiting (a daemon thread), and not at exit either.
        for consumer in client.consumers:
            consumer.pause()
        atexit.unregister(client.join)


@pytest.mark.parametrize(
    "api, sdk, calls, key, names",
    [
        # PostHog: its uuids, timestamps, $lib...
        ("posthog", posthog_python, POSTHOG_CALLS, POSTHOG_KEY, POSTHOG_NAMES),
        # Segment: its messageIds, timestamps, context.library...; sentAt is the drain's
        ("segment", analytics_python, SEGMENT_CALLS, SEGMENT_KEY, SEGMENT_NAMES),
    ],
)
def test_a_python_sdk_through_the_relay_sends_what_it_sends_to_its_api(
    tmp_path: Path,
    api: str,
    sdk: Callable[[str, list[Call], Callable[[], bool]], None],
    calls: list[Call],
    key: str,
    names: frozenset[str],
) -> None:
    run = Run()
    # Given every call of the SDK's wire test, through the SDK to its API
    with Receiver() as theirs, Receiver() as ours:
        sdk(theirs.url, calls, lambda: bool(theirs.requests))
        # When the SDK sends them to the relay instead, and the drain delivers them
        relayed(
            tmp_path,
            ours,
            api,
            key,
            lambda url, stored: sdk(url, calls, stored),
            len(theirs.delivered),
        )
    # Then the API gets the SDK's request, field by field (when the drain sent it, as
    # Segment's sentAt and PostHog's sent_at, is the drain's)
    assert_same_wire(views(theirs), views(ours), run, names, names | SPOOLER_NAMES)


def test_datalyr_api_through_the_relay_sends_what_it_sends_to_datalyr(tmp_path: Path) -> None:
    require_node()
    run = Run()
    # Given every call of the wire test, through @datalyr/api (Node) to Datalyr, a
    # request each, one after the other
    with Receiver() as theirs, Receiver() as ours:
        outcomes = datalyr_official(theirs, DATALYR_CALLS)
        # When the SDK sends them to the relay instead, and the drain delivers them in order
        relayed(
            tmp_path,
            ours,
            "datalyr",
            DATALYR_KEY,
            lambda url, stored: datalyr_to(url, outcomes, stored),
            len(theirs.delivered),
            concurrency=1,
        )
    # Then Datalyr gets the SDK's requests, field by field (X-API-Key, eventId, times...)
    assert_same_wire(views(theirs), views(ours), run, DATALYR_NAMES, DATALYR_NAMES | SPOOLER_NAMES)


def datalyr_to(url: str, outcomes: list[str], sent: Callable[[], bool]) -> None:
    """The wire test's calls with @datalyr/api sending to ``url``: each does what it did
    when sent to Datalyr, and ``sent()`` must hold."""
    assert datalyr_official(SimpleNamespace(url=url), DATALYR_CALLS) == outcomes
    assert wait_until(sent)
