"""Config: TOML file, ${ENV} interpolation, flags over file, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from spooler import ConfigError
from spooler.config import (
    build_drain_config,
    config_warnings,
    load_config_file,
    parse_duration,
    read_config_file,
    resolved_settings,
)

CONFIG = """
db = "/tmp/x.db"
[retry]
max_attempts = 5
max_age = "12h"
[drain]
lease = "2m"
[destinations.collector]
url = "https://collector.example/v1/batch"
batch_size = 100
batch_key = "batch"
api_key = "${COLLECTOR_KEY}"
headers = { "X-Team" = "core-${TEAM}" }
backoff_cap = 60
[destinations.archive]
url = "file:///var/log/events.jsonl"
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("3d", 259200),
        ("45", 45),
        (2.5, 2.5),
        ("1.5m", 90),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "3w", "m", "-5", True, None, "1h30m"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spooler.toml"
    path.write_text(text)
    return path


def test_a_full_config_file(tmp_path: Path) -> None:
    raw = load_config_file(write(tmp_path, CONFIG))
    config = build_drain_config(raw, env={"COLLECTOR_KEY": "sk_secret", "TEAM": "data"})
    collector = config.destinations["collector"]
    assert collector.type == "http" and collector.batch_size == 100
    assert collector.api_key == "sk_secret" and collector.headers == {"X-Team": "core-data"}
    assert collector.retry.max_attempts == 5 and collector.retry.max_age == 43200
    assert collector.retry.backoff_cap == 60
    assert config.destinations["archive"].type == "file"
    assert config.destinations["archive"].retry.backoff_cap == 300  # the default
    assert config.lease == 120
    assert "sk_secret" not in repr(collector)


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    raw = load_config_file(write(tmp_path, CONFIG))
    config = build_drain_config(
        raw,
        env={"COLLECTOR_KEY": "k", "TEAM": "t"},
        destination_flags={"url": "http://127.0.0.1:9/x", "batch_size": 7, "timeout": None},
        retry_flags={"max_attempts": 9, "max_age": None},
    )
    assert config.destinations["default"].batch_size == 7
    assert all(d.retry.max_attempts == 9 for d in config.destinations.values())
    assert config.destinations["collector"].retry.max_age == 43200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[destinations.a]\nurl = 'http://h'\nbatch_sise = 5",
            r"destinations\.a\.batch_sise: "
            r"unknown key \(did you mean 'batch_size'\?\)",
        ),
        (
            "[destinations.a]\nurl = 'http://h'\nbatch_size = 'ten'",
            r"destinations\.a\.batch_size: "
            "expected an integer",
        ),
        ("[destinations.a]\nurl = 'http://h'\nbatch_size = 0", r"batch_size: must be between 1"),
        ("[destinations.a]\nbatch_size = 5", r"destinations\.a\.url: missing"),
        ("[destinations.a]\nurl = 'ftp://h'", r"destinations\.a\.url: http destinations need"),
        ("[destinations.a]\nurl = 'http://'", r"destinations\.a\.url: names no host: 'http://'"),
        ("[destinations.a]\nurl = 'https:///v1'", r"url: names no host: 'https:///v1'"),
        ("[destinations.a]\nurl = 'events.jsonl'", r"destinations\.a\.url: http destinations need"),
        ("[destinations.a]\ntype = 'file'\nurl = '/x'", r"url: a file destination needs"),
        ("[destinations.a]\nurl = 'http://h:99999/'", r"url: not a valid URL \(Port out of range"),
        ("[destinations.a]\nurl = 'http://h:abc/'", r"url: not a valid URL \(Port could not be"),
        ("[destinations.a]\nurl = 'http://[::1'", r"url: not a valid URL \(Invalid IPv6 URL\)"),
        ("[destinations.a]\nurl = 'http://h:0/'", r"url: port 0 cannot be connected to"),
        ("[destinations.a]\nurl = 'http://ex ample.com/'", r"url: holds a space or a control"),
        (
            "[destinations.a]\nurl = 'http://h'\napi_key = '${NOPE}'",
            r"api_key: environment "
            "variable NOPE is not set",
        ),
        ("[retry]\nmax_age = 'forever'\n[destinations.a]\nurl = 'http://h'", r"retry\.max_age"),
        ("[destinations.a]\nurl = 'http://h'\ntimeout = 90", r"timeout: 90s must be shorter"),
        ("[destinations.'bad name']\nurl = 'http://h'", "bad destination name"),
        ("[destinashuns.a]\nurl = 'http://h'", r"unknown key \(did you mean 'destinations'\?\)"),
        ("", "no destination to drain"),
        (
            "[destinations.a]\nurl = 'http://h'\napi_key = 'k'\nheaders = {authorization = 'x'}",
            r"destinations\.a\.headers: authorization is also where api_key goes",
        ),
        (
            "[destinations.a]\nurl = 'http://h'\nheaders = {'X Team' = 'data'}",
            r"destinations\.a\.headers\.X Team: 'X Team' is not a valid HTTP header name",
        ),
        (
            "[destinations.a]\nurl = 'http://h'\nheaders = {X-Team = \"da\\nta\"}",
            r"destinations\.a\.headers\.X-Team: holds a line break",
        ),
        (
            "[destinations.a]\nurl = 'http://h'\nauth_header = 'X: Key'",
            r"destinations\.a\.auth_header: 'X: Key' is not a valid HTTP header name",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_drain_config(load_config_file(write(tmp_path, text)), env={})


def problems_in(tmp_path: Path, text: str) -> tuple[str, ...]:
    """Every problem a check of config ``text`` reports, in order."""
    with pytest.raises(ConfigError) as caught:
        build_drain_config(load_config_file(write(tmp_path, text)), env={})
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    # Given a file with two mistakes in one destination and two in another
    text = (
        "[destinations.a]\nurl = 'http://h'\nbatch_sise = 5\ntimeout = '1y'\n"
        "[destinations.b]\ntype = 'amplitude'\ntimeout = 90\n"
        "[destinations.c]\nurl = '-'\n"
    )
    # When it is checked, then the error lists all four, in the file's order
    assert [problem.split(":")[0] for problem in problems_in(tmp_path, text)] == [
        "destinations.a.batch_sise",
        "destinations.a.timeout",
        "destinations.b.api_key",
        "destinations.b.timeout",
    ]


def test_unset_variables_are_all_reported(tmp_path: Path) -> None:
    text = "[destinations.a]\nurl = 'http://h/${PATH_PART}'\napi_key = '${KEY}'\n"
    assert sorted(problems_in(tmp_path, text)) == [
        "destinations.a.api_key: environment variable KEY is not set",
        "destinations.a.url: environment variable PATH_PART is not set",
    ]


def test_a_variable_set_to_nothing_is_refused_where_it_is_the_whole_value(
    tmp_path: Path,
) -> None:
    # Given an api_key from a variable that an EnvironmentFile sets to nothing ("KEY=")
    text = "[destinations.a]\nurl = 'http://h/${PREFIX}v1'\napi_key = '${KEY}'\n"
    # Then it is refused, as api_key = '' is (no key would be sent: every batch a 401)
    with pytest.raises(ConfigError) as caught:
        build_drain_config(load_config_file(write(tmp_path, text)), env={"KEY": "", "PREFIX": ""})
    assert caught.value.problems == (
        "destinations.a.api_key: environment variable KEY is set but empty",
    )
    # And an empty variable inside a longer value is taken as it is
    config = build_drain_config(
        load_config_file(write(tmp_path, text)), env={"KEY": "k", "PREFIX": ""}
    )
    assert config.destinations["a"].url == "http://h/v1"


def test_a_typo_in_a_shared_table_does_not_hide_the_destinations_mistakes(
    tmp_path: Path,
) -> None:
    # Given mistakes in [retry], in [drain] and in a destination
    text = (
        "[retry]\nmax_age = 'x'\nbackof_cap = 1\n[drain]\nlease = 0\n"
        "[destinations.a]\ntimeout = 30\n"
    )
    # Then one check reports them all; the destination is checked with what is right in
    # the shared tables (its timeout against the default lease, not against lease = 0)
    assert [problem.split(":")[0] for problem in problems_in(tmp_path, text)] == [
        "retry.max_age",
        "retry.backof_cap",
        "drain.lease",
        "destinations.a.url",
    ]


def test_config_check_lists_the_mistakes_of_every_section_at_once(tmp_path: Path) -> None:
    # Given a file with a mistake at the top level and in each section
    path = write(
        tmp_path,
        "[retyr]\nmax_attempts = 3\n[spool]\ndurability = 'fast'\n[retry]\nmax_atempts = 3\n"
        "[drain]\nlease = 'long'\n[destinations.a]\nurl = 'http://h'\nbatch_sise = 5\n",
    )
    # When all of it is checked (spooler config check), then each one is named
    with pytest.raises(ConfigError) as caught:
        resolved_settings(read_config_file(path), env={})
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "retyr",
        "spool.durability",
        "retry.max_atempts",
        "drain.lease",
        "destinations.a.batch_sise",
    ]


