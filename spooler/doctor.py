"""``spooler doctor``: check a spool's health, and quarantine what no drain should send."""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass

from .events import events_phrase
from .records import per_destination, queued_elsewhere
from .spool import Spool
from .store import SCHEMA_VERSION

__all__ = ["Finding", "diagnose"]

WAL_WARNING_BYTES = 64 * 1024 * 1024  # SQLite checkpoints at ~4 MB: more means a stuck reader
# Share of max_events / max_bytes past which enqueue is about to fail: time to act.
LIMIT_WARNING_SHARE = 0.8


@dataclass(frozen=True)
class Finding:
    """One check's result: ``ok``, ``warning`` (needs a look) or ``problem`` (needs action)."""

    level: str
    check: str
    detail: str


def diagnose(
    spool: Spool,
    *,
    now: float,
    min_free_bytes: int = 100 * 1024 * 1024,
    configured: Collection[str] | None = None,
) -> list[Finding]:
    """Run every check on ``spool``. Corrupt events are moved to the dead-letter table.
    A damaged file is reported, and then neither read through nor written to.

    With ``configured`` (the destinations a config file defines), events queued for any
    other destination are reported: no drain with that config would ever send them. A
    spool opened with ``max_events`` or ``max_bytes`` is checked against them.
    """
    store = spool.store
    findings = []
    integrity = store.integrity_check()
    damaged = integrity != ["ok"]
    findings.append(
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
    )
    version = store.schema_version()
    findings.append(
        Finding("ok" if version == SCHEMA_VERSION else "problem", "schema", f"version {version}")
    )
    wal = f"{store.path}-wal"
    wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
    findings.append(
        Finding(
            "warning" if wal_size > WAL_WARNING_BYTES else "ok",
            "wal",
            f"{wal_size / 1024 / 1024:.1f} MiB"
            + (
                " (a long-running reader may be blocking checkpoints)"
                if wal_size > WAL_WARNING_BYTES
                else ""
            ),
        )
    )
    findings.append(_file_access(store.path))
    if not damaged:  # nothing is read past a damaged page, and nothing is written
        findings += _event_checks(spool, now=now, configured=configured)
    free = shutil.disk_usage(store.directory).free
    findings.append(
        Finding(
            "problem" if free < min_free_bytes else "ok",
            "disk",
            f"{free / 1024 / 1024:.0f} MiB free"
            + (f" (under {min_free_bytes / 1024 / 1024:.0f} MiB)" if free < min_free_bytes else ""),
        )
    )
    return findings


def _event_checks(spool: Spool, *, now: float, configured: Collection[str] | None) -> list[Finding]:
    """The checks that read every queued event: stale leases, bodies (quarantined when not
    a JSON object), destinations no config defines, limits."""
    store = spool.store
    stale = store.stale_leases(now=now)
    findings = [
        Finding(
            "warning" if stale else "ok",
            "leases",
            f"{events_phrase(stale)} leased by drains that stopped; the next drain retries them"
            if stale
            else "no stale leases",
        )
    ]
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
    if configured is not None:
        findings.append(_unconfigured(spool, configured))
    if spool.max_events is not None or spool.max_bytes is not None:
        findings.append(_limits(spool))
    return findings


def _file_access(path: str) -> Finding:
    """Whether others may read the spool's files: they hold the event payloads."""
    real = os.path.realpath(path)
    exposed = []
    for name in (real, f"{real}-wal", f"{real}-shm"):
        try:
            mode = os.stat(name).st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o006:
            exposed.append(f"{name} ({mode:04o})")
    if not exposed:
        return Finding("ok", "files", "not readable by others")
    return Finding(
        "warning",
        "files",
        f"readable by others, payloads included: {', '.join(exposed)}; run chmod o-rwx on"
        " them (SQLite gives new -wal and -shm files the spool file's mode)",
    )


def _unconfigured(spool: Spool, configured: Collection[str]) -> Finding:
    stranded = queued_elsewhere(spool.status().destinations, configured)
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
    return Finding(
        "problem" if share >= 1 else "warning",
        "limits",
        f"{detail}; enqueue fails at the limit: deliver events, purge dead ones (they count "
        "too), or raise it",
    )
