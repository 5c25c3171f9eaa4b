"""The dead-letter pages: the summary by destination, reason and status; the list, filtered
and paged, with replay and purge of what is picked or of all that match; one event in
full, with its attempt log and payload."""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlencode

from ..events import events_phrase
from ..records import DEAD_AGE_BUCKETS, DeadEvent, DeadGroup, DeadPage, iso_utc, one_line
from .markup import Markup, html, join
from .pages import action_form, ago, duration

__all__ = ["PAGE_SIZE", "Filters", "dead_event_page", "dead_letters", "dead_list", "dead_summary"]

PAGE_SIZE = 50


class Filters:
    """The list's filters and its place in the table, from the page's address."""

    def __init__(self, query: dict[str, list[str]]) -> None:
        def one(name: str) -> str | None:
            value = query.get(name, [""])[0].strip()
            return value or None

        self.destination = one("destination")
        self.reason = one("reason")
        self.status = _key(one("status"))  # the HTTP status the events died of
        self.before = _key(one("before"))
        self.after = _key(one("after"))

    def fields(self) -> dict[str, str]:
        """The filters as form fields (none: every dead event)."""
        given = {
            "destination": self.destination,
            "reason": self.reason,
            "status": None if self.status is None else str(self.status),
        }
        return {name: value for name, value in given.items() if value is not None}

    def address(self, **place: int) -> str:
        """The list's address with these filters, at ``place`` (``before`` or ``after``)."""
        query = urlencode({**self.fields(), **place})
        return "/dead" + (f"?{query}" if query else "")


