"""spooler serve's HTTP/1.1 server on raw sockets: keep-alive, pipelining, chunked bodies,
100-continue, and the limits on heads, bodies, slow clients and connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from spooler.serve.http import Answer, HttpServer, Limits, Request, Response

BODY_LIMIT = 100


class EchoApp:
    """Answers 200 with the request's method, path and body; refuses big bodies with 413."""

    def __init__(self) -> None:
        self.handled: list[Request] = []

    def body_limit(self, path: str) -> int:
        return BODY_LIMIT

    def too_large(self, path: str) -> Response:
        return Response(413, b'{"error":"too large"}')

    def handle(self, request: Request, answer: Answer) -> Response | None:
        self.handled.append(request)
        return Response(200, f"{request.method} {request.path} ".encode() + request.body)


class UnansweredApp(EchoApp):
    """Never answers: each request waits for a commit that does not return."""

    def handle(self, request: Request, answer: Answer) -> Response | None:
        self.handled.append(request)
        return None


class FailingApp(EchoApp):
    """Fails on ``/raise`` (in ``handle``) and on ``/later`` (through ``answer``, on a
    later turn of the loop, as a failed commit does); echoes the rest."""

    def handle(self, request: Request, answer: Answer) -> Response | None:
        if request.path == "/raise":
            raise RuntimeError("a bug in handle")
        if request.path == "/later":
            asyncio.get_running_loop().call_soon(answer, RuntimeError("a bug later"))
            return None
        return super().handle(request, answer)


class Served:
    """An ``HttpServer`` on its own event loop thread."""

    def __init__(self, limits: Limits, app: EchoApp | None = None) -> None:
        self.app = app or EchoApp()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._limits = limits
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self.server = HttpServer(self.app, self._limits)
            await self.server.start("127.0.0.1", 0)
            self.port = self.server.port
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def connect(self) -> Client:
        return Client(self.port)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=1), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def served() -> Iterator[Served]:
    running = Served(Limits(header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5))
    yield running
    running.close()


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Client:
    """A raw connection, read through a buffer: answers that arrive together stay apart."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._reader = self.sock.makefile("rb")

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self._reader.read1(size)

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-case names), body."""
        status_line = self._reader.readline()
        if not status_line:
            raise ConnectionError("closed before an answer")
        headers = {}
        while (line := self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.lower()] = value.strip()
        body = self._reader.read(int(headers.get("content-length", 0)))
        return int(status_line.split()[1]), headers, body

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closed the connection (end-of-file) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self._reader.read1(1) == b""
        except (TimeoutError, ConnectionResetError):
            return False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        self.sock.close()


def test_keep_alive_answers_requests_one_after_another(served: Served) -> None:
    with served.connect() as conn:
        for body in (b"one", b"two"):
            conn.sendall(post("/a", body))
            assert conn.read_response()[::2] == (200, b"POST /a " + body)


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(post("/a", b"1") + post("/b", b"2") + post("/c", b"3"))
        answers = [conn.read_response()[2] for _ in range(3)]
        assert answers == [b"POST /a 1", b"POST /b 2", b"POST /c 3"]


def test_an_app_that_fails_gets_its_client_a_500_logged_and_the_next_answers_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = Served(Limits(), FailingApp())
    try:
        with running.connect() as conn:
            conn.sendall(post("/raise", b"1") + post("/later", b"2") + post("/a", b"3"))
            answers = [conn.read_response()[::2] for _ in range(3)]
    finally:
        running.close()
    assert answers == [
        (500, b'{"error":"internal error"}'),
        (500, b'{"error":"internal error"}'),
        (200, b"POST /a 3"),
    ]
    failures = [r for r in caplog.records if r.getMessage().startswith("answering")]
    assert [(r.getMessage(), str(r.exc_info[1]) if r.exc_info else None) for r in failures] == [
        ("answering POST /raise failed", "a bug in handle"),
        ("answering POST /later failed", "a bug later"),
    ]


