"""Durable drop-in clients for analytics SDKs: the SDK's calls, events committed to a spool.

Each client builds the payload its SDK documents and enqueues it for one destination
(by default named after the API); ``spooler drain`` with that destination type sends
it. Nothing is kept in memory, so ``flush()`` and ``close()`` have nothing to do.

Usage::

    from spooler import Spool
    from spooler.clients import Datalyr

    datalyr = Datalyr(Spool("/var/spool/app/spool.db"))
    datalyr.track("user_123", "signup_completed", {"plan": "pro"})
"""

from __future__ import annotations

from .amplitude import Amplitude
from .datalyr import Datalyr
from .posthog import PostHog
from .segment import Segment

__all__ = ["Amplitude", "Datalyr", "PostHog", "Segment"]
