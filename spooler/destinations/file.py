"""The ``file`` destination: JSON Lines appended to a file (``file://PATH``) or stdout (``-``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from ..errors import ConfigError
from ..records import ClaimedEvent
from . import Verdict, event_text

if TYPE_CHECKING:
    from ..config import DestinationConfig

__all__ = ["FileDestination"]


class FileDestination:
    """Appends one JSON line per event and fsyncs before reporting delivery."""

    def __init__(self, config: DestinationConfig) -> None:
        self.config = config
        self._stream: TextIO
        if config.url == "-":
            self._path = "stdout"
            self._stream = sys.stdout
            self._owned = False
        else:
            self._path = config.url.removeprefix("file://")
            try:
                self._stream = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise ConfigError(
                    f"destinations.{config.name}.url: cannot open {self._path}: {exc.strerror}"
                ) from None
            self._owned = True

    def send(self, events: Sequence[ClaimedEvent]) -> Verdict:
        """Write the events, flush, fsync; a failed write is cut back off and retried."""
        text = "".join(event_text(event, self.config.id_field) + "\n" for event in events)
        start = self._stream.tell() if self._owned else None
        try:
            self._stream.write(text)
            self._stream.flush()
            if self._owned:
                os.fsync(self._stream.fileno())
        except OSError as exc:
            if start is not None:
                self._cut_back(start)
            return Verdict("retry", error=f"cannot write {self._path}: {exc.strerror or exc}")
        return Verdict("delivered")

    def _cut_back(self, size: int) -> None:
        # A half-written line would corrupt the JSON Lines file; the events are retried.
        with contextlib.suppress(OSError):
            self._stream.truncate(size)

    def close(self) -> None:
        """Close the file (stdout stays open)."""
        if self._owned:
            self._stream.close()
