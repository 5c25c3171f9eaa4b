"""The dashboard's frame, the overview (each destination's queue and state, with its
queue actions) and the charts of the history.

Each page is HTML built by ``markup.html``, which escapes every value. A part of a page
that refreshes itself is a ``data-part`` element: ``static/dashboard.js`` asks for the
same address with ``part=NAME`` and swaps in what comes back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from ..history import MINUTE, Bucket, HistoryPoint, buckets
from ..records import Counts, SpoolStatus, iso_utc, one_line
from .charts import color_of, line_chart
from .markup import Markup, html, join

__all__ = [
    "IDLE_AFTER",
    "RANGES",
    "action_form",
    "ago",
    "charts",
    "duration",
    "frame",
    "overview",
    "overview_table",
]

#: The charts' spans: seconds shown, and seconds per point. The last 15 minutes give the
#: first minutes of an outage room enough to be read, a point each.
RANGES = {
    "15m": (15 * MINUTE, MINUTE),
    "hour": (3600, MINUTE),
    "day": (86400, 10 * MINUTE),
    "week": (7 * 86400, 3600),
}
#: Seconds due events may wait with no delivery attempt before the overview asks
#: whether a drain runs: a running drain claims due events within its poll interval
#: (1 s by default), a paused destination is not due.
IDLE_AFTER = 60.0
#: What a finished action says, by its name (the count goes in).
DONE = {
    "replay": "Replayed {} to the queue.",
    "purge": "Deleted {} for good.",
    "hold": "Held {}.",
    "release": "Released {}.",
    "retry-now": "Made {} due now.",
}


def duration(seconds: float | None) -> str:
    """``42s``, ``5m 10s``, ``3h 2m``, ``2d 4h``: two units at most."""
    if seconds is None:
        return "-"
    seconds = max(int(seconds), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def ago(when: float | None, now: float) -> Markup:
    """A past time as ``5m 10s ago``, the exact time (UTC) on hover."""
    if when is None:
        return Markup("-")
    return html(
        '<time datetime="{}" title="{}">{} ago</time>',
        iso_utc(when),
        iso_utc(when),
        duration(now - when),
    )


def frame(
    title: str, active: str, body: Markup, *, spool: str, notice: str | None = None
) -> Markup:
    """A whole page: the head, the navigation, a notice (what an action did), ``body``."""
    nav = join(
        html(
            '<a href="{}"{}>{}</a>', href, Markup(' class="active"') if key == active else "", label
        )
        for key, href, label in (("overview", "/", "Overview"), ("dead", "/dead", "Dead letters"))
    )
    shown = html('<p class="notice" role="status">{}</p>', notice) if notice else ""
    return html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{} - spooler</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head>'
        '<body><header><strong>spooler</strong><nav>{}</nav><span class="spool">{}</span>'
        "</header><main>{}<h1>{}</h1>{}</main></body></html>",
        title,
        nav,
        spool,
        shown,
        title,
        body,
    )


def action_form(action: str, label: str, fields: Mapping[str, str], csrf: str, back: str) -> Markup:
    """A button that POSTs an action (the server asks to confirm, with the count)."""
    hidden = join(
        html('<input type="hidden" name="{}" value="{}">', name, value)
        for name, value in {**fields, "csrf": csrf, "back": back}.items()
    )
    return html(
        '<form method="post" action="/actions/{}" class="inline">{}'
        '<button type="submit" data-action="{}">{}</button></form>',
        action,
        hidden,
        action,
        label,
    )


# -- the overview ------------------------------------------------------------------------


def overview(
    status: SpoolStatus, age: float, points: Sequence[HistoryPoint], span: str, csrf: str
) -> Markup:
    """The overview's body: the destinations' table, then the charts of ``span``."""
    ranges = join(
        html(
            '<a href="/?range={}"{}>{}</a>',
            name,
            Markup(' class="active"') if name == span else "",
            name,
        )
        for name in RANGES
    )
    return html(
        '<section data-part="table">{}</section>'
        '<h2>History <span class="ranges">{}</span></h2>'
        '<section data-part="charts">{}</section>',
        overview_table(status, age, csrf),
        ranges,
        charts(points, span, status.now),
    )


def overview_table(status: SpoolStatus, age: float, csrf: str) -> Markup:
    """Each destination's queue, dead letters, pause and last outcomes, with its actions."""
    now = status.now
    if not status.destinations:
        return html(
            '<p class="empty">The spool holds no events yet. (Counted {} ago.)</p>', duration(age)
        )
    rows = join(
        _destination_row(name, counts, now, csrf)
        for name, counts in sorted(status.destinations.items())
    )
    outage = [name for name, c in status.destinations.items() if c.failed_in_a_row]
    alert = (
        html(
            '<p class="alert" role="alert">Failing: {}. Their events wait and are retried;'
            " nothing is lost. The last error says why (hover it for all of it); once the"
            " receiver answers again, the next probe resumes delivery, and Retry now probes"
            " at once.</p>",
            ", ".join(sorted(outage)),
        )
        if outage
        else ""
    )
    idle = {
        name: waited
        for name, c in status.destinations.items()
        if (waited := _undelivered_for(c, now)) is not None
    }
    if idle:
        alert = html(
            '{}<p class="alert" role="alert">No delivery attempt: {}. Their events are due,'
            " and no drain has tried to send them: is <code>spooler drain</code> running,"
            " with these destinations? (A <code>--once</code> drain takes them on its next"
            " run.)</p>",
            alert,
            ", ".join(f"{name} for {duration(idle[name])}" for name in sorted(idle)),
        )
    everything = join(
        action_form(action, label, {"all": "1"}, csrf, "/")
        for action, label in (
            ("hold", "Hold all"),
            ("release", "Release all"),
            ("retry-now", "Retry all now"),
        )
    )
    return html(
        '{}<table class="destinations"><thead><tr><th>Destination</th><th>Queued</th>'
        "<th>Due</th><th>Leased</th><th>Retrying</th><th>Held</th><th>Dead</th>"
        "<th>Oldest</th><th>Paused for</th><th>Last success</th><th>Last error</th>"
        "<th>Actions</th></tr></thead><tbody>{}</tbody></table>"
        '<div class="meta">Counted {} ago. <span class="actions">{}</span></div>',
        alert,
        rows,
        duration(age),
        everything,
    )


