"""HTTP clients that keep a ``spooler serve`` busy, each remembering, in the test's own
process, which events the relay answered 200.

Every event carries a field ``n`` unique to it (``"s3-amplitude1-300"``: the seed of
its clients, the client, then a count), so the test finds it in the spool, or at a
receiver, without the relay's event ids. A client is a thread with one keep-alive
connection, posting one API's requests one after the other: single events to
Datalyr's ``/track`` or to ``/v1/events/events``, or batches of 100 to Amplitude's
``/2/httpapi`` or PostHog's ``/batch/``. It stops at its first request that fails (the
relay is gone).

Usage::

    with Clients(relay_url, seed=1) as clients:
        wait_until(lambda: len(clients.answered()) >= 500)
        ...  # kill the relay
    clients.answered()  # every event of every request answered 200
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

__all__ = ["API_KEYS", "BATCH", "GENERIC", "KINDS", "Clients", "Kind"]

BATCH = 100  # events a request, for the batch APIs
# The destination the generic clients post to (/v1/events/GENERIC).
GENERIC = "events"
# The keys the clients present, each as its API carries it: a relay whose config gives
# the destinations keys checks them.
API_KEYS = {
    "amplitude": "amp-0123456789abcdef",
    "posthog": "phc_0123456789abcdef",
    "datalyr": "dk_0123456789abcdef",
    GENERIC: "events-0123456789abcdef",
}
# The padding of an event, in bytes: most events small, some big (a single one up to
# 40 KB, ten pages of overflow), so that a few rounds run checkpoints and restart the
# write-ahead log. Random, as the producers' of test_power_loss.py are.
SINGLE_PADS = (10, 10, 200, 3000, 40000)
BATCH_PADS = (10, 10, 200, 1000, 3000)


@dataclass(frozen=True)
class Kind:
    """One API's requests: where they go, their headers, and their body for events
    numbered ``numbers`` (``body(numbers, rng)``)."""

    name: str
    path: str
    events: int  # a request's
    headers: dict[str, str]
    body: Callable[[list[str], random.Random], Any]


def _pad(rng: random.Random, sizes: tuple[int, ...]) -> str:
    return rng.randbytes(rng.choice(sizes) // 2).hex()


def _amplitude(numbers: list[str], rng: random.Random) -> dict[str, Any]:
    events = [
        {"event_type": "e", "user_id": "user-1", "n": n, "pad": _pad(rng, BATCH_PADS)}
        for n in numbers
    ]
    return {"api_key": API_KEYS["amplitude"], "events": events}


def _posthog(numbers: list[str], rng: random.Random) -> dict[str, Any]:
    events = [
        {"event": "e", "distinct_id": "d", "n": n, "pad": _pad(rng, BATCH_PADS)} for n in numbers
    ]
    return {"api_key": API_KEYS["posthog"], "batch": events}


def _datalyr(numbers: list[str], rng: random.Random) -> dict[str, Any]:
    (n,) = numbers
    return {"event": "e", "userId": "u", "n": n, "pad": _pad(rng, SINGLE_PADS)}


def _generic(numbers: list[str], rng: random.Random) -> dict[str, Any]:
    (n,) = numbers
    return {"n": n, "pad": _pad(rng, SINGLE_PADS)}


KINDS = (
    Kind("datalyr", "/track", 1, {"X-API-Key": API_KEYS["datalyr"]}, _datalyr),
    Kind("generic", f"/v1/events/{GENERIC}", 1, {"X-API-Key": API_KEYS[GENERIC]}, _generic),
    Kind("amplitude", "/2/httpapi", BATCH, {}, _amplitude),
    Kind("posthog", "/batch/", BATCH, {}, _posthog),
)


class Clients:
    """``per_kind`` clients of each of ``KINDS`` posting to the relay at ``url`` until
    it fails them; ``answered()`` is every event the relay answered 200 so far. Clients
    of different ``seed``s number their events apart."""

    def __init__(self, url: str, *, seed: int, per_kind: int = 2) -> None:
        self._url = url
        self._answered: list[str] = []
        self._refused: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._post,
                args=(
                    kind,
                    f"s{seed}-{kind.name}{copy}",
                    random.Random(seed * 100 + copy * 10 + i),
                ),
                name=f"client-{kind.name}{copy}",
                daemon=True,
            )
            for i, kind in enumerate(KINDS)
            for copy in range(per_kind)
        ]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.join()

    def join(self, timeout: float = 60) -> None:
        """Wait for every client to stop (once the relay is gone, at its next request)."""
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                raise AssertionError(f"{thread.name} did not stop")

    def answered(self) -> list[str]:
        """The ``n`` of every event in a request answered 200, so far."""
        with self._lock:
            return list(self._answered)

    def refused(self) -> list[str]:
        """Every answer other than 200, as ``"STATUS body"``."""
        with self._lock:
            return list(self._refused)

    def _post(self, kind: Kind, name: str, rng: random.Random) -> None:
        # A timeout far above any commit's, even at a cut's moment on a loaded machine:
        # a client must stop because the relay is gone, never because it was slow.
        with httpx.Client(base_url=self._url, headers=kind.headers, timeout=60) as client:
            sent = 0
            while True:
                numbers = [f"{name}-{sent + i}" for i in range(kind.events)]
                sent += kind.events
                try:
                    answer = client.post(kind.path, json=kind.body(numbers, rng))
                except httpx.TransportError:
                    return  # the relay is gone (killed by the power cut)
                with self._lock:
                    if answer.status_code == 200:
                        self._answered.extend(numbers)
                    else:
                        self._refused.append(f"{answer.status_code} {answer.text[:200]}")
