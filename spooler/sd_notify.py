"""systemd's notify protocol (sd_notify(3)): a service says it is ready, alive, stopping.

A unit with ``Type=notify`` passes ``$NOTIFY_SOCKET``, a datagram socket to write
``READY=1``, ``WATCHDOG=1`` and ``STOPPING=1`` to (a path, or ``@name`` in Linux's
abstract namespace); with ``WatchdogSec=``, ``$WATCHDOG_USEC`` says how often systemd
expects a ``WATCHDOG=1``, and ``$WATCHDOG_PID`` which process it expects it from.
Outside systemd there is no socket, and every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("spooler.service")


class Notifier:
    """Sends sd_notify states to ``$NOTIFY_SOCKET``, if there is one.

    Usage::

        notifier = Notifier(os.environ)
        notifier.notify("READY=1")
        if notifier.watchdog_interval:  # seconds; ping at least twice as often
            notifier.notify("WATCHDOG=1")
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        path = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        seconds = int(usec) / 1e6 if usec.isdigit() else 0.0
        mine = not pid or pid == str(os.getpid())
        #: How often systemd expects ``WATCHDOG=1``, in seconds (None: it does not).
        self.watchdog_interval = seconds if seconds > 0 and mine else None

    def notify(self, state: str) -> None:
        """Send one state (``"READY=1"``), on a socket of its own, as sd_notify(3) does.

        A failure is logged, never raised, and ends the notifications.
        """
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), exc)
            self._address = ""
