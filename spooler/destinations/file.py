"""The ``file`` destination: JSON Lines appended to a file (``file://PATH``) or stdout (``-``)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import files
from ..errors import ConfigError
from ..records import ClaimedEvent
from ..redact import masked_url
from . import Verdict, event_text
from ._registry import DestinationSpec, option, options_of

if TYPE_CHECKING:
    from ..config import DestinationConfig
    from ..store.interface import SpoolStore

__all__ = ["SPEC", "FileDestination", "FileOptions"]


@dataclass(frozen=True)
class FileOptions:
    """The ``file`` type's own keys."""

    # Shown as it is written in the file: 0640, not 416.
    file_mode: int = option(files.DEFAULT_FILE_MODE, files.check_file_mode, shown="{:04o}".format)


def _writes_to(url: str) -> bool:
    return url == "-" or url.startswith("file://")


def _check_url(dest: DestinationConfig, where: str) -> None:
    if not _writes_to(dest.url):
        raise ConfigError(
            f"{where}url: a file destination needs '-' (stdout) or file://PATH, "
            f"got {masked_url(dest.url)!r}"
        )


def _check_not_the_spool(dest: DestinationConfig, store: SpoolStore) -> None:
    # Appending JSON lines to the spool's own files would corrupt it.
    if store.is_own_file(dest.url.removeprefix("file://")):
        raise ConfigError(f"destinations.{dest.name}.url: {dest.url} is the spool itself")


SPEC = DestinationSpec(
    name="file",
    factory=lambda config, clock: FileDestination(config),
    # One writer keeps lines whole and in order.
    max_concurrency=1,
    options=FileOptions,
    claims_url=_writes_to,
    checks=(_check_url,),
    spool_checks=(_check_not_the_spool,),
)


class FileDestination:
    """Appends one JSON line per event and, for a file, fsyncs before reporting delivery.

    A missing file is created with ``file_mode`` (0600 by default), and missing folders
    on its path with the matching folder mode (0700), whatever the umask.
    """

    def __init__(self, config: DestinationConfig) -> None:
        self.config = config
        mode = options_of(config, FileOptions).file_mode
        if config.url == "-":
            self._path = "stdout"
            # None: sys.stdout has no descriptor of its own (a test's capture)
            self._fd = _stdout_fd(config.name)
        else:
            self._path = config.url.removeprefix("file://")
            self._fd = _open_file(self._path, mode, config.name)
        # A regular file (stdout sent to one included): fsynced, and cut back after a
        # failed write.
        self._regular = self._fd is not None and stat.S_ISREG(os.fstat(self._fd).st_mode)

    def request_batches(self, events: list[ClaimedEvent]) -> list[list[ClaimedEvent]]:
        """``events`` in one write: lines carry no per-request options."""
        return [events]

    def send(self, events: Sequence[ClaimedEvent]) -> Verdict:
        """Write the events (a file: and fsync it); a failed write is cut back off and retried."""
        text = "".join(event_text(event, self.config.id_field) + "\n" for event in events)
        try:
            if self._fd is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            elif self._regular:
                _append_to_file(self._fd, text.encode("utf-8"))
            else:  # a pipe or a device: nothing to fsync, nothing to cut back
                _write_all(self._fd, text.encode("utf-8"))
        except OSError as exc:
            return Verdict("retry", error=f"cannot write {self._path}: {exc.strerror or exc}")
        return Verdict("delivered")

    def close(self) -> None:
        """Close the file (stdout stays open)."""
        if self._fd is not None and self._path != "stdout":
            os.close(self._fd)
        self._fd = None


def _open_file(path: str, mode: int, name: str) -> int:
    """An unbuffered descriptor appending to ``path``, created with ``mode`` if missing,
    as are its missing folders (with the matching folder mode): the lines hold the same
    payloads as the spool, and are as private. Unbuffered: a failed write must leave no
    bytes behind in a buffer, to be written again (or fail again) by the next write or
    by close()."""
    try:
        files.make_folders(os.path.dirname(os.path.abspath(path)), files.folder_mode(mode))
        return files.open_creating(path, os.O_RDWR | os.O_APPEND, mode)
    except OSError as exc:
        raise ConfigError(f"destinations.{name}.url: cannot open {path}: {exc.strerror}") from None


def _stdout_fd(name: str) -> int | None:
    """The descriptor the events go to for ``-``, written to directly as a file's is:
    through ``sys.stdout``'s buffer, a write that failed part way (a full disk) stayed
    buffered and went out again before the retry's, cutting a line in two and garbling
    the events of both writes, which counted as delivered. None where ``sys.stdout`` has
    no descriptor of its own (a test's capture)."""
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        raise ConfigError(f"destinations.{name}.url: '-' writes to stdout, which is closed")
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    sys.stdout.flush()  # what was printed before goes first
    return fd


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, or raise."""
    unwritten = memoryview(data)
    while unwritten:  # a write may take less than all (a disk filling up)
        unwritten = unwritten[os.write(fd, unwritten) :]


def _append_to_file(fd: int, data: bytes) -> None:
    """Append ``data`` to a regular file and fsync it; if that fails, cut the file back
    to where it ended, and raise."""
    end = os.fstat(fd).st_size
    # A file that ends mid-line (a drain killed mid-write, or a cut-back that failed)
    # gets a newline first, so that the damaged line does not swallow the next event.
    if end and _ends_mid_line(fd, end):
        data = b"\n" + data
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except OSError:
        # A partial line would corrupt the JSON Lines file; the events are retried.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
            # Stdout sent to a file with `>` is not in append mode: its next write would
            # go where this one stopped, past the end, leaving a hole of zero bytes.
            os.lseek(fd, end, os.SEEK_SET)
        raise


def _ends_mid_line(fd: int, end: int) -> bool:
    """Whether the file ``fd``, ``end`` bytes long, ends in a partial line. Stdout sent to
    a file by the shell (``>``, ``>>``) is open for writing only: it cannot be read, and
    is taken to end whole."""
    try:
        return os.pread(fd, 1, end - 1) != b"\n"
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
        return False
