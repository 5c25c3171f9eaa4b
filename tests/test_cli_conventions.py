"""One convention for every command (where --db goes, how errors read, ids on stdin), and
the first commands a newcomer runs: a drop-in client's events drained with no config
file, a drain that says what it leaves behind, a config checked all at once."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import click
import pytest
from click.testing import CliRunner, Result
from helpers.cli import spooler_cmd
from helpers.spools import dead_count, queued_count

from spooler import ConfigError, Spool, SpoolFullError
from spooler.clients import Datalyr
from spooler.testing import Receiver
from spooler_cli.main import cli


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def one_error_line(result: Result, exit_code: int = 2) -> str:
    """The single ``spooler: error:`` line of a failed command (asserted to be one)."""
    assert result.exit_code == exit_code, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("spooler: error: ")
    return line


# -- --db and --config on the group --------------------------------------------------------


def test_db_and_config_are_taken_on_the_group_too(db: Path, tmp_path: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1}, destination="mine")
    result = run("--db", str(db), "status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["destinations"]["mine"]["queued"] == 1
    config = tmp_path / "spooler.toml"
    config.write_text(f"db = '{db}'\n")
    result = run("--config", str(config), "status", "--json")
    assert json.loads(result.stdout)["queued"] == 1


def test_a_commands_own_flag_wins_then_the_groups_then_the_environment(tmp_path: Path) -> None:
    paths = {name: tmp_path / f"{name}.db" for name in ("own", "group", "env")}
    for name, path in paths.items():
        with Spool(path) as spool:
            spool.enqueue({"n": 1}, destination=name)

    def served(*args: str) -> list[str]:
        result = run(*args, env={"SPOOLER_DB": str(paths["env"])})
        assert result.exit_code == 0, result.output
        return list(json.loads(result.stdout)["destinations"])

    assert served("--db", str(paths["group"]), "status", "--json", "--db", str(paths["own"])) == [
        "own"
    ]
    assert served("--db", str(paths["group"]), "status", "--json") == ["group"]
    assert served("status", "--json") == ["env"]


# -- usage errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus", "status"], "--bogus"),
        (["nope"], "'nope'"),
        (["drain", "--bogus"], "--bogus"),
        (["dlq", "inspect", "--limit", "x"], "Invalid value for '--limit'"),
        (["enqueue", "--destination"], "'--destination' requires an argument"),
        (["dlq", "replay"], "say which dead events"),
        (["drain", "--url", "-", "--once", "--until-empty"], "--once and --until-empty cannot"),
        (["drain", "-d", "a", "-d", "b", "--url", "-"], "define one destination"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    line = one_error_line(run(*args))
    assert message in line
    assert line.endswith("--help'")  # where to read more


def test_a_bare_spooler_still_shows_its_help() -> None:
    result = run()
    assert "Commands:" in result.output and "spooler: error" not in result.output


def test_an_unknown_reason_is_refused_with_the_known_ones(db: Path) -> None:
    with Spool(db) as spool:
        spool.dead_letters.add({"n": 1}, destination="a", reason="blocked_by_client", error="x")
    for command in (["inspect"], ["replay"], ["purge", "--yes"]):
        line = one_error_line(run("dlq", *command, "--db", str(db), "--reason", "rejectd"))
        assert "unknown reason 'rejectd'" in line
        assert "max_attempts" in line and "rejected" in line and "blocked_by_client" in line
    # A reason only a client writes is known once the table holds it.
    listed = run("dlq", "inspect", "--db", str(db), "--reason", "blocked_by_client", "--json")
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 1


def commands_taking_ids(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command (by its path under ``spooler``) with an IDS argument."""
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found += commands_taking_ids(command, (*path, name))
        elif any(param.name == "ids" for param in command.params):
            found.append((*path, name))
    return found


def test_every_command_taking_ids_says_they_may_come_on_stdin() -> None:
    commands = commands_taking_ids(cli)
    # dlq inspect, replay and purge; hold, release, retry-now and expire at least
    assert len(commands) >= 7, commands
    for command in commands:
        helped = " ".join(run(*command, "--help").stdout.split())
        assert "IDs may be given as - to read them from stdin" in helped, command


@pytest.mark.parametrize("command", [["dlq", "replay"], ["dlq", "purge"], ["dlq", "inspect"]])
def test_no_ids_on_stdin_is_nothing_to_do(db: Path, command: list[str]) -> None:
    # Given dead events, and a pipeline whose filter matched none of them
    with Spool(db) as spool:
        spool.dead_letters.add({"n": 1}, destination="a", reason="rejected", error="x")
    # When its (empty) output is piped in as the ids
    result = run(*command, "--db", str(db), "-", input="")
    # Then nothing is done, nothing is listed, and that is not an error
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"no ids on stdin: nothing to {command[-1]}\n"
    assert dead_count(db) == 1


