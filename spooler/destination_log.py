"""Log lines about one destination: each starts with its name and carries it as a field."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

__all__ = ["DestinationLog"]

# LoggerAdapter takes a type argument only from Python 3.11 on, and only for the checker.
if TYPE_CHECKING:
    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
else:
    _LoggerAdapter = logging.LoggerAdapter


class DestinationLog(_LoggerAdapter):
    """A logger for the lines about one destination.

    Usage::

        log = DestinationLog(logging.getLogger("spooler.drain"), "amplitude")
        log.info("delivered %d events", 500)  # "amplitude: delivered 500 events"

    Each record also carries the name as its ``destination`` attribute, which
    ``--log-format json`` writes as a field of its own, so that a log shipper can
    select one destination's lines without parsing messages.
    """

    def __init__(self, logger: logging.Logger, destination: str) -> None:
        super().__init__(logger, {"destination": destination})
        self.destination = destination

    def process(
        self, msg: object, kwargs: MutableMapping[str, Any]
    ) -> tuple[str, MutableMapping[str, Any]]:
        """Prefix the message with the destination's name and add it to the record."""
        kwargs["extra"] = {**kwargs.get("extra", {}), "destination": self.destination}
        return f"{self.destination}: {msg}", kwargs