def test_a_producer_only_file_has_its_shared_tables_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "[retry]\nmax_atempts = 3\n")
    with pytest.raises(ConfigError, match=r"retry\.max_atempts: unknown key"):
        resolved_settings(load_config_file(path), env={})


def test_warnings_leave_out_variables_a_producer_need_not_set(tmp_path: Path) -> None:
    raw = load_config_file(
        write(tmp_path, "[destinations.a]\nurl = 'http://h'\napi_key = '${KEY}'\nbatchsize = 1\n")
    )
    assert config_warnings(raw, env={}) == (
        "destinations.a.batchsize: unknown key (did you mean 'batch_size'?)",
    )
    assert config_warnings(load_config_file(write(tmp_path, CONFIG)), env={}) == ()


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(write(tmp_path, "[destinations\nurl="))
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('db = "/var/spool/caf\xe9.db"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not valid TOML: not UTF-8 at byte 20"):
        load_config_file(latin1)


def test_flags_are_not_interpolated_but_the_file_is(tmp_path: Path) -> None:
    raw = load_config_file(
        write(tmp_path, "[destinations.default]\nurl = 'http://h'\nheaders = {X-A = 'v$${B}'}\n")
    )
    config = build_drain_config(
        raw, env={"B": "nope"}, destination_flags={"api_key": "pa$$word${HOME}"}
    )
    default = config.destinations["default"]
    assert default.api_key == "pa$$word${HOME}"  # as typed on the command line
    assert default.headers == {"X-A": "v${B}"}  # $$ is a literal $ in the file


def test_one_named_destination_is_defined_by_the_flags_with_its_types_endpoint() -> None:
    # spooler drain -d datalyr --type datalyr --api-key dk_...: no config file
    config = build_drain_config(
        {},
        destination_flags={"type": "datalyr", "api_key": "dk_123"},
        flag_destination="datalyr",
    )
    [(name, datalyr)] = config.destinations.items()
    assert (name, datalyr.type, datalyr.url) == (
        "datalyr",
        "datalyr",
        "https://ingest.datalyr.com/track",
    )
    assert datalyr.api_key == "dk_123"


def test_flags_of_an_unknown_type_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"a known endpoint \(given: --type\)$"):
        build_drain_config({}, destination_flags={"type": "bogus"})
    with pytest.raises(ConfigError, match=r"type: must be one of amplitude, datalyr, file, http"):
        build_drain_config({}, destination_flags={"type": "bogus", "url": "http://h"})