def test_dlq_inspect_selects_by_age_like_replay(db: Path) -> None:
    now = time.time()
    with Spool(db, clock=lambda: now - 7200) as spool:
        old = spool.dead_letters.add({"n": 1}, destination="a", reason="rejected", error="x")
    with Spool(db) as spool:
        new = spool.dead_letters.add({"n": 2}, destination="a", reason="rejected", error="x")

    def inspected(*flags: str) -> list[str]:
        result = run("dlq", "inspect", "--db", str(db), "--json", *flags)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert inspected("--older-than", "1h") == [old]
    assert inspected("--newer-than", "1h") == [new]
    assert inspected() == [old, new]


@pytest.mark.parametrize(
    ("args", "env", "shown"),
    [
        (
            ["status", "--db", "mysql://app:s3cret@db.example/spool"],
            {},
            "mysql://app:***@db.example/spool",
        ),
        (
            ["enqueue", "{}"],
            {"SPOOLER_DB": "sqlite://app:s3cret@db.example/spool"},
            "sqlite://app:***@db.example/spool",
        ),
        (
            ["drain", "--url", "-", "--once", "--db", "redis://app:s3cret@db/spool"],
            {},
            "redis://app:***@db/spool",
        ),
        (
            ["--db", "mysql://app:s3cret@db.example/spool", "dlq", "summary"],
            {},
            "mysql://app:***@db.example/spool",
        ),
        # Mistyped PostgreSQL URLs: one slash, none, and credentials that no // marks.
        (["enqueue", "--db", "postgresql:/host/db", "{}"], {}, "postgresql:/host/db"),
        (["enqueue", "--db", "postgresql:x", "{}"], {}, "postgresql:x"),
        (
            ["enqueue", "{}"],
            {"SPOOLER_DB": "postgresql:app:s3cret@db/spool"},
            "postgresql:***@db/spool",
        ),
        (["status", "--db", "file:spool.db"], {}, "file:spool.db"),
    ],
)
def test_a_url_spooler_cannot_open_is_refused_without_making_a_folder(
    tmp_path: Path, args: list[str], env: dict[str, str], shown: str
) -> None:
    result = spooler_cmd(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"spooler: error: the spool {shown} is a URL spooler cannot open: ")
    assert "postgresql://" in line.partition("cannot open")[2]  # and what it can open
    assert "s3cret" not in line
    assert list(tmp_path.iterdir()) == []  # no mysql:/ folder, no spool file


