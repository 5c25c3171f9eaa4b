"""Power cuts on demand: a LazyFS mount the power-loss scenarios put their spools on.

LazyFS (github.com/dsrhaslab/lazyfs) is a FUSE file system that shows a backing
folder (``root``: the disk) at a mount point (``mnt``), but keeps written file data in
its own cache until it is fsynced. ``power_cut()`` drops every byte that was not, as a
power cut would; a torn-write fault lets part of one write (or of a run of writes)
reach the disk and then kills LazyFS, as a cut in the middle of a write would. What
``root`` holds at any moment is what the disk would hold after a cut at that moment.

LazyFS keeps only file data: creating, renaming and deleting files and folders reach
the disk at once, so a missing fsync of a folder cannot be seen here
(tests/test_files.py checks those fsyncs).

The binary comes from the build script of the shared LazyFS tools (``.ci/run`` runs it):
``$SPOOLER_LAZYFS``, else ``$TMPDIR/lazyfs-build/lazyfs/lazyfs``. Without it, or without
FUSE, the scenarios skip and say why. The mount and fault commands, and their pitfalls,
are described in the tools' README.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BINARY_ENV = "SPOOLER_LAZYFS"
# LazyFS reads fault commands in 100-byte chunks: a longer command is garbled.
MAX_COMMAND = 99
# Its cache must hold everything written or read between two power cuts: once full,
# writes go straight to the disk, and the scenario would see fewer losses than are there.
CACHE = "64mb"
_USAGE = re.compile(r"cache usage \(%pages\) is ([\d.]+)%")
_CONFIG = """\
[faults]
fifo_path="{scratch}/faults"
fifo_path_completed="{scratch}/done"
[cache]
apply_eviction=false
[cache.simple]
custom_size="{cache}"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile="{scratch}/lazyfs.log"
"""


def lazyfs_binary() -> str:
    """The LazyFS binary; skips the test, saying why, where LazyFS cannot run."""
    binary = os.environ.get(BINARY_ENV) or os.path.join(
        tempfile.gettempdir(), "lazyfs-build", "lazyfs", "lazyfs"
    )
    if not os.access(binary, os.X_OK):
        pytest.skip(
            f"LazyFS is not built ({binary} is missing): .ci/run builds it with the shared "
            f"tools' build.sh; or set {BINARY_ENV} to the binary"
        )
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("FUSE is not available here (/dev/fuse is missing or not accessible)")
    if shutil.which("fusermount3") is None:
        pytest.skip("needs fusermount3 (Debian package fuse3; LazyFS's build.sh installs it)")
    return binary


class LazyFS:
    """One LazyFS mount over a fresh scratch folder; ``mnt`` shows ``root``, the disk."""

    def __init__(self, binary: str, *, cache: str = CACHE) -> None:
        self._binary = binary
        # Short, because fault commands name files by their path under root.
        self.scratch = Path(tempfile.mkdtemp(prefix="lz", dir="/tmp"))
        # Other users reach the mount too (it is mounted allow_other): a PostgreSQL
        # server runs as its own user.
        self.scratch.chmod(0o711)
        self.root = self.scratch / "root"
        self.mnt = self.scratch / "mnt"
        self.root.mkdir()
        self.mnt.mkdir()
        self._faults = self.scratch / "faults"
        os.mkfifo(self._faults)
        os.mkfifo(self.scratch / "done")
        self._config = self.scratch / "lazyfs.toml"
        self._config.write_text(_CONFIG.format(scratch=self.scratch, cache=cache))
        # LazyFS handles no command until the "done" FIFO has a reader, and keeps that
        # reader for the whole mount; O_RDWR opens it without waiting for the writer.
        self._done = os.open(self.scratch / "done", os.O_RDWR | os.O_NONBLOCK)
        self._process: subprocess.Popen[bytes] | None = None

    def mount(self) -> None:
        """Start LazyFS and wait until ``mnt`` is mounted."""
        output = open(self.scratch / "lazyfs.out", "ab")  # noqa: SIM115 - the child's
        with output:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    str(self.mnt),
                    "--config-path",
                    str(self._config),
                    "-o",
                    f"allow_other,modules=subdir,subdir={self.root}",
                    "-f",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mnt):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"LazyFS did not mount: {self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        """What LazyFS printed, the last lines of it."""
        return "".join((self.scratch / "lazyfs.out").read_text().splitlines(True)[-20:])

    def disk(self, path: Path) -> Path:
        """Where the file shown at ``path`` under ``mnt`` lies on the disk (``root``)."""
        return self.root / path.relative_to(self.mnt)

    def command(self, text: str) -> None:
        """Send one fault command (it takes effect at the next matching operation)."""
        if len(text) > MAX_COMMAND:
            raise ValueError(f"LazyFS garbles commands over {MAX_COMMAND} characters: {text}")
        with open(self._faults, "w") as faults:
            faults.write(text + "\n")

    def arm(self, fault: str) -> None:
        """Send a fault command and wait until LazyFS says it took it: a command is only
        read between LazyFS's other work, and a fault that targets "the next" write must
        be in place before that write starts."""
        line = f"configured successfully '{fault}'"
        self._answered(fault, lambda log: log.count(line), f"take the fault {fault!r}")

    def cache_usage(self) -> float:
        """How full LazyFS's cache is, in percent of its pages."""
        log = self._answered(  # answered in the log only
            "lazyfs::display-cache-usage",
            lambda log: len(_USAGE.findall(log)),
            "report its cache usage",
        )
        return float(_USAGE.findall(log)[-1])

    def _answered(self, command: str, answers: Callable[[str], int], what: str) -> str:
        """Send ``command`` and wait until LazyFS's log holds one more of its answers
        (``answers`` counts them in the log's text); the log's text then."""
        log = self.scratch / "lazyfs.out"
        seen = answers(log.read_text())
        self.command(command)
        deadline = time.monotonic() + 30
        while answers(text := log.read_text()) == seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"LazyFS did not {what}: {self.output()}")
            time.sleep(0.01)
        return text

    def power_cut(self) -> None:
        """Drop every byte not fsynced; the mount then shows what the disk holds."""
        # A full cache would have let writes through to the disk unsynced: a partial cut.
        assert self.cache_usage() < 100, "LazyFS's cache filled up: raise CACHE"
        self.command("lazyfs::clear-cache")
        deadline = time.monotonic() + 30
        reply = b""
        while b"finished::clear-cache" not in reply:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._done], [], [], left)[0]:
                raise RuntimeError(f"LazyFS did not confirm clear-cache: {self.output()}")
            reply += os.read(self._done, 4096)

    def wait_until_killed(self, timeout: float = 30) -> None:
        """Wait for LazyFS to end itself, as a torn-write fault does once it fired."""
        assert self._process is not None
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the fault never fired: {self.output()}") from None

    def reboot(self) -> None:
        """Unmount (a dead mount included) and mount again over the same disk."""
        self.unmount()
        self.mount()

    def unmount(self) -> None:
        """Unmount and stop LazyFS; every process using the mount must have ended."""
        if self._process is None:
            return
        subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, check=False)
        if os.path.ismount(self.mnt):  # busy: detach it anyway, so the test can go on
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def close(self) -> None:
        """Unmount and remove the scratch folder."""
        self.unmount()
        os.close(self._done)
        shutil.rmtree(self.scratch, ignore_errors=True)


@contextmanager
def mounted(*, cache: str = CACHE) -> Iterator[LazyFS]:
    """A LazyFS mount with a cache of ``cache``, unmounted and removed afterwards; skips
    the test, saying why, where LazyFS or FUSE cannot run."""
    fs = LazyFS(lazyfs_binary(), cache=cache)
    try:
        fs.mount()
    except RuntimeError as exc:
        fs.close()
        pytest.skip(f"FUSE is not usable here: {exc}")
    try:
        yield fs
    finally:
        fs.close()
