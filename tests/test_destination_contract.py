"""One contract every destination type passes, and the registry that finds the types: a
new type is one module in spooler/destinations/, which this suite picks up unasked."""

from __future__ import annotations

import dataclasses
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fakes
import pytest
from helpers.spools import drain_once

import spooler.destinations
from spooler import ConfigError, Spool
from spooler.config import DestinationConfig
from spooler.destinations import all_options, destination_types, spec_for
from spooler.testing import Receiver

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", destination_types())
def test_every_event_arrives_once_with_its_id(
    spool: Spool, receiver: Receiver, tmp_path: Path, kind: str
) -> None:
    spec = spec_for(kind)
    # Given events for one destination, shaped so that every API accepts them
    ids = spool.enqueue_many(
        [
            {
                "event": "e",
                "type": "track",
                "event_type": "e",
                "user_id": "user_1",
                "userId": "user_1",
                "distinct_id": "user_1",
                "n": n,
            }
            for n in range(7)
        ]
    )
    # and a destination of the type: a file where the type takes file URLs, else the
    # receiver, answering as the type's API does where the tests have a fake of it
    out = tmp_path / "out.jsonl"
    writes_files = spec.claims_url is not None and spec.claims_url(f"file://{out}")
    url = f"file://{out}" if writes_files else receiver.url
    key = spec.api_key_prefix + "key_0123456789" if spec.needs_api_key else None
    fake = fakes.FAKES.get(kind)
    receiver.respond = fake(key) if fake and key else None
    id_key = spec.event_id_key or "id"
    options = {"type": kind, "api_key": key, "id_field": None if spec.event_id_key else "id"}
    # When a drain delivers them (over HTTP, through one 503 and its retry)
    receiver.fail_next(503)
    batch_size = min(3, spec.max_batch_size or 3)
    report = drain_once(spool, url, batch_size=batch_size, **options)
    # Then the sink holds each event once, with its id (in any order: requests run
    # concurrently)
    if writes_files:
        got = [(e["n"], e[id_key]) for e in map(json.loads, out.read_text().splitlines())]
    else:
        got = [(e["n"], e[id_key]) for e in receiver.delivered]
    assert sorted(got) == list(enumerate(ids))
    assert report.delivered == 7 and report.dead == 0


def example_type_module() -> str:
    """The module of docs/destinations.md's example type, ``relay``, as written there."""
    text = (ROOT / "docs" / "destinations.md").read_text()
    [module] = [
        block
        for block in re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)
        if 'name="relay"' in block
    ]
    return module


def test_a_new_type_is_one_module_that_the_contract_test_and_the_cli_pick_up(
    tmp_path: Path,
) -> None:
    # Given a copy of the package with one more module in spooler/destinations/ (the
    # example of docs/destinations.md), and no other edit
    site = tmp_path / "site"
    shutil.copytree(
        ROOT / "spooler", site / "spooler", ignore=shutil.ignore_patterns("__pycache__")
    )
    (site / "spooler" / "destinations" / "relay.py").write_text(example_type_module())
    # (run from there: `python -m` puts the working folder first on the path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    # When the contract test runs on that copy
    pytest_args = ["-p", "no:cacheprovider", "-q", "-rA", "-k", "every_event_arrives"]
    contract = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args, __file__],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Then it runs for the new type as for the others, and passes
    assert contract.returncode == 0, contract.stdout + contract.stderr
    passed = re.findall(r"^PASSED \S+\[(\w+)\]$", contract.stdout, re.MULTILINE)
    assert sorted(passed) == sorted([*destination_types(), "relay"])
    # And the command line offers it
    helped = subprocess.run(
        [sys.executable, "-m", "spooler_cli", "drain", "--help"],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.search(r"--type \[[a-z|]*\brelay\b", helped.stdout), helped.stdout


def test_every_module_of_the_package_is_a_type_or_a_helper() -> None:
    # A module without a SPEC would break the registry: helpers' names start with "_".
    names = [m.name for m in pkgutil.iter_modules(spooler.destinations.__path__)]
    types = [name for name in names if not name.startswith("_")]
    assert list(destination_types()) == sorted(types)
    for name in types:
        spec = spec_for(name)
        assert spec.name == name, f"{name}.py declares the type {spec.name!r}"
        for option in dataclasses.fields(spec.options):
            assert "option" in option.metadata, f"{name}.{option.name}: made without option()"


def test_a_key_two_types_share_is_checked_alike() -> None:
    # A table's keys are checked before its type is known (all_options keeps the first
    # type's check of each): two types may share a key only if they check it alike.
    for key, (how, owners) in all_options().items():
        for owner in owners:
            assert spec_for(owner).option_fields()[key].check is how.check, (key, owners)


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_the_file_type_refuses_the_files_of_the_spool_it_is_drained_from(
    db: Path, tmp_path: Path, suffix: str
) -> None:
    # Given file destinations: one that would append to a file of the spool, one beside it
    into_spool = DestinationConfig(name="out", type="file", url=f"file://{db}{suffix}")
    beside = DestinationConfig(name="out", type="file", url=f"file://{tmp_path / 'out.jsonl'}")
    spec = spec_for("file")
    with Spool(db) as spool:
        # When the type checks each against the spool (as a drain does, for any type)
        # Then it refuses the first, naming the key, and lets the other through
        with pytest.raises(ConfigError, match=r"^destinations\.out\.url: .* is the spool itself$"):
            spec.check_against_spool(into_spool, spool.store)
        spec.check_against_spool(beside, spool.store)


def test_the_types_and_their_config_checks_load_no_httpx() -> None:
    code = (
        "import sys; from spooler.config import build_drain_config;"
        "from spooler.destinations import destination_types, spec_for;"
        "[build_drain_config({}, destination_flags={'type': t, 'url': '-' if t == 'file'"
        " else 'https://h/', 'api_key': spec_for(t).api_key_prefix + 'k'})"
        " for t in destination_types()];"
        "print([m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore')])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
