"""The receivers the benchmarks post to, on 127.0.0.1: answer 200 to every POST.

``Loopback`` is Python's ``ThreadingHTTPServer`` in a child process; ``fastest()`` is
a Node ``http`` server (``receiver.js``) where node is installed, so that the receiver
is not what a drain waits for, and ``Loopback`` otherwise. Either can answer each
request after a delay, as an API far away would.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real ingestion APIs offer
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK (40 ms on Linux), which would make every contender look alike.
    disable_nagle_algorithm = True
    delay = 0.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.delay:
            time.sleep(self.delay)  # an API far away
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(port_out: Connection, delay: float) -> None:
    handler = type("Handler", (_Handler,), {"delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port_out.send(server.server_address[1])
    server.serve_forever()


class Loopback:
    """``with Loopback() as url:`` a receiver running in a child process."""

    def __init__(self, delay: float = 0.0) -> None:
        self._delay = delay

    def __enter__(self) -> str:
        parent, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(
            target=_serve, args=(child, self._delay), daemon=True
        )
        self._process.start()
        return f"http://127.0.0.1:{parent.recv()}"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._process.kill()
        self._process.join()


@contextlib.contextmanager
def fastest(delay: float = 0.0) -> Iterator[tuple[str, str]]:
    """``with fastest() as (url, name):`` the Node receiver if node is installed, else
    ``Loopback``; ``name`` says which, for the table."""
    node = shutil.which("node")
    if node is None:
        with Loopback(delay) as url:
            yield url, "Python receiver"
        return
    process = subprocess.Popen(
        [node, str(Path(__file__).with_name("receiver.js"))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DELAY_MS": str(delay * 1000)},
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{process.stdout.readline().strip()}", "Node receiver"
    finally:
        process.kill()
        process.wait()
