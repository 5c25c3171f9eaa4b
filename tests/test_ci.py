"""``.ci/run``, the one command a fresh CI machine runs: each setup step in it once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

CI_RUN = Path(__file__).resolve().parent.parent / ".ci" / "run"
# Lines that close or continue a block: repeated by any script with two blocks.
SYNTAX = {"fi", "then", "else", "done", "do"}


def test_no_setup_step_of_ci_run_is_repeated() -> None:
    # A step pasted twice (the Node SDKs' `npm ci` ran twice) costs every CI run its time.
    lines = [line.strip() for line in CI_RUN.read_text().splitlines()]
    steps = Counter(
        line for line in lines if line and not line.startswith("#") and line not in SYNTAX
    )
    assert [line for line, count in steps.items() if count > 1] == []