def _undelivered_for(c: Counts, now: float) -> float | None:
    """How long a destination's due events have waited with no delivery attempt (no
    success, no error, nothing leased), if over ``IDLE_AFTER``: it seems no drain sends
    them. None otherwise."""
    if not c.due or c.leased or (c.paused_until or 0) > now or c.oldest_queued_at is None:
        return None
    attempts = [t for t in (c.last_success_at, c.last_error_at) if t is not None]
    waited = now - max([c.oldest_queued_at, *attempts])
    return waited if waited > IDLE_AFTER else None


def _destination_row(name: str, c: Counts, now: float, csrf: str) -> Markup:
    paused = (c.paused_until or 0) - now
    failing = c.failed_in_a_row > 0
    error = (
        html(
            '{} <span class="error" title="{}">{}</span>',
            ago(c.last_error_at, now),
            c.last_error or "",
            one_line(c.last_error or "", 80),
        )
        if c.last_error_at
        else Markup("-")
    )
    actions = join(
        action_form(action, label, {"destination": name}, csrf, "/")
        for action, label in (("hold", "Hold"), ("release", "Release"), ("retry-now", "Retry now"))
    )
    return html(
        '<tr data-destination="{}" class="{}"><th scope="row">{}</th><td>{}</td><td>{}</td>'
        '<td>{}</td><td>{}</td><td>{}</td><td><a href="/dead?destination={}">{}</a></td>'
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        name,
        "failing" if failing else "",
        name,
        f"{c.queued:,}",
        f"{c.due:,}",
        f"{c.leased:,}",
        f"{c.retrying:,}",
        f"{c.held:,}",
        name,
        f"{c.dead:,}",
        duration(None if c.oldest_queued_at is None else now - c.oldest_queued_at),
        # rounded up: a pause with 0.4 s left still runs (spooler doctor says 1s too)
        duration(math.ceil(paused)) if paused > 0 else ("probing" if failing else "-"),
        ago(c.last_success_at, now),
        error,
        actions,
    )


# -- the charts --------------------------------------------------------------------------


def charts(points: Sequence[HistoryPoint], span: str, now: float) -> Markup:
    """The history of ``span`` (a key of ``RANGES``) as one chart per measure, a line per
    destination."""
    seconds, step = RANGES[span]
    start = int((now - seconds) // step) * step
    series = buckets(points, start=start, end=int(now) + 1, step=step)
    if not series:
        return html(
            '<p class="empty">No history yet: a running <code>spooler drain</code> writes a'
            " row per destination every minute.</p>"
        )

    def chart(
        title: str, unit: str, metric: str, value: Callable[[Bucket], float | None]
    ) -> Markup:
        lines = {name: [(b.start, value(b)) for b in each] for name, each in series.items()}
        return line_chart(title, unit, lines, start=start, end=now, metric=metric)

    legend = join(
        html(
            '<span class="key"><svg width="12" height="12">'
            '<rect width="12" height="12" fill="{}"/></svg>{}</span>',
            color_of(i),
            name,
        )
        for i, name in enumerate(sorted(series))
    )
    per_second = f"per second, {duration(step)} average"
    return html(
        '<p class="legend">{}</p><div class="charts">{}</div>',
        legend,
        join(
            [
                chart("Backlog", "events", "backlog", lambda b: b.backlog),
                chart("Oldest queued event", "seconds old", "oldest", lambda b: b.oldest_age),
                chart("Enqueued", per_second, "enqueued", _rate("enqueued")),
                chart("Delivered", per_second, "delivered", _rate("delivered")),
                chart("Retried", f"events per {duration(step)}", "retried", _count("retried")),
                chart("Dead-lettered", f"events per {duration(step)}", "dead", _count("dead")),
                chart("Request time", "ms, mean", "latency", _latency_ms),
            ]
        ),
    )


def _rate(field: str) -> Callable[[Bucket], float | None]:
    def rate(bucket: Bucket) -> float | None:
        value = getattr(bucket, field)
        return None if value is None or not bucket.minutes else value / bucket.seconds

    return rate


def _count(field: str) -> Callable[[Bucket], float | None]:
    def count(bucket: Bucket) -> int | None:
        return getattr(bucket, field) if bucket.minutes else None  # no drain wrote it

    return count


def _latency_ms(bucket: Bucket) -> float | None:
    latency = bucket.latency
    return None if latency is None else latency * 1000
