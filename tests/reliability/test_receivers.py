"""Scenarios 7 and 9: receivers that misbehave, and poison events in every position."""

from __future__ import annotations

import itertools
import json
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers.cli import start_drain
from helpers.processes import free_port, wait_until
from helpers.spools import dead_count, dead_rows, drain_once, rows

from spooler import Spool
from spooler.testing import Receiver

ENDLESS_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"
ENDLESS_500 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 99999999999\r\n\r\n"


class FaultyServer:
    """A raw HTTP/1.1 server on 127.0.0.1: the first connections get a scripted fault,
    later ones a 200. Records the events of every request it answered with 2xx."""

    def __init__(self, faults: list[str]) -> None:
        self.faults = list(faults)
        self.delivered: list[dict[str, object]] = []
        self.streamed: list[tuple[int, bool]] = []  # each endless answer: bytes, hung up?
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/"

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self._sock.close()

    def _accept(self) -> None:
        while self._running:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                self._serve(conn)

    def _stream(self, conn: socket.socket, head: bytes, piece: bytes, pause: float) -> None:
        """Answer with ``head``, then ``piece`` after ``piece`` without end, until the client
        hangs up (or 60 s pass); record in ``streamed`` how many pieces' bytes went out,
        and whether the client hung up."""
        sent, hung_up = 0, False
        deadline = time.monotonic() + 60
        try:
            conn.sendall(head)
            while time.monotonic() < deadline:
                conn.sendall(piece)
                sent += len(piece)
                time.sleep(pause)
        except OSError:  # the client hung up, as it should
            hung_up = True
        self.streamed.append((sent, hung_up))

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault == "reset":  # abort the connection: the client sees ECONNRESET
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if fault == "half_read":  # take half the body, then hang up without answering
            return
        while len(body) < length:
            body += conn.recv(65536)
        if fault == "not_http":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            return
        if fault == "trickle_200":  # accept, then send the body a byte at a time, forever
            self.delivered += json.loads(body)
            self._stream(conn, ENDLESS_200, b"x", pause=0.05)
            return
        if fault == "trickle_headers":  # the headers a byte every 0.5 s, each read in time
            self._stream(conn, b"HTTP/1.1 200 OK\r\nX-Slow: ", b"x", pause=0.5)
            return
        if fault == "cut_200":  # accept, then hang up a few bytes into the answer's body
            self.delivered += json.loads(body)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ok"')
            return
        if fault == "endless_500":  # an error page that never ends, as fast as it goes
            self._stream(conn, ENDLESS_500, b"<p>error</p>" * 5000, pause=0)
            return
        answer = b"\x00\xff<html>not json" if fault == "garbage_200" else b'{"ok":true}'
        self.delivered += json.loads(body)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(answer)
            + answer
        )


@pytest.mark.parametrize(
    ("fault", "what"),
    [
        ("reset", "connection reset before any answer"),
        ("half_read", "receiver hangs up after reading half the body"),
        ("not_http", "answer that is not HTTP"),
        ("garbage_200", "200 with a garbage body (accepted: 2xx means delivered)"),
        ("cut_200", "200 whose body breaks off (accepted: the status came whole)"),
        ("trickle_200", "200 whose body trickles in a byte at a time, without end"),
        ("endless_500", "500 whose body never ends, sent as fast as it goes"),
        ("trickle_headers", "status line and headers trickled a byte every 0.5 s, without end"),
    ],
)
def test_misbehaving_receivers_lose_nothing(spool: Spool, scenario, fault: str, what: str) -> None:
    row = scenario(f"7 ({fault})", what, "raw-socket server: two faulty answers, then 200s")
    server = FaultyServer([fault, fault])
    try:
        ids = spool.enqueue_many([{"n": n} for n in range(5)])
        started = time.monotonic()
        report = drain_once(spool, server.url, id_field="id", timeout=1)
        row.recover_s = time.monotonic() - started
    finally:
        server.close()
    row.tally(ids, [e["id"] for e in server.delivered])
    assert row.lost == 0 and report.dead == 0
    # A 200 is trusted whatever its body; the other faults are retried (the receiver stored
    # nothing), so nothing arrives twice either way.
    assert row.duplicated == 0
    # The batch failed, then a probe of one event (the next probe gets through).
    assert report.retried == (0 if fault.endswith("_200") else 5 + 1)
    # An endless answer is cut off by the drain (it hangs up: the timeout bounds the
    # whole request, not each read), after at most 1 MiB plus what the socket buffers
    # held. (A 200 delivers the whole batch at the first answer; the others come twice.)
    streams = {"trickle_200": 1, "endless_500": 2, "trickle_headers": 2}
    assert len(server.streamed) == streams.get(fault, 0)
    for sent, hung_up in server.streamed:
        assert hung_up and sent < 16 * 1024 * 1024, server.streamed


