"""The drain worker: claim due events under a lease, deliver them, settle each outcome.

Each destination gets ``concurrency`` worker threads; each one loops claim → send →
settle, so one batch is being claimed or settled while others are in flight. How many
of them send at once is ``pacing``'s: as many as the receiver's latency pays for. A
batch's requests, and the bisection of those refused, are ``bisection``'s; what each
answer means for the events, ``settling``'s. Every settle is one transaction, and only
touches events the batch's lease still holds.

One module per job: ``run`` (``Drain``: its set-up and the run loop), ``worker`` (each
worker's loop, its signs of life, the crash points), ``pauses`` (the breakers the spool
keeps), ``report`` (the report, summaries and end of a run), ``base`` (``Mode``,
``DrainReport``, the state they share, ``stop``).
"""

from .base import DrainReport, Mode
from .pauses import url_digest
from .run import Drain
from .worker import CRASH_ENV, HANG_ENV

__all__ = ["CRASH_ENV", "HANG_ENV", "Drain", "DrainReport", "Mode", "url_digest"]