def test_a_mistyped_url_is_refused_by_the_library_and_in_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # Path() folds "//" into "/": the URL a caller meant is still refused, not a folder.
    for location in ("postgresql:/host/db", Path("postgresql://host/db"), "pg:spool"):
        with pytest.raises(ConfigError, match="is a URL spooler cannot open"):
            Spool(location)
    config = tmp_path / "spooler.toml"
    config.write_text("db = 'postgresql:/host/db'\n")
    result = spooler_cmd("enqueue", "--config", str(config), "{}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "the spool postgresql:/host/db is a URL spooler cannot open" in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["spooler.toml"]


def test_a_libpq_key_value_string_is_refused_not_made_a_file_named_with_its_password(
    tmp_path: Path,
) -> None:
    conninfo = "host=db.internal port=5432 dbname=events user=app password=s3cret"
    config = tmp_path / "spooler.toml"
    config.write_text(f"db = '{conninfo}'\n")
    for args in (["--db", conninfo], ["--config", str(config)]):
        result = spooler_cmd("enqueue", *args, "{}", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        line = result.stderr.splitlines()[-1]
        assert line.startswith("spooler: error: the spool host=db.internal port=5432 ")
        assert "is a libpq key=value connection string: give a postgresql://" in line
        assert "password=***" in line and "s3cret" not in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["spooler.toml"]


def test_a_database_that_cannot_be_reached_is_an_error_without_its_password(
    tmp_path: Path,
) -> None:
    # Nothing listens on this socket: the URL names a server that is not there.
    url = f"postgresql://app:s3cret@{quote(str(tmp_path), safe='')}/spool?wait=0"
    config = tmp_path / "spooler.toml"
    config.write_text(f"db = '{url}'\n")
    for args in (["status", "--db", url], ["enqueue", "--config", str(config), "{}"]):
        result = spooler_cmd(*args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.splitlines()
        assert "PostgreSQL could not be reached for 0s" in line and "s3cret" not in line
    assert [path.name for path in tmp_path.iterdir()] == ["spooler.toml"]


NO_EVENT_MADE_DUE = (
    "made no event due: none selected was waiting for a retry (already due, held, or"
    " being delivered)"
)
ENDED_AMPS_PAUSE = "ended the pause of amp: a running drain probes it at once"


def test_retry_now_reports_the_pauses_it_ended(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1}, destination="amp")
        spool.store.record_pause("amp", failures=3, until=time.time() + 300, url_digest="u")
        spool.store.record_pause("old", failures=1, until=time.time() - 5, url_digest="u")
    result = run("retry-now", "--db", str(db), "--all")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [NO_EVENT_MADE_DUE, ENDED_AMPS_PAUSE]
    assert run("retry-now", "--db", str(db), "--all").stdout == NO_EVENT_MADE_DUE + "\n"


def test_counts_of_one_are_singular(db: Path, receiver: Receiver) -> None:
    with Spool(db, max_events=1) as spool:
        spool.enqueue({"n": 1})
        with pytest.raises(SpoolFullError, match="the spool holds 1 event, queued or dead"):
            spool.enqueue({"n": 2})
    receiver.fail_next(*[503] * 1000)
    result = spooler_cmd(
        *("drain", "--db", str(db), "--url", receiver.url, "--until-empty"),
        *("--max-time", "0.5", "--backoff-base", "0.01", "--backoff-cap", "0.01"),
        *("--max-attempts", "100000"),
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "spooler: error: --max-time reached with 1 event still queued"
    )


# -- draining a drop-in client's events with no config file -------------------------------


def test_a_drop_in_clients_events_drain_with_the_flags_alone(db: Path, receiver: Receiver) -> None:
    # Given an event queued by the Datalyr client, for destination "datalyr"
    with Spool(db) as spool:
        Datalyr(spool).track("user_123", "signup_completed", {"plan": "pro"})
    # When the drain names it, with its type and key: no config file
    result = spooler_cmd(
        *("drain", "--db", str(db), "-d", "datalyr", "--type", "datalyr"),
        *("--api-key", "dk_test_key", "--url", f"{receiver.url}/track", "--until-empty"),
        *("--max-time", "60"),
    )
    # Then it is delivered with the key, and no event is left
    assert result.returncode == 0, result.stderr
    [request] = receiver.requests
    assert request.events[0]["event"] == "signup_completed"
    assert "dk_test_key" in json.dumps(request.headers)
    assert queued_count(db) == 0


def test_without_a_url_the_named_destination_gets_its_types_endpoint(db: Path) -> None:
    Spool(db).close()
    result = spooler_cmd(
        *("drain", "--db", str(db), "-d", "datalyr", "--type", "datalyr"),
        *("--api-key", "dk_test_key", "--once"),
    )
    assert result.returncode == 0, result.stderr
    assert "for datalyr (https://ingest.datalyr.com/track)" in result.stderr


def test_a_drain_says_which_events_wait_for_destinations_it_does_not_serve(
    db: Path, receiver: Receiver
) -> None:
    # Given events for the drained destination and for two others
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
        spool.enqueue_many([{"n": 2}, {"n": 3}], destination="datalyr")
        spool.enqueue({"n": 4}, destination="segment")
    # When a drain for "default" runs until it is empty
    result = spooler_cmd(
        "drain", "--db", str(db), "--url", receiver.url, "--until-empty", "--max-time", "60"
    )
    # Then it succeeds, but says at its start and at its end what it left behind
    assert result.returncode == 0, result.stderr
    waiting = "3 events {}for destinations this drain does not serve: datalyr (2 events), "
    waiting += "segment (1 event)"
    lines = result.stderr.splitlines()
    assert waiting.format("wait ") in lines[1]
    assert waiting.format("still wait ") in lines[-1]
    assert "stopped (empty)" in lines[-2]
    assert len(receiver.delivered) == 1


def test_a_drain_says_in_the_singular_that_one_event_waits_for_another_destination(
    db: Path, receiver: Receiver
) -> None:
    # Given one event for a destination the drain does not serve
    with Spool(db) as spool:
        spool.enqueue({"n": 1}, destination="segment")
    # When a drain for "default" makes its pass
    result = spooler_cmd("drain", "--db", str(db), "--url", receiver.url, "--once")
    # Then its first and last lines say that one event waits, and still waits
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    waiting = "1 event {} for destinations this drain does not serve: segment (1 event)"
    assert waiting.format("waits") in lines[1]
    assert waiting.format("still waits") in lines[-1]


def test_a_drain_serving_every_queued_destination_says_nothing_more(
    db: Path, receiver: Receiver
) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    result = spooler_cmd("drain", "--db", str(db), "--url", receiver.url, "--until-empty")
    assert result.returncode == 0 and "does not serve" not in result.stderr


# -- SPOOLER_<COMMAND>_<FLAG> ----------------------------------------------------------------


def every_option() -> Iterator[tuple[str, click.Option, click.Context]]:
    """Every option of every command with a long flag, with the command's context."""

    def walk(
        command: click.Command, ctx: click.Context
    ) -> Iterator[tuple[click.Command, click.Context]]:
        yield command, ctx
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                yield from walk(sub, click.Context(sub, parent=ctx, info_name=name))

    root = click.Context(cli, info_name="spooler", auto_envvar_prefix="SPOOLER")
    for command, ctx in walk(cli, root):
        for param in command.params:
            if isinstance(param, click.Option) and any(o.startswith("--") for o in param.opts):
                yield ctx.command_path, param, ctx


def test_every_flag_is_read_from_spooler_command_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    # As the README says: SPOOLER_<COMMAND>_<FLAG>, e.g. SPOOLER_DRAIN_API_KEY, whatever
    # the option's parameter is called in the code (--json is as_json), or the variable
    # the option names itself (--db: SPOOLER_DB).
    options = list(every_option())
    assert len(options) > 100
    for path, option, ctx in options:
        flag = max((o for o in option.opts if o.startswith("--")), key=len)
        words = [*path.split()[1:], flag.removeprefix("--")]
        name = "SPOOLER_" + "_".join(words).replace("-", "_").upper()
        if isinstance(option.envvar, str):  # SPOOLER_DB, SPOOLER_SERVE_TOKEN...
            name = option.envvar
        with monkeypatch.context() as env:
            env.setenv(name, "from-the-environment")
            assert option.resolve_envvar_value(ctx) == "from-the-environment", (path, flag, name)


def test_a_boolean_flag_from_the_environment_acts(db: Path) -> None:
    with Spool(db) as spool:
        spool.enqueue({"n": 1})
    result = run("status", "--db", str(db), env={"SPOOLER_STATUS_JSON": "1"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queued"] == 1


# -- config mistakes: all at once, and warned of where they do not stop the command -------

MISTAKES = "[retry]\nmax_atempts = 3\n[destinations.a]\nurl = 'http://h'\nbatch_sise = 5\n"


def test_config_check_lists_a_retry_typo_and_the_destinations_mistakes(tmp_path: Path) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text(MISTAKES)
    result = run("config", "check", str(config))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "spooler: error: retry.max_atempts: unknown key (did you mean 'max_attempts'?)",
        "spooler: error: destinations.a.batch_sise: unknown key (did you mean 'batch_size'?)",
    ]


@pytest.mark.parametrize("command", [["enqueue", "-d", "a", "{}"], ["status"], ["doctor"]])
def test_commands_that_do_not_drain_warn_of_config_mistakes(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text(f"db = 'spool.db'\n{MISTAKES}")
    Spool(tmp_path / "spool.db").close()
    result = spooler_cmd(*command, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "warning" in line] == [
        f"spooler: warning: {config}: retry.max_atempts: unknown key (did you mean "
        "'max_attempts'?)",
        f"spooler: warning: {config}: destinations.a.batch_sise: unknown key (did you mean "
        "'batch_size'?)",
    ]


@pytest.mark.parametrize(
    ("command", "mistake", "error"),
    [
        (["enqueue", "{}"], "[spool]\nmax_events = -1\n", "spool.max_events: must be at least 1"),
        (["status"], "[spool]\ndurability = 'fast'\n", "spool.durability: must be one of"),
        (["doctor"], "[spool]\nmax_bytes = 'x'\n", "spool.max_bytes: expected an integer"),
        (["serve"], "[serve]\nport = 'x'\n", "serve.port: expected an integer"),
        (["web"], "[web]\nport = 'x'\n", "web.port: expected an integer"),
    ],
    ids=["enqueue", "status", "doctor", "serve", "web"],
)
def test_a_mistake_that_stops_a_command_is_said_once_as_its_error(
    tmp_path: Path, command: list[str], mistake: str, error: str
) -> None:
    # Given a config whose mistake is in what the command uses, beside a destination's
    config = tmp_path / "spooler.toml"
    config.write_text(f"db = 'spool.db'\n{mistake}[destinations.a]\nurl = 'http://h'\n")
    Spool(tmp_path / "spool.db").close()
    # When the command runs with it
    result = spooler_cmd(*command, "--config", str(config))
    # Then it stops with that mistake, on one line, and warns of nothing before it
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"spooler: error: {error}"), line


def test_a_producer_is_not_warned_of_the_drains_unset_secrets(tmp_path: Path) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text(
        "[destinations.a]\nurl = 'http://h'\napi_key = '${A_KEY_ONLY_THE_DRAIN_HAS}'\n"
    )
    assert "A_KEY_ONLY_THE_DRAIN_HAS" not in os.environ
    result = spooler_cmd(
        "enqueue", "-d", "a", "--config", str(config), "--db", str(tmp_path / "s.db"), "{}"
    )
    assert result.returncode == 0 and result.stderr == ""
