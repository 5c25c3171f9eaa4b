"""The lease model both backends keep: a claimed batch is one lease, one row of its own.

A claim writes nothing into the events it takes. Their rows stay where they are, in
the due index at their old place, and the lease row says which they are and where
they lie:

- ``Held``: which events the lease holds: every rowid from ``first`` to ``last``, or,
  when not all of them, the list ``ids``. Settling a whole batch that was every rowid
  of a range is one range delete.
- its span: the claim-order keys ``(due_at, rowid)`` of its first and last event. A
  claim skips the spans of live leases (``gaps``) instead of reading past rows marked
  as taken, and takes its events from one gap, so live spans never overlap.

An event's ``attempts`` counts the attempts that ended: settled as failed, or cut off
(its lease ran out, or its drain gave it back: the lease is *dissolved*, which adds
that attempt to each event it still held). The attempt in flight is the next one
(``ClaimedEvent.attempts``). A lease ends by a settle of its last event, or by being
dissolved; its token is never used again, so a drain that lost its lease settles
nothing.

Used by the drains' and operators' code of both backends, never on a producer's path.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import NamedTuple, TypeVar

__all__ = ["Gap", "Held", "Key", "first_found", "gaps", "held"]

T = TypeVar("T")

#: A position in the claim order: ``(due_at, rowid)``.
Key = tuple[float, int]


class Gap(NamedTuple):
    """The keys strictly between two live spans; None: no bound on that side."""

    after: Key | None
    before: Key | None

    def is_empty(self) -> bool:
        """Whether no key can lie in it (two spans that touch)."""
        after, before = self.after, self.before
        return (
            after is not None
            and before is not None
            and after[0] == before[0]
            and before[1] - after[1] <= 1
        )


class Held(NamedTuple):
    """The events a lease holds: every rowid from ``first`` to ``last``, or only ``ids``."""

    first: int
    last: int
    ids: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        """How many events (not ``count``: a tuple's ``count()`` is another thing)."""
        return self.last - self.first + 1 if self.ids is None else len(self.ids)

    def __contains__(self, rowid: object) -> bool:
        if self.ids is None:
            return isinstance(rowid, int) and self.first <= rowid <= self.last
        return rowid in self.ids

    def rowids(self) -> list[int]:
        """The rowids, in order."""
        return list(range(self.first, self.last + 1)) if self.ids is None else list(self.ids)

    def is_all(self, rowids: Collection[int]) -> bool:
        """Whether ``rowids`` are exactly the events the lease holds."""
        if self.ids is None:
            # Sorting rowids already in order (as a drain gives them) is one pass in C.
            return sorted(rowids) == self.rowids()
        return set(rowids) == set(self.ids)

    def only(self, rowids: Iterable[int]) -> list[int]:
        """Those of ``rowids`` the lease holds, each once."""
        if self.ids is None:
            return sorted({r for r in rowids if self.first <= r <= self.last})
        mine = set(self.ids)
        return sorted(mine.intersection(rowids))

    def without(self, rowids: Collection[int]) -> Held | None:
        """What is left after ``rowids`` were settled; None: nothing."""
        if not rowids:
            return self
        return held([r for r in self.rowids() if r not in rowids])


def held(rowids: Sequence[int]) -> Held | None:
    """The ``Held`` of sorted, distinct ``rowids`` (None for none)."""
    if not rowids:
        return None
    first, last = rowids[0], rowids[-1]
    if last - first + 1 == len(rowids):
        return Held(first, last)
    return Held(first, last, tuple(rowids))


def gaps(spans: Iterable[tuple[Key, Key]]) -> list[Gap]:
    """The gaps between live spans, in claim order, from before the first to after the
    last; gaps that can hold no key are left out."""
    found: list[Gap] = []
    after: Key | None = None
    for low, high in sorted(spans):
        if after is not None and high <= after:
            continue  # inside the one before (spans never overlap; but be sure)
        gap = Gap(after, low)
        if not gap.is_empty() and (after is None or low > after):
            found.append(gap)
        after = high if after is None else max(after, high)
    found.append(Gap(after, None))
    return found


def first_found(spans: Iterable[tuple[Key, Key]], read: Callable[[Gap], list[T]]) -> list[T]:
    """What ``read`` finds in the first gap between live ``spans`` where it finds any: a
    claim takes its events from one gap, so that its span overlaps no other."""
    for gap in gaps(spans):
        found = read(gap)
        if found:
            return found
    return []
