"""The official Node SDKs the tests run as clients: where npm installed them
(``tests/sdk/node``, from its lock), and the reference build of ``@datalyr/api``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "sdk" / "node"


def require_node() -> None:
    """Skip unless node runs."""
    if shutil.which("node") is None:
        pytest.skip("needs node (Node.js 20; .ci/run installs it)")


def node_package(name: str) -> None:
    """Skip unless node runs and ``name`` is installed under tests/sdk/node."""
    require_node()
    if not (NODE_DIR / "node_modules" / name).is_dir():
        pytest.skip(f"needs {name}: run `npm ci` in tests/sdk/node (.ci/run does)")


def datalyr_sdk() -> Path:
    """The reference build of ``@datalyr/api`` 1.3.0 (npm does not serve it), or skip."""
    candidates = [
        os.environ.get("SPOOLER_REFERENCE_SDKS"),
        REPO.parent / "shared" / "reference-sdks",
        "/work/shared/reference-sdks",
    ]
    for place in filter(None, candidates):
        sdk = Path(place) / "datalyr-api-1.3.0"
        if (sdk / "index.js").is_file():
            return sdk
    pytest.skip(
        "needs the reference build of @datalyr/api 1.3.0 (not on npm): set "
        "SPOOLER_REFERENCE_SDKS to the folder that holds datalyr-api-1.3.0/"
    )
