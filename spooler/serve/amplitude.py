"""Amplitude's HTTP V2 API (``/2/httpapi``) and Batch API (``/batch``), served."""

from __future__ import annotations

from typing import Any, ClassVar

from ..events import OPTIONS_KEY
from .apis import API, MB, RETRY_AFTER_SECONDS, Ingest, Refused, json_response
from .http import Request, Response

__all__ = ["Amplitude"]

# "Less than 1 MB" and fewer than 2000 events a request (HTTP V2); 20 MB (Batch).
AMPLITUDE_EVENTS_PER_REQUEST = 2000


class Amplitude(API):
    """Amplitude's HTTP V2 and Batch APIs."""

    name = "amplitude"
    # "Less than 1 MB", as the amplitude destination counts it.
    paths: ClassVar[dict[str, int]] = {"/2/httpapi": 1_000_000 - 1, "/batch": 20 * MB}

    def __init__(self, min_id_length: int | None = None) -> None:
        # The destination's own min_id_length, for requests that set none.
        self._min_id_length = min_id_length

    def read(self, request: Request, now: float) -> Ingest:
        """``{"api_key", "events", "options"}``: the events, checked as Amplitude checks
        them (a 400 names the bad ones by index, as Amplitude's does)."""
        body = self.body(request)
        if not isinstance(body, dict):
            raise self.refuse("Invalid JSON request body")
        for field in ("api_key", "events"):
            if not body.get(field):
                raise Refused(
                    json_response(
                        400,
                        {
                            "code": 400,
                            "error": "Request missing required field",
                            "missing_field": field,
                        },
                    ),
                    f"no {field}",
                )
        key, events, options = body["api_key"], body["events"], body.get("options") or {}
        if not isinstance(key, str) or not isinstance(events, list):
            raise self.refuse("Invalid JSON request body")
        if not isinstance(options, dict) or not _valid_min_id_length(options.get("min_id_length")):
            raise self.refuse("Invalid options")
        if request.path == "/2/httpapi" and len(events) > AMPLITUDE_EVENTS_PER_REQUEST:
            raise Refused(self.too_large("too many events"), "too large")
        self.counted(events)  # the Batch API's
        minimum = options.get("min_id_length") or self._min_id_length or 5
        self._check_events(events, minimum)
        stamp = int(now * 1000)
        for event in events:
            event.pop(OPTIONS_KEY, None)  # only the request's options are the event's
            if options:
                event[OPTIONS_KEY] = options
            event.setdefault("time", stamp)
        return Ingest(key, events)

    def _check_events(self, events: list[Any], min_id_length: int) -> None:
        invalid: dict[str, list[int]] = {}
        missing: dict[str, list[int]] = {}
        short: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                invalid.setdefault("event", []).append(index)
                continue
            if not isinstance(event.get("event_type"), str) or not event["event_type"]:
                missing.setdefault("event_type", []).append(index)
            usable = False
            for field in ("user_id", "device_id"):
                value = event.get(field)
                if value is None:
                    continue
                if not isinstance(value, str):
                    invalid.setdefault(field, []).append(index)
                elif len(value) < min_id_length:
                    short.setdefault(field, []).append(index)
                else:
                    usable = True
            if not usable and event.get("event_type") != "$groupidentify":
                # Amplitude drops a short id, then misses it: both SDKs drop the events
                # named under "missing", and only those. A $groupidentify needs no id:
                # amplitude-analytics sends one without (its verify_event lets it by).
                missing.setdefault("user_id", []).append(index)
            if "time" in event and (type(event["time"]) is not int):
                invalid.setdefault("time", []).append(index)
        if invalid or missing or short:
            answer = {
                "code": 400,
                "error": "Request contains events with invalid or missing fields",
                "events_with_invalid_fields": invalid,
                "events_with_missing_fields": missing,
                "events_with_invalid_id_lengths": short,
            }
            raise Refused(json_response(400, answer), "invalid events")

    def accepted(self, request: Request, ingest: Ingest, ids: list[str], now: float) -> Response:
        """``{"code": 200, "events_ingested", "payload_size_bytes", "server_upload_time"}``."""
        return json_response(
            200,
            {
                "code": 200,
                "events_ingested": len(ingest.events),
                "payload_size_bytes": len(request.body),
                "server_upload_time": int(now * 1000),
            },
        )

    def malformed(self, reason: str) -> Response:
        """``{"code": 400, "error"}``."""
        return json_response(400, {"code": 400, "error": reason})

    def unauthorized(self) -> Response:
        """Amplitude's 400 for a wrong key; both SDKs stop sending on it."""
        return json_response(
            400, {"code": 400, "error": "Invalid API key: not the key spooler takes"}
        )

    def too_large(self, reason: str) -> Response:
        """``413 {"code": 413, "error": "Payload too large"}``: both SDKs send smaller."""
        return json_response(413, {"code": 413, "error": "Payload too large"})

    def unavailable(self, reason: str) -> Response:
        """A 503 (Amplitude's SDKs retry 5xx; a 429 would have the Python SDK retry at once)."""
        return json_response(
            503, {"code": 503, "error": reason}, ("Retry-After", str(RETRY_AFTER_SECONDS))
        )


def _valid_min_id_length(value: Any) -> bool:
    return value is None or (type(value) is int and value >= 1)
