"""The retry policy: when to try again, and when to give up. Pure functions of their inputs."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "compute_backoff", "parse_retry_after"]


def compute_backoff(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter backoff: uniform in ``[0, min(cap, base * 2**(attempts-1))]`` seconds.

    Full jitter spreads a crowd of events that failed together across the whole window,
    so a recovering receiver is not hit by every one of them at the same instant.
    """
    exponent = min(max(attempts - 1, 0), 64)  # 2**64 * base already exceeds any sane cap
    return rng.uniform(0.0, min(cap, base * 2.0**exponent))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf", "nan"
    # Imported here: the email package is slow to import (benchmarks/import_time.py
    # measures `import spooler`), and only a drain reading a dated Retry-After needs it,
    # never a producer.
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """How long a destination keeps trying an event.

    Usage::

        policy = RetryPolicy(max_attempts=5, max_age=3600, backoff_base=0.5)
        wait = policy.delay(attempts=3, retry_after=None, rng=random.Random())
    """

    max_attempts: int = 20
    max_age: float = 3 * 86400.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0

    def delay(self, attempts: int, *, retry_after: float | None, rng: random.Random) -> float:
        """Seconds until the next attempt; ``Retry-After`` is honoured as the minimum, up
        to ``max_age`` (a receiver asking for a year must not park events for a year:
        they are then past ``max_age``, and die ``max_age`` when next claimed)."""
        wait = compute_backoff(attempts, base=self.backoff_base, cap=self.backoff_cap, rng=rng)
        return wait if retry_after is None else max(wait, min(retry_after, self.max_age))

    @property
    def longest_delay(self) -> float:
        """The most :meth:`delay` can return, whatever the attempts and ``Retry-After``."""
        return max(self.backoff_cap, self.max_age)

    def give_up_reason(self, *, attempts: int, queued_at: float, now: float) -> str | None:
        """``"max_attempts"`` or ``"max_age"`` when a failed event must not be retried,
        or a claimed one not sent (``attempts``: those that ended; age: since
        ``queued_at``)."""
        if attempts >= self.max_attempts:
            return "max_attempts"
        if queued_at <= self.too_old(now):
            return "max_age"
        return None

    def too_old(self, now: float) -> float:
        """The ``queued_at`` at or before which an event is past ``max_age`` at ``now``:
        the one bound both :meth:`give_up_reason` and the drain's check of a whole claim
        (``Settler.settle_expired``, inline for speed) compare with."""
        return now - self.max_age
