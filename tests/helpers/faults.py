"""I/O faults injected with libfiu: a process started under ``fiu-run`` whose chosen libc
calls fail while a test switches them on with ``fiu-ctrl``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers.processes import require_program


def fiu(tmp_path: Path) -> tuple[list[str], list[str]]:
    """The command prefixes that start a process under libfiu (``fiu-run -x``: it can make
    chosen libc calls fail) and control it from outside (``fiu-ctrl``)."""
    require_program("fiu-run", "fiu-utils")
    control = str(tmp_path / "fiu-ctrl")
    return ["fiu-run", "-x", "-f", control], ["fiu-ctrl", "-f", control]


def switch(control: list[str], pid: int, command: str) -> None:
    """Run one ``fiu-ctrl`` command (``enable name=...``, ``disable name=...``) in ``pid``."""
    result = subprocess.run(
        [*control, "-c", command, str(pid)], capture_output=True, text=True, timeout=10
    )
    # fiu-ctrl exits 0 even when it cannot reach the process; it says so on stderr.
    assert result.returncode == 0 and not result.stderr, result.stderr
