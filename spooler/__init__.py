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
    NotDurableError,
    SpoolerError,
    SpoolFullError,
    StoreError,
    StoreUnreachableError,
    UnknownEventError,
)
from .spool import Spool

# typing.TYPE_CHECKING without importing typing (its cost: benchmarks/import_time.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .records import SpoolStatus
    from .retry import RetryPolicy

__version__ = "0.1.0"

# Loaded on first use (PEP 562): neither is needed to enqueue, and both would make
# `import spooler` load dataclasses (docs/performance.md, target 7).
_LAZY = {"RetryPolicy": "retry", "SpoolStatus": "records"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ConfigError",
    "InvalidEventError",
    "NotDurableError",
    "RetryPolicy",
    "Spool",
    "SpoolFullError",
    "SpoolStatus",
    "SpoolerError",
    "StoreError",
    "StoreUnreachableError",
    "UnknownEventError",
    "__version__",
]
