"""``spooler doctor``: check a spool's health, and quarantine what no drain should send."""

from __future__ import annotations

from collections.abc import Collection

from .events import events_phrase
from .records import Finding, failing_phrase, per_destination, seconds_left
from .spool import Spool

__all__ = ["Finding", "diagnose"]

# Share of max_events / max_bytes past which enqueue is about to fail: time to act.
LIMIT_WARNING_SHARE = 0.8


def diagnose(
    spool: Spool,
    *,
    now: float,
    min_free_bytes: int = 100 * 1024 * 1024,
    configured: Collection[str] | None = None,
) -> list[Finding]:
    """Run every check on ``spool``: its integrity and schema, what holds it (a file's
    log, modes and disk, ``min_free_bytes``; a server's reach and dead rows), then its
    events. Corrupt events are moved to the dead-letter table. A damaged file is
    reported, and then neither read through nor written to.

    With ``configured`` (the destinations a config file defines), events queued for any
    other destination are reported: no drain with that config would ever send them. A
    spool opened with ``max_events`` or ``max_bytes`` is checked against them.
    """
    store = spool.store
    integrity = store.integrity_check()
    damaged = integrity != ["ok"]
    findings = [
        Finding(
            "problem",
            "integrity",
            "the file is damaged: "
            + "; ".join(integrity[:5])
            + " (the checks that read every event are skipped; restore the spool from a"
            " backup, see docs/operations.md)",
        )
        if damaged
        else Finding("ok", "integrity", "ok")
    ]
    version = store.schema_version()
    findings.append(
        Finding(
            "ok" if version == store.SCHEMA_VERSION else "problem", "schema", f"version {version}"
        )
    )
    findings += store.storage_checks(min_free_bytes=min_free_bytes)
    if not damaged:  # nothing is read past a damaged page, and nothing is written
        findings += _event_checks(spool, now=now, configured=configured)
    return findings


def _event_checks(spool: Spool, *, now: float, configured: Collection[str] | None) -> list[Finding]:
    """The checks that read every queued event: stale leases, bodies (quarantined when not
    a JSON object), destinations whose requests fail, destinations no config defines,
    limits."""
    store = spool.store
    stale = store.stale_leases(now=now)
    leases = (
        f"{events_phrase(stale)} leased by drains that stopped; the next drain retries them"
        if stale
        else "no stale leases"
    )
    live = store.live_leases(now=now)
    if live:
        # A drain killed a moment ago holds its events until its leases end, as one
        # still running does: neither can be told from here.
        events = sum(leased.events for leased in live)
        drains = len({leased.owner for leased in live})
        leases += (
            f"; {events_phrase(events)} leased by {drains} running drain"
            f"{'' if drains == 1 else 's'} (or stopped without settling them), the last"
            f" lease ends in {seconds_left(max(leased.until for leased in live) - now)}"
        )
    findings = [Finding("warning" if stale else "ok", "leases", leases)]
    corrupt = store.quarantine_corrupt(now=now)
    findings.append(
        Finding(
            "problem" if corrupt else "ok",
            "bodies",
            f"quarantined {events_phrase(corrupt)} whose body is not a JSON object; see "
            "spooler dlq inspect --reason corrupt"
            if corrupt
            else "every queued body is JSON",
        )
    )
    failing = _failing(spool, now=now)
    if failing:
        findings.append(failing)
    if configured is not None:
        findings.append(_unconfigured(spool, configured))
    if spool.max_events is not None or spool.max_bytes is not None:
        findings.append(_limits(spool))
    return findings


def _failing(spool: Spool, *, now: float) -> Finding | None:
    """The destinations whose last requests failed (the drains keep them paused, then
    probe), or None: a spool in good health can still be piling up events for an API
    that is down, and ``delivery`` says so where ``status`` would. A warning while
    events of one of them are queued; once none are (they died, or were purged),
    nothing waits to be probed, and the line is only what the drains remember."""
    failing = {
        name: counts
        for name, counts in spool.store.counts(now=now).items()
        if counts.failed_in_a_row
    }
    if not failing:
        return None
    each = [failing_phrase(name, counts, now=now) for name, counts in sorted(failing.items())]
    waiting = any(counts.queued for counts in failing.values())
    return Finding(
        "warning" if waiting else "ok", "delivery", "; ".join(each) + " (see spooler status)"
    )


def _unconfigured(spool: Spool, configured: Collection[str]) -> Finding:
    stranded = spool.store.queued_elsewhere(configured)
    if not stranded:
        return Finding("ok", "routes", "every queued event is for a configured destination")
    return Finding(
        "warning",
        "routes",
        f"queued for destinations the config does not define: {per_destination(stranded)}",
    )


def _limits(spool: Spool) -> Finding:
    events, size = spool.store.totals()
    used = [
        (name, held, cap)
        for name, held, cap in (
            ("max_events", events, spool.max_events),
            ("max_bytes", size, spool.max_bytes),
        )
        if cap is not None
    ]
    detail = ", ".join(f"{held} of {name}={cap} ({held / cap:.0%})" for name, held, cap in used)
    share = max(held / cap for _, held, cap in used)
    if share < LIMIT_WARNING_SHARE:
        return Finding("ok", "limits", detail)
    # max_bytes refuses an event that would pass it, so a spool a few bytes short of it
    # is full for its producers: once an event of the spool's usual size no longer fits.
    average = size // events if events else 0
    no_room = spool.max_bytes is not None and share < 1 and size + average > spool.max_bytes
    if no_room:
        detail += f"; an event of the average size ({average} bytes) no longer fits"
    return Finding(
        "problem" if share >= 1 or no_room else "warning",
        "limits",
        f"{detail}; enqueue fails at the limit: deliver events, purge dead ones (they count "
        "too), or raise it",
    )
