"""Queue controls: ``hold``, ``release``, ``retry-now`` and ``expire``."""

from __future__ import annotations

import sys

import click

from spooler.events import events_phrase

from .options import (
    FlagNamedOption,
    Options,
    common_options,
    destination_filter,
    event_ids,
    require_selection,
)

__all__ = ["expire", "hold", "release", "retry_now"]


@click.command("retry-now")
@event_ids
@click.option("--all", "everything", cls=FlagNamedOption, is_flag=True, help="Every waiting event.")
@destination_filter
@common_options
def retry_now(
    opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None
) -> None:
    """Clear the backoff of waiting events, so the next drain pass sends them; their
    destinations' pauses end, and a running drain probes them at once. IDs may be given
    as - to read them from stdin, one per line."""
    require_selection(ids, everything, what="queued events", destination=destination)
    with opts.open_spool(create=False) as spool:
        done = spool.retry_now(ids, destination=destination, everything=everything)
    if done.events:
        click.echo(f"made {events_phrase(done.events)} due now")
    else:  # not "0 events due now": those already due are not counted, held ones wait
        click.echo(
            "made no event due: none selected was waiting for a retry"
            " (already due, held, or being delivered)"
        )
    if done.pauses_ended:
        them = "it" if len(done.pauses_ended) == 1 else "them"
        names = ", ".join(done.pauses_ended)
        click.echo(f"ended the pause of {names}: a running drain probes {them} at once")


@click.command()
@event_ids
@click.option("--all", "everything", cls=FlagNamedOption, is_flag=True, help="Every queued event.")
@destination_filter
@common_options
def hold(opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None) -> None:
    """Park queued events: no drain sends them, and none expires them, until release.
    Events being delivered at this moment are left alone. IDs may be given as - to read
    them from stdin, one per line."""
    require_selection(ids, everything, what="queued events", destination=destination)
    with opts.open_spool(create=False) as spool:
        count = spool.hold(ids, destination=destination, everything=everything)
    click.echo(f"held {events_phrase(count)}")


@click.command()
@event_ids
@click.option("--all", "everything", cls=FlagNamedOption, is_flag=True, help="Every held event.")
@destination_filter
@common_options
def release(opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None) -> None:
    """Let held events go: they are due at once. IDs may be given as - to read them from
    stdin, one per line."""
    require_selection(ids, everything, what="held events", destination=destination)
    with opts.open_spool(create=False) as spool:
        count = spool.release(ids, destination=destination, everything=everything)
    click.echo(f"released {events_phrase(count)}")


@click.command()
@event_ids
@click.option("--all", "everything", cls=FlagNamedOption, is_flag=True, help="Every queued event.")
@destination_filter
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
def expire(
    opts: Options, ids: tuple[str, ...], everything: bool, destination: str | None, yes: bool
) -> None:
    """Move queued events to the dead-letter table (reason manual); replayable later.
    Events being delivered at this moment are left alone. IDs may be given as - to read
    them from stdin, one per line."""
    require_selection(ids, everything, what="queued events", destination=destination)
    if not ids and not yes and sys.stdin.isatty():
        which = f"of {destination}" if destination else "in the queue"
        click.confirm(f"Move every event {which} to the dead-letter table?", abort=True)
    with opts.open_spool(create=False) as spool:
        count = spool.expire(ids, destination=destination, everything=everything)
    click.echo(f"expired {events_phrase(count)}")
