"""The ``amplitude`` destination: Amplitude's HTTP V2 API (or ``/batch``, or the EU host).

The default URL and the 2000-events-per-request limit are checked in ``config``.

Body: ``{"api_key": KEY, "events": [...], "options": {"min_id_length": N}}``. Each event
gets ``insert_id`` = its spooler event id unless it carries one, so Amplitude's 7-day
de-duplication absorbs redeliveries. A 400 that names events (by index) dead-letters
exactly those, as ``invalid`` with the field names, and the rest are sent again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import httpx

from ..records import ClaimedEvent
from . import Verdict, event_text_with_id
from .http import HttpDestination

__all__ = ["AmplitudeDestination", "bad_events"]

THROTTLED_WAIT = 30.0  # Amplitude's guidance for 429 when no Retry-After is given
_INDEXED = {
    "events_with_invalid_fields": "invalid",
    "events_with_missing_fields": "missing",
    "events_with_invalid_id_lengths": "invalid id length",
}


def bad_events(answer: object) -> dict[int, str]:
    """Event positions a 400 body names, with why; {} when it names none (or is not JSON)."""
    if not isinstance(answer, dict):
        return {}
    reasons: dict[int, list[str]] = {}
    for key, label in _INDEXED.items():
        table = answer.get(key)
        if isinstance(table, dict):
            for field, indices in table.items():
                for index in indices if isinstance(indices, list) else []:
                    if isinstance(index, int):
                        reasons.setdefault(index, []).append(f"{label} {field}")
    silenced = answer.get("silenced_events")
    for index in silenced if isinstance(silenced, list) else []:
        if isinstance(index, int):
            reasons.setdefault(index, []).append("silenced")
    return {i: "Amplitude 400: " + ", ".join(why) for i, why in reasons.items()}


class AmplitudeDestination(HttpDestination):
    """Delivers to Amplitude's HTTP V2 API; see the module docstring for the rules."""

    max_request_bytes = 1_000_000 - 1  # "less than 1 MB"

    def auth_headers(self) -> dict[str, str]:
        """None: the API key travels in the body."""
        return {}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """``{"api_key", "events", "options"}``, joined from the stored texts."""
        options = ""
        if self.config.min_id_length is not None:
            options = f',"options":{{"min_id_length":{self.config.min_id_length}}}'
        texts = ",".join(event_text_with_id(event, "insert_id") for event in events)
        return (
            '{"api_key":'
            + json.dumps(self.config.api_key)
            + ',"events":['
            + texts
            + "]"
            + (options + "}")
        )

    def judge(self, response: httpx.Response) -> Verdict:
        """As for ``http``, except: a 400 that names events dead-letters exactly those,
        and a 429 without ``Retry-After`` waits at least 30 s."""
        verdict = super().judge(response)
        if response.status_code == 400:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            named = bad_events(answer)
            if named:
                return replace(verdict, outcome="partial", reason="invalid", bad=named)
            if isinstance(answer, dict) and "api key" in str(answer.get("error", "")).lower():
                # Amplitude's answer to a wrong key is a 400 too: no event is at fault.
                return replace(verdict, split=False)
        if response.status_code == 429 and verdict.retry_after is None:
            return replace(verdict, retry_after=THROTTLED_WAIT)
        return verdict
