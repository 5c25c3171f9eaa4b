"""Pacing: how many of a destination's workers send at once.

``concurrency`` is how many may. How many should depends on the receiver: a batch
costs the drain some processor time (claim, build, settle: ``cycle``), and its request
some time waiting for the answer (``wait``). While one worker waits, others can claim
and send, so ``1 + wait / cycle`` workers keep the processor busy; more only take turns
for it (Python runs one thread at a time). Against a receiver on the same machine the
wait is a fraction of the cycle, and one worker is fastest (docs/performance.md:
four cost ~12% more processor time per event for nothing); against one 20 ms away,
four overlap their waits.

So a destination starts with one worker sending, and lets in as many as the medians of
the last requests' waits and batches' cycles say, never beyond ``concurrency``; when
they say fewer, it sends one back to wait at a time (each finishes its batch first).
"""

from __future__ import annotations

import statistics
import threading
from collections import deque

__all__ = ["Pacer"]

# Requests (and batches) the medians are taken over, and how often they are looked at.
WINDOW = 16
REVIEW_EVERY = 4


class Pacer:
    """How many of one destination's workers may send at once.

    Usage::

        pacer = Pacer(4)
        if pacer.admits(worker):
            ...  # claim, send, settle; then:
            pacer.waited(seconds)  # for each request that was answered
            pacer.cycled(seconds)  # the processor time of the whole batch
        else:
            pacer.park(worker, timeout=1.0)
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self.active = 1
        self._waits: deque[float] = deque(maxlen=WINDOW)
        self._cycles: deque[float] = deque(maxlen=WINDOW)
        self._since_review = 0
        self._closed = False
        self._changed = threading.Condition()

    def admits(self, worker: int) -> bool:
        """Whether worker number ``worker`` (from 0) may claim and send now."""
        return worker < self.active or self._closed

    def park(self, worker: int, *, timeout: float) -> None:
        """Wait until ``worker`` is let in, the pacer closes, or ``timeout`` passes."""
        with self._changed:
            if not self.admits(worker):
                self._changed.wait(timeout)

    def close(self) -> None:
        """Let every parked worker go (the destination has nothing more to claim, or the
        drain stops): each finds out for itself."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def waited(self, seconds: float) -> None:
        """Note how long an answered request waited (its time, less the processor time
        its thread spent on it)."""
        with self._changed:
            self._waits.append(max(seconds, 0.0))

    def cycled(self, seconds: float) -> int | None:
        """Note the processor time a batch cost its worker (claim to settle); returns
        the new number of workers sending, when that changed."""
        with self._changed:
            self._cycles.append(seconds)
            self._since_review += 1
            if self._since_review < REVIEW_EVERY or not self._waits:
                return None
            self._since_review = 0
            wanted = workers_for(
                statistics.median(self._waits), statistics.median(self._cycles), self.most
            )
            if wanted == self.active:
                return None
            # Up at once (every batch sent short of them is time lost), down one at a
            # time: the next medians are taken with the new number.
            self.active = wanted if wanted > self.active else self.active - 1
            self._changed.notify_all()
            return self.active


def workers_for(wait: float, cycle: float, most: int) -> int:
    """Workers that keep the processor busy while each request waits ``wait`` and each
    batch costs ``cycle`` of processor time: ``1 + wait / cycle``, rounded, within
    ``1..most``."""
    if cycle <= 0:
        return most
    return max(1, min(most, 1 + int(wait / cycle + 0.5)))
