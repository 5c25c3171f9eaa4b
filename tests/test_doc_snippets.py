"""The documentation's snippets run as pasted, with only their paths moved to a
temporary directory: every Python block of README.md and docs/*.md, every TOML
block passes the config check, and every shell block of README.md runs against the
installed command line (but for the lines ``NOT_RUN`` names, with its reason).

Generic on purpose: whatever snippets the documents hold are the ones run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.processes import require_program
from helpers.spools import rows

from spooler import Spool
from spooler.config import read_config_file, resolved_settings
from spooler.testing import Receiver

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# An absolute path in a snippet: where a user's system keeps its files.
ABSOLUTE_PATH = re.compile(r"""(?<=["'])/(?:var|etc|srv|opt|tmp)/[^"']+(?=["'])""")
# A file a snippet reads, by a relative name: the user's data, given here.
OPENED_FILE = re.compile(r"""open\(["']([\w.-]+)["']\)""")
VARIABLE = re.compile(r"\$\{(\w+)\}")
# A database URL in a snippet: the user's server.
DATABASE_URL = re.compile(r"""(?<=["'])postgresql://[^"']+(?=["'])""")
# An absolute path in a shell snippet, quoted or not, a file:// URL's included.
SHELL_PATH = re.compile(r"""(?<![\w.~-])/(?:var|etc|srv|opt|tmp)/[^\s"'`]+""")
# A receiver's URL in a shell snippet: the local receiver stands in for it.
REMOTE_URL = re.compile(r"""https?://[\w.-]*example\.com[^\s"']*""")
SHELL_VARIABLE = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)")
# The dead event a snippet names by its id (``spooler dlq inspect ID``).
ID_PLACEHOLDER = re.compile(r"\bID\b")
# Shell lines that cannot run here, by how they start: left out, with the reason.
NOT_RUN = {
    "make ": "builds .venv in the checkout and runs this suite, this test included",
    "pip install ": "installs from PyPI; tests/test_install.py installs the built wheel",
    "spooler demo --outage ": "stages an outage in real time, for minutes; "
    "tests/test_demo_outage.py runs it for seconds",
}
# What a user's own system provides to the snippets: a program writing JSON Lines, and
# ``spooler`` itself, its daemons stopped as a service manager stops them: SIGTERM once
# they say they are up (polled, 60 s at most), after which they must exit 0.
SHELL_PRELUDE = r"""
set -euo pipefail
producer() { printf '%s\n' '{"event": "one"}' '{"event": "two"}'; }
spooler() {
    local daemon=0 arg
    case "$1" in
        serve|web) daemon=1 ;;
        drain) daemon=1
            for arg; do [[ $arg == --once || $arg == --until-empty ]] && daemon=0; done ;;
    esac
    if (( ! daemon )); then command spooler "$@"; return; fi
    local log status=0
    log="$(mktemp)"
    command spooler "$@" 2>"$log" &
    for _ in $(seq 600); do
        grep -qE 'serving on|dashboard on|started \(daemon\)' "$log" && break
        kill -0 $! 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM $! 2>/dev/null || true
    wait $! || status=$?
    cat "$log" >&2
    return $status
}
"""


def blocks(language: str) -> list[pytest.param]:
    """Every fenced block of ``language`` in the documents, with where it starts."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.S | re.M):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{document.relative_to(ROOT)}:{line}"
            found.append(pytest.param(match[1], id=where))
    return found


def moved(snippet: str, into: Path) -> tuple[str, list[Path]]:
    """The snippet with its absolute paths moved under ``into``, and those paths."""
    paths = sorted({into / Path(path).relative_to("/") for path in ABSOLUTE_PATH.findall(snippet)})
    return ABSOLUTE_PATH.sub(lambda m: str(into / Path(m[0]).relative_to("/")), snippet), paths


@pytest.mark.parametrize("snippet", blocks("python"))
def test_a_python_snippet_runs_as_pasted(
    snippet: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    code, paths = moved(snippet, tmp_path / "root")
    if DATABASE_URL.search(code):  # a spool on PostgreSQL: the tests' server stands in
        url = request.getfixturevalue("postgres").url()
        code = DATABASE_URL.sub(url, code)
    for name in OPENED_FILE.findall(code):
        (tmp_path / name).write_text('{"event": "one"}\n{"event": "two"}\n')
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{code}\n{result.stderr}"
    for path in paths:
        if path.suffix == ".db":  # a spool the snippet wrote to: its events are there
            assert rows(path, "SELECT count(*) FROM queue")[0][0] > 0, path


@pytest.mark.parametrize("snippet", blocks("toml"))
def test_a_config_snippet_passes_the_config_check(snippet: str, tmp_path: Path) -> None:
    config = tmp_path / "spooler.toml"
    config.write_text(moved(snippet, tmp_path / "root")[0])
    # Its secrets come from the environment, as the snippet says (Datalyr's start dk_).
    env = {name: f"dk_{name.lower()}" for name in VARIABLE.findall(snippet)}
    settings = resolved_settings(read_config_file(config, env=env), env=env)
    assert "destinations" in settings


def test_the_readmes_snippets_are_among_them() -> None:
    # The library's, and the Datalyr and Amplitude clients' at least.
    readme = [param for param in blocks("python") if param.id.startswith("README.md:")]
    assert len(readme) >= 3


def shell_lines(snippet: str) -> tuple[str, list[str]]:
    """The snippet without the lines ``NOT_RUN`` names, and the reasons they are left out."""
    kept, reasons = [], []
    for line in snippet.splitlines():
        reason = next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)
        if reason is None:
            kept.append(line)
        else:
            reasons.append(f"{line.split('#')[0].strip()}: {reason}")
    return "\n".join(kept) + "\n", reasons


def seeded(location: Path) -> str:
    """A spool at ``location`` as a user's would be: two events queued and one dead; the
    dead event's id."""
    location.parent.mkdir(parents=True, exist_ok=True)
    with Spool(location) as spool:
        spool.enqueue_many([{"event": "one"}, {"event": "two"}])
        return spool.dead_letters.add(
            {"event": "bad"}, destination="default", reason="rejected", error="HTTP 400"
        )


@pytest.mark.parametrize(
    "snippet", [param for param in blocks("sh") if param.id.startswith("README.md:")]
)
def test_a_readme_shell_snippet_runs_as_pasted(snippet: str, tmp_path: Path) -> None:
    script, left_out = shell_lines(snippet)
    if not script.strip():
        pytest.skip("; ".join(left_out))
    if "jq " in script:
        require_program("jq", "jq")
    root = tmp_path / "root"
    script = SHELL_PATH.sub(lambda m: str(root / Path(m[0]).relative_to("/")), script)
    dead_id = seeded(tmp_path / "spooler.db")
    for path in {Path(m) for m in SHELL_PATH.findall(script)}:
        if path.suffix == ".db":
            seeded(path)
    with Receiver() as receiver:
        script, stood_in = REMOTE_URL.subn(receiver.url, script)
        script = ID_PLACEHOLDER.sub(dead_id, script)
        config = root / "etc" / "spooler.toml"  # the user's config: the receiver's
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[destinations.default]\nurl = "{receiver.url}"\n')
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            # Any free port for the daemons, not 8420 / 8421 that another test may hold.
            "SPOOLER_SERVE_PORT": "0",
            "SPOOLER_WEB_PORT": "0",
            **{name: f"dk_{name.lower()}" for name in SHELL_VARIABLE.findall(script)},
        }
        env.pop("SPOOLER_DB", None)
        result = subprocess.run(
            ["bash", "-c", SHELL_PRELUDE + script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        if stood_in:  # the snippet delivers to the URL it names: the receiver got events
            assert receiver.delivered, f"{script}\n{result.stderr}"


def test_the_readmes_shell_snippets_are_among_them() -> None:
    readme = [param for param in blocks("sh") if param.id.startswith("README.md:")]
    assert len(readme) >= 5
