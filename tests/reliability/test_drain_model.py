"""Scenario 12: Hypothesis drives the real drain against a scripted destination.

Each generated event is clean, poison (the destination rejects any batch holding it),
or flaky (the destination asks to retry any batch holding it, a few times). Whatever
the mix, batch size and attempt budget, the drain must leave every event in exactly
one place, and put it there for the right reason.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers.reliability import REPORT_ENV, Scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spooler import Spool
from spooler.config import build_drain_config
from spooler.destinations import Verdict
from spooler.drain import Drain, Mode
from spooler.records import ClaimedEvent, DeadSelection

KINDS = st.lists(
    st.tuples(st.sampled_from(["clean", "poison", "flaky"]), st.integers(1, 3)),
    min_size=1,
    max_size=40,
)


class ScriptedDestination:
    """Rejects batches with a poison event; asks to retry batches with a flaky one."""

    def __init__(self, config, kinds: dict[str, tuple[str, int]]) -> None:
        self.config = config
        self.kinds = kinds
        self.failures_left = {eid: n for eid, (kind, n) in kinds.items() if kind == "flaky"}
        self.delivered: Counter[str] = Counter()
        self._lock = threading.Lock()

    def request_batches(self, events: list) -> list[list]:
        return [events]

    def send(self, events: Sequence[ClaimedEvent]) -> Verdict:
        with self._lock:
            ids = [e.event_id for e in events]
            if any(self.kinds[i][0] == "poison" for i in ids):
                return Verdict("reject", 400, "HTTP 400: poison")
            flaky = [i for i in ids if self.failures_left.get(i, 0) > 0]
            if flaky:
                for i in flaky:
                    self.failures_left[i] -= 1
                return Verdict("retry", 503, "HTTP 503: flaky")
            self.delivered.update(ids)
            return Verdict("delivered", 200)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def model_row(request: pytest.FixtureRequest):
    """One report row for all the examples Hypothesis runs."""
    rows = []
    yield rows
    path = os.environ.get(REPORT_ENV)
    if path and rows:
        total = Scenario(
            "12",
            "Hypothesis: random mixes of clean, poison and flaky events, "
            "batch sizes, attempt budgets and concurrency",
            f"scripted destination; {len(rows)} generated drains",
            test=request.node.name,
            at_risk=sum(r.at_risk for r in rows),
            lost=sum(r.lost for r in rows),
            duplicated=sum(r.duplicated for r in rows),
        )
        with open(path, "a", encoding="utf-8") as report:
            report.write(json.dumps(asdict(total)) + "\n")


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=KINDS,
    batch_size=st.integers(1, 16),
    max_attempts=st.integers(1, 6),
    concurrency=st.integers(1, 3),
)
def test_drain_decisions(
    model_row: list[Scenario],
    kinds: list[tuple[str, int]],
    batch_size: int,
    max_attempts: int,
    concurrency: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Spool(Path(tmp) / "spool.db") as spool:
        ids = spool.enqueue_many([{"n": n} for n in range(len(kinds))])
        by_id = dict(zip(ids, kinds, strict=True))
        config = build_drain_config(
            {},
            destination_flags={
                "url": "http://unused.invalid",
                "batch_size": batch_size,
                "concurrency": concurrency,
            },
            retry_flags={"max_attempts": max_attempts, "backoff_base": 0.001, "backoff_cap": 0.002},
            drain_flags={"poll_interval": 0.01},
        )
        destination = ScriptedDestination(config.destinations["default"], by_id)
        report = Drain(spool.store, config, destinations={"default": destination}).run(
            Mode.UNTIL_EMPTY, max_time=60
        )
        dead = {d.event_id: d for d in spool.dead_letters.inspect()}
        row = Scenario("12", "", "")
        row.tally(ids, list(destination.delivered.elements()), dead)
        model_row.append(row)
        assert row.lost == 0 and row.duplicated == 0
        assert report.stopped_by == "empty" and spool.status().total.queued == 0
        for event_id, (kind, _) in by_id.items():
            delivered = destination.delivered[event_id]
            # Exactly one place: delivered once, or dead; never both, never neither.
            assert (delivered, event_id in dead) in {(1, False), (0, True)}
            if kind == "poison":
                assert dead[event_id].reason == "rejected"
            elif event_id in dead:
                # Clean or flaky events die only by running out of attempts.
                assert dead[event_id].reason == "max_attempts"
                assert dead[event_id].attempts == max_attempts
        # With attempts to spare, only poison events die.
        flaky_total = sum(n for kind, n in kinds if kind == "flaky")
        if max_attempts > flaky_total:
            assert {i for i, (kind, _) in by_id.items() if kind == "poison"} == set(dead)
        assert len(list(spool.store.dead_events(DeadSelection(everything=True)))) == len(dead)
