"""spooler: a durable event spooler. Enqueue to local SQLite; drain to HTTP ingestion APIs.

Usage::

    from spooler import Spool

    with Spool("/var/spool/app/spool.db") as spool:
        spool.enqueue({"event": "signup", "userId": "u_123"})

Importing this package loads only the standard library: httpx and click are imported
by the drain and the command line, never on the enqueue path.
"""

from __future__ import annotations

from .errors import (
    ConfigError,
    InvalidEventError,
    SpoolerError,
    SpoolFullError,
    StoreError,
    UnknownEventError,
)
from .retry import RetryPolicy
from .spool import Spool, SpoolStatus

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidEventError",
    "RetryPolicy",
    "Spool",
    "SpoolFullError",
    "SpoolStatus",
    "SpoolerError",
    "StoreError",
    "UnknownEventError",
    "__version__",
]