def _key(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def dead_letters(
    groups: Sequence[DeadGroup], age: float, page: DeadPage, filters: Filters, csrf: str, now: float
) -> Markup:
    """The dead-letter page's body: the summary, the filter, the list."""
    return html(
        '<h2>By destination, reason and status</h2><section data-part="summary">{}</section>'
        '<h2 id="list">Events</h2>{}<section data-part="list">{}</section>',
        dead_summary(groups, age),
        _filter_form(groups, filters),
        dead_list(page, filters, csrf, now),
    )


def dead_summary(groups: Sequence[DeadGroup], age: float) -> Markup:
    """The summary table; each group links to its events."""
    if not groups:
        return html('<p class="empty">No dead letters. (Counted {} ago.)</p>', duration(age))
    rows = join(
        html(
            '<tr><th scope="row">{}</th><td>{}</td><td>{}</td><td><a href="{}">{}</a></td>{}'
            '<td class="error">{}</td></tr>',
            g.destination,
            g.reason,
            "-" if g.status is None else g.status,
            _group_address(g),
            f"{g.count:,}",
            join(html("<td>{}</td>", f"{g.by_age[bucket]:,}") for bucket in DEAD_AGE_BUCKETS),
            one_line(g.top_error or "", 100),
        )
        for g in groups
    )
    ages = join(html("<th>{}</th>", bucket) for bucket in DEAD_AGE_BUCKETS)
    return html(
        '<table class="summary"><thead><tr><th>Destination</th><th>Reason</th><th>Status</th>'
        "<th>Events</th>{}<th>Usual error</th></tr></thead><tbody>{}</tbody></table>"
        '<p class="meta">Counted {} ago.</p>',
        ages,
        rows,
        duration(age),
    )


def _group_address(group: DeadGroup) -> str:
    """The list of a summary's row: its destination, reason and status (one that died
    without an answer, status "-", cannot be told apart by it: its reason's list)."""
    given = {"destination": group.destination, "reason": group.reason}
    if group.status is not None:
        given["status"] = str(group.status)
    return "/dead?" + urlencode(given) + "#list"


def _filter_form(groups: Sequence[DeadGroup], filters: Filters) -> Markup:
    def select(name: str, options: set[str], chosen: str | None) -> Markup:
        choices = join(
            html(
                '<option value="{}"{}>{}</option>',
                value,
                Markup(" selected") if value == chosen else "",
                value,
            )
            for value in sorted(options | ({chosen} if chosen else set()))
        )
        return html(
            '<label>{} <select name="{}"><option value="">any</option>{}</select></label>',
            name,
            name,
            choices,
        )

    return html(
        '<form method="get" action="/dead#list" class="filters">{}{}{}'
        '<button type="submit">Filter</button></form>',
        select("destination", {g.destination for g in groups}, filters.destination),
        select("reason", {g.reason for g in groups}, filters.reason),
        select(
            "status",
            {str(g.status) for g in groups if g.status is not None},
            None if filters.status is None else str(filters.status),
        ),
    )


def dead_list(page: DeadPage, filters: Filters, csrf: str, now: float) -> Markup:
    """A page of the list, newest first, with the actions on what is picked and on all
    that match. ``page`` holds up to ``PAGE_SIZE + 1`` events: one over the page says
    that another page follows in the direction it was read (``Older`` or ``Newer``)."""
    back = filters.address()
    what = ", ".join(f"{k} {v}" for k, v in filters.fields().items()) or "all"
    everything = join(
        action_form(
            action,
            f"{label} all {page.total:,} ({what})",
            filters.fields() or {"all": "1"},
            csrf,
            back,
        )
        for action, label in (("replay", "Replay"), ("purge", "Purge"))
    )
    if not page.events:
        return html('<p class="empty">No dead letters match.</p>')
    events = page.events
    more = len(events) > PAGE_SIZE
    if filters.after is not None:  # read upwards: the one over is the newest
        events, has_newer, has_older = events[1:] if more else events, more, True
    else:
        events, has_newer, has_older = events[:PAGE_SIZE], filters.before is not None, more
    rows = join(_event_row(key, event, now) for key, event in events)
    keys = [key for key, _ in events]
    newer = (
        html('<a href="{}" rel="prev">Newer</a>', filters.address(after=keys[0]))
        if has_newer
        else ""
    )
    older = (
        html('<a href="{}" rel="next">Older</a>', filters.address(before=keys[-1]))
        if has_older
        else ""
    )
    hidden = join(
        html('<input type="hidden" name="{}" value="{}">', name, value)
        for name, value in {"csrf": csrf, "back": back}.items()
    )
    return html(
        '<div class="meta">Matching: {}. {}</div>'
        '<form method="post" action="/actions/replay" id="picked">{}'
        '<table class="dead"><thead><tr><th><input type="checkbox" data-pick-all title="Pick all on'
        ' this page"></th><th>Event</th><th>Destination</th><th>Reason</th><th>Status</th>'
        "<th>Attempts</th><th>Died</th><th>Error</th></tr></thead><tbody>{}</tbody></table>"
        '<p><button type="submit" data-action="replay">Replay picked</button>'
        ' <button type="submit" formaction="/actions/purge" data-action="purge">'
        "Purge picked</button>"
        '</p></form><p class="pages">{} {}</p>',
        events_phrase(page.total),
        everything,
        hidden,
        rows,
        newer,
        older,
    )


def _event_row(key: int, event: DeadEvent, now: float) -> Markup:
    return html(
        '<tr data-key="{}"><td><input type="checkbox" name="id" value="{}"></td>'
        '<td><a href="/dead/event/{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
        '<td>{}</td><td class="error">{}</td></tr>',
        key,
        event.event_id,
        event.event_id,
        event.event_id,
        event.destination,
        event.reason,
        "-" if event.status is None else event.status,
        event.attempts,
        ago(event.dead_at, now),
        one_line(event.error or "", 100),
    )


def dead_event_page(event: DeadEvent, csrf: str, now: float) -> Markup:
    """One dead event in full: what is known of it, its attempt log, its payload."""
    try:
        payload = json.dumps(json.loads(event.body), indent=2, ensure_ascii=False)
    except ValueError:
        payload = event.body  # not JSON (a damaged body, quarantined): shown as stored
    facts = join(
        html("<tr><th>{}</th><td>{}</td></tr>", name, value)
        for name, value in (
            ("Event id", event.event_id),
            ("Destination", event.destination),
            ("Reason", event.reason),
            ("Status", "-" if event.status is None else event.status),
            ("Error", event.error or "-"),
            ("Attempts", event.attempts),
            ("Enqueued", html("{} ({})", iso_utc(event.created_at), ago(event.created_at, now))),
            ("Died", html("{} ({})", iso_utc(event.dead_at), ago(event.dead_at, now))),
        )
    )
    attempts = join(
        html(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            iso_utc(a.at),
            "-" if a.status is None else a.status,
            a.error,
        )
        for a in event.attempt_log
    )
    log = (
        html(
            "<table><thead><tr><th>When</th><th>Status</th><th>Error</th></tr></thead><tbody>{}</tbody></table>",
            attempts,
        )
        if event.attempt_log
        else html('<p class="empty">No delivery attempt failed: it died before one.</p>')
    )
    actions = join(
        action_form(action, label, {"id": event.event_id}, csrf, "/dead")
        for action, label in (("replay", "Replay"), ("purge", "Purge"))
    )
    return html(
        '<table class="facts">{}</table><div class="actions">{}</div><h2>Attempt log</h2>{}'
        '<h2>Payload</h2><pre class="payload">{}</pre>',
        facts,
        actions,
        log,
        payload,
    )
