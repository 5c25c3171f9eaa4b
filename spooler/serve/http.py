"""A small HTTP/1.1 server for ``spooler serve``: asyncio, with ``httptools`` parsing.

Chosen by measurement (``benchmarks/serve_servers.py``, docs/performance.md): for small
POSTs answered after a shared commit it handled more requests per second than the
standard library's threading server, uvicorn with a plain ASGI app, aiohttp and
granian, and it lets the limits below be enforced where the bytes arrive:

- request heads over ``max_header_bytes``: 431, before they are parsed further;
- bodies over the application's limit for the path: its own 413, before they are read
  when ``Content-Length`` says so (then ``Expect: 100-continue`` gets no 100). A client
  that sends its body anyway (Python's urllib sends no ``Expect``) has the rest of it,
  up to ``discard_bytes``, read and dropped before the connection closes, as nginx's
  lingering close and Go's server do: closed at once, with its bytes unread, the
  connection would be reset, and the client would see a broken pipe, not the 413;
- a head not complete within ``header_timeout``, or a body within ``body_timeout``,
  of its first byte: 408, and the connection is closed (slow clients hold nothing for
  long); an idle keep-alive connection is closed after ``idle_timeout``;
- at most ``max_connections`` at once (fewer where the open-file limit has no room for
  them: ``file_limit``): the next ones get a 503 and are closed.

Requests on one connection are answered in order (pipelining included). Deadlines are
checked once a second by one timer for all connections, so a request costs no timer
of its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast

import httptools

from .file_limit import connection_room

__all__ = ["Answer", "App", "HttpServer", "Limits", "Request", "Response"]

log = logging.getLogger("spooler.serve")


@dataclass(frozen=True)
class Limits:
    """What one client may take of the server: bytes, seconds, connections.

    Usage::

        Limits(max_header_bytes=16 * 1024, header_timeout=10.0, max_connections=1024)
    """

    max_header_bytes: int = 16 * 1024
    # The most of a refused body read (and dropped) so that its client gets the answer.
    discard_bytes: int = 64 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_connections: int = 1024


@dataclass
class Request:
    """One request, read whole: header names in lower case (repeats joined by ", ")."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    """What to answer: status, body, extra headers (Content-Type JSON by default)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default=())
    content_type: str = "application/json"


# How an application answers a request later: called once, from the event loop, with the
# answer, or with the exception that kept the application from making one (a bug: the
# server logs it and answers 500, as for an exception raised by ``handle`` itself).
Answer = Callable[[Response | Exception], None]


class App(Protocol):
    """What the server asks of the application behind it."""

    def body_limit(self, path: str) -> int:
        """The largest body a request to ``path`` may have, in bytes."""
        ...

    def too_large(self, path: str) -> Response:
        """The answer to a body over ``body_limit`` (the API's own 413)."""
        ...

    def handle(self, request: Request, answer: Answer) -> Response | None:
        """Answer a request: return the answer at once, or None and call ``answer`` with
        it later (no future or task per request: a commit's callback answers)."""
        ...


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TIMED_OUT = Response(408, b'{"error":"request timeout"}')
_HEAD_TOO_LARGE = Response(431, b'{"error":"request header fields too large"}')
_BAD_REQUEST = Response(400, b'{"error":"malformed HTTP request"}')
_BUSY = Response(503, b'{"error":"too many connections"}', (("Retry-After", "1"),))
_FAILED = Response(500, b'{"error":"internal error"}')


def _failed(request: Request, exc: Exception) -> Response:
    """The answer to a request the application failed on (a bug), which is logged."""
    log.error("answering %s %s failed", request.method, request.path, exc_info=exc)
    return _FAILED


# A connection's phase, for its deadline.
_IDLE, _HEAD, _BODY, _WAITING = range(4)


def encode_response(response: Response, *, close: bool) -> bytes:
    """The response as bytes on the wire."""
    head = _head(response.status, response.content_type, response.headers, close)
    return head % len(response.body) + response.body


