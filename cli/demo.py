"""``spooler demo``: the product's story in one run, against a local receiver."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from spooler import ConfigError, Spool
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.events import events_phrase
from spooler.testing import Receiver

from .render import dead_table, status_table

__all__ = ["run_demo"]

SAMPLE_EVENTS: list[dict[str, Any]] = [
    {"event": "signup", "userId": "u_1001", "properties": {"plan": "free"}},
    {"event": "purchase", "userId": "u_1001", "properties": {"amount": "lots"}, "bad": True},
    {"event": "upgrade", "userId": "u_1001", "properties": {"plan": "pro", "mrr": 49}},
    {"event": "invite_sent", "userId": "u_1001", "properties": {"to": "u_1002"}},
    {"event": "signup", "userId": "u_1002", "properties": {"plan": "free"}},
    {"event": "login", "userId": "u_1001"},
    {"event": "login", "userId": "u_1002"},
    {"event": "logout", "userId": "u_1001"},
]


def _step(text: str) -> None:
    click.echo()
    click.secho(f"== {text}", bold=True)


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def run_demo(db: str | None) -> None:
    """Enqueue, drain through failures, dead-letter, replay, and show the status."""
    if db and Path(db).exists():
        # The demo drains to a receiver that keeps nothing and replays every dead
        # letter: run on a real spool, it would throw that spool's events away.
        raise ConfigError(f"--db {db} exists; the demo needs a new file (or no --db)")
    workdir = None if db else tempfile.TemporaryDirectory(prefix="spooler-demo-")
    path = Path(db) if db else Path(workdir.name) / "demo.db"  # type: ignore[union-attr]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("   drain | %(message)s"))
    drain_log = logging.getLogger("spooler.drain")
    drain_log.addHandler(handler)
    drain_log.setLevel(logging.INFO)
    try:
        with Receiver() as receiver, Spool(path) as spool:
            receiver.fail_next(503)
            receiver.fail_next(429, headers={"Retry-After": "1"})
            receiver.reject = lambda event: bool(event.get("bad"))
            _step(
                f"A receiver on {receiver.url}: it answers 503, then 429 (Retry-After: 1s), "
                'and rejects events marked "bad" with 400'
            )

            _step(
                f"Enqueue {len(SAMPLE_EVENTS)} events into {path}; each id is returned only "
                "after the event is committed to disk"
            )
            for event_id in spool.enqueue_many(SAMPLE_EVENTS):
                click.echo(f"   {event_id}")

            config = build_drain_config(
                {},
                destination_flags={
                    "url": receiver.url + "/events",
                    "batch_size": 4,
                    "concurrency": 1,
                },
                retry_flags={"backoff_base": 0.2, "backoff_cap": 2.0},
                drain_flags={"summary_interval": 3600.0},
            )
            _step(
                "Drain until empty (batches of 4): retries with backoff, then the 400 "
                "batch is split until only the bad event is left"
            )
            Drain(spool.store, config).run(Mode.UNTIL_EMPTY, max_time=60)

            _step("The dead-letter table (spooler dlq inspect): why the event died")
            click.echo(_indent("\n".join(dead_table(spool.dead_letters.inspect()))))

            _step(
                "The receiver is fixed; replay the dead letter (spooler dlq replay --all) "
                "and drain again"
            )
            receiver.reject = None
            replayed = spool.dead_letters.replay(everything=True)
            click.echo(f"   replayed {events_phrase(replayed)}")
            Drain(spool.store, config).run(Mode.UNTIL_EMPTY, max_time=60)

            _step("Final status (spooler status)")
            click.echo(_indent(status_table(spool.status())))
            ids = {str(event.get("userId")) for event in receiver.delivered}
            click.echo(
                f"\n   The receiver got {len(receiver.delivered)} events "
                f"({len(receiver.requests)} requests) for users {', '.join(sorted(ids))}; "
                "nothing was lost."
            )
    finally:
        drain_log.removeHandler(handler)
        if workdir:
            workdir.cleanup()
