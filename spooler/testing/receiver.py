"""A small local HTTP receiver, used by ``spooler demo`` and by the test suite.

It binds to 127.0.0.1, records every request, and answers as scripted: canned
answers first (``fail_next``), then 413 for batches over ``max_batch``, then
``reject_status`` (400; 500 plays a receiver that crashes on it) for a batch holding an
event that ``reject`` matches, else 200.

Usage::

    with Receiver() as receiver:
        receiver.fail_next(503, 503)
        ...  # drain to receiver.url
        receiver.wait_for(lambda r: len(r.delivered) >= 10, timeout=10)
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Receiver", "RecordedRequest"]


@dataclass
class RecordedRequest:
    """One request as the receiver saw it, with the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    events: list[dict[str, Any]] = field(default_factory=list)
    received_at: float = 0.0  # time.monotonic() when the body was read
    answered_at: float = 0.0  # ... and when the answer was written


def _events_in(body: bytes, content_type: str = "") -> list[dict[str, Any]]:
    """The events of a request body: a JSON array, an object holding one, one object,
    or JSON Lines (``application/x-ndjson``)."""
    if "ndjson" in content_type:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    value = json.loads(body)
    if isinstance(value, list):
        return value
    lists = [v for v in value.values() if isinstance(v, list)] if isinstance(value, dict) else []
    return lists[0] if len(lists) == 1 else [value]


_HOST = "127.0.0.1"


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up on a held request is expected here, not worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Receiver:
    """A recording, scriptable HTTP receiver on 127.0.0.1 (an ephemeral port by default)."""

    def __init__(self, *, port: int = 0) -> None:
        self.requests: list[RecordedRequest] = []
        self.reject: Callable[[dict[str, Any]], bool] | None = None
        self.reject_status = 400
        self.max_batch: int | None = None
        # Replaces the default answers (after fail_next):
        # (body, request headers) -> (status, answer headers, answer body).
        self.respond: (
            Callable[[bytes, dict[str, str]], tuple[int, dict[str, str], bytes]] | None
        ) = None
        self._open = threading.Event()  # cleared by hold(): requests wait (a hung receiver)
        self._open.set()
        self._script: list[tuple[int, dict[str, str]]] = []
        self._changed = threading.Condition()
        self._server = _QuietServer((_HOST, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        """The receiver's base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{_HOST}:{self._server.server_port}"

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Every event of every request answered with 2xx, in arrival order."""
        with self._changed:
            return [e for r in self.requests if 200 <= r.status < 300 for e in r.events]

    def fail_next(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next requests with these statuses, in order, before anything else."""
        with self._changed:
            self._script.extend((status, dict(headers or {})) for status in statuses)

    def wait_for(self, condition: Callable[[Receiver], bool], timeout: float) -> bool:
        """Wait until ``condition(self)`` holds or ``timeout`` seconds pass; returns it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def hold(self) -> None:
        """Make new requests hang until ``release()``, like a receiver that stopped answering."""
        self._open.clear()

    def release(self) -> None:
        """Let held requests go on."""
        self._open.set()

    def _answer(
        self, body: bytes, headers: dict[str, str], events: list[dict[str, Any]]
    ) -> tuple[int, dict[str, str], bytes]:
        with self._changed:
            if self._script:
                status, headers = self._script.pop(0)
                return status, headers, b'{"error":"scripted failure"}'
        if self.respond is not None:
            return self.respond(body, headers)
        if self.max_batch is not None and len(events) > self.max_batch:
            return 413, {}, b'{"error":"payload too large"}'
        bad = [i for i, event in enumerate(events) if self.reject and self.reject(event)]
        if bad:
            answer = json.dumps({"error": "invalid events", "indices": bad}).encode()
            return self.reject_status, {}, answer
        return 200, {}, b'{"ok":true}'

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits out a delayed ACK

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received_at = time.monotonic()
                receiver._open.wait()
                try:
                    plain = body
                    if self.headers.get("Content-Encoding") == "gzip":
                        plain = gzip.decompress(body)
                    events = _events_in(plain, self.headers.get("Content-Type", ""))
                except (ValueError, OSError):  # OSError: a body that is not gzip
                    status, answer = 400, b'{"error":"body is not JSON"}'
                    headers: dict[str, str] = {}
                    events = []
                else:
                    status, headers, answer = receiver._answer(body, dict(self.headers), events)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                receiver._record(
                    RecordedRequest(
                        self.path,
                        dict(self.headers),
                        body,
                        status,
                        events,
                        received_at,
                        time.monotonic(),
                    )
                )

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the drain's own log says what happened

        return Handler

    def start(self) -> Receiver:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._open.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
