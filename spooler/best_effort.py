"""The steps a drain can do without: reading the pauses other drains kept, writing its
history, giving free pages back to the disk. A spool that fails one of them is said in
a warning, and the drain goes on (a spool that keeps failing stops its workers anyway);
one that could not be reached stops the drain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import StoreError, StoreUnreachableError

if TYPE_CHECKING:
    import logging

__all__ = ["best_effort"]


@contextmanager
def best_effort(log: logging.Logger, failure: str) -> Iterator[None]:
    """Run the block as a step the drain can do without: a ``StoreError`` ends it with a
    warning, ``"{failure}: {error}"``, and the code after the block goes on. A
    ``StoreUnreachableError`` is raised: the drain stops on it (once, whichever of its
    parts meets it first).

    Usage::

        with best_effort(log, "could not give free space back to the disk"):
            pages = store.reclaim_space()
            ...
    """
    try:
        yield
    except StoreUnreachableError:
        raise
    except StoreError as exc:
        log.warning("%s: %s", failure, exc)
