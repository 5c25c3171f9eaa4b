"""The relay's warnings of requests refused for a wrong or missing key, per API, at most
once a minute (``counted_warnings``). A line names the API and the request's path, never
the key.
"""

from __future__ import annotations

from .counted_warnings import CountedWarnings

__all__ = ["WrongKeys"]


class WrongKeys(CountedWarnings[tuple[str, int]]):
    """Warns of the requests refused for a wrong or missing key, per API.

    Usage::

        wrong_keys = WrongKeys(logging.getLogger("spooler.serve"))
        wrong_keys.refused("segment", "/v1/batch", 401)  # for each such request
        wrong_keys.flush()  # now and then: what a minute since the last warning counted
        wrong_keys.flush(stopping=True)  # at the end: whatever is counted
    """

    def refused(self, api: str, path: str, status: int) -> None:
        """Note a request to ``path`` that ``api`` refused with ``status`` for its key."""
        self.note(api, (path, status))

    def first_line(self, kind: str, details: tuple[str, int]) -> str:
        """The warning of an API's first refusal (``kind``: the API)."""
        path, status = details
        return (
            f"{kind} API: refused a request to {path} (HTTP {status}): wrong or missing key"
            " (the key must be its destination's api_key, or serve.token); more refusals of"
            " it are logged at most once a minute"
        )

    def counted_line(self, kind: str, count: int, since: float, details: tuple[str, int]) -> str:
        """The warning of an API's refusals counted since its last."""
        path, status = details
        requests = "request" if count == 1 else "requests"
        return (
            f"{kind} API: refused {count} more {requests} for a wrong or missing key in the"
            f" last {since:.0f}s (the last to {path}, HTTP {status})"
        )
