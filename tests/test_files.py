"""The files and folders spooler creates: owner-only whatever the umask, and durable.

Modes are checked in a fresh process started with the umask under test, as a service
would start. Durability is checked by watching which folders are fsynced, and what each
held at that moment: a folder's new entry survives a power cut only once the folder
is synced (LazyFS, in tests/reliability/test_power_loss.py, cannot drop directory
entries, so this is the check for them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import SPOOLER, drain_args

from spooler import Spool
from spooler.errors import ConfigError

# Opens a spool (argv[1]) with file_mode argv[2], enqueues, and prints the mode of
# every file and folder under argv[3] while the spool is open (-wal and -shm included).
OPEN_AND_LIST = """
import json, os, sys
from spooler import Spool
with Spool(sys.argv[1], file_mode=int(sys.argv[2], 8)) as spool:
    spool.enqueue({"email": "someone@example.com"})
    modes = {}
    for folder, subfolders, names in os.walk(sys.argv[3]):
        for name in subfolders + names:
            path = os.path.join(folder, name)
            modes[os.path.relpath(path, sys.argv[3])] = oct(os.stat(path).st_mode & 0o777)
print(json.dumps(modes))
"""


def modes_after_open(db: Path, top: Path, *, umask: int, file_mode: int = 0o600) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", OPEN_AND_LIST, str(db), oct(file_mode)[2:], str(top)],
        capture_output=True,
        text=True,
        umask=umask,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask 022", "umask 000"])
def test_a_new_spool_and_its_folders_are_private_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    # Given a spool path under two folders that do not exist, and a permissive umask
    db = tmp_path / "a" / "b" / "spool.db"
    # When a producer opens it and enqueues
    modes = modes_after_open(db, tmp_path, umask=umask)
    # Then the folders it made are 0700, and the spool file, its WAL and its shared
    # memory file are 0600
    assert modes == {
        "a": "0o700",
        "a/b": "0o700",
        "a/b/spool.db": "0o600",
        "a/b/spool.db-wal": "0o600",
        "a/b/spool.db-shm": "0o600",
    }


def test_file_mode_opens_a_new_spool_to_a_group_whatever_the_umask(tmp_path: Path) -> None:
    # Given a umask that would take the group's bits away
    db = tmp_path / "shared" / "spool.db"
    modes = modes_after_open(db, tmp_path, umask=0o077, file_mode=0o640)
    # Then file_mode is what the files get, and the folder lets the group in
    assert modes == {
        "shared": "0o750",
        "shared/spool.db": "0o640",
        "shared/spool.db-wal": "0o640",
        "shared/spool.db-shm": "0o640",
    }


def test_folders_and_files_that_exist_keep_their_modes(tmp_path: Path) -> None:
    # Given a folder an operator made, and a spool file an older spooler left 0644
    folder = tmp_path / "existing"
    folder.mkdir()
    folder.chmod(0o755)
    db = folder / "spool.db"
    Spool(db).close()
    db.chmod(0o644)
    # When a producer opens the spool again
    modes = modes_after_open(db, tmp_path, umask=0o022)
    # Then nothing that was there is changed (spooler doctor warns about the file)
    assert modes["existing"] == "0o755" and modes["existing/spool.db"] == "0o644"


@pytest.mark.parametrize("value", [640, "0400", "rw-r-----", True, 0o1600], ids=repr)
def test_a_file_mode_that_is_not_one_is_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="file_mode"):
        Spool(tmp_path / "spool.db", file_mode=value)  # type: ignore[arg-type]
    assert not (tmp_path / "spool.db").exists()


def test_file_mode_in_the_config_applies_to_the_spool(tmp_path: Path) -> None:
    db = tmp_path / "spool" / "spool.db"
    config = tmp_path / "spooler.toml"
    config.write_text(f"db = '{db}'\n[spool]\nfile_mode = \"0640\"\n")
    result = subprocess.run(
        [*SPOOLER, "enqueue", "--config", str(config), "{}"],
        capture_output=True,
        text=True,
        umask=0o077,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (db.stat().st_mode & 0o777, db.parent.stat().st_mode & 0o777) == (0o640, 0o750)


def drain_to_file(db: Path, url: str, *, umask: int, config: Path | None = None) -> None:
    with Spool(db) as spool:
        spool.enqueue_many([{"n": n} for n in range(3)])
    extra = ["--config", str(config)] if config else []
    result = subprocess.run(
        [*SPOOLER, *drain_args(db, url, "--until-empty", *extra)],
        capture_output=True,
        text=True,
        umask=umask,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_file_destination_creates_its_folders_privately(db: Path, tmp_path: Path) -> None:
    # Given a file:// output under folders that do not exist, and a permissive umask
    out = tmp_path / "out" / "daily" / "events.jsonl"
    # When a drain delivers to it
    drain_to_file(db, f"file://{out}", umask=0o022)
    # Then the folders and the file exist, private as the spool's, and hold the events
    assert [json.loads(line)["n"] for line in out.read_text().splitlines()] == [0, 1, 2]
    modes = [p.stat().st_mode & 0o777 for p in (out.parent.parent, out.parent, out)]
    assert modes == [0o700, 0o700, 0o600]


def test_a_file_destination_takes_its_own_file_mode(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "events.jsonl"
    config = tmp_path / "spooler.toml"
    config.write_text(
        f"[destinations.default]\nurl = 'file://{out}'\nfile_mode = 0o640\n"
        "[destinations.http]\nurl = 'http://127.0.0.1:9'\nfile_mode = 0o640\n"
    )
    checked = subprocess.run(
        [*SPOOLER, "config", "check", str(config)], capture_output=True, text=True, check=False
    )
    assert "destinations.http.file_mode: only for file destinations" in checked.stderr
    config.write_text(
        f"[spool]\nfile_mode = '0660'\n"
        f"[destinations.default]\nurl = 'file://{out}'\nfile_mode = 0o640\n"
    )
    checked = subprocess.run(
        [*SPOOLER, "config", "check", str(config)], capture_output=True, text=True, check=False
    )
    shown = json.loads(checked.stdout)
    assert (shown["spool"]["file_mode"], shown["destinations"]["default"]["file_mode"]) == (
        "0660",
        "0640",
    )
    drain_to_file(db, f"file://{out}", umask=0o077, config=config)
    assert (out.stat().st_mode & 0o777, out.parent.stat().st_mode & 0o777) == (0o640, 0o750)


@pytest.fixture
def synced_folders(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """Record every fsync of a folder: (the folder, the names it held at that moment)."""
    synced: list[tuple[str, list[str]]] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            synced.append((path, sorted(os.listdir(path))))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


def test_every_folder_and_file_a_spool_creates_is_synced_in_its_parent(
    tmp_path: Path, synced_folders: list[tuple[str, list[str]]]
) -> None:
    # When a spool is created under two folders that did not exist
    with Spool(tmp_path / "a" / "b" / "spool.db") as spool:
        spool.enqueue({"n": 1})
    # Then each new entry was followed by an fsync of the folder holding it: tmp_path
    # once it held a, a once it held b, b once it held the spool file and its WAL (the
    # WAL before the first enqueue returned)
    a, b = str(tmp_path / "a"), str(tmp_path / "a" / "b")
    assert (str(tmp_path), ["a"]) in synced_folders
    assert (a, ["b"]) in synced_folders
    assert (b, ["spool.db"]) in synced_folders
    assert any(folder == b and "spool.db-wal" in names for folder, names in synced_folders)


def test_an_existing_spool_syncs_its_folder_for_the_new_wal_only(
    db: Path, synced_folders: list[tuple[str, list[str]]]
) -> None:
    Spool(db).close()  # the last connection closed: SQLite deleted the WAL
    synced_folders.clear()
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    assert synced_folders == [(str(db.parent), ["spool.db", "spool.db-shm", "spool.db-wal"])]


def test_a_file_destination_syncs_the_folders_and_the_file_it_creates(
    tmp_path: Path, synced_folders: list[tuple[str, list[str]]]
) -> None:
    from spooler.config import DestinationConfig
    from spooler.destinations.file import FileDestination

    out = tmp_path / "out" / "events.jsonl"
    FileDestination(DestinationConfig(name="f", url=f"file://{out}", type="file")).close()
    assert synced_folders == [(str(tmp_path), ["out"]), (str(out.parent), ["events.jsonl"])]
