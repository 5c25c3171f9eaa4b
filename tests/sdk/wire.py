"""What the wire tests share: the requests as compared, the comparison, its mutation
check, the official Node SDKs, and the drain run as users run it.

A request is compared as ``{"path", "headers", "body"}``: header names in lower case,
without the ones each HTTP stack sets its own way (``TRANSPORT_HEADERS``), and the body
decoded (gzip) and parsed. Before comparing, both sides are normalised, and only in what
must differ between two runs of the same calls:

- generated ids: each UUID (not one of ``FIXED_IDS``, which the calls pass themselves)
  becomes ``<id1>``, ``<id2>``... in order of first appearance, so a field that must
  repeat another's id (``anonymousId`` and ``properties.anonymous_id``) still must;
- the time of the run: an ISO 8601 text or a Unix time in milliseconds within the run
  becomes ``<now ...>`` with its format kept (``<now dddd-dd-ddTdd:dd:dd.dddZ>``), so
  a change of format is still a difference; times the calls give are compared as they
  are;
- library names and versions: where the SDK names itself (one of the strings a test
  gives), spooler must name itself (``SPOOLER_NAMES``): both become ``<library>``.

Everything else must be equal, field by field, with its JSON type (``1`` is not ``1.0``
nor ``true``). ``assert_same_wire`` also proves the comparison would fail if any single
field of spooler's requests changed, went missing or was added.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from node_sdks import NODE_DIR

from spooler import __version__
from spooler.testing import Receiver, RecordedRequest

# Headers each HTTP client stack (requests, httpx, urllib, Node's fetch and http) sets
# by itself; none of them says anything to the ingestion API.
TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "accept",
        "accept-encoding",
        "accept-language",
        "sec-fetch-mode",
    }
)
# Ids the calls pass themselves: compared as they are, never normalised.
FIXED_IDS = (
    "00000000-0000-4000-8000-000000000001",
    "00000000-0000-4000-8000-000000000002",
)
# How spooler names itself where an SDK names itself (library fields, User-Agent).
SPOOLER_NAMES = frozenset({"spooler", __version__, f"spooler/{__version__}"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


@dataclass
class Run:
    """The time span of a test's calls and deliveries, for telling generated times apart."""

    started: float = field(default_factory=time.time)

    def now(self, timestamp: float) -> bool:
        """Whether ``timestamp`` falls within the run (it began a moment ago, ends now)."""
        return self.started - 5 <= timestamp <= time.time() + 5


def view(request: RecordedRequest, *, ignore_headers: frozenset[str] = frozenset()) -> dict:
    """A recorded request as compared: path, significant headers, parsed body."""
    headers = {
        name.lower(): value
        for name, value in request.headers.items()
        if name.lower() not in TRANSPORT_HEADERS | ignore_headers
    }
    if "content-type" in headers:
        # JSON is UTF-8 by definition (RFC 8259); saying so changes nothing.
        headers["content-type"] = re.sub(
            r";\s*charset=utf-8$", "", headers["content-type"], flags=re.I
        )
    body = request.body
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return {"path": request.path, "headers": headers, "body": json.loads(body)}


def arrived(receiver: Receiver) -> list[RecordedRequest]:
    """The requests ``receiver`` got, in the order they arrived (it records each once it
    has answered, and answers run in threads of their own)."""
    return sorted(receiver.requests, key=lambda request: request.received_at)


def views(receiver: Receiver, *, ignore_headers: frozenset[str] = frozenset()) -> list[dict]:
    """The requests ``receiver`` got, as compared, in the order they arrived."""
    return [view(request, ignore_headers=ignore_headers) for request in arrived(receiver)]


def leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every leaf of a JSON document with its path, keys sorted (empty {} and [] are leaves)."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from leaves(value[key], (*path, key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def normalised(document: Any, run: Run, libraries: frozenset[str]) -> dict[tuple, str]:
    """The document's leaves, as JSON texts, with generated ids, run times and library
    names replaced by tokens (see the module docstring)."""
    ids: dict[str, str] = {}

    def token(match: re.Match[str]) -> str:
        found = match.group(0)
        if found in FIXED_IDS:
            return found
        return ids.setdefault(found.lower(), f"<id{len(ids) + 1}>")

    result = {}
    for path, value in leaves(document):
        if isinstance(value, str):
            if value in libraries:
                value = "<library>"
            elif _ISO.fullmatch(value) and run.now(_unix_time(value)):
                value = "<now " + re.sub(r"\d", "d", value) + ">"
            else:
                value = _UUID.sub(token, value)
        elif type(value) is int and run.now(value / 1000):
            value = "<now ms>"
        result[path] = json.dumps(value)
    return result


