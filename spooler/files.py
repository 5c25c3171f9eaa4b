"""The files and folders spooler creates: private whatever the umask, and durable.

A spool holds event payloads, often personal data, so a new spool file (SQLite gives
its ``-wal`` and ``-shm`` the main file's mode), a ``file://`` output and every folder
spooler makes for them are readable by their owner only: 0600 / 0700 by default, or
``file_mode`` for deployments that share them with a group. The mode is set with
``chmod`` after creating, because the mode given to ``open`` and ``mkdir`` passes
through the umask.

A new file or folder is only an entry in its parent folder, and POSIX makes that
entry durable only when the parent is fsynced: after a power cut, an unsynced entry
may be gone with everything written under it. So each creation here is followed by
an fsync of the folder that holds it.
"""

from __future__ import annotations

import errno
import os

from .errors import ConfigError

__all__ = [
    "DEFAULT_FILE_MODE",
    "check_file_mode",
    "folder_mode",
    "make_folders",
    "open_creating",
    "sync_folder",
]

DEFAULT_FILE_MODE = 0o600
_OWNER_READ_WRITE = 0o600


def check_file_mode(value: object, key: str = "file_mode") -> int:
    """The mode ``value`` stands for: an integer (``0o640``) or an octal string
    (``"0640"``) of permission bits that lets the owner read and write."""
    mode = value
    if isinstance(value, str):
        try:
            mode = int(value.removeprefix("0o"), 8)
        except ValueError:
            raise ConfigError(f"{key}: expected an octal mode like 0640, got {value!r}") from None
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ConfigError(
            f'{key}: expected permission bits like 0o640 (TOML) or "0640", got {value!r}'
        )
    if mode & _OWNER_READ_WRITE != _OWNER_READ_WRITE:
        raise ConfigError(f"{key}: {mode:04o} must let the owner read and write (0600 at least)")
    return mode


def folder_mode(file_mode: int) -> int:
    """The mode of a folder for files of ``file_mode``: whoever may read or write the
    files may also enter the folder (0600 -> 0700, 0640 -> 0750)."""
    return file_mode | (file_mode & 0o444) >> 2


def sync_folder(path: str) -> None:
    """Make the entries of the folder ``path`` durable: fsync the folder itself."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a folder at all (PostgreSQL ignores the same
        # two errors for the same reason): there is nothing more to be done there.
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def make_folders(path: str, mode: int) -> None:
    """Create the folder ``path`` and its missing parents with exactly ``mode``, each
    entry made durable in its parent. Folders that exist are left as they are."""
    missing = []
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            # Another process made it, and may not have synced its entry yet: sync it.
        else:
            os.chmod(folder, mode)
        sync_folder(os.path.dirname(folder))


def open_creating(path: str, flags: int, mode: int) -> int:
    """Open the file ``path`` with ``flags``; if it does not exist, create it with exactly
    ``mode`` and make its entry durable in its folder (which must exist)."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, flags)
    try:
        os.fchmod(fd, mode)
        sync_folder(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        os.close(fd)
        raise
    return fd
