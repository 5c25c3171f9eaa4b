"""The documentation's snippets run as pasted, with only their paths moved to a
temporary directory: every Python block of README.md and docs/*.md, and every TOML
block passes the config check.

Generic on purpose: whatever snippets the documents hold are the ones run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.spools import rows

from spooler.config import read_config_file, resolved_settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# An absolute path in a snippet: where a user's system keeps its files.
ABSOLUTE_PATH = re.compile(r"""(?<=["'])/(?:var|etc|srv|opt|tmp)/[^"']+(?=["'])""")
# A file a snippet reads, by a relative name: the user's data, given here.
OPENED_FILE = re.compile(r"""open\(["']([\w.-]+)["']\)""")
VARIABLE = re.compile(r"\$\{(\w+)\}")
# A database URL in a snippet: the user's server.
DATABASE_URL = re.compile(r"""(?<=["'])postgresql://[^"']+(?=["'])""")


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