def _unix_time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def differences(
    official: Any,
    ours: Any,
    run: Run,
    sdk_names: frozenset[str],
    our_names: frozenset[str] = SPOOLER_NAMES,
) -> list[str]:
    """Each field where ``ours`` differs from ``official`` after normalising; [] if none.
    ``sdk_names``: how the SDK names itself and its version; ``our_names``: how ``ours``
    may (spooler's, or the SDK's too for what the relay kept of the SDK's events)."""
    theirs, mine = normalised(official, run, sdk_names), normalised(ours, run, our_names)
    found = []
    for path in sorted(theirs.keys() | mine.keys(), key=repr):
        where = "/".join(map(str, path))
        if path not in mine:
            found.append(f"{where}: missing (the SDK sends {theirs[path]})")
        elif path not in theirs:
            found.append(f"{where}: not sent by the SDK ({mine[path]})")
        elif theirs[path] != mine[path]:
            found.append(f"{where}: {mine[path]}, the SDK sends {theirs[path]}")
    return found


def mutations(document: Any) -> Iterator[tuple[str, Any]]:
    """Copies of ``document`` with one change each: every leaf changed, every leaf
    removed, a field added to every object."""
    for path, _ in leaves(document):
        for change in ("changed", "removed"):
            copied = copy.deepcopy(document)
            parent = copied
            for step in path[:-1]:
                parent = parent[step]
            if change == "changed":
                parent[path[-1]] = "mutated!"
            else:
                del parent[path[-1]]
            yield f"{'/'.join(map(str, path))} {change}", copied
    for path in _objects(document):
        copied = copy.deepcopy(document)
        target = copied
        for step in path:
            target = target[step]
        target["mutated!"] = True
        yield f"{'/'.join(map(str, path)) or 'top'} got a new field", copied


def _objects(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """The path of every JSON object in ``value``."""
    if isinstance(value, dict):
        yield path
        for key, item in value.items():
            yield from _objects(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _objects(item, (*path, index))


def assert_same_wire(
    official: list[dict],
    ours: list[dict],
    run: Run,
    sdk_names: frozenset[str],
    our_names: frozenset[str] = SPOOLER_NAMES,
) -> None:
    """Request by request, field by field: ``ours`` sends what ``official`` sends; and
    changing any one field of ``ours`` would make this fail (``our_names``: as for
    ``differences``)."""
    assert len(ours) == len(official), f"spooler sent {len(ours)} requests, the SDK {len(official)}"
    for index, (theirs, mine) in enumerate(zip(official, ours, strict=True)):
        assert differences(theirs, mine, run, sdk_names, our_names) == [], f"request {index}"
        undetected = [
            what
            for what, mutated in mutations(mine)
            if not differences(theirs, mutated, run, sdk_names, our_names)
        ]
        assert undetected == [], f"request {index}: changes the comparison would miss"


# -- running things as users do ---------------------------------------------------------


def drain(db: Path, destination: str, kind: str, api_key: str, url: str, **settings: Any) -> None:
    """``spooler drain --config FILE -d NAME --until-empty`` as a real process, with the
    destination in the config file as the README shows it (``settings``: more of its keys)."""
    config = db.parent / "spooler.toml"
    table = {"type": kind, "url": url, "api_key": api_key, **settings}
    lines = [f"[destinations.{destination}]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    config.write_text("\n".join(lines) + "\n")
    spooler(
        "drain",
        *("--db", str(db), "--config", str(config), "-d", destination, "--until-empty"),
        *("--backoff-base", "0.01", "--poll-interval", "0.05", "--max-time", "60"),
    )


def spooler(*args: str) -> subprocess.CompletedProcess[str]:
    """Another ``spooler`` command (``dlq replay``...), as a real process; must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "spooler_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def run_node(script: str, spec: dict) -> list[str]:
    """Run one of tests/sdk/node's scripts with ``spec``; its output lines."""
    done = subprocess.run(
        ["node", str(NODE_DIR / script), json.dumps(spec)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
