"""Fake ingestion APIs for the test receiver: each enforces its API's documented rules."""

from __future__ import annotations

import json
from collections.abc import Callable

Answer = tuple[int, dict[str, str], bytes]


def _json(status: int, document: dict[str, object]) -> Answer:
    return status, {}, json.dumps(document).encode()


def amplitude(api_key: str, *, max_bytes: int = 1_000_000) -> Callable[[bytes], Answer]:
    """Amplitude's HTTP V2 API: key in the body, at most 2000 events and < 1 MB per request,
    event_type and a user_id or device_id of at least min_id_length (default 5) each."""

    def answer(body: bytes) -> Answer:
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
