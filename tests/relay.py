"""``spooler serve`` as the tests run it: a real process, as users run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.cli import SPOOLER
from helpers.processes import free_port, wait_for_line


@dataclass
class RunningRelay:
    """A ``spooler serve`` process and its base URL."""

    process: subprocess.Popen[str]
    url: str

    def kill(self) -> None:
        """kill -9: the relay gets no chance to finish anything."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def write_config(path: Path, tables: dict[str, dict[str, Any]], /, **serve: Any) -> Path:
    """A config file with these ``[destinations.NAME]`` tables and ``[serve]`` keys (a
    dict value, such as ``destinations={"amplitude": "amp_prod"}``, is an inline table)."""
    lines = []
    if serve:
        lines.append("[serve]")
        lines += [f"{key} = {toml_value(value)}" for key, value in serve.items()]
    for name, table in tables.items():
        lines.append(f"[destinations.{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    """``value`` in TOML: a dict as an inline table; strings, numbers, booleans and lists
    of them are written alike in JSON."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@contextmanager
def relay(
    db: Path, *args: str, env: dict[str, str] | None = None, under: Sequence[str] = ()
) -> Iterator[RunningRelay]:
    """``spooler serve --db DB ARGS`` on a free port (run by the command ``under``, such
    as libfiu's ``fiu-run``, if given), once it listens; stopped (SIGTERM) at the end
    unless the test killed it."""
    port = free_port()
    process = subprocess.Popen(
        [*under, *SPOOLER, "serve", "--db", str(db), "--port", str(port), *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stderr is not None
        if not wait_for_line(process.stderr, "serving on", timeout=30):
            process.kill()
            raise AssertionError(f"spooler serve did not start: {process.stderr.read()}")
        yield RunningRelay(process, f"http://127.0.0.1:{port}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
