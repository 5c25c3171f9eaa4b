"""Scenario 20: the file system refuses: a full disk, a read-only mount, no permission.

Real ones, not SQLite's imitations of them: the full disk and the read-only mount are a
small tmpfs that the test mounts in a user and mount namespace of its own (``unshare
-rm``: no privilege needed, nothing visible outside), where the spooler commands run;
no permission is a spool of root's that an unprivileged user opens (``setpriv``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.cli import SPOOLER
from helpers.processes import require_program

import spooler
from spooler import Spool
from spooler.testing import Receiver

# Runs inside the namespace: mounts the tmpfs, then runs the steps the test gives as
# JSON (shell commands and spooler commands), printing one JSON result per step.
STEPS = """
import json, os, subprocess, sys
mount, steps = sys.argv[1], json.loads(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mount], check=True)
for kind, args in steps:
    if kind == "sh":
        proc = subprocess.run(args, shell=True, capture_output=True, text=True)
    else:
        proc = subprocess.run([sys.executable, "-m", "spooler_cli", *args],
                              capture_output=True, text=True, cwd=mount)
    print(json.dumps([proc.returncode, proc.stdout, proc.stderr]), flush=True)
"""


def in_namespace(mount: Path, steps: list[tuple[str, object]]) -> list[tuple[int, str, str]]:
    """Run ``steps`` with a fresh 512 KiB tmpfs mounted at ``mount``: ("sh", "command")
    or ("spooler", [args]); each gives (exit code, stdout, stderr)."""
    require_program("unshare", "util-linux")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"needs unprivileged user namespaces (unshare -rm): {probe.stderr.strip()}")
    mount.mkdir()
    proc = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", STEPS, str(mount), json.dumps(steps)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [tuple(json.loads(line)) for line in proc.stdout.splitlines()]


def test_a_really_full_disk_is_named_even_by_doctor(
    tmp_path: Path, receiver: Receiver, scenario
) -> None:
    row = scenario(
        "20 (full disk)",
        "the disk is full, and no connection to the spool is open",
        "a 512 KiB tmpfs in a mount namespace of the test's own, filled by dd",
    )
    mount = tmp_path / "disk"
    db = str(mount / "spool.db")
    drain = ["drain", "--db", db, "--url", receiver.url, "--id-field", "id", "--until-empty"]
    enqueued, _, doctor, refused, created, _, delivered = in_namespace(
        mount,
        [
            # Given a spool with one event, closed (its -wal and -shm are gone), on a disk
            # that then fills up
            ("spooler", ["enqueue", "--db", db, '{"n": 1}']),
            ("sh", f"dd if=/dev/zero of={mount}/fill bs=4k"),
            # When the doctor, a producer and a new spool try it
            ("spooler", ["doctor", "--db", db]),
            ("spooler", ["enqueue", "--db", db, '{"n": 2}']),
            ("spooler", ["enqueue", "--db", f"{mount}/new.db", '{"n": 3}']),
            # ...and once there is room again, a drain
            ("sh", f"rm {mount}/fill"),
            ("spooler", drain),
        ],
    )
    assert enqueued[0] == 0
    # Then each names the full disk and the spool, not "disk I/O error" alone
    for code, _, stderr in (doctor, refused, created):
        assert code == 1
        assert "the disk is full" in stderr and str(mount) in stderr, stderr
    # ...and the event enqueued before is delivered once there is room.
    assert delivered[0] == 0, delivered[2]
    row.tally(enqueued[1].split(), [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0


def test_a_read_only_file_system_is_named(tmp_path: Path, receiver: Receiver, scenario) -> None:
    row = scenario(
        "20 (read-only)",
        "the spool's file system is remounted read-only",
        "a tmpfs in a mount namespace of the test's own, remounted with -o remount,ro",
    )
    mount = tmp_path / "disk"
    db = str(mount / "spool.db")
    drain = ["drain", "--db", db, "--url", receiver.url, "--id-field", "id", "--until-empty"]
    enqueued, _, refused, drain_refused, _, delivered = in_namespace(
        mount,
        [
            # Given a spool with one event, on a file system then remounted read-only
            ("spooler", ["enqueue", "--db", db, '{"n": 1}']),
            ("sh", f"mount -o remount,ro {mount}"),
            # When a producer and a drain try it
            ("spooler", ["enqueue", "--db", db, '{"n": 2}']),
            ("spooler", drain),
            # ...and again once it is writable
            ("sh", f"mount -o remount,rw {mount}"),
            ("spooler", drain),
        ],
    )
    assert enqueued[0] == 0
    # Then both name the read-only file system, not "unable to open database file" alone
    for code, _, stderr in (refused, drain_refused):
        assert code == 1
        assert f"the file system holding {mount} is mounted read-only" in stderr, stderr
    # ...and the event waited, to be delivered once the file system is writable again.
    assert delivered[0] == 0, delivered[2]
    row.tally(enqueued[1].split(), [e["id"] for e in receiver.delivered])
    assert row.lost == 0 and row.duplicated == 0


@contextmanager
def reachable_by_others(*paths: Path) -> Iterator[None]:
    """Let other users pass through every folder above ``paths`` (o+x where it is
    missing: traversal only, no listing), the mode of each restored afterwards. The user
    nobody must reach the interpreter, its venv and the checkout, which may lie in a
    folder that is root's alone (a clone under ``mktemp -d``, 0700)."""
    changed: dict[Path, int] = {}
    for path in paths:
        for folder in path.parents:
            mode = stat.S_IMODE(folder.stat().st_mode)
            if folder not in changed and not mode & stat.S_IXOTH:
                os.chmod(folder, mode | stat.S_IXOTH)
                changed[folder] = mode
    try:
        yield
    finally:
        for folder, mode in changed.items():
            os.chmod(folder, mode)


