"""Fake ingestion APIs for the test receiver: each enforces its API's documented rules."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

Answer = tuple[int, dict[str, str], bytes]
Respond = Callable[[bytes, dict[str, str]], Answer]


def _json(status: int, document: dict[str, object]) -> Answer:
    return status, {}, json.dumps(document).encode()


def amplitude(api_key: str, *, max_bytes: int = 1_000_000) -> Respond:
    """Amplitude's HTTP V2 API: key in the body, at most 2000 events and < 1 MB per request,
    event_type and a user_id or device_id of at least min_id_length (default 5) each."""

    def answer(body: bytes, headers: dict[str, str]) -> Answer:
        if len(body) >= max_bytes:
            return _json(413, {"code": 413, "error": "Payload too large"})
        document = json.loads(body)
        if document.get("api_key") != api_key:
            return _json(400, {"code": 400, "error": "Invalid API key", "missing_field": None})
        events = document.get("events")
        if not isinstance(events, list):
            return _json(400, {"code": 400, "error": "missing events", "missing_field": "events"})
        if len(events) > 2000:
            return _json(413, {"code": 413, "error": "Too many events"})
        min_length = document.get("options", {}).get("min_id_length", 5)
        missing: dict[str, list[int]] = {}
        short: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            if "event_type" not in event:
                missing.setdefault("event_type", []).append(index)
            ids = {k: event[k] for k in ("user_id", "device_id") if event.get(k) is not None}
            if not ids:
                missing.setdefault("user_id", []).append(index)
            for key, value in ids.items():
                if len(str(value)) < min_length:
                    short.setdefault(key, []).append(index)
        if missing or short:
            return _json(
                400,
                {
                    "code": 400,
                    "error": "Request missing required field",
                    "events_with_missing_fields": missing,
                    "events_with_invalid_id_lengths": short,
                },
            )
        return _json(
            200,
            {
                "code": 200,
                "events_ingested": len(events),
                "payload_size_bytes": len(body),
                "server_upload_time": 1,
            },
        )

    return answer


def datalyr(api_key: str) -> Respond:
    """Datalyr's /track: one event per request, the key in X-API-Key, the seed's payload."""

    def answer(body: bytes, headers: dict[str, str]) -> Answer:
        if headers.get("X-API-Key") != api_key:
            return _json(401, {"error": "invalid API key"})
        event = json.loads(body)
        if not isinstance(event, dict) or "event" not in event:
            return _json(400, {"error": "event is required"})
        return _json(200, {"success": True})

    return answer


def segment(write_key: str, *, max_bytes: int = 500 * 1024) -> Respond:
    """Segment's /v1/batch: Basic auth with the write key, at most 500 KB a request and
    32 KB a message; every message needs a type and a userId or anonymousId."""
    token = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()

    def answer(body: bytes, headers: dict[str, str]) -> Answer:
        if headers.get("Authorization") != token:
            return _json(401, {"success": False, "message": "invalid write key"})
        if len(body) > max_bytes:
            return _json(413, {"success": False, "message": "request too large"})
        document = json.loads(body)
        for message in document["batch"]:
            if len(json.dumps(message, separators=(",", ":"))) > 32 * 1024:
                return _json(400, {"success": False, "message": "message too large"})
            if "type" not in message or not (message.get("userId") or message.get("anonymousId")):
                return _json(400, {"success": False, "message": "invalid message"})
        if "sentAt" not in document:
            return _json(400, {"success": False, "message": "sentAt is required"})
        return _json(200, {"success": True})

    return answer


def posthog(api_key: str) -> Respond:
    """PostHog's /batch/: the project key in the body; events need event and distinct_id."""

    def answer(body: bytes, headers: dict[str, str]) -> Answer:
        document = json.loads(body)
        if document.get("api_key") != api_key:
            return _json(401, {"type": "authentication_error", "code": "invalid_api_key"})
        for event in document.get("batch", []):
            if "event" not in event or "distinct_id" not in event:
                return _json(400, {"type": "validation_error", "code": "invalid_payload"})
        return _json(200, {"status": 1})

    return answer


#: The fake of each API destination type, by type name.
FAKES: dict[str, Callable[[str], Respond]] = {
    "amplitude": amplitude,
    "datalyr": datalyr,
    "segment": segment,
    "posthog": posthog,
}
