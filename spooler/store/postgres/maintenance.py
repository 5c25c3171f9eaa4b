"""Keeping a PostgreSQL spool healthy: the checks of ``spooler doctor`` (the server's
reach, the schema version, dead rows left for autovacuum, stale leases, bodies that are
not events). Space needs no care of spooler's: autovacuum makes it reusable."""

from __future__ import annotations

import time

from ...records import Failure, Finding
from .base import PostgresBase
from .sql import NOW, dissolve, leased, move_to_dead, with_ctes

__all__ = ["PostgresMaintenance"]

# Dead rows worth a warning: more than this, and more than the table's live rows. A
# queue churns (each event an insert and a delete), and autovacuum removes
# the dead rows behind it; this many left means it cannot keep up, or is kept from it.
DEAD_ROWS_WARNING = 10_000
# A transaction open this long anywhere in the database keeps autovacuum from removing
# the rows that died since it began (docs/operations.md, "Table bloat").
LONG_TRANSACTION = 15 * 60.0
_TABLES = {"queue": "queue", "totals": "totals", "dead": "dead letters"}


class PostgresMaintenance(PostgresBase):
    """Keeping a PostgreSQL spool healthy."""

    def integrity_check(self) -> list[str]:
        """``["ok"]``: PostgreSQL checks its own pages; there is no file for spooler to check."""
        return ["ok"]

    def schema_version(self) -> int:
        """The schema version recorded in the spool's schema."""
        return int(self._read("SELECT value FROM {s}.meta WHERE key = 'schema_version'", {})[0][0])

    def reclaim_space(self) -> int:
        """Nothing to do: autovacuum gives a drained backlog's space back for reuse."""
        return 0

    def stale_leases(self, *, now: float) -> int:
        """Events held by leases that ran out (their drains died, or stalled): the next
        claim of their destination ends those leases."""
        return self._run_one(
            f"SELECT coalesce(sum(events), 0) FROM {{s}}.leases WHERE until <= {NOW}", {"h": now}
        )

    def quarantine_corrupt(self, *, now: float) -> int:
        """Move queued events whose body is not a JSON object to the dead-letter table
        (reason ``corrupt``), so no drain sends them; returns how many."""
        failure = Failure(None, "the stored body is not a JSON object")
        params = {"h": now, "reason": "corrupt", "status": None, "error": failure.error}
        # Not those a drain is sending: their lease could not be settled as it was.
        statement = with_ctes(
            move_to_dead(f"NOT {{s}}.is_json_object(q.body) AND NOT {leased('q')}"),
            "SELECT count(*) FROM moved",
        )
        return self._run_one(statement, params, first=dissolve(f"until <= {NOW}", NOW))

    def storage_checks(self, *, min_free_bytes: int) -> list[Finding]:
        """The server's checks: that it answers, and the dead rows of the spool's tables
        (with the oldest transaction that may keep autovacuum from them). The server's
        disk is its administrator's to watch: ``min_free_bytes`` is the file's."""
        asked = time.monotonic()
        [(version,)] = self._read("SELECT current_setting('server_version')", {})
        answered_ms = (time.monotonic() - asked) * 1000
        return [
            Finding("ok", "server", f"PostgreSQL {version}, answered in {answered_ms:.0f} ms"),
            self._dead_rows(),
        ]

    def _dead_rows(self) -> Finding:
        """Dead rows per table, from PostgreSQL's statistics (a second or so behind)."""
        tables = self._read(
            "SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables"
            " WHERE schemaname = %(schema)s AND relname IN ('queue', 'dead', 'totals')"
            " ORDER BY array_position(ARRAY['queue', 'dead', 'totals'], relname::text)",
            {"schema": self._db.target.schema},
        )
        [(oldest,)] = self._read(
            f"SELECT {NOW} - extract(epoch FROM min(xact_start)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            {},
        )
        detail = ", ".join(
            f"{_TABLES[name]} {dead:,} of {live + dead:,} rows dead" for name, live, dead in tables
        )
        bloated = [name for name, live, dead in tables if dead > max(DEAD_ROWS_WARNING, live)]
        held = oldest is not None and oldest > LONG_TRANSACTION
        if held:
            detail += f"; a transaction in this database has been open for {oldest / 60:.0f} min"
        if not bloated and not held:
            return Finding("ok", "bloat", detail or "no rows yet")
        return Finding(
            "warning",
            "bloat",
            f"{detail}; autovacuum cannot keep up, or a long-held transaction keeps it"
            " from removing dead rows (see 'Table bloat' in docs/operations.md)",
        )
