"""``spooler dlq``: inspect, summarise, replay and purge dead-lettered events."""

from __future__ import annotations

import functools
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from spooler.dlq import dead_event_to_dict
from spooler.events import events_phrase

from .options import (
    FlagNamedOption,
    Options,
    common_options,
    destination_filter,
    event_ids,
    parse_duration_option,
    reason_filter,
    require_selection,
)
from .render import dead_event_detail, dead_summary_table, dead_table

__all__ = ["dlq"]


def dead_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that pick dead events by destination, reason, HTTP status and age;
    the command receives them as one ``filters`` dict, for ``DeadLetters.replay`` or
    ``purge``."""

    @destination_filter
    @reason_filter
    @click.option(
        "--status",
        type=click.IntRange(100, 599),
        help="Only events that died of an answer with this HTTP status (e.g. 401).",
    )
    @click.option(
        "--older-than", callback=parse_duration_option, help="Dead for longer than this (e.g. 7d)."
    )
    @click.option(
        "--newer-than", callback=parse_duration_option, help="Dead for less than this (e.g. 1h)."
    )
    @functools.wraps(command)
    def wrapper(
        destination: str | None,
        reason: str | None,
        status: int | None,
        older_than: float | None,
        newer_than: float | None,
        **kwargs: Any,
    ) -> Any:
        filters = {
            "destination": destination,
            "reason": reason,
            "status": status,
            "older_than": older_than,
            "newer_than": newer_than,
        }
        return command(filters=filters, **kwargs)

    return wrapper


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead-lettered events."""


@dlq.command()
@event_ids
@dead_filters
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, oldest first.")
@click.option(
    "--json",
    "as_json",
    cls=FlagNamedOption,
    is_flag=True,
    help="JSON Lines, one dead event per line.",
)
@common_options
def inspect(
    opts: Options,
    ids: tuple[str, ...],
    limit: int | None,
    as_json: bool,
    filters: dict[str, Any],
) -> None:
    """Show dead events and why they died; named IDs are shown in full (attempt log
    and payload). IDs may be given as - to read them from stdin, one per line."""
    # Printed as they are read, a page at a time: a table of a million takes no more
    # memory than one of a thousand.
    with opts.open_spool(create=False) as spool:
        dead = spool.dead_letters.inspect(ids, limit=limit, **filters)
        first = next(dead, None)
        if first is None:
            if not as_json:
                # "no dead events" would be untrue of a spool whose dead events the
                # IDs or filters left out (after a key rotation, --status 401 once the
                # 401s were replayed, while the 400s stay dead).
                selected = ids or any(value is not None for value in filters.values())
                click.echo("no dead event matches" if selected else "no dead events", err=True)
            return
        dead = itertools.chain([first], dead)
        if as_json:
            for event in dead:
                click.echo(json.dumps(dead_event_to_dict(event), ensure_ascii=False))
        elif ids:
            for number, event in enumerate(dead):
                click.echo(("\n" if number else "") + dead_event_detail(event))
        else:
            for line in dead_table(dead):
                click.echo(line)


@dlq.command()
@click.option(
    "--json", "as_json", cls=FlagNamedOption, is_flag=True, help="JSON Lines, one group per line."
)
@common_options
def summary(opts: Options, as_json: bool) -> None:
    """Dead events by destination, reason and status: counts, ages, the usual error."""
    with opts.open_spool(create=False) as spool:
        groups = spool.dead_letters.summary()
    if as_json:
        for group in groups:
            click.echo(json.dumps(asdict(group), ensure_ascii=False))
    elif groups:
        click.echo(dead_summary_table(groups))
    else:
        click.echo("no dead events", err=True)


@dlq.command()
@event_ids
@click.option("--all", "everything", cls=FlagNamedOption, is_flag=True, help="Every dead event.")
@dead_filters
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, oldest first.")
@click.option("--to", "to", metavar="DEST", help="Send them to this destination instead.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (--all).")
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
@common_options
def replay(
    opts: Options,
    ids: tuple[str, ...],
    everything: bool,
    limit: int | None,
    to: str | None,
    yes: bool,
    dry_run: bool,
    filters: dict[str, Any],
) -> None:
    """Move dead events back to the queue: same event ids, attempts reset, oldest first.
    IDs may be given as - to read them from stdin, one per line."""
    require_selection(ids, everything, **filters)
    with opts.open_spool(create=False) as spool:
        if everything and not (yes or dry_run) and sys.stdin.isatty():
            click.confirm("Replay every dead event?", abort=True)
        count = spool.dead_letters.replay(
            ids, everything=everything, limit=limit, to=to, dry_run=dry_run, **filters
        )
    click.echo(f"{'would replay' if dry_run else 'replayed'} {events_phrase(count)}")


@dlq.command()
@event_ids
@click.option("--all", "everything", cls=FlagNamedOption, is_flag=True, help="Every dead event.")
@dead_filters
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@common_options
def purge(
    opts: Options,
    ids: tuple[str, ...],
    everything: bool,
    yes: bool,
    dry_run: bool,
    filters: dict[str, Any],
) -> None:
    """Delete dead events for good (asks first on a terminal, unless --yes). IDs may be
    given as - to read them from stdin, one per line."""
    require_selection(ids, everything, **filters)
    with opts.open_spool(create=False) as spool:
        dead_letters = spool.dead_letters
        # What the question counts is what goes: events that die while it waits for an
        # answer are left alone.
        bound = dead_letters.last_key()
        count = dead_letters.purge(
            ids, everything=everything, last_key=bound, dry_run=True, **filters
        )
        if dry_run:
            click.echo(f"would purge {events_phrase(count)}")
            return
        if count and not yes and sys.stdin.isatty():
            click.confirm(f"Delete {events_phrase(count)} for good?", abort=True)
        count = dead_letters.purge(ids, everything=everything, last_key=bound, **filters)
    click.echo(f"purged {events_phrase(count)}")