@pytest.mark.parametrize("retry_after", [None, "1", "http-date"])
def test_429_with_and_without_retry_after(
    spool: Spool, receiver: Receiver, db: Path, scenario, retry_after: str | None
) -> None:
    row = scenario(
        f"7 (429, Retry-After {retry_after or 'absent'})",
        f"429 Too Many Requests, Retry-After: {retry_after or 'absent'}",
        "receiver answers 429 once",
    )
    ids = spool.enqueue_many([{"n": n} for n in range(3)])
    if retry_after == "http-date":
        # The date is written when the 429 is answered: one written before the drain
        # started would leave less of a wait the slower the drain was to start.
        def answer(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
            receiver.respond = None  # once; then the default answers
            when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
            return 429, {"Retry-After": when}, b'{"error":"slow down"}'

        receiver.respond = answer
    else:
        receiver.fail_next(429, headers={"Retry-After": retry_after} if retry_after else {})
    started = time.monotonic()
    drain_once(spool, receiver.url, id_field="id")
    row.recover_s = time.monotonic() - started
    first, second = receiver.requests[0], receiver.requests[1]
    waited = second.received_at - first.answered_at
    if retry_after:
        assert waited >= 0.9  # honoured (an HTTP date has one-second resolution)
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0


def test_a_receiver_down_longer_than_the_backoff_cap(db: Path, scenario) -> None:
    row = scenario(
        "7 (long outage)",
        "receiver down for longer than the backoff cap",
        "nothing listens on the port; a receiver starts there later",
    )
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(50)])
    port = free_port()
    drain = start_drain(
        db,
        f"http://127.0.0.1:{port}/",
        "--backoff-base",
        "0.05",
        "--backoff-cap",
        "0.3",
        "--batch-size",
        "10",
        stderr=subprocess.PIPE,
    )
    try:
        # Many attempts fail: far more time passes than the cap (at least 10 probes of
        # one event each, after at most 40 first attempts by the four workers)...
        assert wait_until(lambda: rows(db, "SELECT sum(attempts) FROM queue")[0][0] >= 50, 30)
        with Receiver(port=port) as receiver:
            started = time.monotonic()
            # ...and when it comes back, the backlog goes within about one cap.
            assert receiver.wait_for(lambda r: len(r.delivered) >= 50, timeout=30)
            row.recover_s = time.monotonic() - started
    finally:
        drain.terminate()
        _, err = drain.communicate(timeout=30)
    assert drain.returncode == 0, err
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0
    assert dead_count(db) == 0


ONE_IN_EACH_POSITION = [(position,) for position in range(8)]
TWO_IN_EACH_PAIR_OF_POSITIONS = list(itertools.combinations(range(8), 2))


@pytest.mark.parametrize(
    ("label", "status", "placements"),
    [
        ("400", 400, ONE_IN_EACH_POSITION),
        ("500", 500, ONE_IN_EACH_POSITION),
        ("500, pairs", 500, TWO_IN_EACH_PAIR_OF_POSITIONS),
    ],
)
def test_poison_events_in_every_position_of_a_batch(
    spool: Spool,
    receiver: Receiver,
    db: Path,
    scenario,
    label: str,
    status: int,
    placements: list[tuple[int, ...]],
) -> None:
    row = scenario(
        f"9 ({label})",
        "one poison event in each position of a batch of 8"
        if len(placements[0]) == 1
        else "two poison events in each pair of positions of a batch of 8",
        f"receiver answers {status} to a batch holding an event marked bad"
        + (" (retried; poison dies on its third and last attempt)" if status == 500 else ""),
    )
    receiver.reject = lambda event: event["bad"]
    receiver.reject_status = status
    ids: list[str] = []
    poison: set[str] = set()
    started = time.monotonic()
    for bad in placements:
        batch = spool.enqueue_many([{"p": bad, "bad": n in bad} for n in range(8)])
        ids += batch
        poison.update(batch[n] for n in bad)
        drain_once(
            spool,
            receiver.url,
            batch_size=8,
            concurrency=1,
            id_field="id",
            retry={"max_attempts": 3},
        )
    row.recover_s = time.monotonic() - started
    dead = {event_id for (event_id,) in dead_rows(db, "event_id")}
    row.tally(ids, [e["id"] for e in receiver.delivered], dead)
    assert dead == poison  # only the poison events died, wherever they were
    assert row.lost == 0 and row.duplicated == 0


def test_a_receiver_slower_than_the_timeout(spool: Spool, receiver: Receiver, scenario) -> None:
    row = scenario(
        "7 (slow)",
        "receiver answers after the request timeout",
        "receiver holds the first request for 1.5 s; drain timeout 0.5 s",
    )
    ids = spool.enqueue_many([{"n": n} for n in range(5)])
    receiver.hold()
    threading.Timer(1.5, receiver.release).start()
    started = time.monotonic()
    report = drain_once(spool, receiver.url, id_field="id", timeout=0.5, concurrency=1)
    row.recover_s = time.monotonic() - started
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and report.retried >= 5


def test_a_redirect_is_not_followed_and_loses_nothing(
    spool: Spool, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "7 (redirect)",
        "receiver answers 302 Found",
        "receiver redirects once; POST is not replayed as a GET elsewhere",
    )
    ids = spool.enqueue_many([{"n": n} for n in range(5)])
    receiver.fail_next(302, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    started = time.monotonic()
    report = drain_once(spool, receiver.url, id_field="id")
    row.recover_s = time.monotonic() - started
    row.tally(ids, [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0 and report.retried == 5
