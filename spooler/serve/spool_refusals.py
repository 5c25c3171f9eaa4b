"""The relay's warnings of requests it answered 503 because the spool could not take
their events (``max_events`` / ``max_bytes`` reached, a full disk, an I/O error), at most
once a minute (``counted_warnings``), with the last one's reason.
"""

from __future__ import annotations

from .counted_warnings import CountedWarnings

__all__ = ["SpoolRefusals"]

_ALL = ""  # one kind: whichever request, whatever the spool's reason


class SpoolRefusals(CountedWarnings[tuple[str, str]]):
    """Warns of the requests answered 503 for the spool's sake, at most once a minute.

    Usage::

        refusals = SpoolRefusals(logging.getLogger("spooler.serve"))
        refusals.refused("POST /v1/batch", "the spool holds ...")  # for each such request
        refusals.flush()  # now and then: what a minute since the last warning counted
        refusals.flush(stopping=True)  # at the end: whatever is counted
    """

    def refused(self, request: str, reason: str) -> None:
        """Note ``request`` ("POST /path"), answered 503 because of ``reason``."""
        self.note(_ALL, (request, reason))

    def first_line(self, kind: str, details: tuple[str, str]) -> str:
        """The warning of the first such request."""
        request, reason = details
        return (
            f"{request}: not stored, answered 503: {reason}; more requests the spool cannot"
            " take are logged at most once a minute"
        )

    def counted_line(self, kind: str, count: int, since: float, details: tuple[str, str]) -> str:
        """The warning of those counted since the last."""
        request, reason = details
        requests = "request" if count == 1 else "requests"
        return (
            f"answered 503 to {count} more {requests} in the last {since:.0f}s: the spool"
            f" could not take their events (the last, {request}: {reason})"
        )
