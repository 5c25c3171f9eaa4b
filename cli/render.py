"""Plain-text tables for the terminal: status and dead-letter listings."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence

from spooler.events import events_phrase
from spooler.records import (
    DEAD_AGE_BUCKETS,
    Counts,
    DeadEvent,
    DeadGroup,
    LeasedEvents,
    SpoolStatus,
    iso_utc,
    leases_by_drain,
    one_line,
    requests_phrase,
    seconds_left,
    utc_clock,
)

__all__ = [
    "dead_event_detail",
    "dead_summary_table",
    "dead_table",
    "human_age",
    "lease_lines",
    "service_line",
    "status_table",
    "table",
    "table_lines",
]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned text columns, two spaces apart."""
    return "\n".join(table_lines(headers, rows))


def table_lines(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, sized_by: int | None = None
) -> Iterator[str]:
    """``table``, a line at a time; with ``sized_by``, the columns are as wide as the
    first ``sized_by`` rows need, and only those are held at once (a longer cell
    further down pushes its row out of line)."""
    rows = iter(rows)
    head = [[str(h) for h in headers], *map(_cells, itertools.islice(rows, sized_by))]
    widths = [max(len(row[i]) for row in head) for i in range(len(headers))]
    for row in itertools.chain(head, map(_cells, rows)):
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()


def _cells(row: Sequence[object]) -> list[str]:
    return ["-" if cell is None else str(cell) for cell in row]


def human_age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: the largest unit that fits."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _pause_left(seconds: float) -> str:
    """What is left of a pause: under a minute rounded up (``seconds_left``), as
    ``spooler doctor`` and the dashboard show it; a pause with 0.4 s left is on."""
    return seconds_left(seconds) if seconds < 60 else human_age(seconds)


def status_table(status: SpoolStatus) -> str:
    """The human form of ``spooler status``."""

    def ago(when: float | None) -> str:
        return "-" if when is None else human_age(status.now - when) + " ago"

    def row(name: str, c: Counts) -> list[object]:
        age = None if c.oldest_queued_at is None else status.now - c.oldest_queued_at
        return [
            name,
            c.queued,
            c.due,
            c.leased,
            c.retrying,
            c.held,
            c.dead,
            human_age(age),
            _pause_left(paused) if (paused := (c.paused_until or 0) - status.now) > 0 else "-",
            ago(c.last_success_at),
            ago(c.last_error_at),
            one_line(c.last_error or "", 50),
        ]

    rows = [row(name, c) for name, c in sorted(status.destinations.items())]
    rows.append(row("(all)", status.total))
    headers = [
        "destination",
        "queued",
        "due",
        "leased",
        "retrying",
        "held",
        "dead",
        "oldest",
        "paused",
        "last_success",
        "last_error",
        "error",
    ]
    lines = [table(headers, rows), *lease_lines(status.leases, status.now)]
    for name, report in sorted(status.services.items()):
        lines.append(service_line(name, report, status.now))
    return "\n".join(lines)


def lease_lines(leases: Sequence[LeasedEvents], now: float) -> Iterator[str]:
    """A line per drain holding events under live leases, and when its last lease ends:
    ``drain web1:4121:9f2c holds 120 events of default until 09:41:07 UTC (in 45s)``."""
    for owner, held in sorted(leases_by_drain(sorted(leases)).items()):
        yield (
            f"drain {owner} holds {events_phrase(held.events)} of"
            f" {', '.join(held.destinations)} under lease until {utc_clock(held.until)}"
            f" (in {human_age(held.until - now)})"
        )


# A running relay writes its report at least every ``idle_report_s``: one this many times
# older is from a relay that stopped without a last report (killed), or cannot write.
SILENT_AFTER_INTERVALS = 3