def test_flags_for_a_named_destination_override_its_table(tmp_path: Path) -> None:
    raw = load_config_file(write(tmp_path, CONFIG))
    config = build_drain_config(
        raw,
        destination_flags={"batch_size": 7},
        flag_destination="collector",
        env={"COLLECTOR_KEY": "k", "TEAM": "t"},
    )
    assert sorted(config.destinations) == ["archive", "collector"]
    assert config.destinations["collector"].batch_size == 7
    assert config.destinations["collector"].batch_key == "batch"  # the rest from the file


@pytest.mark.parametrize(
    ("setting", "other"),
    [
        ("api_key = 'k'", "api_key"),
        ("headers = {Authorization = 'Bearer k'}", "headers.Authorization"),
    ],
)
def test_credentials_in_the_url_and_another_authorization_are_refused(
    tmp_path: Path, setting: str, other: str
) -> None:
    # httpx sends the URL's user info as HTTP Basic, replacing the other one unseen.
    text = f"[destinations.a]\nurl = 'https://u:pw@h/in'\n{setting}"
    with pytest.raises(ConfigError) as err:
        build_drain_config(load_config_file(write(tmp_path, text)), env={})
    assert err.value.problems == (
        "destinations.a.url: holds credentials (user info before '@'), and "
        f"destinations.a.{other} is set too: httpx would send the URL's as HTTP Basic auth "
        "instead; give one of the two",
    )


def test_the_history_a_drain_keeps_is_a_duration_and_zero_keeps_none() -> None:
    url = {"url": "http://127.0.0.1:9"}
    assert build_drain_config({}, destination_flags=url).history == 7 * 86400
    assert build_drain_config({"drain": {"history": "1d"}}, destination_flags=url).history == 86400
    assert build_drain_config({"drain": {"history": 0}}, destination_flags=url).history == 0
    with pytest.raises(ConfigError, match=r"drain\.history: expected a duration"):
        build_drain_config({"drain": {"history": "a week"}}, destination_flags=url)
