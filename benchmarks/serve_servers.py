"""How ``spooler serve``'s HTTP server was chosen: the candidates, measured on its workload
in one run. Each serves the same small application on a fresh spool at durability
"full": read the JSON body (one event, or an array), encode each event, commit the
request's events in one transaction shared with the requests that arrived meanwhile,
then answer 200. Loaded like benchmarks/serve.py (benchmarks/loadgen.py in a process
of its own): one event per request from 10 connections, and 100 per request from 4.

- the standard library's ``ThreadingHTTPServer`` (a thread per connection, with the
  threads' group commit, ``spooler.group_commit``);
- uvicorn (httptools, uvloop) with a plain ASGI application;
- aiohttp's low-level server;
- granian (a Rust HTTP server) with the same ASGI application;
- asyncio with httptools, as ``spooler.serve.http`` does it, on asyncio's loop and on
  uvloop's (the last is what ``spooler serve`` runs).

The asynchronous ones share commits through ``spooler.serve.commits.Committer``.

    python benchmarks/serve_servers.py     # needs: pip install -e '.[bench]'
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import Row, context, free_port, interleaved, report, sized, wait_for_port, workdir

from spooler import Spool
from spooler.events import encode_event, new_event_ids
from spooler.group_commit import GroupCommit
from spooler.serve.commits import Committer

HERE = Path(__file__).parent
SECONDS = sized(3.0, smoke=0.2)
ROUNDS = sized(2, smoke=1)
OK = b'{"success":true}'
CHOSEN = "asyncio + httptools, uvloop"
CANDIDATES = (
    "stdlib ThreadingHTTPServer",
    "uvicorn (httptools, uvloop), ASGI",
    "aiohttp",
    "granian, ASGI",
    "asyncio + httptools",
    CHOSEN,
)


def events_of(body: bytes) -> list[tuple[str, str]]:
    """The request's events as ``(destination, JSON text)``, as the relay stores them."""
    value = json.loads(body)
    return [
        ("bench", encode_event(event)) for event in (value if isinstance(value, list) else [value])
    ]


def serve_stdlib(spool: Spool, port: int) -> None:
    group = GroupCommit(spool.commit_rows)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            events = events_of(self.rfile.read(int(self.headers["Content-Length"])))
            ids = new_event_ids(len(events))
            group.submit([(i, d, b) for i, (d, b) in zip(ids, events, strict=True)])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(OK)))
            self.end_headers()
            self.wfile.write(OK)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


async def committed(committer: Committer, events: list[tuple[str, str]]) -> None:
    """Wait, on the running loop, for ``events`` to be committed (the servers that await)."""
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    committer.submit(events, done.set_result)
    outcome = await done
    if isinstance(outcome, Exception):
        raise outcome


def asgi_app(spool: Spool) -> Callable:
    """A plain ASGI application (no framework) doing the benchmark's work."""

    committer: list[Committer] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if not committer:  # made on the server's own loop
            committer.append(Committer(spool.commit_rows))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await committed(committer[0], events_of(body))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"16")],
            }
        )
        await send({"type": "http.response.body", "body": OK})

    return app


def serve_uvicorn(spool: Spool, port: int) -> None:
    import uvicorn

    uvicorn.run(
        asgi_app(spool),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )


def serve_aiohttp(spool: Spool, port: int) -> None:
    from aiohttp import web

    async def main() -> None:
        committer = Committer(spool.commit_rows)

        async def handler(request: web.BaseRequest) -> web.Response:
            await committed(committer, events_of(await request.read()))
            return web.Response(body=OK, content_type="application/json")

        runner = web.ServerRunner(web.Server(handler, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_granian(spool: Spool, port: int) -> None:
    # granian imports the application by name: this module's, on the spool named here.
    # This process becomes granian, so that stopping it stops granian's workers too.
    os.environ["SPOOLER_BENCH_SPOOL"] = spool.path
    spool.close()
    os.chdir(HERE)
    os.execv(
        sys.executable,
        [
            *(sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", "1", "--loop", "uvloop"),
            *("--log-level", "warning", "serve_servers:granian_app"),
        ],
    )


def granian_app(scope: dict, receive: Callable, send: Callable) -> object:
    """The ASGI application granian serves (its spool opened on first use)."""
    global _granian_app
    if _granian_app is None:
        _granian_app = asgi_app(Spool(os.environ["SPOOLER_BENCH_SPOOL"]))
    return _granian_app(scope, receive, send)


_granian_app: Callable | None = None


def serve_httptools(spool: Spool, port: int, *, uvloop: bool) -> None:
    from spooler.serve.http import Answer, HttpServer, Limits, Request, Response

    class App:
        def __init__(self, committer: Committer) -> None:
            self.committer = committer

        def body_limit(self, path: str) -> int:
            return 20 * 1024 * 1024

        def too_large(self, path: str) -> Response:
            return Response(413)

        def handle(self, request: Request, answer: Answer) -> None:
            self.committer.submit(events_of(request.body), lambda _: answer(Response(200, OK)))

    async def main() -> None:
        server = HttpServer(App(Committer(spool.commit_rows)), Limits())
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    if uvloop:
        import uvloop as uv

        uv.run(main())
    else:
        asyncio.run(main())


SERVERS = {
    "stdlib ThreadingHTTPServer": serve_stdlib,
    "uvicorn (httptools, uvloop), ASGI": serve_uvicorn,
    "aiohttp": serve_aiohttp,
    "granian, ASGI": serve_granian,
    "asyncio + httptools": lambda spool, port: serve_httptools(spool, port, uvloop=False),
    CHOSEN: lambda spool, port: serve_httptools(spool, port, uvloop=True),
}


def measure(folder: Path, name: str, connections: int, events: int) -> float:
    """Events per second through candidate ``name`` on a fresh spool."""
    port = free_port()
    db = folder / f"{time.monotonic_ns()}.db"
    server = subprocess.Popen([sys.executable, __file__, "--serve", name, str(port), str(db)])
    try:
        wait_for_port(port, server, name)
        path = "/track" if events == 1 else "/batch"
        done = subprocess.run(
            [
                *(sys.executable, str(HERE / "loadgen.py"), str(port), path),
                *(str(connections), str(SECONDS), str(events)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout)
        if set(result["statuses"]) != {"200"}:
            raise RuntimeError(f"{name} answered {result['statuses']}")
        return result["requests"] * events / result["seconds"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    with workdir() as folder:
        single = interleaved(
            {name: (lambda n=name: measure(folder, n, 10, 1)) for name in CANDIDATES}, ROUNDS
        )
        batched = interleaved(
            {name: (lambda n=name: measure(folder, n, 4, 100)) for name in CANDIDATES}, ROUNDS
        )
    rows: list[Row] = []
    for label, rates in (
        ("1 event/request, 10 connections", single),
        ("100 events/request, 4 connections", batched),
    ):
        for name in CANDIDATES[:-1]:
            rows.append(
                context(
                    f"9. serve's HTTP server, {label}: {CHOSEN} (chosen)",
                    rates[CHOSEN],
                    rates[name],
                    name,
                    "ev/s",
                )
            )
    report(rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        name, port, db = sys.argv[2:5]
        SERVERS[name](Spool(db), int(port))
    else:
        main()