@functools.lru_cache(maxsize=256)
def _head(
    status: int, content_type: str, headers: tuple[tuple[str, str], ...], close: bool
) -> bytes:
    """A response's head, with ``%d`` for its Content-Length: the same few heads make
    nearly every answer, so each is built once."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        "Content-Length: %d",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, hands them to the app in order, answers."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._app = server.app
        self._limits = server.limits
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._phase = _IDLE
        self._deadline = self._loop.time() + self._limits.idle_timeout
        self._head_bytes = 0
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._body_limit = 0
        # What to answer, in order (with whether the connection stays open after): a
        # request, None while the app works on its answer, or an answer decided already
        # (a refusal, after which it closes).
        self._queue: deque[tuple[Request | Response | None, bool]] = deque()
        self._closing = False  # answer what is queued, then close
        self._discarding = False  # reading a refused body to its end, to drop it

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A socket's transport (uvloop's is not an asyncio.Transport subclass).
        self._transport = cast(asyncio.Transport, transport)
        if len(self._server.connections) >= self._server.max_connections:
            self._transport.write(encode_response(_BUSY, close=True))
            self._transport.close()
            return
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing and not self._discarding:
            return  # a request after one we answered with "close", or a rejected body
        try:
            if self._phase in (_IDLE, _HEAD):
                # Fed in two parts, so that an endless head is refused at the limit
                # instead of being buffered by the parser.
                room = self._limits.max_header_bytes - self._head_bytes
                if len(data) > room:
                    self._parser.feed_data(data[:room])
                    if self._phase in (_IDLE, _HEAD):
                        self._refuse(_HEAD_TOO_LARGE)
                        return
                    data = data[room:]
                else:
                    self._head_bytes += len(data)
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(_BAD_REQUEST)
        except httptools.HttpParserError:
            if not self._closing:  # else a callback refused the request already
                self._refuse(_BAD_REQUEST)
            elif self._discarding:  # a refused body that is not what its head said
                self._stop_discarding()

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self._deadline = self._loop.time() + self._limits.header_timeout
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._deadline = self._loop.time() + self._limits.body_timeout
        self._head_bytes = 0
        path = httptools.parse_url(self._url).path.decode("latin-1")
        self._body_limit = self._app.body_limit(path)
        declared = self._headers.get("content-length")
        expects_continue = self._headers.get("expect", "").lower() == "100-continue"
        if declared is not None and declared.isdigit() and int(declared) > self._body_limit:
            # Refused before a byte of it is read; the client learns why at once. One
            # that does not wait for a 100 is sending the body: it is read and dropped.
            self._discarding = not expects_continue and int(declared) <= self._limits.discard_bytes
            self._refuse(self._app.too_large(path))
            if self._discarding:
                return
            raise httptools.HttpParserError("body too large")
        if expects_continue and self._transport:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._discarding:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._body_limit:
            path = httptools.parse_url(self._url).path.decode("latin-1")
            self._refuse(self._app.too_large(path))
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._discarding:
            self._stop_discarding()
            # Whatever follows the refused body is not read: the connection is closing.
            raise httptools.HttpParserError("refused body read")
        parts = httptools.parse_url(self._url)
        request = Request(
            self._parser.get_method().decode("ascii"),
            parts.path.decode("latin-1"),
            (parts.query or b"").decode("latin-1"),
            self._headers,
            b"".join(self._body),
        )
        self._phase = _WAITING
        self._enqueue(request, keep_alive=self._parser.should_keep_alive())
        if len(self._queue) > 1 and self._transport is not None:
            self._transport.pause_reading()  # pipelined requests wait their turn

    # -- answering ----------------------------------------------------------------------

    def _enqueue(self, item: Request | Response, *, keep_alive: bool) -> None:
        self._queue.append((item, keep_alive))
        if len(self._queue) == 1:  # else the answer ahead of it is pending
            self._answer_queued()

    def _answer_queued(self) -> None:
        """Answer what is queued, in order, until an answer is not ready yet (then
        ``_answered`` goes on when it is)."""
        while self._queue:
            item, keep_alive = self._queue[0]
            if isinstance(item, Request):
                request = item
                self._queue[0] = (None, keep_alive)
                try:
                    item = self._app.handle(request, functools.partial(self._answered, request))
                except Exception as exc:
                    item = _failed(request, exc)
            if item is None:
                return
            self._queue.popleft()
            close = not keep_alive or self._server.stopping
            self._write(item, close=close)
            if close:
                return
        if self._transport is not None:
            if self._phase == _WAITING:
                self._phase = _IDLE
                self._deadline = self._loop.time() + self._limits.idle_timeout
            self._transport.resume_reading()

    def _answered(self, request: Request, outcome: Response | Exception) -> None:
        """The app's answer to ``request``, the one it is working on (the first queued)."""
        response = _failed(request, outcome) if isinstance(outcome, Exception) else outcome
        self._queue[0] = (response, self._queue[0][1])
        self._answer_queued()

    def _write(self, response: Response, *, close: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(encode_response(response, close=close))
        if close:
            self._closing = True
            if not self._discarding:  # else it closes once the refused body is read
                self._transport.close()

    def _stop_discarding(self) -> None:
        """The refused body is read (or will not be): close once its answer is out."""
        self._discarding = False
        if not self._queue and self._transport is not None:
            self._transport.close()

    def _refuse(self, response: Response) -> None:
        """Answer ``response`` after the requests already read, and close: nothing more
        from this client can be trusted to be a request."""
        self._closing = True
        self._enqueue(response, keep_alive=False)

    def check_deadline(self, now: float) -> None:
        """Close the connection if its phase has run out of time."""
        if now >= self._deadline and self._discarding:
            self._stop_discarding()  # the rest of a refused body is slow to come
            return
        if now < self._deadline or self._phase == _WAITING or self._closing:
            return
        if self._phase == _IDLE:
            if self._transport is not None:
                self._transport.close()
        else:
            self._refuse(_TIMED_OUT)

    def close(self) -> None:
        """Close now, whatever is in progress."""
        if self._transport is not None:
            self._transport.close()

    def stop_when_idle(self) -> None:
        """Close now if no request is in progress; else after its answer."""
        if self._phase == _IDLE and not self._queue and self._transport is not None:
            self._transport.close()


class HttpServer:
    """Serves ``app`` on one address until ``stop``.

    Usage::

        server = HttpServer(app, Limits())
        await server.start("127.0.0.1", 8420)
        ...
        await server.stop()
    """

    def __init__(self, app: App, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.connections: set[_Connection] = set()
        # Set by ``start``: ``limits.max_connections``, or fewer where the open-file limit
        # has no room for them (answered 503 beyond, rather than reset by the accept).
        self.max_connections = limits.max_connections
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.base_events.Server | None = None
        self._reaper: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one chosen, for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; raises ``OSError`` when that fails."""
        self.max_connections = connection_room(self.limits.max_connections)
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )
        self._reap()

    def _reap(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            connection.check_deadline(now)
        self._reaper = self.loop.call_later(1.0, self._reap)

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop accepting, answer the requests in progress (up to ``grace`` seconds),
        close every connection."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.stop_when_idle()
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.close()  # its answer did not come in time (a commit that hangs)
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