def test_a_chunked_body_is_read_whole(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        assert conn.read_response()[::2] == (200, b"POST /c abcdefg")


def test_expect_100_continue_gets_its_interim_answer(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(post("/e", b"", "Expect: 100-continue").replace(b"Length: 0", b"Length: 4"))
        assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(b"body")
        assert conn.read_response()[::2] == (200, b"POST /e body")


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(served: Served) -> None:
    with served.connect() as conn:
        head = post("/big", b"x" * (BODY_LIMIT + 1), "Expect: 100-continue")
        conn.sendall(head[: head.index(b"\r\n\r\n") + 4])  # the head only
        status, headers, body = conn.read_response()
        assert (status, body, headers.get("connection")) == (413, b'{"error":"too large"}', "close")
        assert conn.closed()
    assert served.app.handled == []


def test_a_body_sent_despite_its_413_is_read_and_dropped_before_the_close(
    served: Served,
) -> None:
    # Given a client that sends its body without waiting for a 100 (as urllib does)
    body = b"x" * (16 * 1024 * 1024)  # far more than the sockets buffer
    with served.connect() as conn:
        head = post("/big", body)
        conn.sendall(head[: head.index(b"\r\n\r\n") + 4])
        # When it is answered 413 before its body is sent, and sends it all the same
        status, headers, _ = conn.read_response()
        conn.sendall(body)  # a reset here (BrokenPipeError) if the server had closed
        # Then the server read it all, and only then closed the connection
        assert (status, headers.get("connection")) == (413, "close")
        assert conn.closed()
    assert served.app.handled == []


def test_a_refused_body_that_does_not_come_is_given_up_at_the_body_deadline(
    served: Served,
) -> None:
    with served.connect() as conn:
        head = post("/big", b"x" * (10 * BODY_LIMIT))
        conn.sendall(head[: head.index(b"\r\n\r\n") + 4])
        assert conn.read_response()[0] == 413
        conn.sendall(b"x" * BODY_LIMIT)  # a part of it, then nothing
        assert conn.closed()  # after body_timeout (0.5 s), not at its 5 s


def test_a_refused_body_over_the_discard_limit_is_not_read() -> None:
    served = Served(Limits(discard_bytes=2 * BODY_LIMIT))
    try:
        with served.connect() as conn:
            head = post("/big", b"x" * (2 * BODY_LIMIT + 1))
            conn.sendall(head[: head.index(b"\r\n\r\n") + 4])
            assert conn.read_response()[0] == 413
            assert conn.closed()  # at once, without waiting for the body
    finally:
        served.close()


def test_a_chunked_body_over_the_limit_is_refused(served: Served) -> None:
    with served.connect() as conn:
        chunk = b"x" * 60
        conn.sendall(
            b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3c\r\n"
            + chunk
            + b"\r\n"
            + b"3c\r\n"
            + chunk
            + b"\r\n"
        )
        assert conn.read_response()[0] == 413
        assert conn.closed()
    assert served.app.handled == []


def test_a_head_over_the_limit_gets_431(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(b"POST /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert conn.read_response()[0] == 431
        assert conn.closed()


def test_a_slow_head_gets_408_and_the_connection_closes(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert conn.read_response()[0] == 408
        assert conn.closed()


def test_a_slow_body_gets_408(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(post("/slow", b"0123456789")[:-5])  # 5 bytes of the body missing
        assert conn.read_response()[0] == 408
        assert conn.closed()
    assert served.app.handled == []


def test_an_idle_keep_alive_connection_is_closed(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(post("/a", b"1"))
        assert conn.read_response()[0] == 200
        started = time.monotonic()
        assert conn.closed(timeout=5)
        assert time.monotonic() - started >= 0.4  # not at once: after the idle timeout


def test_http_1_0_closes_after_the_answer(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(b"POST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        status, headers, body = conn.read_response()
        assert (status, headers.get("connection"), body) == (200, "close", b"POST /old hi")
        assert conn.closed()


def test_garbage_gets_400_and_the_connection_closes(served: Served) -> None:
    with served.connect() as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert conn.read_response()[0] == 400
        assert conn.closed()


def test_connections_over_the_limit_get_503() -> None:
    running = Served(Limits(max_connections=2))
    try:
        first, second = running.connect(), running.connect()
        first.sendall(post("/a", b"1"))  # both are counted once the server has seen them
        second.sendall(post("/a", b"2"))
        assert first.read_response()[0] == second.read_response()[0] == 200
        with running.connect() as third:
            status, headers, _ = third.read_response()
            assert (status, headers.get("retry-after")) == (503, "1")
        first.close()
        second.close()
    finally:
        running.close()


def test_a_stop_closes_the_connections_still_waiting_after_its_grace() -> None:
    # Given a request whose answer never comes (its commit hangs)
    running = Served(Limits(), UnansweredApp())
    with running.connect() as conn:
        conn.sendall(post("/a", b"1"))
        deadline = time.monotonic() + 10
        while not running.app.handled:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # When the server stops (a grace of one second)
        running.close()
        # Then the connection is closed, not left open with the client waiting on it
        assert conn.closed(timeout=5)
