"""The relay's warnings of requests refused for a wrong or missing key.

An SDK set up with the wrong key gets its API's refusal on every request, and nothing
else shows it: the operator must see it in the log, but an SDK that retries must not
flood the log either. So the first refusal of each API is logged at once, and the ones
after it at most once a minute (``WARN_EVERY``), counted; what is still counted when the
relay stops is logged then. A line names the API and the request's path, never the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["WARN_EVERY", "WrongKeys"]

WARN_EVERY = 60.0  # seconds between two warnings of one API's refusals


@dataclass
class _Unreported:
    """An API's refusals since its last warning."""

    requests: int
    path: str  # the last one's
    status: int  # ... and its answer's


class WrongKeys:
    """Warns of the requests refused for a wrong or missing key, per API.

    Usage::

        wrong_keys = WrongKeys(logging.getLogger("spooler.serve"))
        wrong_keys.refused("segment", "/v1/batch", 401)  # for each such request
        wrong_keys.flush()  # now and then: what a minute since the last warning counted
        wrong_keys.flush(stopping=True)  # at the end: whatever is counted
    """

    def __init__(self, log: logging.Logger, *, clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._clock = clock
        self._warned_at: dict[str, float] = {}  # by API
        self._unreported: dict[str, _Unreported] = {}  # by API

    def refused(self, api: str, path: str, status: int) -> None:
        """Note a request to ``path`` that ``api`` refused with ``status`` for its key."""
        if api not in self._warned_at:
            self._warned_at[api] = self._clock()
            self._log.warning(
                "%s API: refused a request to %s (HTTP %d): wrong or missing key (the key"
                " must be its destination's api_key, or serve.token); more refusals of it"
                " are logged at most once a minute",
                api,
                path,
                status,
            )
            return
        unreported = self._unreported.setdefault(api, _Unreported(0, path, status))
        unreported.requests += 1
        unreported.path, unreported.status = path, status
        self.flush()

    def flush(self, *, stopping: bool = False) -> None:
        """Log each API's refusals counted since its last warning, if that was a minute
        ago (``stopping``: whenever it was)."""
        now = self._clock()
        for api, unreported in list(self._unreported.items()):
            since = now - self._warned_at[api]
            if since < WARN_EVERY and not stopping:
                continue
            del self._unreported[api]
            self._warned_at[api] = now
            self._log.warning(
                "%s API: refused %d more %s for a wrong or missing key in the last %.0fs"
                " (the last to %s, HTTP %d)",
                api,
                unreported.requests,
                "request" if unreported.requests == 1 else "requests",
                since,
                unreported.path,
                unreported.status,
            )
