"""The dashboard's actions: replay and purge dead letters, hold, release and retry-now
queued events. Each runs the library call the command line runs (``spooler dlq
replay``, ``spooler hold``...), on a selection read from the form: picked event ids, a
destination (and, for dead letters, a reason), or everything.

Before it runs, the dashboard shows how many events it will touch: the dead-letter
calls count with ``dry_run``; for the queue, the count comes from the spool's status
(the events a hold would park are the queued ones neither held nor being delivered,
and so on). The confirmation carries, with the selection, the largest key of the
table as it was counted (``last_key``): events that die or are queued after the count
are left alone, so that a confirmed action acts on no more than it said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..errors import ConfigError
from ..events import events_phrase
from ..records import Counts
from ..spool import Spool
from .markup import Markup, html, join

__all__ = ["ACTIONS", "Selection", "confirm_page", "perform", "preview"]

#: Each action: what the button says, and whether it acts on dead letters.
ACTIONS = {
    "replay": ("Replay", True),
    "purge": ("Purge", True),
    "hold": ("Hold", False),
    "release": ("Release", False),
    "retry-now": ("Retry now", False),
}
_WHAT = {
    "replay": "move {} back to the queue, to be delivered again (same event ids)",
    "purge": "delete {} for good",
    "hold": "park {}: no drain sends them until they are released",
    "release": "make {} due at once",
    "retry-now": "make {} due at once, and end the pause of their destination",
}


@dataclass(frozen=True)
class Selection:
    """The events an action is for, as the form gave them."""

    ids: tuple[str, ...] = ()
    destination: str | None = None
    reason: str | None = None
    status: int | None = None  # the HTTP status dead letters died of
    everything: bool = False
    last_key: int | None = None  # the table's largest key when the count was shown

    @classmethod
    def from_form(cls, form: Mapping[str, list[str]], *, dead: bool) -> Selection:
        """The form's selection; ``ConfigError`` when it names none, or mixes ``all``
        with others (as the command line refuses them)."""

        def one(name: str) -> str | None:
            value = form.get(name, [""])[0].strip()
            return value or None

        status = one("status") if dead else None
        if status is not None and not status.isdigit():
            raise ConfigError(f"status: expected an HTTP status, got {status!r}")
        last_key = one("last_key")
        if last_key is not None and not last_key.isdigit():
            raise ConfigError(f"last_key: expected a key, got {last_key!r}")
        selection = cls(
            ids=tuple(value for value in form.get("id", []) if value.strip()),
            destination=one("destination"),
            reason=one("reason") if dead else None,
            status=None if status is None else int(status),
            everything=one("all") == "1",
            last_key=None if last_key is None else int(last_key),
        )
        named = (
            bool(selection.ids)
            or selection.destination
            or selection.reason
            or selection.status is not None
        )
        if not named and not selection.everything:
            raise ConfigError("no events picked: pick some, or filter, first")
        if named and selection.everything:
            raise ConfigError("'all' cannot be combined with ids or filters")
        return selection

    def fields(self) -> list[tuple[str, str]]:
        """The selection as form fields again (for the confirmation's form)."""
        fields = [("id", event_id) for event_id in self.ids]
        fields += self._filters()
        if self.last_key is not None:
            fields.append(("last_key", str(self.last_key)))
        return [*fields, ("all", "1")] if self.everything else fields

    def describe(self) -> str:
        """``"destination amplitude, reason rejected, status 400"``, ``"2 picked events"``,
        ``"every destination"``."""
        if self.ids:
            return f"{events_phrase(len(self.ids))} picked"
        return ", ".join(f"{k} {v}" for k, v in self._filters()) or "every destination"

    def _filters(self) -> list[tuple[str, str]]:
        status = None if self.status is None else str(self.status)
        given = (("destination", self.destination), ("reason", self.reason), ("status", status))
        return [(k, v) for k, v in given if v]


def _on_dead(spool: Spool, action: str, selection: Selection, *, dry_run: bool) -> int:
    call = spool.dead_letters.replay if action == "replay" else spool.dead_letters.purge
    return call(
        selection.ids,
        everything=selection.everything,
        destination=selection.destination,
        reason=selection.reason,
        status=selection.status,
        last_key=selection.last_key,
        dry_run=dry_run,
    )


def preview(spool: Spool, action: str, selection: Selection) -> tuple[int, Selection]:
    """How many events ``action`` would touch now, and ``selection`` bounded to the
    events there now (what the confirmation carries)."""
    if ACTIONS[action][1]:
        bounded = replace(selection, last_key=spool.dead_letters.last_key())
        return _on_dead(spool, action, bounded, dry_run=True), bounded
    # The key is read before the counts: an event queued in between is counted but left
    # alone, so the action still touches no more than the count.
    bounded = replace(selection, last_key=spool.last_queued_key())
    if selection.ids:
        return len(selection.ids), bounded
    status = spool.status()
    count = sum(
        _would_touch(action, counts)
        for name, counts in status.destinations.items()
        if selection.everything or name == selection.destination
    )
    return count, bounded


def _would_touch(action: str, c: Counts) -> int:
    """Of one destination's queue, the events an action on all of it would touch."""
    if action == "hold":
        return c.queued - c.leased - c.held
    if action == "release":
        return c.held
    return c.queued - c.due - c.leased - c.held  # retry-now: those waiting out a backoff


def perform(spool: Spool, action: str, selection: Selection) -> int:
    """Run ``action`` on ``selection``, as the command line does; how many events it touched."""
    if ACTIONS[action][1]:
        return _on_dead(spool, action, selection, dry_run=False)
    ids, destination, everything = selection.ids, selection.destination, selection.everything
    bound = selection.last_key
    if action == "retry-now":
        return spool.retry_now(
            ids, destination=destination, everything=everything, last_key=bound
        ).events
    call = spool.hold if action == "hold" else spool.release
    return call(ids, destination=destination, everything=everything, last_key=bound)


def confirm_page(action: str, selection: Selection, count: int, csrf: str, back: str) -> Markup:
    """The question an action asks first, with how many events it will touch."""
    label, _ = ACTIONS[action]
    hidden = join(
        html('<input type="hidden" name="{}" value="{}">', name, value)
        for name, value in [*selection.fields(), ("csrf", csrf), ("back", back), ("confirmed", "1")]
    )
    question = _WHAT[action].format(events_phrase(count))
    later = "die" if ACTIONS[action][1] else "are queued"
    return html(
        '<p class="confirm" data-count="{}">This will {} ({}). Events that {} from now on'
        " are left alone.</p>"
        '<form method="post" action="/actions/{}">{}'
        '<button type="submit" data-confirm>{} {}</button>'
        ' <a href="{}">Cancel</a></form>',
        count,
        question,
        selection.describe(),
        later,
        action,
        hidden,
        label,
        events_phrase(count),
        back,
    )
