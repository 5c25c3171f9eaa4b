"""A lean HTTP load generator for the ``spooler serve`` benchmarks, run in processes of its
own: keep-alive connections, each sending one pre-built request, waiting for its answer,
and sending the next, for a fixed time. Raw sockets on asyncio (uvloop when installed),
so that the client costs little of the machine the server shares.

    python benchmarks/loadgen.py PORT PATH CONNECTIONS SECONDS EVENTS_PER_REQUEST

prints ``{"requests": N, "seconds": S, "statuses": {...}}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from common import EVENT

KEY = "dk_bench_key_0123456789"


def request(path: str, events_per_request: int) -> bytes:
    """The request the benchmark repeats: one Datalyr event (``/track``), or an Amplitude
    batch of ``events_per_request`` events (``/2/httpapi``), or a JSON array (any other)."""
    event = {**EVENT, "user_id": "user_12345", "event_type": "page_view"}
    if path == "/track":
        body = json.dumps(EVENT).encode()
    elif path == "/2/httpapi":
        body = json.dumps({"api_key": KEY, "events": [event] * events_per_request}).encode()
    else:
        body = json.dumps([EVENT] * events_per_request).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    port: int, payload: bytes, deadline: float, counts: list[int], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    while time.perf_counter() < deadline:
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        statuses[status] = statuses.get(status, 0) + 1
        at = head.lower().index(b"content-length:") + 15
        await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
        sent += 1
    counts.append(sent)
    writer.close()


async def run(port: int, path: str, connections: int, seconds: float, events: int) -> dict:
    """Load ``port`` for ``seconds``; the requests answered and their statuses."""
    payload = request(path, events)
    counts: list[int] = []
    statuses: dict[int, int] = {}
    began = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, payload, began + seconds, counts, statuses) for _ in range(connections))
    )
    return {
        "requests": sum(counts),
        "seconds": time.perf_counter() - began,
        "statuses": statuses,
    }


def main() -> None:
    port, path, connections, seconds, events = sys.argv[1:6]
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    result = run_loop(run(int(port), path, int(connections), float(seconds), int(events)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
