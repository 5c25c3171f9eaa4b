"""Segment's HTTP Tracking API (``/v1/batch`` and the single calls), served."""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar

from .apis import API, RETRY_AFTER_SECONDS, Ingest, iso_now, json_response
from .http import Request, Response

__all__ = ["Segment"]

# 500 KB a batch, 32 KB a call; over them, Segment answers its 400.
SEGMENT_CALL_BYTES = 32 * 1024
SEGMENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")


# The same answer every time: built once.
_SUCCESS = json_response(200, {"success": True})


class Segment(API):
    """Segment's HTTP Tracking API: ``/v1/batch`` and the single calls."""

    name = "segment"
    max_event_bytes = SEGMENT_CALL_BYTES
    paths: ClassVar[dict[str, int]] = {
        "/v1/batch": 500 * 1024,
        "/v1/import": 500 * 1024,
        **{f"/v1/{kind}": SEGMENT_CALL_BYTES for kind in SEGMENT_TYPES},
    }

    def read(self, request: Request, now: float) -> Ingest:
        """A batch's messages (its ``context`` and ``integrations`` merged into each),
        or a single call's message; the write key from Basic auth or the body."""
        body = self.body(request)
        if not isinstance(body, dict):
            raise self.refuse("the body must be a JSON object")
        key = _basic_user(request.headers.get("authorization", "")) or body.get("writeKey")
        if request.path in ("/v1/batch", "/v1/import"):
            messages = body.get("batch")
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise self.refuse("batch must be an array of objects")
            self.counted(messages)
            shared = {
                k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)
            }
        else:
            body["type"] = request.path.removeprefix("/v1/")
            messages, shared = [body], {}
        stamp = iso_now(now)
        for index, message in enumerate(messages):
            if message.get("type") not in SEGMENT_TYPES:
                raise self.refuse(
                    f"message {index}: type must be one of {', '.join(SEGMENT_TYPES)}"
                )
            key = key or message.get("writeKey")
            message.pop("writeKey", None)
            for field, value in shared.items():
                own = message.get(field)
                message[field] = {**value, **own} if isinstance(own, dict) else value
            message.setdefault("timestamp", stamp)
        return Ingest(key if isinstance(key, str) else None, messages)

    def accepted(self, request: Request, ingest: Ingest, ids: list[str], now: float) -> Response:
        """``{"success": true}``."""
        return _SUCCESS

    def malformed(self, reason: str) -> Response:
        """``{"success": false, "code", "message"}``: analytics-python reads code and message."""
        return json_response(400, {"success": False, "code": "invalid_request", "message": reason})

    def unauthorized(self) -> Response:
        """A 401: the SDKs do not retry it."""
        return json_response(
            401, {"success": False, "code": "unauthorized", "message": "invalid write key"}
        )

    def too_large(self, reason: str) -> Response:
        """Segment's answer to a body over its limits is its 400."""
        return self.malformed(f"payload too large: {reason}")

    def unavailable(self, reason: str) -> Response:
        """A 503 with ``Retry-After``: the SDKs wait that long, then send again."""
        return json_response(
            503,
            {"success": False, "code": "unavailable", "message": reason},
            ("Retry-After", str(RETRY_AFTER_SECONDS)),
        )


def _basic_user(authorization: str) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` (Segment's write key)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user = base64.b64decode(token, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user or None
