"""The reliability campaign's report: one row per scenario of docs/reliability.md, which
the ``scenario`` fixture writes to ``$SPOOLER_RELIABILITY_REPORT``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from helpers.cli import drain_cli

REPORT_ENV = "SPOOLER_RELIABILITY_REPORT"


@dataclass
class Scenario:
    """One row of the table in docs/reliability.md, filled in by the test that runs it."""

    number: str
    fault: str
    injection: str
    test: str = ""
    at_risk: int = 0
    lost: int = 0
    duplicated: int = 0
    recover_s: float | None = None
    rounds: int | None = None  # power-loss scenarios: how many power cuts
    expected_loss: bool = False  # durability="normal" may lose its last commits by design

    def recover_with_drain(self, db: Path, url: str, *extra: str) -> None:
        """Recover by running ``drain_cli`` to the end, which must succeed; its time is
        this scenario's time to recover."""
        started = time.monotonic()
        drained = drain_cli(db, url, *extra)
        assert drained.returncode == 0, drained.stderr
        self.recover_s = time.monotonic() - started

    def tally(
        self, acknowledged: Iterable[str], arrived: Iterable[str], dead: Iterable[str] = ()
    ) -> None:
        """Count lost and duplicated events: acknowledged ids against what arrived or died."""
        acknowledged = set(acknowledged)
        arrivals = Counter(arrived)
        self.at_risk = len(acknowledged)
        self.lost = len(acknowledged - set(arrivals) - set(dead))
        self.duplicated = sum(n - 1 for n in arrivals.values() if n > 1)
