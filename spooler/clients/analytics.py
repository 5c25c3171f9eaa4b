"""Segment's module-level style, durable: ``import spooler.clients.analytics as analytics``.

As with ``segment.analytics``, set the module's settings once and call its functions;
the first call creates the default client (a ``Segment``). Where the SDK is given
``write_key``, this module is given ``spool``: the key belongs to the drain::

    import spooler.clients.analytics as analytics

    analytics.spool = "/var/spool/app/spool.db"  # was: analytics.write_key = "..."
    analytics.track("user_123", "Signed Up", {"plan": "pro"})
    analytics.shutdown()

The settings and the default client are module state because that is the style this
module reproduces; everything else in spooler takes its spool as an argument.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..errors import ConfigError
from ..spool import Spool
from .segment import Segment

__all__ = [
    "alias",
    "default_client",
    "destination",
    "flush",
    "group",
    "identify",
    "join",
    "page",
    "screen",
    "shutdown",
    "spool",
    "track",
]

#: The spool (a path or an open ``Spool``) events go to; set it before the first call.
spool: str | os.PathLike[str] | Spool | None = None
#: The destination the events are for.
destination = "segment"
#: The client the module's functions use, made by the first of them to run.
default_client: Segment | None = None

_opened: Spool | None = None  # the spool this module opened from a path, closed by shutdown
_creating = threading.Lock()


def _client() -> Segment:
    global default_client, _opened
    with _creating:
        if default_client is None:
            if spool is None:
                raise ConfigError(
                    "set spooler.clients.analytics.spool to the spool's path before the "
                    "first call (it takes the place of write_key)"
                )
            opened = spool if isinstance(spool, Spool) else Spool(spool)
            _opened = None if opened is spool else opened
            default_client = Segment(opened, destination=destination)
        return default_client


def track(*args: Any, **kwargs: Any) -> str:
    """Send a track call (``Segment.track``)."""
    return _client().track(*args, **kwargs)


def identify(*args: Any, **kwargs: Any) -> str:
    """Send an identify call (``Segment.identify``)."""
    return _client().identify(*args, **kwargs)


def group(*args: Any, **kwargs: Any) -> str:
    """Send a group call (``Segment.group``)."""
    return _client().group(*args, **kwargs)


def alias(*args: Any, **kwargs: Any) -> str:
    """Send an alias call (``Segment.alias``)."""
    return _client().alias(*args, **kwargs)


def page(*args: Any, **kwargs: Any) -> str:
    """Send a page call (``Segment.page``)."""
    return _client().page(*args, **kwargs)


def screen(*args: Any, **kwargs: Any) -> str:
    """Send a screen call (``Segment.screen``)."""
    return _client().screen(*args, **kwargs)


def flush() -> None:
    """Nothing to do: every call has already committed its message to the spool."""


def join() -> None:
    """Nothing to wait for: no thread sends messages in the background."""


def shutdown() -> None:
    """Close the spool this module opened, if it opened one; the next call opens it again."""
    global default_client, _opened
    with _creating:
        if _opened is not None:
            _opened.close()
        default_client, _opened = None, None
