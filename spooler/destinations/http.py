"""The ``http`` destination: a generic JSON webhook or collector, batched or one by one.

Body: a JSON array of the events; ``{batch_key: [...]}`` with ``batch_key``; the bare
event with ``batch_size = 1`` (and its event id in an ``Idempotency-Key`` header); or
JSON Lines with ``body_format = "ndjson"``. Its own keys: ``gzip``, ``body_format``
and ``signing_secret`` (an HMAC of each request, ``signature_headers``).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING

from .. import checks
from ..errors import ConfigError
from ..records import ClaimedEvent
from . import event_text
from ._http import HttpApiDestination, check_http_url
from ._registry import DestinationSpec, option, options_of

if TYPE_CHECKING:
    from ..config import DestinationConfig

__all__ = ["SPEC", "HttpDestination", "HttpOptions", "signature_headers"]

_body = attrgetter("body")


@dataclass(frozen=True)
class HttpOptions:
    """The ``http`` type's own keys."""

    gzip: bool = option(False, checks.boolean)
    body_format: str = option("json", checks.choice("json", "ndjson"))
    signing_secret: str | None = option(None, checks.secret, secret=True)


def _check_body_format(dest: DestinationConfig, where: str) -> None:
    if options_of(dest, HttpOptions).body_format == "ndjson" and dest.batch_key is not None:
        raise ConfigError(f"{where}batch_key: NDJSON bodies have no enclosing object")


SPEC = DestinationSpec(
    name="http",
    factory=lambda config, clock: HttpDestination(config, clock=clock),
    options=HttpOptions,
    key_in_auth_header=True,
    checks=(check_http_url, _check_body_format),
)


def signature_headers(secret: str, body: bytes, *, now: float) -> dict[str, str]:
    """``X-Spooler-Timestamp`` and ``X-Spooler-Signature`` for a request body.

    The signature is ``sha256=`` + hex HMAC-SHA256 with the secret over
    ``b"<timestamp>." + body``, where ``body`` is the exact bytes sent (after gzip).
    A receiver recomputes it over the raw body it read, compares with
    ``hmac.compare_digest``, and refuses timestamps far from its own clock (replays).
    """
    timestamp = str(int(now))
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {"X-Spooler-Timestamp": timestamp, "X-Spooler-Signature": f"sha256={mac.hexdigest()}"}


class HttpDestination(HttpApiDestination):
    """Posts batches as a JSON array, an object ``{batch_key: [...]}``, JSON Lines, or one
    event per request; see the module docstring."""

    def __init__(
        self, config: DestinationConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options: HttpOptions = options_of(config, HttpOptions)
        super().__init__(config, clock=clock)

    def content_type(self) -> str:
        """JSON, or JSON Lines with ``body_format = "ndjson"``."""
        ndjson = self.options.body_format == "ndjson"
        return "application/x-ndjson" if ndjson else "application/json"

    def secrets(self) -> list[str | None]:
        """The shared secrets, and the signing secret."""
        return [*super().secrets(), self.options.signing_secret]

    def request_headers(self, events: Sequence[ClaimedEvent]) -> dict[str, str]:
        """A lone event's id as ``Idempotency-Key``."""
        return {"Idempotency-Key": events[0].event_id} if len(events) == 1 else {}

    def body(self, events: Sequence[ClaimedEvent]) -> str:
        """The request body, built by joining the stored JSON texts."""
        id_field = self.config.id_field
        texts = (
            list(map(_body, events))  # no Python per event when nothing is spliced
            if id_field is None
            else [event_text(event, id_field) for event in events]
        )
        if self.options.body_format == "ndjson":
            return "".join(text + "\n" for text in texts)
        if self.config.batch_key is not None:
            return "{" + json.dumps(self.config.batch_key) + ":[" + ",".join(texts) + "]}"
        if self.config.batch_size == 1:
            return texts[0]
        return "[" + ",".join(texts) + "]"

    def encode(self, content: bytes, headers: dict[str, str]) -> bytes:
        """Compressed with ``gzip``, then signed with ``signing_secret`` (each if set)."""
        if self.options.gzip:
            content = gzip.compress(content)
            headers["Content-Encoding"] = "gzip"
        if self.options.signing_secret:
            headers.update(
                signature_headers(self.options.signing_secret, content, now=self._clock())
            )
        return content
