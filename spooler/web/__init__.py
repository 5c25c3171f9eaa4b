"""``spooler web``: an operator's dashboard of one spool, served on loopback by the HTTP
server of ``spooler serve``. Each destination's backlog, state and pause, charts of the
history the drains keep (``spooler.history``), the dead letters summed up, listed and
shown in full, and the actions: replay, purge, hold, release, retry-now.

Needs ``httptools`` (``pip install 'spooler[web]'``); ``import spooler`` never loads
this package.

Usage::

    from spooler import Spool
    from spooler.config import WebConfig
    from spooler.web import Dashboard

    with Spool("/var/spool/app/spool.db", create=False) as spool:
        Dashboard(spool, WebConfig(port=8421)).run()  # until dashboard.stop()
"""

from __future__ import annotations

try:
    # Checked first, so that the error names this command's extra (the server's module
    # would name spooler serve's).
    import httptools  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without the extra
    from ..errors import ConfigError

    raise ConfigError("spooler web needs httptools: pip install 'spooler[web]'") from None

from .app import Dashboard, WebApp

__all__ = ["Dashboard", "WebApp"]
