"""The README's "Moving from an analytics SDK" runs as pasted: its Python snippets (with
only the spool's path changed), then its config and its drain (with only the URLs
changed, to a local receiver)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from wire import arrived, spooler

from spooler.testing import Receiver

REPO = Path(__file__).resolve().parents[2]

SECTION = re.compile(r"^## Moving from an analytics SDK\n(.*?)^## ", re.M | re.S)
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
README_SPOOL = "/var/spool/app/spool.db"
README_CONFIG = "/etc/spooler.toml"


def blocks(language: str) -> list[str]:
    """The section's code blocks in ``language``."""
    section = SECTION.search((REPO / "README.md").read_text())
    assert section, "the README has no 'Moving from an analytics SDK' section"
    return [code for lang, code in BLOCK.findall(section.group(1)) if lang == language]


def test_the_snippets_run_as_pasted_and_the_drain_delivers_what_they_enqueued(
    tmp_path: Path,
) -> None:
    db = tmp_path / "spool.db"
    # Given each Python snippet, run as a program of its own
    snippets = blocks("python")
    assert len(snippets) == 5
    for code in snippets:
        assert README_SPOOL in code
        done = subprocess.run(
            [sys.executable, "-c", code.replace(README_SPOOL, str(db))],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{done.stderr}\nin:\n{code}"
    status = json.loads(spooler("status", "--db", str(db), "--json").stdout)
    queued = {name: counts["queued"] for name, counts in status["destinations"].items()}
    assert queued == {"datalyr": 6, "amplitude": 7, "posthog": 6, "segment": 2}
    # When the drain runs with the README's config, its URLs pointed at a receiver
    [config] = blocks("toml")
    [command] = [block for block in blocks("sh") if README_CONFIG in block]
    assert command.split() == ["spooler", "drain", "--config", README_CONFIG]
    command = command.replace(README_CONFIG, str(tmp_path / "spooler.toml"))
    with Receiver() as receiver:
        local = re.sub(
            r"^\[destinations\.(\w+)\]$",
            lambda m: f'{m.group(0)}\nurl = "{receiver.url}/{m.group(1)}"',
            config,
            flags=re.M,
        )
        (tmp_path / "spooler.toml").write_text(local)
        keys = ("DATALYR_API_KEY", "AMPLITUDE_API_KEY", "POSTHOG_PROJECT_KEY", "SEGMENT_WRITE_KEY")
        drain = [*command.split()[1:], "--db", str(db), "--until-empty", "--max-time", "60"]
        done = subprocess.run(
            [sys.executable, "-m", "spooler_cli", *drain],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, **dict.fromkeys(keys, "dk_key_0123456789")},
            check=False,
        )
        assert done.returncode == 0, done.stderr
    # Then every event reached its API's path
    paths = sorted({request.path for request in arrived(receiver)})
    assert paths == ["/amplitude", "/datalyr", "/posthog", "/segment"]
    assert len(arrived(receiver)) == 6 + 1 + 1 + 1  # Datalyr: one request per event
