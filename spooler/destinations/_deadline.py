"""A total deadline for each request: connecting, sending and the whole answer.

httpx's timeouts bound each network operation, not the request (it has no total
timeout: encode/httpx#1450): a receiver that trickles its status line and headers a
byte at a time, each within the read timeout, holds a request, and its events' lease,
as long as it likes. So each worker thread sends through an httpx client of its own,
with one connection, whose socket httpx's ``trace`` extension reports as it connects;
and one watchdog thread shuts that socket down when the request's deadline passes,
which ends whatever read or write the request is blocked in.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["DeadlineClients", "Lane"]

# The trace events whose return value is a new connection's stream (httpcore's names,
# prefixed by the part of httpcore that made it: "connection.", "proxy.").
_CONNECTED = ("connect_tcp.complete", "connect_unix_socket.complete", "start_tls.complete")


class Lane:
    """One worker thread's client, the socket of its connection, and whether the
    watchdog cut off its current request."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.cut_off = False
        #: Request extensions that make httpx report the connection's socket here.
        self.extensions = {"trace": self._trace}
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpx's trace callback: keep the socket of each new connection (TLS wraps it
        in another), and shut it at once if the deadline passed while it connected."""
        if event.endswith(_CONNECTED):
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
                if self.cut_off:
                    _shut(self._socket)

    def cut(self) -> None:
        """End the current request: its socket is shut down (the watchdog calls this)."""
        with self._lock:
            self.cut_off = True
            if self._socket is not None:
                _shut(self._socket)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: it wakes a thread blocked on
    # the socket at once (close() would not), and leaves the TLS object to its owner.
    with contextlib.suppress(OSError):  # already closed: that request is over
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class DeadlineClients:
    """httpx clients, one per thread, whose requests end at a total deadline.

    Usage::

        clients = DeadlineClients(lambda: httpx.Client(...))
        with clients.deadline(10.0) as lane:
            request = lane.client.build_request("POST", url, extensions=lane.extensions)
            ...  # send it and read the answer; lane.cut_off says whether time ran out
    """

    def __init__(self, make_client: Callable[[], httpx.Client]) -> None:
        self._make_client = make_client
        self._local = threading.local()
        self._lanes: list[Lane] = []
        self._due: dict[Lane, float] = {}  # lanes with a request in flight: its deadline
        # When the watchdog wakes next (math.inf: only when told). A request whose
        # deadline is later needs no wake-up: the watchdog finds it then, so with one
        # timeout for every request it wakes about once per timeout, not per request.
        self._wakes_at = math.inf
        self._changed = threading.Condition()
        self._watchdog: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[Lane]:
        """This thread's lane, its request cut off ``seconds`` from now if still running."""
        lane = self._lane()
        lane.cut_off = False
        with self._changed:
            at = time.monotonic() + seconds
            if at < self._wakes_at:
                self._wakes_at = at
                self._changed.notify()
            self._due[lane] = at
        try:
            yield lane
        finally:
            with self._changed:
                self._due.pop(lane, None)

    def _lane(self) -> Lane:
        lane: Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            lane = self._local.lane = Lane(self._make_client())
            with self._changed:
                self._lanes.append(lane)
                if self._watchdog is None:
                    self._watchdog = threading.Thread(
                        target=self._watch, daemon=True, name="request-deadlines"
                    )
                    self._watchdog.start()
        return lane

    def _watch(self) -> None:
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                for lane, at in list(self._due.items()):
                    if at <= now:
                        del self._due[lane]
                        lane.cut()
                self._wakes_at = min(self._due.values(), default=math.inf)
                self._changed.wait(None if self._wakes_at == math.inf else self._wakes_at - now)

    def close(self) -> None:
        """Close every thread's client, and stop the watchdog."""
        with self._changed:
            self._closed = True
            self._changed.notify()
            lanes = list(self._lanes)
        for lane in lanes:
            lane.client.close()
