"""A Hypothesis state machine: random store operations against a model of where events are.

Invariant: every event id is in exactly one of queue, dead-letter table, delivered or
purged, and the store agrees with the model about which, about which lease holds it,
about how many of its attempts ended, and about the totals the limits are checked
against (kept from the first limit on, whatever ran before).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
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
    attempts: int = 0  # attempts that ended
    lease: int | None = None


@dataclass
class Lease:
    owner: str
    until: float
    events: set[str] = field(default_factory=set)


class StoreMachine(RuleBasedStateMachine):
    @initialize()
    def open_store(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.store = SQLiteStore(Path(self.dir.name) / "spool.db")
        self.now = 1000.0
        self.events: dict[str, Modelled] = {}
        self.leases: dict[int, Lease] = {}
        self.ended: list[int] = []  # leases that ended: settling them changes nothing
        self.rowid_of: dict[str, int] = {}
        self.next_id = 0
        self.totals_kept = False

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    def _live(self, lease: int) -> bool:
        return lease in self.leases and self.leases[lease].until > self.now

    def _free_and_due(self) -> set[str]:
        return {
            i
            for i, e in self.events.items()
            if e.state == "queued" and e.due_at <= self.now and e.lease is None
        }

    def _end(self, lease: int) -> None:
        """A lease ends unsettled: its events count the attempt, and are due now."""
        for event_id in self.leases.pop(lease).events:
            event = self.events[event_id]
            event.attempts += 1
            event.due_at = min(event.due_at, self.now)
            event.lease = None
        self.ended.append(lease)

    def _settled(self, lease: int, event_ids: set[str]) -> None:
        for event_id in event_ids:
            self.events[event_id].lease = None
        self.leases[lease].events -= event_ids
        if not self.leases[lease].events:
            del self.leases[lease]
            self.ended.append(lease)

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

    @rule()
    def keep_totals(self) -> None:
        # A producer with a limit starts: from now on every writer keeps the totals row.
        self.store.keep_totals()
        self.totals_kept = True

    @rule(owner=OWNERS, limit=st.integers(1, 5))
    def claim(self, owner: str, limit: int) -> None:
        for lease in [n for n, held in self.leases.items() if held.until <= self.now]:
            self._end(lease)  # a claim first ends the leases that ran out
        free = self._free_and_due()
        claim = self.store.claim(
            "default", limit, owner, due_by=self.now, lease_until=self.now + LEASE
        )
        if claim is None:
            # Only events inside a live lease's span are passed over.
            assert not free or self.leases
            return
        ids = [c.event_id for c in claim.events]
        assert set(ids) <= free and 0 < len(ids) <= limit
        assert claim.lease not in self.leases and claim.lease not in self.ended
        for c in claim.events:
            assert c.attempts == self.events[c.event_id].attempts + 1
            self.events[c.event_id].lease = claim.lease
            self.rowid_of[c.event_id] = c.rowid
        self.leases[claim.lease] = Lease(owner, self.now + LEASE, set(ids))

    def _pick(self, data: st.DataObject) -> tuple[int, list[str]]:
        """A lease, live, run out or ended, and some events it holds (or held)."""
        lease = data.draw(st.sampled_from(sorted(self.leases) + self.ended[-3:]))
        held = sorted(self.leases[lease].events) if lease in self.leases else []
        if not held:
            held = sorted(i for i in self.rowid_of if self.events[i].state == "queued")[:2]
        chosen = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        return lease, chosen

    def _expected(self, lease: int, chosen: list[str]) -> set[str]:
        """What a settle of ``chosen`` changes: those the lease still holds."""
        if lease not in self.leases:
            return set()
        return set(chosen) & self.leases[lease].events

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        if not self.leases and not self.ended:
            return
        lease, chosen = self._pick(data)
        expected = self._expected(lease, chosen)
        rowids = [self.rowid_of[i] for i in chosen]
        assert self.store.settle(lease, now=self.now, delivered=rowids) == len(expected)
        for event_id in expected:
            self.events[event_id].state = "delivered"
        if expected:
            self._settled(lease, expected)

    @rule(data=st.data(), wait=st.floats(0, 30))
    def fail(self, data: st.DataObject, wait: float) -> None:
        if not self.leases and not self.ended:
            return
        lease, chosen = self._pick(data)
        expected = self._expected(lease, chosen)
        retry = [(self.rowid_of[i], self.now + wait, Failure(503, "x")) for i in chosen]
        assert self.store.settle(lease, now=self.now, retry=retry) == len(expected)
        for event_id in expected:
            event = self.events[event_id]
            event.due_at, event.attempts = self.now + wait, event.attempts + 1
        if expected:
            self._settled(lease, expected)

    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        if not self.leases and not self.ended:
            return
        lease, chosen = self._pick(data)
        expected = self._expected(lease, chosen)
        dead = [(self.rowid_of[i], "rejected", Failure(400, "bad")) for i in chosen]
        assert self.store.settle(lease, now=self.now, dead=dead) == len(expected)
        for event_id in expected:
            event = self.events[event_id]
            event.state, event.attempts = "dead", event.attempts + 1
        if expected:
            self._settled(lease, expected)

    @rule(owner=OWNERS)
    def release(self, owner: str) -> None:
        mine = [n for n, held in self.leases.items() if held.owner == owner]
        expected = sum(len(self.leases[n].events) for n in mine)
        assert self.store.release_leases(owner, now=self.now) == expected
        for lease in mine:
            self._end(lease)

    @rule(data=st.data(), seconds=st.floats(0, 20))
    def extend(self, data: st.DataObject, seconds: float) -> None:
        if not self.leases and not self.ended:
            return
        lease, _ = self._pick(data)
        assert self.store.extend_lease(lease, self.now + seconds) == (lease in self.leases)
        if lease in self.leases:
            self.leases[lease].until = self.now + seconds

    @rule(seconds=st.floats(0, 25))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds  # leases run out as time passes

    @rule()
    def replay_all(self) -> None:
        dead = [i for i, e in self.events.items() if e.state == "dead"]
        assert self.store.replay(DeadSelection(everything=True), now=self.now) == len(dead)
        for event_id in dead:
            self.events[event_id] = Modelled("queued", due_at=self.now)
            self.rowid_of.pop(event_id, None)  # a new row

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
        leased = {
            i
            for i in queued
            if self.events[i].lease is not None and self._live(self.events[i].lease)
        }
        due = {i for i in queued if self.events[i].due_at <= self.now} - leased
        assert (counts.queued if counts else 0) == len(queued)
        assert (counts.dead if counts else 0) == len(dead)
        assert (counts.leased if counts else 0) == len(leased)
        assert (counts.due if counts else 0) == len(due)
        stored_dead = {
            d.event_id: d for d in self.store.dead_events(DeadSelection(everything=True))
        }
        assert set(stored_dead) == dead
        assert all(stored_dead[i].attempts == self.events[i].attempts for i in dead)
        with self.store._read() as conn:
            # The attempts that ended, as each queued event keeps them.
            stored = dict(conn.execute("SELECT event_id, attempts FROM queue"))
            assert stored == {i: self.events[i].attempts for i in queued}
            # The running totals (what limits are checked against), once writers keep
            # them, match a full count; until then nothing writes them.
            kept = conn.execute("SELECT events, bytes FROM totals").fetchone()
            counted = conn.execute(
                "SELECT count(*), coalesce(sum(length(CAST(body AS BLOB))), 0)"
                " FROM (SELECT body FROM queue UNION ALL SELECT body FROM dead)"
            ).fetchone()
        assert kept == (counted if self.totals_kept else (0, 0))
        assert self.store.totals() == counted


StoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestStoreModel = StoreMachine.TestCase
