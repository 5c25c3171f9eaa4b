"""A minimal HTTP receiver on 127.0.0.1, in its own process, that answers 200 to every
POST: the same fast, keep-alive peer for spooler and for each baseline."""

from __future__ import annotations

import multiprocessing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from types import TracebackType


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real ingestion APIs offer
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK (40 ms on Linux), which would make every contender look alike.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(port_out: Connection) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port_out.send(server.server_address[1])
    server.serve_forever()


class Loopback:
    """``with Loopback() as url:`` a receiver running in a child process."""

    def __enter__(self) -> str:
        parent, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
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
