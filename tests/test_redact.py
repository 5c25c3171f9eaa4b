"""Secrets never reach the spool, the logs or the output: masking in any text, in URLs
and in log records (spooler.redact), and each place that shows or keeps a secret."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import fakes
import pytest
from click.testing import CliRunner
from helpers.spools import dead_rows, drain_once

from spooler import ConfigError, Spool
from spooler.config import build_drain_config, load_config_file, resolved_settings
from spooler.destinations import destination_types, spec_for
from spooler.drain import Mode, url_digest
from spooler.redact import (
    RedactingFilter,
    Redactor,
    mask,
    masked_postgres_url,
    masked_url,
    url_secrets,
)
from spooler.store import shown_location
from spooler.testing import Receiver
from spooler_cli.main import cli


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # A short secret is masked where it stands alone, whatever is around it...
        ('{"error": "key k9 revoked"}', '{"error": "key *** revoked"}'),
        ("Authorization: Bearer k9", "Authorization: Bearer ***"),
        ("https://h/in?key=k9&x=1", "https://h/in?key=***&x=1"),
        # ...not inside a longer word, which it would garble (and spell out by the gaps)
        ("k9x is not k99 nor ak9", "k9x is not k99 nor ak9"),
        # A long one wherever it occurs.
        ("tokensk_live_TOPSECRET99!", "token***!"),
    ],
)
def test_secrets_of_any_length_are_masked(text: str, masked: str) -> None:
    assert Redactor(["k9", "sk_live_TOPSECRET99", None, ""])(text) == masked


def test_a_url_s_credentials_in_every_form_they_travel_in() -> None:
    url = "https://user:p%40ss@host/in?key=a%2Fb&flag"
    basic = base64.b64encode(b"user:p@ss").decode()  # what httpx sends
    assert set(url_secrets(url)) == {"p%40ss", "p@ss", basic, "a%2Fb", "a/b"}
    assert masked_url(url) == "https://user:***@host/in?key=***&flag"
    # With no password, the user name is the credential (https://KEY@host).
    assert masked_url("https://KEY123@host/") == "https://***@host/"
    assert "KEY123" in url_secrets("https://KEY123@host/")


def test_a_postgresql_url_is_shown_without_its_password() -> None:
    url = "postgresql://app:s3cr%40t@db:5432/events?sslpassword=k3y&sslmode=require&host=/run/pg"
    assert masked_postgres_url(url) == (
        "postgresql://app@db:5432/events?sslpassword=***&sslmode=require&host=/run/pg"
    )
    assert (
        masked_postgres_url("postgresql://h/db?password=s3cr") == "postgresql://h/db?password=***"
    )
    # A spool's location is shown that way, with spooler's own parameters read off it
    shown = shown_location("postgresql://app:s3cr@h/db?password=p4ss&wait=3")
    assert shown == "postgresql://app@h/db?password=***&schema=spooler"


def test_log_records_lose_their_secrets_and_credential_headers() -> None:
    record = logging.LogRecord(
        "httpcore.http11",
        logging.DEBUG,
        __file__,
        1,
        "receive_response_headers.complete return_value=%r",
        ((b"HTTP/1.1", 401, b"", [(b"Set-Cookie", b"s=1"), (b"X-Echo", b"Bearer k9")]),),
        None,
    )
    assert RedactingFilter(Redactor(["k9"])).filter(record)
    assert record.getMessage() == (
        "receive_response_headers.complete return_value="
        "(b'HTTP/1.1', 401, b'', [(b'Set-Cookie', b'***'), (b'X-Echo', b'Bearer ***')])"
    )


def test_a_secret_shown_in_settings_keeps_only_a_key_s_prefix() -> None:
    assert mask("sk_live_abcdef") == "sk_***"
    assert mask("short") == "***"


def test_an_excerpt_is_masked_before_it_is_cut() -> None:
    # A cut through the middle of a secret would leave its first half in the text.
    redact = Redactor(["sk_live_TOPSECRET99"])
    text = "x" * 10 + "sk_live_TOPSECRET99" + "y" * 10
    assert redact.excerpt(text, 16) == "xxxxxxxxxx***..."
    assert redact.excerpt(text, 100) == "xxxxxxxxxx***yyyyyyyyyy"
    assert redact.excerpt("é" * 10, 9) == "ééé..."  # never half a character


# -- config: a secret mistyped, or shown by spooler config check --------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spooler.toml"
    path.write_text(text)
    return path


def test_an_api_key_with_a_trailing_newline_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    # A key read from a file often keeps its newline; sent, it would fail every request
    # (and httpx's error would quote the header, key and all).
    raw = load_config_file(
        write_config(tmp_path, "[destinations.a]\nurl = 'http://h'\napi_key = '${KEY}'")
    )
    with pytest.raises(ConfigError, match=r"destinations\.a\.api_key: holds a line break") as err:
        build_drain_config(raw, env={"KEY": "sk_live_0123456789\n"})
    assert "sk_live" not in str(err.value)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("api_key = 918273645", "api_key"),
        ("signing_secret = 918273645", "signing_secret"),
        ("headers = {X-Token = 918273645}", "headers.X-Token"),
    ],
)
def test_a_mistyped_secret_is_refused_without_showing_it(
    tmp_path: Path, setting: str, key: str
) -> None:
    # A key typed without its quotes is a TOML number: the check says so, not what it is.
    for check in (build_drain_config, resolved_settings):
        with pytest.raises(ConfigError, match=rf"destinations\.a\.{key}: expected a") as err:
            check(
                load_config_file(
                    write_config(tmp_path, f"[destinations.a]\nurl = 'http://h'\n{setting}")
                )
            )
        assert "918273645" not in str(err.value)
        assert "got a value of type int (not shown: it may be a secret)" in str(err.value)


def test_a_url_with_credentials_is_masked_in_the_error_that_refuses_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[destinations.a]\nurl = 'ftp://u:pw@h/?key=k1'")
    with pytest.raises(ConfigError) as err:
        build_drain_config(load_config_file(path), env={})
    assert err.value.problems == (
        "destinations.a.url: http destinations need an http:// or https:// URL, got"
        " 'ftp://u:***@h/?key=***'",
    )


def test_config_check_prints_resolved_settings_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text(
        "[spool]\nmax_events = 1000\n"
        "[retry]\nmax_age = '12h'\n"
        "[destinations.amp]\ntype = 'amplitude'\napi_key = '${AMP_KEY}'\n"
        "[destinations.hook]\nurl = 'https://hooks.example/in'\n"
        "headers = { Authorization = 'Bearer ${HOOK_TOKEN}' }\n"
        "[destinations.query]\nurl = 'https://bot:${PASS}@in.example/v1?key=${KEY}&team=2'\n"
    )
    env = {
        "AMP_KEY": "amp_0123456789abcdef",
        "HOOK_TOKEN": "tok_0123456789",
        "PASS": "pw_0123456789",
        "KEY": "key_0123456789",
    }
    result = CliRunner().invoke(cli, ["config", "check", str(config)], env=env)
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)
    assert settings["spool"] == {  # the keys the file leaves out as the spool takes them
        "durability": "full",
        "max_event_bytes": 1024 * 1024,
        "max_events": 1000,
        "max_bytes": None,
        "file_mode": "0600",
    }
    amp = settings["destinations"]["amp"]
    assert amp["url"] == "https://api2.amplitude.com/2/httpapi"
    assert amp["api_key"] == "amp***" and amp["retry"]["max_age"] == 43200
    assert settings["destinations"]["hook"]["headers"] == {"Authorization": "Bea***"}
    assert settings["destinations"]["query"]["url"] == (
        "https://bot:***@in.example/v1?key=***&team=***"
    )
    assert "0123456789" not in result.stdout and result.stderr.endswith(": ok\n")


# -- the drain: the spool, its logs and httpx's ------------------------------------------


def test_the_url_a_pause_belongs_to_is_kept_without_its_secrets(
    spool: Spool, receiver: Receiver, db: Path
) -> None:
    # Given a run that the API paused, at a URL with a password and a key in its query
    host = receiver.url.removeprefix("http://")
    spool.enqueue({"n": 1})
    receiver.fail_next(429, headers={"Retry-After": "3600"})
    drain_once(spool, f"http://u:OLDPASS@{host}/in?key=OLDSECRET", mode=Mode.ONCE)
    # Then what the spool keeps of the URL is the same for any other password and key,
    # and neither is in any of the spool's files
    kept = spool.store.pauses()["default"].url_digest
    assert kept == url_digest(f"http://u:NEWPASS@{host}/in?key=NEWSECRET")
    for path in db.parent.glob("spool.db*"):
        assert b"OLDSECRET" not in path.read_bytes() and b"OLDPASS" not in path.read_bytes()


def test_the_api_key_never_reaches_the_spool_or_the_logs(
    spool: Spool, receiver: Receiver, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk_live_TOPSECRET"
    spool.enqueue({"e": 1})
    receiver.fail_next(400)
    receiver.reject = None
    caplog.set_level(logging.DEBUG)
    drain_once(spool, receiver.url, api_key=secret)
    assert secret not in caplog.text
    for path in db.parent.iterdir():
        assert secret.encode() not in path.read_bytes()


def test_secrets_in_the_url_are_masked_in_the_log_lines_of_httpx(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "TOPSECRET99"
    host = receiver.url.removeprefix("http://")
    spool.enqueue({"e": 1})
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="httpx")  # the CLI tests set it to WARNING
    filters = list(logging.getLogger("httpx").filters)  # a drain made but never run keeps its
    drain_once(spool, f"http://user:{secret}@{host}/in?key={secret}")
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert requests == [f'HTTP Request: POST http://user:***@{host}/in?key=*** "HTTP/1.1 200 OK"']
    assert secret not in caplog.text
    assert logging.getLogger("httpx").filters == filters  # the drain's, removed as it ends


def test_a_short_api_key_echoed_by_the_receiver_is_masked_where_it_stands(
    spool: Spool, receiver: Receiver, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A two-character key: masked where it stands alone, not inside other words.
    spool.enqueue({"n": 1})
    receiver.respond = lambda body, headers: (
        401,
        {"X-Echo": headers["Authorization"]},
        json.dumps({"error": f"{headers['Authorization']} revoked", "k9x": 1}).encode(),
    )
    caplog.set_level(logging.DEBUG)
    drain_once(spool, receiver.url, api_key="k9")
    assert receiver.requests[0].headers["Authorization"] == "Bearer k9"
    assert dead_rows(db, "error") == [('HTTP 401: {"error": "Bearer *** revoked", "k9x": 1}',)]
    assert re.search(r"\bk9\b", caplog.text) is None  # httpcore's debug lines included


def test_a_key_in_the_url_is_masked_when_the_receiver_echoes_it(
    spool: Spool, receiver: Receiver, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool.enqueue({"n": 1})
    receiver.respond = lambda body, headers: (400, {}, b'{"error":"key key_0123456789 revoked"}')
    caplog.set_level(logging.INFO)
    drain_once(spool, receiver.url + "/in?key=key_0123456789")
    [(error,)] = dead_rows(db, "error")
    assert error == 'HTTP 400: {"error":"key *** revoked"}'
    # The log names where the drain sends, with the key masked there too (httpx's own
    # request lines, which `spooler drain` silences, are not ours to mask)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("spooler"))
    assert f"for default ({receiver.url}/in?key=***)" in ours
    assert "key_0123456789" not in ours


# -- each API destination's key: never in the spool ------------------------------------------


@pytest.mark.parametrize(
    "kind", [kind for kind in destination_types() if spec_for(kind).needs_api_key]
)
def test_keys_never_reach_the_spool(spool: Spool, receiver: Receiver, db: Path, kind: str) -> None:
    key = spec_for(kind).api_key_prefix + "key_0123456789abcdef"
    fake = fakes.FAKES.get(kind)
    receiver.respond = fake(key) if fake else None
    spool.enqueue_many(
        [
            {
                "event": "x",
                "event_type": "x",
                "type": "track",
                "user_id": "user_1",
                "userId": "u",
                "distinct_id": "u",
            }
        ]
        * 3
    )
    receiver.fail_next(400)
    drain_once(spool, receiver.url, type=kind, api_key=key)
    for path in db.parent.glob("spool.db*"):
        assert key.encode() not in path.read_bytes()
