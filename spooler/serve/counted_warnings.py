"""The relay's warnings of refusals an SDK repeats: a wrong key (``wrong_keys``), a spool
that cannot take events (``spool_refusals``).

An SDK that retries gets the same refusal on every request. The operator must see it in
the log, but one line per request floods it (3,700 lines a second from a single client
against a full spool), and journald then drops the unit's other lines, the useful ones
too. So the first refusal of each kind is logged at once, and the ones after it at most
once a minute (``WARN_EVERY``), counted, with the last one's details; what is still
counted when the relay stops is logged then.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["WARN_EVERY", "CountedWarnings"]

WARN_EVERY = 60.0  # seconds between two warnings of one kind of refusal

D = TypeVar("D")  # a refusal's details, as its lines show them


class CountedWarnings(ABC, Generic[D]):
    """Warns of refusals, by kind: the first at once, then at most once a minute with
    the count since; a subclass words the two lines.

    Usage (through a subclass)::

        warnings.note(kind, details)  # for each refused request
        warnings.flush()  # now and then: what a minute since the last warning counted
        warnings.flush(stopping=True)  # at the end: whatever is counted
    """

    def __init__(self, log: logging.Logger, *, clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._clock = clock
        self._warned_at: dict[str, float] = {}  # by kind
        self._unreported: dict[str, tuple[int, D]] = {}  # by kind: the count, the last's

    def note(self, kind: str, details: D) -> None:
        """Note a refusal of ``kind``: warned of at once if it is the first, else counted."""
        if kind not in self._warned_at:
            self._warned_at[kind] = self._clock()
            self._log.warning("%s", self.first_line(kind, details))
            return
        count, _ = self._unreported.get(kind, (0, details))
        self._unreported[kind] = (count + 1, details)
        self.flush()

    def flush(self, *, stopping: bool = False) -> None:
        """Log each kind's refusals counted since its last warning, if that was a minute
        ago (``stopping``: whenever it was)."""
        now = self._clock()
        for kind, (count, details) in list(self._unreported.items()):
            since = now - self._warned_at[kind]
            if since < WARN_EVERY and not stopping:
                continue
            del self._unreported[kind]
            self._warned_at[kind] = now
            self._log.warning("%s", self.counted_line(kind, count, since, details))

    @abstractmethod
    def first_line(self, kind: str, details: D) -> str:
        """The warning of the first refusal of ``kind``."""

    @abstractmethod
    def counted_line(self, kind: str, count: int, since: float, details: D) -> str:
        """The warning of ``count`` refusals of ``kind`` in the last ``since`` seconds,
        ``details`` the last one's."""