def test_no_permission_is_named_with_the_user_and_the_path(scenario) -> None:
    row = scenario(
        "20 (no permission)",
        "the spool belongs to another user",
        "root's spool (0644, in a 0755 folder) used by the user nobody (setpriv)",
    )
    if os.geteuid() != 0:
        pytest.skip("needs root, to make a spool that another user may not write")
    require_program("setpriv", "util-linux")
    # A folder of its own under /tmp: pytest's temporary folders are root's alone (0700),
    # and the other user must be able to reach the spool to be refused writing it.
    folder = Path(os.path.realpath("/tmp")) / f"spooler-perm-{os.getpid()}"
    folder.mkdir(mode=0o755)
    try:
        db = folder / "spool.db"
        with Spool(db) as spool:
            spool.enqueue({"n": 1})
        os.chmod(db, 0o644)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *SPOOLER]
        code = Path(spooler.__file__).parent  # the checkout, with an editable install
        with reachable_by_others(Path(sys.executable), Path(sys.prefix) / "lib", code):
            results = [
                subprocess.run(
                    [*nobody, *args], capture_output=True, text=True, cwd=folder, timeout=60
                )
                for args in (
                    ["enqueue", "--db", str(db), '{"n": 2}'],
                    ["enqueue", "--db", str(folder / "new.db"), '{"n": 3}'],
                )
            ]
        existing, new = results
        assert existing.returncode == 1
        assert f"no permission to read and write {db} (as user nobody)" in existing.stderr, (
            existing.stderr
        )
        # (A new spool's file is made before SQLite opens it: the OS's own words.)
        assert new.returncode == 1
        assert f"cannot create {folder}/new.db: [Errno 13] Permission denied" in new.stderr
        with Spool(db) as spool:
            assert spool.status().total.queued == 1  # the spool is as it was
    finally:
        shutil.rmtree(folder)
    row.recover_s = None


def test_a_user_who_may_only_read_the_spool_leaves_no_files_of_its_own_beside_it() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to make a spool that another user may not write")
    require_program("setpriv", "util-linux")
    # Given root's spool, which the group of the user nobody may read (0640), in a folder
    # where anyone may create files (as a folder shared by a group is, 2770)
    folder = Path(os.path.realpath("/tmp")) / f"spooler-reader-{os.getpid()}"
    folder.mkdir()
    os.chmod(folder, 0o777)
    try:
        db = folder / "spool.db"
        with Spool(db, file_mode=0o640) as spool:
            spool.enqueue({"n": 1})
        os.chown(db, 0, 65534)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *SPOOLER]
        code = Path(spooler.__file__).parent  # the checkout, with an editable install
        # When that user runs a command that only reads it
        with reachable_by_others(Path(sys.executable), Path(sys.prefix) / "lib", code):
            status = subprocess.run(
                [*nobody, "status", "--db", str(db)],
                capture_output=True,
                text=True,
                cwd=folder,
                timeout=60,
            )
        # Then it is refused before SQLite opens the file: SQLite would have read it, and
        # left a -wal and a -shm of nobody's, 0640, that the spool's owners may not write
        assert status.returncode == 1
        assert f"no permission to read and write {db} (as user nobody)" in status.stderr, (
            status.stderr
        )
        assert sorted(path.name for path in folder.iterdir()) == ["spool.db"]
    finally:
        shutil.rmtree(folder)
