"""Scenario 23: a receiver that echoes credentials back: in its error body, in its
headers, with session cookies; and URL credentials next to an API key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from helpers.cli import drain_cli, spooler_cmd
from helpers.spools import rows

from spooler import Spool
from spooler.testing import Receiver

# Short on purpose: a secret of any length is masked, below LONG_SECRET (6) included.
PASSWORDS = ["Zq7x", "~q"]
COOKIE = "sess10n-c00kie"


def echo_everything(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """Refuse the request, echoing its headers (credentials included) in the answer's
    body and headers, and the Basic credentials decoded, and set a session cookie, as
    some receivers' error pages do."""
    echoed = {name: value for name, value in headers.items() if name.lower() != "content-length"}
    basic = headers.get("Authorization", "").removeprefix("Basic ")
    user, _, password = base64.b64decode(basic).decode().partition(":")
    answer = {"error": "unauthorized", "your_headers": echoed, "user": user, "password": password}
    return (
        401,
        {"X-Echo-Authorization": headers.get("Authorization", ""), "Set-Cookie": COOKIE},
        json.dumps(answer).encode(),
    )


def every_form(password: str, *secrets: str) -> list[str]:
    """Secrets as they could travel: as is, and base64-encoded alone or as user:password."""
    forms = [password, *secrets]
    for secret in (password, *secrets):
        forms.append(base64.b64encode(secret.encode()).decode())
    forms.append(base64.b64encode(f"user:{password}".encode()).decode())
    return forms


@pytest.mark.parametrize("password", PASSWORDS, ids=lambda p: f"{len(p)}-character password")
def test_echoed_credentials_are_masked_in_the_spool_the_logs_and_the_output(
    db: Path, receiver: Receiver, scenario, password: str
) -> None:
    row = scenario(
        f"23 ({len(password)}-character password)",
        f"a receiver echoes the request's credentials back: URL user info (a {len(password)}"
        "-character password), as HTTP Basic and decoded, in its 401 body and headers, with a"
        " session cookie",
        "scripted receiver; `spooler drain --debug` (httpcore prints every header it gets)",
    )
    # Given events for a receiver reached with credentials in its URL
    with Spool(db) as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(3)])
    receiver.respond = echo_everything
    host = receiver.url.removeprefix("http://")
    url = f"http://user:{password}@{host}/in"
    # When a drain delivers them, with debug logging, and the receiver echoes it all
    drained = drain_cli(db, url, "--debug", "--batch-size", "1")
    assert drained.returncode == 0, drained.stderr
    # Then the receiver did get the credentials, as HTTP Basic
    sent = receiver.requests[0].headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(f"user:{password}".encode()).decode()
    # ...the events are dead letters (401 refuses the request itself)...
    dead = rows(db, "SELECT event_id, error, attempt_log FROM dead")
    assert sorted(event_id for event_id, *_ in dead) == sorted(ids)
    assert "***" in dead[0][1] and "unauthorized" in dead[0][1]
    # ...and no form of them is in the spool file, its log, the drain's log (httpcore's
    # debug lines of the headers received included) or the operator's views.
    views = [
        spooler_cmd("dlq", "inspect", "--db", str(db), "--json").stdout,
        spooler_cmd("dlq", "inspect", "--db", str(db), ids[0]).stdout,
        spooler_cmd("status", "--db", str(db), "--json").stdout,
    ]
    assert "receive_response_headers.complete" in drained.stderr  # the debug lines ran
    leaks = [
        (form, where)
        for form in every_form(password, COOKIE)
        for where, text in [
            ("drain log", drained.stderr),
            *(("view", view) for view in views),
            *((path.name, path.read_bytes().decode("latin-1")) for path in db.parent.iterdir()),
        ]
        if form in text
    ]
    assert leaks == []
    row.tally(ids, [e["id"] for e in receiver.delivered], dead=[d[0] for d in dead])
    assert row.lost == 0
    row.recover_s = None


def test_a_url_with_credentials_and_an_api_key_is_refused_naming_both(db: Path) -> None:
    # httpx would send the URL's user info as HTTP Basic, and the key not at all.
    result = spooler_cmd(
        *("drain", "--db", str(db), "--once", "--url", "http://user:Zq7x@127.0.0.1:9/in"),
        *("--api-key", "k3y"),
    )
    assert result.returncode == 2
    assert "destinations.default.url: holds credentials" in result.stderr
    assert "destinations.default.api_key is set too" in result.stderr
    assert "Zq7x" not in result.stderr and "k3y" not in result.stderr
