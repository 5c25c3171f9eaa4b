"""The report of a drain run: what it must wait for at its start (events other drains
hold), the outcomes counted into it (and into the history and the metrics), the
summaries logged as it runs, and how a run ends: its leases given back, what is left,
the last summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..best_effort import best_effort
from ..errors import StoreError
from ..events import events_phrase
from ..records import failing_phrase, leases_by_drain, per_destination, utc_clock
from .base import DrainBase, DrainReport, Mode

__all__ = ["DrainReporting"]

log = logging.getLogger("spooler.drain")


class DrainReporting(DrainBase):
    """A drain's report, its summaries and its end."""

    def _count(
        self,
        destination: str,
        *,
        delivered: int = 0,
        retried: int = 0,
        dead: Mapping[str, int] | None = None,
    ) -> None:
        """Add an outcome to the report, the history, and the metrics when they are served."""
        dead = dead or {}
        with self._report_lock:
            self._report.delivered += delivered
            self._report.retried += retried
            self._report.dead += sum(dead.values())
        self._history.outcome(
            destination, delivered=delivered, retried=retried, dead=sum(dead.values())
        )
        if self._metrics:
            if delivered:
                self._metrics.delivered(destination, delivered)
            if retried:
                self._metrics.retried(destination, retried)
            for reason, count in dead.items():
                self._metrics.dead(destination, reason, count)

    def _log_summary(self, elapsed: float, *, heading: str | None = None) -> None:
        """Log the counts of the run so far. A summary's ``rate`` is over the time since
        the one before (a daemon that delivered nothing for minutes says 0.0/s, not its
        average since it started); the last line's (``heading``) over the whole run."""
        now = self._clock()
        counts = self._store.counts(now=now)
        backlog = sum(counts[name].queued for name in self._destinations if name in counts)
        report = self._report
        since, delivered_then = (0.0, 0) if heading else self._summarised
        if not heading:
            self._summarised = (elapsed, report.delivered)
        span = elapsed - since
        rate = (report.delivered - delivered_then) / span if span > 0 else 0.0
        # The totals do not say where a backlog waits: name the destinations whose last
        # requests failed (one down among several healthy ones), as doctor does.
        failing = "".join(
            f"; {failing_phrase(name, counts[name], now=now)}"
            for name in sorted(self._destinations)
            if name in counts and counts[name].failed_in_a_row
        )
        log.info(
            "%s: delivered=%d retried=%d dead=%d backlog=%d rate=%.1f/s%s",
            heading or "summary",
            report.delivered,
            report.retried,
            report.dead,
            backlog,
            rate,
            failing,
        )

    def _finish(self, mode: Mode, elapsed: float) -> DrainReport:
        # From here on the lines are the run's last: a worker still out (a request
        # abandoned at the stop, a wait on a spool that cannot be reached) says nothing
        # more, not even of an answer that comes after them.
        self._ended.set()
        report = self._report
        report.stopped_by = report.stopped_by or ("once" if mode is Mode.ONCE else "empty")
        if self._store_lost.is_set():
            # Each call would wait for the server again: the leases run out instead,
            # and what is left is for the next drain to count.
            self._log_last_counts("the spool could not be reached to count what is left")
            return report
        try:
            released = self._store.release_leases(self.owner, now=self._clock())
            counts = self._store.counts(now=self._clock())
        except StoreError as exc:
            # The spool that stopped the drain (a full disk, a damaged page) may refuse
            # these too: its leases then run out by themselves, and the last line is said
            # all the same.
            if report.error is None:
                log.warning("could not give the leases back: %s", exc)
            self._log_last_counts("the spool could not be used to count what is left")
            return report
        if released:
            log.info("released %s leased for another drain to deliver", events_phrase(released))
        report.remaining = sum(counts[name].queued for name in self._destinations if name in counts)
        self._history.flush(closing=True)
        self._reclaim_space()
        # The last line says why the drain ended: a signal, --max-time, an error...
        self._log_summary(elapsed, heading=f"drain {self.owner} stopped ({report.stopped_by})")
        self._log_unserved(still=True)
        return report

    def _log_last_counts(self, why_no_backlog: str) -> None:
        """The run's last line where the spool cannot say what is left: the counts."""
        report = self._report
        log.info(
            "drain %s stopped (%s): delivered=%d retried=%d dead=%d; %s",
            self.owner,
            report.stopped_by,
            report.delivered,
            report.retried,
            report.dead,
            why_no_backlog,
        )

    def _log_unserved(self, *, still: bool = False) -> None:
        """Say which events wait for destinations this drain does not serve: "empty" or
        a quiet daemon must not let them pass for delivered."""
        others = self._store.queued_elsewhere(self._destinations)
        if others:
            waiting = sum(others.values())
            verb = "waits" if waiting == 1 else "wait"
            log.warning(
                "%s %s for destinations this drain does not serve: %s (drain them with "
                "-d NAME, or a --config that defines them)",
                events_phrase(waiting),
                f"still {verb}" if still else verb,
                per_destination(others),
            )

    def _log_held_by_others(self, now: float) -> None:
        """Say which events of its destinations other drains hold, and until when: this
        drain sends them only once those leases end (60 s by default), and a drain
        killed without settling them leaves them to run out. (Their holders are not
        asked whether they still run: a pid says nothing across PID namespaces that
        share a host name, so a lease is never taken over early.)"""
        held = leases_by_drain(
            leased
            for leased in self._store.live_leases(now=now)
            if leased.destination in self._destinations and leased.owner != self.owner
        )
        if not held:
            return
        events = sum(mine.events for mine in held.values())
        last = max(mine.until for mine in held.values())
        if len(held) == 1:
            [owner] = held
            holders = f"{owner} until {utc_clock(last)} (in {last - now:.0f}s)"
            why = "a drain that stopped without settling them, or one still running"
            lease = "the lease ends"
        else:
            each = ", ".join(
                f"{owner}: {mine.events} until {utc_clock(mine.until)}"
                for owner, mine in sorted(held.items())
            )
            holders = f"{len(held)} other drains until {utc_clock(last)} at the latest ({each})"
            why = "drains that stopped without settling them, or still running"
            lease = "the leases end"
        log.warning(
            "%s %s leased by %s (%s): to be sent again once %s",
            events_phrase(events),
            "is" if events == 1 else "are",
            holders,
            why,
            lease,
        )

    def _reclaim_space(self) -> None:
        """Let a drained backlog give its pages back; failing to is not worth stopping for."""
        with best_effort(log, "could not give free space back to the disk"):
            pages = self._store.reclaim_space()
            if pages:
                log.info("gave %d free pages back to the disk", pages)
