"""``spooler demo``: the product's story in one run, against a local receiver; with
``--outage``, a receiver's outage in real time (``spooler.testing.outage``), to watch in
``spooler web``."""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from spooler import ConfigError, Spool, SpoolerError
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.events import events_phrase
from spooler.testing import Receiver
from spooler.testing.outage import FAILING, OutageReport, StagedOutage

from .render import dead_table, status_table, table

__all__ = ["run_demo", "run_outage_demo"]

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


def _refuse_an_existing_spool(db: str | None) -> None:
    if db and Path(db).exists():
        # The demo drains to a receiver that keeps nothing (and replays every dead
        # letter): run on a real spool, it would throw that spool's events away.
        raise ConfigError(f"--db {db} exists; the demo needs a new file (or no --db)")


def run_demo(db: str | None) -> None:
    """Enqueue, drain through failures, dead-letter, replay, and show the status."""
    _refuse_an_existing_spool(db)
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


def _say(text: str) -> None:
    """A step of the outage, with the time (UTC, as the dashboard's charts label it)."""
    click.echo(f"{time.strftime('%H:%M:%S', time.gmtime())} {text}")


def run_outage_demo(db: str | None, outage: float, *, before: float, after: float) -> None:
    """Stage a receiver's outage on a new spool, kept for ``spooler web``, and sum it up."""
    _refuse_an_existing_spool(db)
    path = Path(db) if db else Path(tempfile.mkdtemp(prefix="spooler-demo-")) / "demo.db"
    Spool(path).close()  # there before spooler web is pointed at it
    watch = f"spooler web --db {shlex.quote(str(path))}"
    click.echo(f"Watch it unfold in spooler web, from another terminal: {watch}")
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter("%(asctime)s   drain: %(message)s", datefmt="%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    drain_log = logging.getLogger("spooler.drain")
    drain_log.addHandler(handler)
    drain_log.setLevel(logging.WARNING)  # retries and dead letters, not every delivery
    staged = StagedOutage(path, outage=outage, before=before, after=after, say=_say)
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: staged.stop()) for signum in stops}
    try:
        report = staged.run()
    finally:
        for signum, handling in previous.items():
            signal.signal(signum, handling)
        drain_log.removeHandler(handler)
    _sum_up(report, path, watch)


def _sum_up(report: OutageReport, path: Path, watch: str) -> None:
    """Print what the staged outage did; raise if the drain failed or an event was lost."""
    _step("Summary")
    rows = [
        [
            name,
            outcome.enqueued,
            outcome.delivered,
            outcome.dead,
            ", ".join(f"{count} x {status}" for status, count in sorted(outcome.refused.items()))
            or "-",
        ]
        for name, outcome in report.destinations.items()
    ]
    headers = ["destination", "enqueued", "delivered", "dead", "refused by its receiver"]
    click.echo(_indent(table(headers, rows)))
    click.echo(f"   {FAILING}'s backlog peaked at {events_phrase(report.peak_backlog)}", nl=False)
    if report.drained_in is None:
        click.echo(".")
    else:
        click.echo(f" and drained {report.drained_in:.0f}s after its receiver recovered.")
    if report.drain.error:
        raise SpoolerError(f"the drain stopped: {report.drain.error}")
    if report.interrupted or report.lost is None:
        click.echo(f"   Stopped early: {events_phrase(report.queued)} still queued.")
    elif report.lost:
        raise SpoolerError(f"{events_phrase(report.lost)} neither delivered nor dead-lettered")
    else:
        click.echo("   Nothing was lost: every event enqueued was delivered or dead-lettered.")
    where = shlex.quote(str(path))
    click.echo(
        f"   The spool stays at {path}: {watch} shows its charts, "
        f"spooler dlq inspect --db {where} its dead letters."
    )
