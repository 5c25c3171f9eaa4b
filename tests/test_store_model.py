"""A Hypothesis state machine: random store operations against a model of where events are.

Invariant: every event id is in exactly one of queue, dead-letter table, delivered or
purged, and the store agrees with the model about which.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from spooler.records import DeadSelection, Failure
from spooler.store.sqlite import SQLiteStore

OWNERS = st.sampled_from(["a", "b"])
LEASE = 10.0


@dataclass
class Modelled:
    state: str  # queued | dead | delivered | purged
    due_at: float = 0.0
    owner: str | None = None


class StoreMachine(RuleBasedStateMachine):
    @initialize()
    def open_store(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.store = SQLiteStore(Path(self.dir.name) / "spool.db")
        self.now = 1000.0
        self.events: dict[str, Modelled] = {}
        self.held: dict[str, list[int]] = {"a": [], "b": []}
        self.rowid_of: dict[int, str] = {}
        self.next_id = 0

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    def _due(self) -> set[str]:
        return {i for i, e in self.events.items() if e.state == "queued" and e.due_at <= self.now}

    @rule(count=st.integers(1, 4))
    def enqueue(self, count: int) -> None:
        rows = []
        for _ in range(count):
            event_id = f"e{self.next_id}"
            self.next_id += 1
            # Bodies of different sizes, some with multi-byte characters: the byte
            # totals must follow exactly which rows each operation touched.
            body = json.dumps({"n": event_id, "pad": "é" * (self.next_id % 4)}, ensure_ascii=False)
            rows.append((event_id, "default", body))
            self.events[event_id] = Modelled("queued", due_at=self.now)
        self.store.insert(rows, now=self.now)

    @rule(owner=OWNERS, limit=st.integers(1, 5))
    def claim(self, owner: str, limit: int) -> None:
        due = self._due()
        claimed = self.store.claim(
            "default", limit, owner, due_by=self.now, lease_until=self.now + LEASE
        )
        ids = {c.event_id for c in claimed}
        assert ids <= due and len(ids) == min(limit, len(due))
        for c in claimed:
            self.events[c.event_id].due_at = self.now + LEASE
            self.events[c.event_id].owner = owner
            self.rowid_of[c.rowid] = c.event_id
        self.held[owner] = [c.rowid for c in claimed]

    def _still_held(self, owner: str) -> list[int]:
        return [
            r
            for r in self.held[owner]
            if self.events[self.rowid_of[r]].owner == owner
            and self.events[self.rowid_of[r]].state == "queued"
        ]

    @rule(owner=OWNERS)
    def ack(self, owner: str) -> None:
        expected = self._still_held(owner)
        assert self.store.settle(owner, now=self.now, delivered=self.held[owner]) == len(expected)
        for rowid in expected:
            self.events[self.rowid_of[rowid]].state = "delivered"
        self.held[owner] = []

    @rule(owner=OWNERS, wait=st.floats(0, 30))
    def fail(self, owner: str, wait: float) -> None:
        expected = self._still_held(owner)
        retry = [(r, self.now + wait, Failure(503, "x")) for r in self.held[owner]]
        assert self.store.settle(owner, now=self.now, retry=retry) == len(expected)
        for rowid in expected:
            event = self.events[self.rowid_of[rowid]]
            event.due_at, event.owner = self.now + wait, None
        self.held[owner] = []

    @rule(owner=OWNERS)
    def dead_letter(self, owner: str) -> None:
        expected = self._still_held(owner)
        dead = [(r, "rejected", Failure(400, "bad")) for r in self.held[owner]]
        assert self.store.settle(owner, now=self.now, dead=dead) == len(expected)
        for rowid in expected:
            self.events[self.rowid_of[rowid]].state = "dead"
        self.held[owner] = []

    @rule(seconds=st.floats(0, 25))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds  # leases run out as time passes

    @rule()
    def replay_all(self) -> None:
        dead = [i for i, e in self.events.items() if e.state == "dead"]
        assert self.store.replay(DeadSelection(everything=True), now=self.now) == len(dead)
        for event_id in dead:
            self.events[event_id] = Modelled("queued", due_at=self.now)

    @rule(data=st.data())
    def purge_some(self, data: st.DataObject) -> None:
        dead = sorted(i for i, e in self.events.items() if e.state == "dead")
        if not dead:
            return
        chosen = data.draw(st.lists(st.sampled_from(dead), min_size=1, unique=True))
        assert self.store.purge(DeadSelection(ids=tuple(chosen))) == len(chosen)
        for event_id in chosen:
            self.events[event_id].state = "purged"

    @invariant()
    def store_agrees_with_model(self) -> None:
        if not hasattr(self, "store"):
            return
        counts = self.store.counts(now=self.now).get("default")
        queued = {i for i, e in self.events.items() if e.state == "queued"}
        dead = {i for i, e in self.events.items() if e.state == "dead"}
        assert (counts.queued if counts else 0) == len(queued)
        assert (counts.dead if counts else 0) == len(dead)
        assert (counts.due if counts else 0) == len(self._due())
        stored_dead = {d.event_id for d in self.store.dead_events(DeadSelection(everything=True))}
        assert stored_dead == dead
        # The running totals (what limits are checked against) match a full count.
        with self.store._read() as conn:
            totals = conn.execute("SELECT events, bytes FROM totals").fetchone()
            counted = conn.execute(
                "SELECT count(*), coalesce(sum(length(CAST(body AS BLOB))), 0)"
                " FROM (SELECT body FROM queue UNION ALL SELECT body FROM dead)"
            ).fetchone()
        assert totals == counted


StoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestStoreModel = StoreMachine.TestCase
