"""The relay's warnings of requests it answered 503 because the spool could not take
their events (``max_events`` / ``max_bytes`` reached, a full disk, an I/O error).

While the spool is full every request gets the 503, and the SDKs send them again: one
line per request flooded the log (3,700 lines a second from a single client), and
journald then drops lines of the unit, the useful ones too. So the first is logged at
once, and the ones after it at most once a minute (``WARN_EVERY``, as for wrong keys),
counted with the last one's reason; what is still counted when the relay stops is logged
then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .wrong_keys import WARN_EVERY

__all__ = ["SpoolRefusals"]


class SpoolRefusals:
    """Warns of the requests answered 503 for the spool's sake, at most once a minute.

    Usage::

        refusals = SpoolRefusals(logging.getLogger("spooler.serve"))
        refusals.refused("POST /v1/batch", "the spool holds ...")  # for each such request
        refusals.flush()  # now and then: what a minute since the last warning counted
        refusals.flush(stopping=True)  # at the end: whatever is counted
    """

    def __init__(self, log: logging.Logger, *, clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._clock = clock
        self._warned_at: float | None = None
        self._unreported = 0
        self._last = ("", "")  # the last request counted, and why the spool refused it

    def refused(self, request: str, reason: str) -> None:
        """Note ``request`` ("POST /path"), answered 503 because of ``reason``."""
        if self._warned_at is None:
            self._warned_at = self._clock()
            self._log.warning(
                "%s: not stored, answered 503: %s; more requests the spool cannot take are"
                " logged at most once a minute",
                request,
                reason,
            )
            return
        self._unreported += 1
        self._last = (request, reason)
        self.flush()

    def flush(self, *, stopping: bool = False) -> None:
        """Log the refusals counted since the last warning, if that was a minute ago
        (``stopping``: whenever it was)."""
        if self._warned_at is None or not self._unreported:
            return
        now = self._clock()
        since = now - self._warned_at
        if since < WARN_EVERY and not stopping:
            return
        request, reason = self._last
        self._log.warning(
            "answered 503 to %d more %s in the last %.0fs: the spool could not take their"
            " events (the last, %s: %s)",
            self._unreported,
            "request" if self._unreported == 1 else "requests",
            since,
            request,
            reason,
        )
        self._warned_at = now
        self._unreported = 0