def service_line(name: str, report: dict[str, object], now: float) -> str:
    """One line on a service's report: ``serve 127.0.0.1:8420 (pid 12, up 2h, last
    report 3s ago): 10 requests accepted (1000 events), 2 refused (503: 2); commit p50
    ... ms``."""

    def number(key: str) -> float:
        value = report.get(key)
        return value if isinstance(value, (int, float)) else 0

    since_report = now - number("updated_at")
    age = human_age(since_report)
    interval = number("idle_report_s")  # 0 in a report from before idle reports
    if report.get("stopped"):
        state = f"stopped {age} ago"
    elif interval and since_report > SILENT_AFTER_INTERVALS * interval:
        state = (
            f"no report for {age}, though it reports every {interval:g}s: killed, or cannot"
            " write to the spool"
        )
    else:
        state = f"up {human_age(now - number('started_at'))}, last report {age} ago"
    refused = report.get("refused_by_status")
    by_status = (
        ", ".join(f"{code}: {count}" for code, count in refused.items())
        if isinstance(refused, dict)
        else ""
    )
    latency = report.get("commit_ms")
    commits = (
        f"commit p50 {latency['p50']:g} ms, p99 {latency['p99']:g} ms, max {latency['max']:g} ms"
        if isinstance(latency, dict)
        else "no commit yet"
    )
    return (
        f"{report.get('service', 'service')} {name} (pid {report.get('pid')}, {state}): "
        f"{requests_phrase(int(number('requests_accepted')))} accepted "
        f"({events_phrase(int(number('events_accepted')))}), "
        f"{number('requests_refused'):.0f} refused"
        + (f" ({by_status})" if by_status else "")
        + f"; {commits}"
    )


def dead_table(dead: Iterable[DeadEvent]) -> Iterator[str]:
    """The human form of ``spooler dlq inspect``, a line at a time: the columns are sized
    by the first thousand events, and a table of a million is never held whole."""
    rows = (
        [
            d.event_id,
            d.destination,
            d.reason,
            d.status,
            d.attempts,
            iso_utc(d.dead_at),
            one_line(d.error or "", 70),
        ]
        for d in dead
    )
    headers = ["id", "destination", "reason", "status", "attempts", "dead_at", "error"]
    return table_lines(headers, rows, sized_by=1000)


def dead_event_detail(dead: DeadEvent) -> str:
    """The full view of one dead event (``spooler dlq inspect ID``): why it died, each
    logged attempt, and its payload as indented JSON."""
    fields = [
        ("id", dead.event_id),
        ("destination", dead.destination),
        ("reason", dead.reason),
        ("status", dead.status),
        ("attempts", dead.attempts),
        ("enqueued_at", iso_utc(dead.created_at)),
        ("dead_at", iso_utc(dead.dead_at)),
        ("error", None if dead.error is None else one_line(dead.error)),
    ]
    heading = "\n".join(
        f"{name + ':':13}{'-' if value is None else value}" for name, value in fields
    )
    attempts = table(
        ["at", "status", "error"],
        [[iso_utc(a.at), a.status, one_line(a.error, 100)] for a in dead.attempt_log],
    )
    logged = _attempt_log_heading(len(dead.attempt_log), dead.attempts)
    try:
        payload = json.dumps(json.loads(dead.body), indent=2, ensure_ascii=False)
    except ValueError:  # damaged, or edited by hand (doctor's "corrupt")
        payload = "(not valid JSON; as stored:)\n" + one_line(dead.body)
    return f"{heading}\n\n{logged}\n{attempts}\n\nevent:\n{payload}"


def _attempt_log_heading(logged: int, attempts: int) -> str:
    """``attempt log (latest 3 of 3):``. A replay resets an event's attempts but keeps its
    log, so a log longer than the attempts holds entries from before the last replay."""
    if logged <= attempts:
        return f"attempt log (latest {logged} of {attempts}):"
    since = "none" if not attempts else str(attempts)
    return f"attempt log (latest {logged}; {since} since the last replay):"


def dead_summary_table(groups: Sequence[DeadGroup]) -> str:
    """The human form of ``spooler dlq summary`` (like Postfix's qshape)."""
    rows = [
        [
            g.destination,
            g.reason,
            g.status,
            g.count,
            *(g.by_age[b] for b in DEAD_AGE_BUCKETS),
            one_line(g.top_error or "", 60),
        ]
        for g in groups
    ]
    headers = ["destination", "reason", "status", "count", *DEAD_AGE_BUCKETS, "most common error"]
    return table(headers, rows)
