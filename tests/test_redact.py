"""Masking secrets: in any text, in URLs, in log records."""

from __future__ import annotations

import base64
import logging

import pytest

from spooler.redact import RedactingFilter, Redactor, mask, masked_url, url_secrets


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
