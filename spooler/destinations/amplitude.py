"""The ``amplitude`` destination: Amplitude's HTTP V2 API (or ``/batch``, or the EU host).

Body: ``{"api_key": KEY, "events": [...], "options": {"min_id_length": N}}``. Each event
gets ``insert_id`` = its spooler event id unless it carries one, so Amplitude's 7-day
de-duplication absorbs redeliveries, and ``time`` = its time of enqueue in milliseconds
unless it has one (``with_enqueue_time``). A 400 that names events (by index) dead-letters
exactly those, as ``invalid`` with the field names, and the rest are sent again.

``options`` are the destination's ``min_id_length``, overridden by the event's own
options: the ``Amplitude`` client keeps its ``min_id_length`` with each event under
``OPTIONS_KEY``. That key is taken out of the event sent, and events whose options
differ go in separate requests, so no event is judged by another's options.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .. import checks
from ..events import OPTIONS_KEY
from ..records import ClaimedEvent
from . import Verdict, event_text_with_id, own_options, with_enqueue_time
from ._http import HttpApiDestination, check_http_url
from ._registry import DestinationSpec, option, options_of

if TYPE_CHECKING:
    import httpx

    from ..config import DestinationConfig

__all__ = ["SPEC", "AmplitudeDestination", "AmplitudeOptions", "bad_events"]

THROTTLED_WAIT = 30.0  # Amplitude's guidance for 429 when no Retry-After is given
_INDEXED = {
    "events_with_invalid_fields": "invalid",
    "events_with_missing_fields": "missing",
    "events_with_invalid_id_lengths": "invalid id length",
}


@dataclass(frozen=True)
class AmplitudeOptions:
    """The ``amplitude`` type's own keys."""

    min_id_length: int | None = option(None, checks.integer(1))


SPEC = DestinationSpec(
    name="amplitude",
    title="Amplitude",
    factory=lambda config, clock: AmplitudeDestination(config, clock=clock),
    default_url="https://api2.amplitude.com/2/httpapi",
    max_batch_size=2000,
    options=AmplitudeOptions,
    needs_api_key=True,
    event_id_key="insert_id",
    checks=(check_http_url,),
)


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


def _epoch_ms(timestamp: float) -> int:
    """A Unix time in milliseconds, as Amplitude's ``time`` takes it."""
    return int(timestamp * 1000)


class AmplitudeDestination(HttpApiDestination):
    """Delivers to Amplitude's HTTP V2 API; see the module docstring for the rules."""

    max_request_bytes = 1_000_000 - 1  # "less than 1 MB"

    def __init__(
        self, config: DestinationConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options: AmplitudeOptions = options_of(config, AmplitudeOptions)
        super().__init__(config, clock=clock)

    def auth_headers(self) -> dict[str, str]:
        """None: the API key travels in the body."""
        return {}

    def request_options(self, own: Any) -> dict[str, Any]:
        """The ``options`` of a request for events whose own options are ``own``."""
        length = self.options.min_id_length
        options = {} if length is None else {"min_id_length": length}
        return {**options, **(own or {})}

    def request_batches(self, events: list[ClaimedEvent]) -> list[list[ClaimedEvent]]:
        """``events`` grouped by the ``options`` their request must carry (first seen first)."""
        groups: dict[str, list[ClaimedEvent]] = {}
        for event in events:
            own = own_options(event)[1]
            options = self.request_options(own) if isinstance(own, (dict, type(None))) else own
            groups.setdefault(json.dumps(options, sort_keys=True), []).append(event)
        return list(groups.values()) if len(groups) > 1 else [events]

    def send(self, events: Sequence[ClaimedEvent]) -> Verdict:
        """As for ``http``; an event whose own options are not a JSON object is
        dead-lettered ``invalid`` unsent (only ``spooler enqueue`` can store one)."""
        bad = {
            i: f"{OPTIONS_KEY} must be a JSON object of Amplitude request options"
            for i, event in enumerate(events)
            if not isinstance(own_options(event)[1], (dict, type(None)))
        }
        if bad:
            return Verdict("partial", reason="invalid", bad=bad, sent=False)
        return super().send(events)

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """``{"api_key", "events", "options"}``, joined from the stored texts (the events
        of one request share their options: ``request_batches`` saw to that)."""
        stripped = [own_options(event) for event in events]
        options = self.request_options(stripped[0][1])
        texts = ",".join(
            with_enqueue_time(event_text_with_id(event, "insert_id"), "time", event, _epoch_ms)
            for event, _ in stripped
        )
        return (
            '{"api_key":'
            + json.dumps(self.config.api_key)
            + ',"events":['
            + texts
            + "]"
            + (f',"options":{json.dumps(options)}' if options else "")
            + "}"
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
