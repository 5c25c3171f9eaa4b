"""The ``spooler`` command line as the tests run it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SPOOLER = [sys.executable, "-m", "spooler_cli"]


def spooler_cmd(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the ``spooler`` command line as a real subprocess and wait for it."""
    env = {**os.environ, **kwargs.pop("env", {})}
    return subprocess.run(
        [*SPOOLER, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=kwargs.pop("timeout", 60),
        **kwargs,
    )


def drain_args(db: Path | str, url: str, *extra: str) -> list[str]:
    """The arguments of ``spooler drain`` delivering to ``url`` with ids in ``id``."""
    return ["drain", "--db", str(db), "--url", url, "--id-field", "id", *extra]


def drain_command(db: Path, url: str, *extra: str) -> list[str]:
    """The ``spooler drain`` command line delivering to ``url`` with ids in ``id``."""
    return [*SPOOLER, *drain_args(db, url, *extra)]


def start_drain(db: Path, url: str, *extra: str, **popen: Any) -> subprocess.Popen[str]:
    """Start ``spooler drain`` as a real process delivering to ``url`` with ids in ``id``."""
    return subprocess.Popen(drain_command(db, url, *extra), text=True, **popen)


def drain_cli(
    db: Path | str, url: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``spooler drain --until-empty`` with fast retries to ``url`` (ids in ``id``),
    bounded by a minute, on the spool ``db`` (a file, or a PostgreSQL URL); ``extra``
    flags are added at the end."""
    return spooler_cmd(
        *drain_args(db, url, "--until-empty", "--backoff-base", "0.01", "--poll-interval", "0.05"),
        *("--max-time", "60", *extra),
        env=env or {},
    )
