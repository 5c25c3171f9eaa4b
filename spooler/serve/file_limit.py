"""How many connections the process's open-file limit (``ulimit -n``) leaves room for.

Each connection is a file descriptor. Past the limit, ``accept`` fails: libuv (uvloop)
then accepts and closes the waiting connections to keep its loop from spinning, so
clients see a reset, not the 503 that ``max_connections`` promises, and nothing is
logged. The soft limit is often 1024 (a shell's, systemd's ``LimitNOFILE``'s), the
same as the default ``max_connections``: the descriptors the process holds already
(the spool's files, the listening socket) would be spent first. So the server raises
its soft limit as far as its connections need (never past the hard one, which needs
privilege), and where that is not enough it counts fewer connections before its 503,
and says so once at its start.
"""

from __future__ import annotations

import logging
import os

__all__ = ["SPARE_DESCRIPTORS", "connection_room"]

log = logging.getLogger("spooler.serve")

# Descriptors kept for what the process opens while it serves, beside its connections:
# the accept of a connection answered 503, the metrics server's, a PostgreSQL spool's
# reconnections, SQLite's temporary files.
SPARE_DESCRIPTORS = 32


def connection_room(wanted: int) -> int:
    """Raise the soft open-file limit to fit ``wanted`` connections if it can; the
    connections that fit (``wanted``, or fewer where the hard limit is lower, which is
    logged as a warning)."""
    try:
        import resource
    except ImportError:  # not on Unix: no such limit to look at
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = _open_descriptors() + SPARE_DESCRIPTORS + wanted
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:  # macOS caps it below an infinite hard limit
            log.debug("could not raise the open-file limit to %d: %s", raised, exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    room = max(1, soft - (needed - wanted))
    log.warning(
        "the open-file limit (ulimit -n %d, hard %s) leaves room for %d connections, not"
        " max_connections %d: more get 503; raise the limit (LimitNOFILE= in a systemd"
        " unit) or lower max_connections",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        room,
        wanted,
    )
    return room


def _open_descriptors() -> int:
    """How many descriptors the process holds now (an estimate where it cannot look)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64
