"""The official SDKs as clients of ``spooler serve``: every event an SDK was told
succeeded reaches the receiver after the relay is killed with kill -9 and ``spooler
drain`` runs.

Each SDK sends numbered events (``n`` in its properties) to a real ``spooler serve``
process, a group at a time, flushing after each. What counts as acknowledged is what
the SDK itself took as success, seen where it decides (a callback, the promise of a
call, the return of its own request function, its ``response.ok``); nothing else is
counted as stored. The moment the SDK has been told of ``KILL_AFTER`` successes, the
relay is killed -9, from the SDK's own success path, so that a relay that answered
before its commit returned would be killed with acknowledged events uncommitted. The
SDK goes on failing until it gives up. Then ``spooler drain`` delivers the spool to a
local receiver, and each acknowledged event must be there, with the id the API
de-duplicates on as the SDK sent it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import spooler_cmd
from helpers.processes import require_program
from helpers.spools import rows
from node_sdks import NODE_DIR, REPO, datalyr_sdk, node_package, require_node
from relay import RunningRelay, relay, write_config

from spooler.testing import Receiver

COUNT = 400  # events each SDK sends
PER_FLUSH = 10
KILL_AFTER = 100  # acknowledged events before the kill -9
KEYS = {
    "amplitude": "amp-0123456789abcdef",
    "segment": "seg-write-key-0123456789",
    "posthog": "phc_0123456789abcdef",
    "datalyr": "dk_0123456789abcdef",
}
PATHS = {
    "amplitude": "/2/httpapi",
    "segment": "/v1/batch",
    "posthog": "/batch/",
    "datalyr": "/track",
}


def setup(tmp_path: Path, receiver: Receiver, api: str) -> tuple[Path, Path]:
    """A spool path, and a config file whose destination ``api`` delivers to the receiver
    with the key the SDK holds (the relay checks the SDK's key against it)."""
    table = {"type": api, "url": receiver.url + PATHS[api], "api_key": KEYS[api]}
    return tmp_path / "spool.db", write_config(tmp_path / "spooler.toml", {api: table})


class Acknowledged(dict):
    """The events an SDK was told succeeded (``n`` -> the id it gave the event); the
    relay is killed -9 the moment there are ``KILL_AFTER`` of them."""

    def __init__(self, running: RunningRelay) -> None:
        super().__init__()
        self._running = running
        self._lock = threading.Lock()

    def add(self, n: int, event_id: Any) -> None:
        """Count one acknowledged event (from whichever thread the SDK told us on)."""
        with self._lock:
            self[n] = event_id
            if len(self) == KILL_AFTER:
                self._running.kill()


def send_all(send: Callable[[int], object], flush: Callable[[], object]) -> None:
    """Send ``COUNT`` events, flushing every ``PER_FLUSH``."""
    for start in range(0, COUNT, PER_FLUSH):
        for n in range(start, start + PER_FLUSH):
            send(n)
        flush()


def drain_and_check(
    db: Path, config: Path, receiver: Receiver, api: str, acked: dict[int, Any]
) -> list[dict[str, Any]]:
    """Run ``spooler drain`` to the receiver; every acknowledged event must be there (by
    its ``n``), and the key must be in no byte of the spool. The delivered events."""
    done = spooler_cmd(
        *("drain", "--db", str(db), "--config", str(config), "-d", api, "--until-empty"),
        *("--backoff-base", "0.01", "--poll-interval", "0.05", "--max-time", "60"),
    )
    assert done.returncode == 0, done.stderr
    delivered = {number(api, event): event for event in receiver.delivered}
    missing = sorted(set(acked) - set(delivered))
    assert not missing, f"acknowledged, never delivered: {missing[:20]}"
    assert KILL_AFTER <= len(acked) < COUNT, "the kill did not land mid-stream"
    spool_bytes = b"".join(path.read_bytes() for path in db.parent.glob("spool.db*"))
    assert KEYS[api].encode() not in spool_bytes
    return [delivered[n] for n in sorted(acked)]


def number(api: str, event: dict[str, Any]) -> int:
    """The ``n`` a test event carries in its properties."""
    properties = event["event_properties" if api == "amplitude" else "properties"]
    return int(properties["n"])


def test_segment_analytics_python(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given analytics-python, whose consumer calls request.post for each batch (and
    # retries, or gives up, when it raises)
    import segment.analytics.consumer as consumer
    from segment.analytics import Client

    db, config = setup(tmp_path, receiver, "segment")
    real_post = consumer.post
    # When it sends through the relay, which is killed -9 mid-stream
    with relay(db, "--config", str(config)) as running:
        acked = Acknowledged(running)

        def post(*args: Any, **kwargs: Any) -> Any:
            response = real_post(*args, **kwargs)  # returns only for a 2xx
            for message in kwargs["batch"]:
                acked.add(message["properties"]["n"], message["messageId"])
            return response

        monkeypatch.setattr(consumer, "post", post)
        client = Client(
            KEYS["segment"],
            host=running.url,
            upload_interval=0.01,
            upload_size=PER_FLUSH,
            max_retries=1,
            on_error=lambda error, batch: None,
        )
        send_all(
            lambda n: client.track(user_id="user_1234", event="serve test", properties={"n": n}),
            client.flush,
        )
        client.shutdown()
    # Then the drain delivers every message it was told succeeded, with its messageId
    delivered = drain_and_check(db, config, receiver, "segment", acked)
    assert [m["messageId"] for m in delivered] == [acked[n] for n in sorted(acked)]
    assert {m["type"] for m in delivered} == {"track"}


def test_posthog_python(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given posthog-python, whose consumer calls batch_post for each batch
    import posthog.consumer as consumer
    from posthog import Posthog

    db, config = setup(tmp_path, receiver, "posthog")
    real_batch_post = consumer.batch_post
    with relay(db, "--config", str(config)) as running:
        acked = Acknowledged(running)

        def batch_post(*args: Any, **kwargs: Any) -> Any:
            response = real_batch_post(*args, **kwargs)  # returns only for a 200
            for message in kwargs["batch"]:
                acked.add(message["properties"]["n"], message["uuid"])
            return response

        monkeypatch.setattr(consumer, "batch_post", batch_post)
        client = Posthog(
            KEYS["posthog"],
            host=running.url,
            flush_at=PER_FLUSH,
            flush_interval=0.01,
            max_retries=0,
            on_error=lambda error, batch: None,
        )
        send_all(
            lambda n: client.capture("serve test", distinct_id="user_1234", properties={"n": n}),
            client.flush,
        )
        client.shutdown()
    delivered = drain_and_check(db, config, receiver, "posthog", acked)
    assert [e["uuid"] for e in delivered] == [acked[n] for n in sorted(acked)]


def test_amplitude_analytics_python(tmp_path: Path, receiver: Receiver) -> None:
    # Given amplitude-analytics, which calls back for each event with the answer's code
    from amplitude import Amplitude, BaseEvent, Config

    db, config = setup(tmp_path, receiver, "amplitude")
    with relay(db, "--config", str(config)) as running:
        acked = Acknowledged(running)

        def callback(event: Any, code: int, message: str | None) -> None:
            if code == 200:
                acked.add(event.event_properties["n"], event.insert_id)

        client = Amplitude(
            KEYS["amplitude"],
            Config(
                server_url=running.url + "/2/httpapi",
                flush_queue_size=PER_FLUSH,
                flush_interval_millis=10,
                flush_max_retries=1,
                callback=callback,
            ),
        )
        send_all(
            lambda n: client.track(
                BaseEvent("serve test", user_id="user_1234", event_properties={"n": n})
            ),
            lambda: [future.exception(timeout=30) for future in client.flush()],
        )
        client.shutdown()
    delivered = drain_and_check(db, config, receiver, "amplitude", acked)
    assert [e["insert_id"] for e in delivered] == [acked[n] for n in sorted(acked)]


def run_node_until_killed(
    script: str, spec: dict[str, Any], running: RunningRelay
) -> dict[int, Any]:
    """Run a driver of tests/sdk/node, which kills -9 the relay itself, from the SDK's
    success path, once it has been told of ``KILL_AFTER`` acknowledgements. Every
    ``{"acked": n, ...}`` it printed, by ``n``."""
    require_node()
    spec = {**spec, "relayPid": running.process.pid, "killAfter": KILL_AFTER}
    done = subprocess.run(
        ["node", str(NODE_DIR / script), json.dumps(spec)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    acked = {record["acked"]: record for record in map(json.loads, done.stdout.splitlines())}
    running.process.wait(timeout=10)
    assert running.process.returncode == -9, f"not killed: {len(acked)} acknowledgements"
    return acked


def test_amplitude_node(tmp_path: Path, receiver: Receiver) -> None:
    node_package("@amplitude/node")
    db, config = setup(tmp_path, receiver, "amplitude")
    with relay(db, "--config", str(config)) as running:
        spec = {
            "apiKey": KEYS["amplitude"],
            "serverUrl": running.url + "/2/httpapi",
            "count": COUNT,
            "perFlush": PER_FLUSH,
            "minIdLength": 3,
        }
        acked = run_node_until_killed("serve_amplitude.js", spec, running)
    delivered = drain_and_check(db, config, receiver, "amplitude", acked)
    # The SDK sends no insert_id: each event has its spooler event id, stable from the
    # relay on.
    assert all(uuid.UUID(event["insert_id"]) for event in delivered)
    # The SDK's minIdLength travelled with its events, through the spool, to the API.
    sent = [json.loads(request.body) for request in receiver.requests]
    assert sent and all(body["options"] == {"min_id_length": 3} for body in sent)


def slow_writes() -> list[str]:
    """The command prefix that runs a process with each of its ``pwrite`` calls (SQLite's
    writes of its log) delayed by 20 ms (strace's fault injection), or skip.

    A commit then lands well after an answer sent before it, so a kill -9 right after
    the answer finds it uncommitted: that ordering, not the scheduler, decides the test.
    """
    require_program("strace", "strace")
    probe = subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.strip()}")
    # -D: strace is no parent of the relay, so the relay's pid is the one a kill -9 hits.
    return [
        *("strace", "-D", "-f", "-qq", "--seccomp-bpf", "-o", os.devnull),
        *("-e", "trace=pwrite64", "-e", "inject=pwrite64:delay_enter=20000"),
    ]


def test_datalyr_node(tmp_path: Path, receiver: Receiver) -> None:
    sdk = datalyr_sdk()
    db, config = setup(tmp_path, receiver, "datalyr")
    with relay(db, "--config", str(config), under=slow_writes()) as running:
        spec = {
            "sdk": str(sdk),
            "apiKey": KEYS["datalyr"],
            "host": running.url + "/track",
            "count": COUNT,
            "perFlush": PER_FLUSH,
        }
        acked = run_node_until_killed("serve_datalyr.js", spec, running)
    delivered = drain_and_check(db, config, receiver, "datalyr", acked)
    assert [e["eventId"] for e in delivered] == [acked[n]["eventId"] for n in sorted(acked)]


SERVE_SECTION = "From Node, Go, Ruby: point the SDK at spooler serve"
MIGRATION_SECTION = "Moving from an analytics SDK"
README_CONFIG = "/etc/spooler.toml"


def readme_blocks(heading: str, language: str) -> list[str]:
    """The code blocks in ``language`` of the README's section ``heading``."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.S | re.M)


def test_the_readmes_snippets_run_as_written(tmp_path: Path, receiver: Receiver) -> None:
    # Given the README's relay command, with the config it points to ("the config
    # above", the migration section's), and the keys the README says to set
    [command] = [b for b in readme_blocks(SERVE_SECTION, "sh") if "spooler serve" in b]
    assert f"spooler serve --config {README_CONFIG}" in command
    [toml] = readme_blocks(MIGRATION_SECTION, "toml")
    config = tmp_path / "spooler.toml"
    config.write_text(toml)
    serve_text = (REPO / "README.md").read_text().split(f"## {SERVE_SECTION}", 1)[1]
    named = re.findall(r"\$\{(\w+)\}", toml)
    assert named and all(f"`{name}`" in serve_text.split("\n## ", 1)[0] for name in named)
    env = {name: KEYS[name.split("_")[0].lower()] for name in named}
    snippets = readme_blocks(SERVE_SECTION, "js")
    assert len(snippets) == 2
    node_package("@amplitude/node")  # the second snippet's SDK
    sdk = datalyr_sdk()
    modules = tmp_path / "node_modules" / "@datalyr"
    modules.mkdir(parents=True)
    (modules / "api").symlink_to(sdk)  # where npm would put it, were it on npm
    db = tmp_path / "spool.db"
    # When each snippet runs as pasted, but for the relay's port
    with relay(db, "--config", str(config), env=env) as running:
        port = running.url.rsplit(":", 1)[1]
        for index, snippet in enumerate(snippets):
            script = tmp_path / f"snippet{index}.js"
            script.write_text(snippet.replace("127.0.0.1:8420", f"127.0.0.1:{port}"))
            done = subprocess.run(
                ["node", str(script)],
                cwd=tmp_path,
                env={
                    **os.environ,
                    **env,
                    "NODE_PATH": f"{tmp_path / 'node_modules'}:{NODE_DIR / 'node_modules'}",
                },
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
    # Then each SDK's event is in the spool, for its destination
    assert sorted(d for (d,) in rows(db, "SELECT destination FROM queue")) == [
        "amplitude",
        "datalyr",
    ]
