"""``spooler serve``: a local HTTP endpoint that speaks the Amplitude, Segment, PostHog and
Datalyr ingest APIs (and spooler's own ``POST /v1/events/{destination}``), so that an SDK
in any language, pointed at it, gets its success answer only once its events are
committed to the spool. ``spooler drain`` then delivers them.

Needs ``httptools`` (``pip install 'spooler[serve]'``); ``import spooler`` never loads
this package.

Usage::

    from spooler import Spool
    from spooler.config import ServeConfig
    from spooler.serve import Relay

    with Spool("/var/spool/app/spool.db") as spool:
        Relay(spool, ServeConfig(port=8420)).run()  # until relay.stop()
"""

from __future__ import annotations

try:
    from .app import IngestApp, Relay
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    if exc.name != "httptools":
        raise
    from ..errors import ConfigError

    raise ConfigError("spooler serve needs httptools: pip install 'spooler[serve]'") from None

__all__ = ["IngestApp", "Relay"]
