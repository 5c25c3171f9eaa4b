"""Processes the tests start: a free port, waiting on a condition or a child's output,
skipping where a program is missing, and a command's peak memory."""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import pytest

# Linux carries a process's peak RSS (ru_maxrss) across exec: a command started straight
# from pytest would report pytest's own footprint if that is larger. A small launcher
# starts it instead, and reports the command's peak (KiB) as its child's, last on stderr.
_PEAK_RSS_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
    "sys.exit(code)"
)


def run_measuring_peak_rss(
    command: list[str], **kwargs: Any
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command`` to completion: the finished process, and its peak RSS in MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_LAUNCHER, *command],
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        **kwargs,
    )
    *_, peak_kib = proc.stderr.split()
    return proc, int(peak_kib) / 1024


def require_program(name: str, package: str) -> None:
    """Skip the test, saying what to install, if the program ``name`` is not on PATH
    (``.ci/run`` installs every one the tests use, so CI never skips)."""
    if shutil.which(name) is None:
        pytest.skip(f"needs {name} (Debian package {package}; .ci/run installs it)")


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (until a test starts something there)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def wait_for_line(stream: IO[str], text: str, timeout: float = 30.0) -> bool:
    """Read ``stream`` (a child's pipe) line by line until one contains ``text``, or
    ``timeout`` passes; returns whether it was seen. What was read is consumed."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([stream], [], [], left)[0]:
            return False
        line = stream.readline()
        if not line:
            return False
        if text in line:
            return True
    return False


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
