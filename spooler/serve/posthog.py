"""PostHog's capture endpoints (``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/``), served."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qs

from ..events import OPTIONS_KEY
from .apis import API, MB, RETRY_AFTER_SECONDS, Ingest, iso_now, json_response
from .http import Request, Response

__all__ = ["PostHog"]


# The same answer every time: built once.
_ACCEPTED = json_response(200, {"status": 1})


class PostHog(API):
    """PostHog's capture endpoints: ``/batch/``, and ``/capture/``, ``/e/``, ``/i/v0/e/``."""

    name = "posthog"
    paths: ClassVar[dict[str, int]] = {
        path: 20 * MB
        for path in ("/batch/", "/capture", "/capture/", "/e", "/e/", "/i/v0/e", "/i/v0/e/")
    }

    def read(self, request: Request, now: float) -> Ingest:
        """``{"api_key", "batch": [...]}``, one event, or an array of events; the key from
        the body, an event, or the query. A batch's ``historical_migration: true`` is
        kept with each of its events under ``OPTIONS_KEY``."""
        body = self.body(request, gzip_query=True)
        if isinstance(body, dict) and "batch" in body:
            events, top = body["batch"], body
        elif isinstance(body, dict):
            events, top = [body], {}
        else:
            events, top = body, {}
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise self.refuse("Malformed request data: expected events as JSON objects")
        self.counted(events)
        key = _token(top)
        # posthog-python's and posthog-node's historical_migration: kept with each event,
        # for the drain to say it of their request (spooler.destinations.posthog).
        historical = top.get("historical_migration") is True
        for event in events:
            event.pop(OPTIONS_KEY, None)  # only the request's options are the event's
            if historical:
                event[OPTIONS_KEY] = {"historical_migration": True}
            properties = event.get("properties")
            key = (
                key
                or _token(event)
                or (_token(properties) if isinstance(properties, dict) else None)
            )
            for field in ("api_key", "token"):
                event.pop(field, None)
            if isinstance(properties, dict):
                properties.pop("token", None)
            if not isinstance(event.get("event"), str) or not event["event"]:
                raise self.refuse(
                    "Invalid payload: All events must have the event name field 'event'!"
                )
            if not (
                event.get("distinct_id")
                or (isinstance(properties, dict) and properties.get("distinct_id"))
            ):
                raise self.refuse("Invalid payload: All events must have a distinct_id")
            if "timestamp" not in event:
                offset = event.pop("offset", 0)
                ms = (
                    offset
                    if isinstance(offset, (int, float)) and not isinstance(offset, bool)
                    else 0
                )
                event["timestamp"] = iso_now(now - ms / 1000)
        if not key:
            key = _query_value(request.query, "api_key") or _query_value(request.query, "token")
        return Ingest(key, events)

    def accepted(self, request: Request, ingest: Ingest, ids: list[str], now: float) -> Response:
        """``{"status": 1}``."""
        return _ACCEPTED

    def malformed(self, reason: str) -> Response:
        """``{"type": "validation_error", "code": "invalid_payload", "detail", "attr"}``."""
        return json_response(400, _posthog_error("validation_error", "invalid_payload", reason))

    def unauthorized(self) -> Response:
        """PostHog's 401 for a wrong project key."""
        return json_response(
            401,
            _posthog_error("authentication_error", "invalid_api_key", "Project API key invalid."),
        )

    def too_large(self, reason: str) -> Response:
        """A 413."""
        return json_response(413, _posthog_error("validation_error", "payload_too_large", reason))

    def unavailable(self, reason: str) -> Response:
        """A 503 with ``Retry-After``, which posthog-python waits out before sending again."""
        return json_response(
            503,
            _posthog_error("server_error", "unavailable", reason),
            ("Retry-After", str(RETRY_AFTER_SECONDS)),
        )


def _posthog_error(kind: str, code: str, detail: str) -> dict[str, Any]:
    return {"type": kind, "code": code, "detail": detail, "attr": None}


def _token(fields: dict[str, Any]) -> str | None:
    for field in ("api_key", "token"):
        value = fields.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def _query_value(query: str, name: str) -> str | None:
    values = parse_qs(query).get(name)
    return values[0] if values else None
